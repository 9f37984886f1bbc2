package image

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fileLayer is a gzip-compressed layer kept in a file, with its digest
// (of the compressed bytes) and diff ID (of the tar) computed while it
// was written. It implements v1.Layer.
type fileLayer struct {
	diffID, digest v1.Hash
	path           string
	size           int64
}

var _ v1.Layer = (*fileLayer)(nil)

// writeLayer writes t as a normalised tar (see Tree.WriteTar), gzipped at
// level, into a new file in dir.
func writeLayer(dir string, t *Tree, mtime time.Time, level int) (*fileLayer, error) {
	f, err := os.CreateTemp(dir, "layer-*.tar.gz")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	digest, diffID := sha256.New(), sha256.New()
	counted := &countWriter{w: io.MultiWriter(f, digest)}
	// Go's gzip writes no name, no time and OS 255 in its header, so the
	// bytes depend only on the tar, the level and the Go release.
	zw, err := gzip.NewWriterLevel(counted, level)
	if err != nil {
		return nil, err
	}
	if err := t.WriteTar(io.MultiWriter(zw, diffID), mtime); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return &fileLayer{path: f.Name(), size: counted.n, digest: sum(digest), diffID: sum(diffID)}, nil
}

func sum(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (l *fileLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)     { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) {
	return types.DockerLayer, nil
}
func (l *fileLayer) Compressed() (io.ReadCloser, error) { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("layer %s: %w", l.digest, err)
	}
	return &readCloser{Reader: zr, close: f.Close}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r *readCloser) Close() error { return r.close() }
