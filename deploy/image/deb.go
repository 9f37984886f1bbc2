package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Deb is a Debian binary package as the image uses it: its control
// paragraph and the entries of its data archive. Maintainer scripts are
// not kept: nothing runs them (the image is assembled, not installed).
type Deb struct {
	// Control is the package's control file (DEBIAN/control), as shipped.
	Control []byte
	// Files are the data archive's entries in archive order, with hard
	// links already turned into copies of their targets.
	Files []*File
	// Package, Version and Architecture are read from Control.
	Package, Version, Architecture string
}

// ReadDeb reads a Debian binary package: an ar archive holding
// debian-binary, control.tar[.gz|.xz|.zst] and data.tar[.gz|.xz|.zst|.bz2].
// Errors name the member that could not be read.
func ReadDeb(r io.Reader) (*Deb, error) {
	ar := bufio.NewReader(r)
	magic := make([]byte, 8)
	if _, err := io.ReadFull(ar, magic); err != nil || string(magic) != "!<arch>\n" {
		return nil, errors.New("not a Debian package (no ar archive header)")
	}
	d := &Deb{}
	var sawData, sawControl bool
	for {
		hdr := make([]byte, 60)
		if _, err := io.ReadFull(ar, hdr); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("reading ar member header: %w", err)
		}
		if string(hdr[58:60]) != "`\n" {
			return nil, errors.New("corrupt ar member header")
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(hdr[0:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("ar member %q: bad size %q", name, hdr[48:58])
		}
		body := io.LimitReader(ar, size)
		switch {
		case name == "debian-binary":
			v, err := io.ReadAll(body)
			if err != nil {
				return nil, fmt.Errorf("reading debian-binary: %w", err)
			}
			if !strings.HasPrefix(string(v), "2.") {
				return nil, fmt.Errorf("unsupported package format %q", strings.TrimSpace(string(v)))
			}
		case strings.HasPrefix(name, "control.tar"):
			if err := d.readControl(name, body); err != nil {
				return nil, fmt.Errorf("reading %s: %w", name, err)
			}
			sawControl = true
		case strings.HasPrefix(name, "data.tar"):
			if err := d.readData(name, body); err != nil {
				return nil, fmt.Errorf("reading %s: %w", name, err)
			}
			sawData = true
		}
		// Drain what the member's reader left, then the padding byte.
		if _, err := io.Copy(io.Discard, body); err != nil {
			return nil, fmt.Errorf("reading ar member %q: %w", name, err)
		}
		if size%2 == 1 {
			if _, err := ar.Discard(1); err != nil && err != io.EOF {
				return nil, err
			}
		}
	}
	if !sawControl || !sawData {
		return nil, errors.New("not a Debian package (no control.tar or data.tar member)")
	}
	return d, nil
}

// decompress opens a member by its file name's suffix.
func decompress(name string, r io.Reader) (io.ReadCloser, error) {
	switch path.Ext(name) {
	case ".tar":
		return io.NopCloser(r), nil
	case ".gz":
		return gzip.NewReader(r)
	case ".xz":
		x, err := xz.NewReader(r)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(x), nil
	case ".zst":
		z, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		return z.IOReadCloser(), nil
	case ".bz2":
		return io.NopCloser(bzip2.NewReader(r)), nil
	}
	return nil, fmt.Errorf("unknown compression %q", path.Ext(name))
}

func (d *Deb) readControl(name string, r io.Reader) error {
	rc, err := decompress(name, r)
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		if cleanPath(h.Name) != "control" {
			continue
		}
		if d.Control, err = io.ReadAll(tr); err != nil {
			return err
		}
	}
	if d.Control == nil {
		return errors.New("no control file")
	}
	f := ParseControl(d.Control)
	d.Package, d.Version, d.Architecture = f["Package"], f["Version"], f["Architecture"]
	if d.Package == "" || d.Version == "" {
		return errors.New("control file lacks Package or Version")
	}
	return nil
}

func (d *Deb) readData(name string, r io.Reader) error {
	rc, err := decompress(name, r)
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	byPath := map[string]*File{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		p := cleanPath(h.Name)
		if p == "" {
			continue // the archive's root, "./"
		}
		f := &File{Path: p, Mode: h.Mode & 0o7777, UID: h.Uid, GID: h.Gid}
		switch h.Typeflag {
		case tar.TypeDir:
			f.Type = tar.TypeDir
		case tar.TypeReg, tar.TypeRegA:
			f.Type = tar.TypeReg
			if f.Data, err = io.ReadAll(tr); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		case tar.TypeSymlink:
			f.Type, f.Link = tar.TypeSymlink, h.Linkname
		case tar.TypeLink:
			// A hard link becomes a copy of its target, so that the layer's
			// entries can be sorted freely.
			t := byPath[cleanPath(h.Linkname)]
			if t == nil || t.Type != tar.TypeReg {
				return fmt.Errorf("%s: hard link to %s, which is not an earlier regular file", p, h.Linkname)
			}
			f.Type, f.Data = tar.TypeReg, t.Data
		default:
			return fmt.Errorf("%s: unsupported entry type %q", p, h.Typeflag)
		}
		byPath[p] = f
		d.Files = append(d.Files, f)
	}
}

// cleanPath makes an archive name relative to the root, without "./",
// a leading or a trailing slash; the root itself is "".
func cleanPath(name string) string {
	p := path.Clean("/" + name)
	return strings.TrimPrefix(p, "/")
}

// ParseControl reads one control paragraph (RFC 822 style, as in a
// package's control file or `apt-cache show`) into its fields;
// continuation lines are joined with newlines.
func ParseControl(b []byte) map[string]string {
	fields := map[string]string{}
	var last string
	for _, line := range strings.Split(string(bytes.TrimSpace(b)), "\n") {
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if last != "" {
				fields[last] += "\n" + line
			}
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		last = k
		fields[k] = strings.TrimSpace(v)
	}
	return fields
}
