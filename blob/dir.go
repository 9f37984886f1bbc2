package blob

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
)

// Dir is a Store that keeps each object as a file under a root directory:
// key "a/b/c.mp4" is the file root/a/b/c.mp4.
//
// Put writes a temporary file in the object's directory, makes it durable,
// renames it over the key and makes the rename durable, so readers see the
// old object or the whole new one, also after a crash. On Linux the two
// steps are filesystem syncs (syncfs(2)) shared by every Put that waits for
// one at the time, as databases share a commit: with many uploads at once
// a sync costs each of them a fraction of the two fsyncs (file and
// directory) that Put does elsewhere.
//
// Put records the object's SHA-1 on the file (an extended attribute, where
// the filesystem has them), and Stat reports it as B2 reports its own, so
// that checking a finished upload does not read it back. The directory
// belongs to the store: a file changed behind its back keeps a stale one.
//
// A Put that fails or is cancelled removes its temporary file; only a
// crash can leave one behind. Temporary files are named
// ".tmp <random>", with a space, which no valid key contains, so no key can
// ever address one.
//
// All access goes through an os.Root: no key can reach a file outside the
// root directory, also not through symbolic links already under it (links
// that stay inside the root work; links that leave it, and absolute links,
// make the operation fail). Because objects are files, a key cannot be both
// an object and a "directory" of other keys: with "a/b" stored, Put of
// "a/b/c" fails, and the reverse. Directories emptied by Delete are left in
// place.
type Dir struct {
	root *os.Root
	path string
	// dir is the root directory, open for syncfs; flush shares its syncs.
	// Both are nil where syncfs is not available (then Put fsyncs).
	dir   *os.File
	flush *flusher
}

var _ Store = (*Dir)(nil)

// tmpPrefix starts the name of every temporary file Put writes. The space
// keeps it out of the key space (ValidateKey rejects spaces).
const tmpPrefix = ".tmp "

// NewDir opens (creating it if needed) the directory root as a Store. Close
// it when done.
func NewDir(root string) (*Dir, error) {
	if root == "" {
		return nil, errors.New("blob: directory store: empty root path")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("blob: creating directory store root %s: %w", root, err)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("blob: opening directory store root %s: %w", root, err)
	}
	d := &Dir{root: r, path: root}
	if haveSyncFS {
		f, err := r.Open(".")
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("blob: opening directory store root %s: %w", root, err)
		}
		// A filesystem that refuses syncfs (or an old kernel without it)
		// gets the per-file fsyncs.
		if syncFS(f) == nil {
			d.dir, d.flush = f, newFlusher(func() error { return syncFS(f) })
		} else {
			f.Close()
		}
	}
	return d, nil
}

// Path returns the root directory as given to NewDir.
func (d *Dir) Path() string { return d.path }

// Close releases the root directory handles.
func (d *Dir) Close() error {
	if d.dir != nil {
		d.dir.Close()
	}
	return d.root.Close()
}

