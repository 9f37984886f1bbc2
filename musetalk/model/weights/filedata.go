package weights

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// chunkSize bounds the temporary buffer used when a file is not mapped.
const chunkSize = 1 << 20

// fileData is a read-only view of a file: memory-mapped where the platform
// allows it, read with ReadAt otherwise. It is safe for concurrent reads.
type fileData struct {
	f    *os.File
	data []byte // the mapping; nil when the file is not mapped
	size int64
}

// openFileData opens path, mapping it when useMmap is set and mapping works.
func openFileData(path string, useMmap bool) (*fileData, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening weights file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening weights file: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file: %w", path, ErrFormat)
	}
	d := &fileData{f: f, size: st.Size()}
	if useMmap {
		// A failed mapping is not an error: ReadAt serves instead.
		if m, err := mmapFile(f, d.size); err == nil {
			d.data = m
		}
	}
	return d, nil
}

// ReadAt implements io.ReaderAt.
func (d *fileData) ReadAt(p []byte, off int64) (int, error) {
	if d.data == nil {
		return d.f.ReadAt(p, off)
	}
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= d.size {
		return 0, io.EOF
	}
	n := copy(p, d.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// chunks calls fn with the bytes [off, off+n) in consecutive pieces whose
// lengths are multiples of align. A mapped file gives one piece without a
// copy; otherwise pieces of about chunkSize bytes are read into one buffer
// that fn must not keep.
func (d *fileData) chunks(off, n int64, align int, fn func([]byte) error) error {
	if off < 0 || n < 0 || off > d.size || n > d.size-off {
		return fmt.Errorf("byte range [%d, %d) beyond end of file (%d bytes): %w", off, off+n, d.size, ErrFormat)
	}
	if d.data != nil {
		return fn(d.data[off : off+n : off+n])
	}
	step := int64(chunkSize - chunkSize%align)
	buf := make([]byte, min(step, n))
	for n > 0 {
		k := min(step, n)
		if _, err := d.f.ReadAt(buf[:k], off); err != nil {
			return fmt.Errorf("reading bytes [%d, %d): %w", off, off+k, err)
		}
		if err := fn(buf[:k]); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// bytes returns [off, off+n): a sub-slice of the mapping, or a new copy.
func (d *fileData) bytes(off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off > d.size || n > d.size-off {
		return nil, fmt.Errorf("byte range [%d, %d) beyond end of file (%d bytes): %w", off, off+n, d.size, ErrFormat)
	}
	if d.data != nil {
		return d.data[off : off+n : off+n], nil
	}
	b := make([]byte, n)
	if _, err := d.f.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("reading bytes [%d, %d): %w", off, off+n, err)
	}
	return b, nil
}

// Close unmaps and closes the file.
func (d *fileData) Close() error {
	var err error
	if d.data != nil {
		err = munmap(d.data)
		d.data = nil
	}
	if cerr := d.f.Close(); err == nil {
		err = cerr
	}
	return err
}
