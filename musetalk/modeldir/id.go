package modeldir

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// idSample is how many bytes of each end of a file [Dir.ID] hashes.
const idSample = 64 << 10

// ID returns a fingerprint of the files the given versions use (no versions
// means [V15]), for cache keys: 32 hex digits that change when any of those
// files is replaced by a different one. It hashes each resolved file's
// name, size and first and last 64 KiB, so it costs a few reads however
// large the weights are, and a copy of the directory on another machine
// has the same ID. Missing files are a *[MissingError].
func (d Dir) ID(versions ...string) (string, error) {
	if err := d.Check(versions...); err != nil {
		return "", err
	}
	files, err := Files(versions...)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range files {
		p, err := d.Resolve(f)
		if err != nil {
			return "", err
		}
		if err := hashEnds(h, f.Path, filepath.Base(p), p); err != nil {
			return "", fmt.Errorf("fingerprinting weight directory %s: %w", d, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// hashEnds writes the role, the file's name, its size and its first and
// last idSample bytes to h.
func hashEnds(h io.Writer, role, name, path string) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	fmt.Fprintf(h, "%s\x00%s\x00", role, name)
	binary.Write(h, binary.LittleEndian, size)
	buf := make([]byte, min(size, idSample))
	if _, err := io.ReadFull(fh, buf); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	h.Write(buf)
	if size > idSample {
		tail := make([]byte, min(size-idSample, idSample))
		if _, err := fh.ReadAt(tail, size-int64(len(tail))); err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		h.Write(tail)
	}
	return nil
}