// Put stores r under key atomically; see Dir.
func (d *Dir) Put(ctx context.Context, key string, r io.Reader, size int64) (err error) {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if size < -1 {
		return fmt.Errorf("blob: put %q: invalid size %d", key, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blob: put %q: %w", key, err)
	}
	// The object's directory is resolved (and made) once; the temporary
	// file, the rename and the directory's sync all work in it.
	dir, base := path.Split(key)
	dir = path.Clean(dir)
	parent := d.root
	if dir != "." {
		sub, err := d.root.OpenRoot(filepath.FromSlash(dir))
		if isNotExist(err) {
			if err := d.root.MkdirAll(filepath.FromSlash(dir), 0o755); err != nil {
				return fmt.Errorf("blob: put %q: creating directory %s: %w", key, dir, err)
			}
			sub, err = d.root.OpenRoot(filepath.FromSlash(dir))
		}
		if err != nil {
			return fmt.Errorf("blob: put %q: opening directory %s: %w", key, dir, err)
		}
		defer sub.Close()
		parent = sub
	}
	tmp, f, err := createTemp(parent)
	if err != nil {
		return fmt.Errorf("blob: put %q: creating temporary file: %w", key, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			parent.Remove(tmp)
		}
	}()
	h := sha1.New()
	n, err := io.Copy(io.MultiWriter(f, h), ctxReader{ctx: ctx, r: r})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("blob: put %q: %w", key, ctx.Err())
		}
		return fmt.Errorf("blob: put %q: writing after %d bytes: %w", key, n, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("blob: put %q: reader gave %d bytes, but the size given was %d", key, n, size)
	}
	setSHA1Attr(f, hex.EncodeToString(h.Sum(nil)))
	if d.flush == nil {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("blob: put %q: syncing temporary file: %w", key, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("blob: put %q: closing temporary file: %w", key, err)
	}
	if d.flush != nil {
		if err := d.flush.sync(); err != nil {
			return fmt.Errorf("blob: put %q: syncing temporary file: %w", key, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blob: put %q: %w", key, err)
	}
	if err := parent.Rename(tmp, base); err != nil {
		return fmt.Errorf("blob: put %q: renaming temporary file into place: %w", key, err)
	}
	// The object is in place; a failed directory sync only weakens
	// durability across a crash, so it is reported but the rename stands.
	sync := func() error { return syncDir(parent) }
	if d.flush != nil {
		sync = d.flush.sync
	}
	if err := sync(); err != nil {
		return fmt.Errorf("blob: put %q: stored, but syncing directory %s failed: %w", key, dir, err)
	}
	return nil
}

// createTemp creates a new temporary file in the directory of root.
func createTemp(root *os.Root) (string, *os.File, error) {
	for range 10 {
		name := tmpPrefix + rand.Text()
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return name, f, err
	}
	return "", nil, errors.New("could not pick an unused temporary file name")
}

// syncDir fsyncs root's directory.
func syncDir(root *os.Root) error {
	f, err := root.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// Get opens the object's file. The returned reader stops with ctx's error
// once ctx is done.
func (d *Dir) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("blob: get %q: %w", key, err)
	}
	f, err := d.root.Open(filepath.FromSlash(key))
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("blob: get %q: %w", key, ErrNotFound)
		}
		return nil, fmt.Errorf("blob: get %q: %w", key, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blob: get %q: %w", key, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("blob: get %q: %w (a directory or special file has that name)", key, ErrNotFound)
	}
	return &ctxFile{ctx: ctx, f: f}, nil
}

// Stat describes the object's file, with the SHA-1 that Put recorded on
// it (an extended attribute, on Linux filesystems that have them), so that
// checking an upload does not read it back.
func (d *Dir) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("blob: stat %q: %w", key, err)
	}
	f, err := d.root.Open(filepath.FromSlash(key))
	if err != nil {
		if isNotExist(err) {
			return Info{}, fmt.Errorf("blob: stat %q: %w", key, ErrNotFound)
		}
		return Info{}, fmt.Errorf("blob: stat %q: %w", key, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("blob: stat %q: %w", key, err)
	}
	if !st.Mode().IsRegular() {
		return Info{}, fmt.Errorf("blob: stat %q: %w (a directory or special file has that name)", key, ErrNotFound)
	}
	return Info{Key: key, Size: st.Size(), Modified: st.ModTime(), SHA1: sha1AttrOf(f)}, nil
}

// Delete removes the object's file. A missing key, or one naming a
// directory, is not an error.
func (d *Dir) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blob: delete %q: %w", key, err)
	}
	name := filepath.FromSlash(key)
	st, err := d.root.Lstat(name)
	if err != nil {
		if isNotExist(err) {
			return nil
		}
		return fmt.Errorf("blob: delete %q: %w", key, err)
	}
	if st.IsDir() {
		return nil
	}
	if err := d.root.Remove(name); err != nil && !isNotExist(err) {
		return fmt.Errorf("blob: delete %q: %w", key, err)
	}
	return nil
}

// isNotExist reports whether err means the path is not there, including a
// path whose parent is a file (ENOTDIR).
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// ctxFile is a file whose reads stop once ctx is done.
type ctxFile struct {
	ctx context.Context
	f   *os.File
}

func (c *ctxFile) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.f.Read(p)
}

func (c *ctxFile) Close() error { return c.f.Close() }
