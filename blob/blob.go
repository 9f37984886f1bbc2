// Package blob stores objects (job inputs and outputs) by key: in Backblaze
// B2 through github.com/Backblaze/blazer, or in a local directory for the
// embedded default. Callers see only Store; keys are validated by every
// implementation with ValidateKey before any I/O.
package blob

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) when a key does not exist.
var ErrNotFound = errors.New("blob: object not found")

// Info describes a stored object.
type Info struct {
	Key      string
	Size     int64
	Modified time.Time
	// SHA1 is the object's SHA-1 in lower-case hex when the store records
	// it (B2 does, for every upload), else "". Digest fills it in for any
	// store.
	SHA1 string
}

// Store is an object store. Put is atomic: readers see the whole object or
// none of it, never a partial write, also when Put fails halfway.
type Store interface {
	// Put stores r under key, replacing any existing object. size is the
	// length of r when known, or -1.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Get opens the object; the caller closes it. Missing keys give an
	// error that wraps ErrNotFound.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat describes the object, or wraps ErrNotFound.
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes the object; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// MaxKeyLen bounds object keys (B2 allows 1024 bytes).
const MaxKeyLen = 1024

// ValidateKey rejects keys that could escape a directory or confuse an
// object store: empty, too long, absolute, with empty, "." or ".."
// segments, backslashes, or bytes outside printable ASCII.
func ValidateKey(key string) error {
	if key == "" {
		return errors.New("blob: empty key")
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("blob: key longer than %d bytes", MaxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c <= ' ' || c >= 0x7f || c == '\\' {
			return fmt.Errorf("blob: key %q has a character that is not allowed (printable ASCII without space or backslash)", key)
		}
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("blob: key %q has an empty, '.' or '..' segment", key)
		}
	}
	return nil
}

// Digest describes the object at key with its size and SHA-1: from Stat
// when the store records the SHA-1 (B2: one listing call), else by reading
// the whole object (the size is then the bytes read, so both describe the
// same version). Missing keys wrap ErrNotFound.
func Digest(ctx context.Context, s Store, key string) (Info, error) {
	info, err := s.Stat(ctx, key)
	if err != nil || info.SHA1 != "" {
		return info, err
	}
	rc, err := s.Get(ctx, key)
	if err != nil {
		return Info{}, err
	}
	defer rc.Close()
	h := sha1.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return Info{}, fmt.Errorf("blob: hashing %q: %w", key, err)
	}
	info.Size, info.SHA1 = n, hex.EncodeToString(h.Sum(nil))
	return info, nil
}

// ValidSHA1 reports whether s is a SHA-1 in lower-case hex (40 digits).
func ValidSHA1(s string) bool {
	if len(s) != 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
