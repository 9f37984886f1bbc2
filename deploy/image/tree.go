package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// File is one entry of a layer: a directory, a regular file or a symbolic
// link. A regular file's bytes are Data, or the file at Source read when
// the layer is written.
type File struct {
	Data   []byte
	GID    int
	Link   string // a symbolic link's target, as written
	Mode   int64  // permission bits with setuid, setgid and sticky
	Path   string // relative to the root: "usr/bin/ffmpeg"
	Source string // a file on this machine holding a regular file's bytes
	Type   byte   // tar.TypeDir, tar.TypeReg or tar.TypeSymlink
	UID    int
}

// Tree is the file system of one layer: files by path, and which package
// (or other origin) each came from. It is not safe for concurrent use.
type Tree struct {
	files  map[string]*File
	origin map[string]string
}

// NewTree returns an empty tree.
func NewTree() *Tree {
	return &Tree{files: map[string]*File{}, origin: map[string]string{}}
}

// Add puts f in the tree, from origin (a package name, for messages).
// A directory already there keeps its first metadata; the same file or
// link twice is accepted; any other clash is an error naming both origins.
func (t *Tree) Add(f *File, origin string) error {
	old, ok := t.files[f.Path]
	if !ok {
		t.files[f.Path] = f
		t.origin[f.Path] = origin
		return nil
	}
	if old.Type == tar.TypeDir && f.Type == tar.TypeDir {
		return nil
	}
	if old.Type == f.Type && old.Link == f.Link && old.Mode == f.Mode && old.Source == "" && f.Source == "" && bytes.Equal(old.Data, f.Data) {
		return nil
	}
	return fmt.Errorf("/%s is in both %s and %s, and differs", f.Path, t.origin[f.Path], origin)
}

// Put puts f in the tree, replacing whatever was at its path.
func (t *Tree) Put(f *File, origin string) {
	t.files[f.Path] = f
	t.origin[f.Path] = origin
}

// Remove removes the entry at p and reports whether there was one. A
// directory's entries are left alone.
func (t *Tree) Remove(p string) bool {
	_, ok := t.files[p]
	delete(t.files, p)
	delete(t.origin, p)
	return ok
}

// Get returns the entry at p ("usr/bin/x", no leading slash), or nil.
func (t *Tree) Get(p string) *File { return t.files[p] }

// Len is the number of entries.
func (t *Tree) Len() int { return len(t.files) }

// Paths returns every path in the tree, sorted.
func (t *Tree) Paths() []string {
	ps := make([]string, 0, len(t.files))
	for p := range t.files {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// Resolve follows symbolic links in p (in every component) within the
// tree, and returns the entry p finally names and its path, or nil when
// p does not exist or the links loop.
func (t *Tree) Resolve(p string) (*File, string) {
	for hops := 0; hops < 40; hops++ {
		parts := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
		cur := ""
		redirected := false
		for i, part := range parts {
			next := path.Join(cur, part)
			f := t.files[next]
			if f == nil {
				if i == len(parts)-1 {
					return nil, ""
				}
				// A directory that only its entries imply.
				cur = next
				continue
			}
			if f.Type == tar.TypeSymlink {
				target := f.Link
				if !path.IsAbs(target) {
					target = path.Join("/", cur, target)
				}
				p = path.Join(append([]string{target}, parts[i+1:]...)...)
				redirected = true
				break
			}
			cur = next
		}
		if !redirected {
			return t.files[cur], cur
		}
	}
	return nil, ""
}

// WriteTar writes the tree as a tar archive, normalised so that the same
// tree always gives the same bytes: entries sorted by name (every parent
// directory, made when missing, before its children), every modification
// time mtime, no access or change times, no user or group names, no
// extended attributes; directories end in "/". Uids and gids are kept.
func (t *Tree) WriteTar(w io.Writer, mtime time.Time) error {
	// Parents the tree lacks are root-owned 0755 directories.
	all := map[string]*File{}
	for p, f := range t.files {
		all[p] = f
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := t.files[d]; !ok {
				all[d] = &File{Path: d, Type: tar.TypeDir, Mode: 0o755}
			}
		}
	}
	names := make([]string, 0, len(all))
	byName := map[string]*File{}
	for p, f := range all {
		n := p
		if f.Type == tar.TypeDir {
			n += "/"
		}
		names = append(names, n)
		byName[n] = f
	}
	slices.Sort(names)
	tw := tar.NewWriter(w)
	mtime = mtime.UTC().Truncate(time.Second)
	for _, n := range names {
		f := byName[n]
		h := &tar.Header{Name: n, Mode: f.Mode, Uid: f.UID, Gid: f.GID, ModTime: mtime, Typeflag: f.Type}
		var src io.Reader
		switch f.Type {
		case tar.TypeDir:
		case tar.TypeSymlink:
			h.Linkname = f.Link
		case tar.TypeReg:
			if f.Source != "" {
				r, err := os.Open(f.Source)
				if err != nil {
					return err
				}
				st, err := r.Stat()
				if err != nil {
					r.Close()
					return err
				}
				h.Size, src = st.Size(), r
			} else {
				h.Size, src = int64(len(f.Data)), bytes.NewReader(f.Data)
			}
		default:
			return fmt.Errorf("/%s: unsupported type %q", f.Path, f.Type)
		}
		if err := writeEntry(tw, h, src); err != nil {
			return fmt.Errorf("writing /%s: %w", f.Path, err)
		}
	}
	return tw.Close()
}

// writeEntry writes one header and its bytes, closing src when it is a
// file.
func writeEntry(tw *tar.Writer, h *tar.Header, src io.Reader) error {
	if c, ok := src.(io.Closer); ok {
		defer c.Close()
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if src == nil {
		return nil
	}
	n, err := io.Copy(tw, src)
	if err != nil {
		return err
	}
	if n != h.Size {
		return fmt.Errorf("it changed size while being read")
	}
	return nil
}
