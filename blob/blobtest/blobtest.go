// Package blobtest is a behavioural conformance suite for blob.Store
// implementations: every implementation runs the same Run.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/blob"
)

// Run checks that stores made by newStore behave as blob.Store promises.
// newStore must return a fresh, empty store; it is called once per subtest.
// extraSizes adds object sizes to the round-trip test (for example one
// above an implementation's multi-part threshold).
func Run(t *testing.T, newStore func(t *testing.T) blob.Store, extraSizes ...int) {
	t.Run("RoundTrip", func(t *testing.T) {
		s := newStore(t)
		sizes := append([]int{0, 1, 1000, 256 << 10}, extraSizes...)
		for _, n := range sizes {
			key := fmt.Sprintf("round/trip-%d.bin", n)
			want := Data(n, uint64(n))
			before := time.Now()
			mustPut(t, s, key, bytes.NewReader(want), int64(n))
			after := time.Now()
			if got := mustGet(t, s, key); !bytes.Equal(got, want) {
				t.Fatalf("Get(%q) returned %d bytes that differ from the %d put", key, len(got), n)
			}
			info, err := s.Stat(context.Background(), key)
			if err != nil {
				t.Fatalf("Stat(%q): %v", key, err)
			}
			if info.Key != key || info.Size != int64(n) {
				t.Fatalf("Stat(%q) = %+v, want key %q size %d", key, info, key, n)
			}
			// Clocks of a remote store may differ a little from ours.
			if info.Modified.Before(before.Add(-time.Minute)) || info.Modified.After(after.Add(time.Minute)) {
				t.Fatalf("Stat(%q).Modified = %v, want about %v", key, info.Modified, before)
			}
			sum := sha1.Sum(want)
			wantSHA := hex.EncodeToString(sum[:])
			if info.SHA1 != "" && info.SHA1 != wantSHA {
				t.Fatalf("Stat(%q).SHA1 = %s, want %s or none", key, info.SHA1, wantSHA)
			}
			d, err := blob.Digest(context.Background(), s, key)
			if err != nil {
				t.Fatalf("Digest(%q): %v", key, err)
			}
			if d.Size != int64(n) || d.SHA1 != wantSHA {
				t.Fatalf("Digest(%q) = size %d SHA-1 %s, want %d %s", key, d.Size, d.SHA1, n, wantSHA)
			}
		}
	})

	t.Run("UnknownSizeAndPlainReader", func(t *testing.T) {
		s := newStore(t)
		want := Data(70_000, 7)
		mustPut(t, s, "plain/unknown", plainReader{bytes.NewReader(want)}, -1)
		if got := mustGet(t, s, "plain/unknown"); !bytes.Equal(got, want) {
			t.Fatal("object put with unknown size from a plain reader came back different")
		}
		mustPut(t, s, "plain/known", plainReader{bytes.NewReader(want)}, int64(len(want)))
		if got := mustGet(t, s, "plain/known"); !bytes.Equal(got, want) {
			t.Fatal("object put with known size from a plain reader came back different")
		}
	})

	t.Run("Overwrite", func(t *testing.T) {
		s := newStore(t)
		mustPut(t, s, "over/write", strings.NewReader("first version, longer"), -1)
		mustPut(t, s, "over/write", strings.NewReader("second"), 6)
		if got := string(mustGet(t, s, "over/write")); got != "second" {
			t.Fatalf("after overwrite Get = %q, want %q", got, "second")
		}
		info, err := s.Stat(context.Background(), "over/write")
		if err != nil || info.Size != 6 {
			t.Fatalf("after overwrite Stat = %+v, %v; want size 6", info, err)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		s := newStore(t)
		ctx := context.Background()
		if _, err := s.Get(ctx, "missing/key"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("Get(missing) error = %v, want ErrNotFound", err)
		}
		if _, err := s.Stat(ctx, "missing/key"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("Stat(missing) error = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "missing/key"); err != nil {
			t.Fatalf("Delete(missing) = %v, want nil", err)
		}
	})

	t.Run("PrefixesAreNotObjects", func(t *testing.T) {
		s := newStore(t)
		ctx := context.Background()
		mustPut(t, s, "pre/obj.bin", strings.NewReader("x"), 1)
		mustPut(t, s, "pre/sub/deeper.bin", strings.NewReader("y"), 1)
		for _, k := range []string{"pre/obj", "pre/ob", "pre/sub", "pre"} {
			if _, err := s.Stat(ctx, k); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("Stat(%q) with only longer keys stored: error = %v, want ErrNotFound", k, err)
			}
			if _, err := s.Get(ctx, k); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("Get(%q) with only longer keys stored: error = %v, want ErrNotFound", k, err)
			}
			if err := s.Delete(ctx, k); err != nil {
				t.Fatalf("Delete(%q): %v", k, err)
			}
		}
		if got := string(mustGet(t, s, "pre/obj.bin")); got != "x" {
			t.Fatalf("deleting a prefix of pre/obj.bin changed it: %q", got)
		}
		if got := string(mustGet(t, s, "pre/sub/deeper.bin")); got != "y" {
			t.Fatalf("deleting a prefix of pre/sub/deeper.bin changed it: %q", got)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		s := newStore(t)
		ctx := context.Background()
		mustPut(t, s, "del/one", strings.NewReader("v1"), 2)
		mustPut(t, s, "del/one", strings.NewReader("v2"), 2)
		mustPut(t, s, "del/two", strings.NewReader("keep"), 4)
		if err := s.Delete(ctx, "del/one"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := s.Get(ctx, "del/one"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("Get after Delete: error = %v, want ErrNotFound (no older version may reappear)", err)
		}
		if _, err := s.Stat(ctx, "del/one"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("Stat after Delete: error = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "del/one"); err != nil {
			t.Fatalf("second Delete: %v", err)
		}
		if got := string(mustGet(t, s, "del/two")); got != "keep" {
			t.Fatalf("Delete of del/one changed del/two: %q", got)
		}
	})

	t.Run("InvalidKeys", func(t *testing.T) {
		s := newStore(t)
		ctx := context.Background()
		long := strings.Repeat("a", blob.MaxKeyLen+1)
		for _, k := range []string{"", "../x", "a/../../x", "/abs", "a//b", "a/./b", ".", "..", "a/", `a\b`, "sp ace", "tab\t", "nul\x00", "é", long} {
			if err := s.Put(ctx, k, strings.NewReader("x"), 1); err == nil {
				t.Errorf("Put(%q) succeeded, want a key error", k)
			}
			if _, err := s.Get(ctx, k); err == nil || errors.Is(err, blob.ErrNotFound) {
				t.Errorf("Get(%q) error = %v, want a key error", k, err)
			}
			if _, err := s.Stat(ctx, k); err == nil || errors.Is(err, blob.ErrNotFound) {
				t.Errorf("Stat(%q) error = %v, want a key error", k, err)
			}
			if err := s.Delete(ctx, k); err == nil {
				t.Errorf("Delete(%q) succeeded, want a key error", k)
			}
		}
	})

	t.Run("SizeMismatchKeepsOldObject", func(t *testing.T) {
		s := newStore(t)
		ctx := context.Background()
		mustPut(t, s, "size/obj", strings.NewReader("original"), 8)
		if err := s.Put(ctx, "size/obj", strings.NewReader("short"), 10); err == nil {
			t.Fatal("Put with fewer bytes than size succeeded")
		}
		if err := s.Put(ctx, "size/obj", plainReader{strings.NewReader("far too long")}, 3); err == nil {
			t.Fatal("Put with more bytes than size succeeded")
		}
		if got := string(mustGet(t, s, "size/obj")); got != "original" {
			t.Fatalf("failed Puts changed the object to %q", got)
		}
		if err := s.Put(ctx, "size/new", strings.NewReader("short"), 10); err == nil {
			t.Fatal("Put with fewer bytes than size succeeded")
		}
		if _, err := s.Stat(ctx, "size/new"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("failed Put left an object: Stat error = %v", err)
		}
	})

	t.Run("FailingReaderLeavesNothing", func(t *testing.T) {
		s := newStore(t)
		ctx := context.Background()
		boom := errors.New("reader exploded")
		mustPut(t, s, "fail/obj", strings.NewReader("original"), 8)
		r := io.MultiReader(bytes.NewReader(Data(100_000, 1)), errReader{boom})
		err := s.Put(ctx, "fail/obj", r, -1)
		if !errors.Is(err, boom) {
			t.Fatalf("Put from a failing reader: error = %v, want it to wrap %v", err, boom)
		}
		if got := string(mustGet(t, s, "fail/obj")); got != "original" {
			t.Fatalf("failed Put changed the object to %q", got)
		}
		if err := s.Put(ctx, "fail/new", io.MultiReader(strings.NewReader("abc"), errReader{boom}), -1); !errors.Is(err, boom) {
			t.Fatalf("Put from a failing reader: error = %v, want it to wrap %v", err, boom)
		}
		if _, err := s.Stat(ctx, "fail/new"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("failed Put left an object: Stat error = %v", err)
		}
	})

	t.Run("Cancelled", func(t *testing.T) {
		s := newStore(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Put(ctx, "cancel/before", strings.NewReader("x"), 1); !errors.Is(err, context.Canceled) {
			t.Fatalf("Put with a cancelled context: error = %v, want context.Canceled", err)
		}
		if _, err := s.Get(ctx, "cancel/before"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Get with a cancelled context: error = %v, want context.Canceled", err)
		}
		ctx2, cancel2 := context.WithCancel(context.Background())
		defer cancel2()
		r := io.MultiReader(bytes.NewReader(Data(50_000, 2)), &cancelReader{cancel: cancel2}, bytes.NewReader(Data(50_000, 3)))
		if err := s.Put(ctx2, "cancel/during", r, -1); !errors.Is(err, context.Canceled) {
			t.Fatalf("Put cancelled while reading: error = %v, want context.Canceled", err)
		}
		for _, k := range []string{"cancel/before", "cancel/during"} {
			if _, err := s.Stat(context.Background(), k); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("cancelled Put left %q: Stat error = %v", k, err)
			}
		}
	})

	t.Run("ConcurrentPutsSameKey", func(t *testing.T) {
		s := newStore(t)
		ctx := context.Background()
		const writers = 4
		versions := make([][]byte, writers)
		for i := range versions {
			versions[i] = Data(40_000+i*1000, uint64(100+i))
		}
		mustPut(t, s, "race/key", bytes.NewReader(versions[0]), -1)
		var wg sync.WaitGroup
		errs := make(chan error, 3*writers)
		for i := range writers {
			wg.Add(2)
			go func() {
				defer wg.Done()
				for range 3 {
					if err := s.Put(ctx, "race/key", bytes.NewReader(versions[i]), int64(len(versions[i]))); err != nil {
						errs <- fmt.Errorf("Put: %w", err)
					}
				}
			}()
			go func() {
				defer wg.Done()
				for range 3 {
					got, err := get(ctx, s, "race/key")
					if err != nil {
						errs <- fmt.Errorf("Get: %w", err)
						continue
					}
					if !isOneOf(got, versions) {
						errs <- fmt.Errorf("Get during concurrent Puts returned %d bytes matching no version put", len(got))
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if got := mustGet(t, s, "race/key"); !isOneOf(got, versions) {
			t.Fatal("after concurrent Puts the object matches none of the versions put")
		}
	})
}

// Data returns n deterministic pseudo-random bytes for seed.
func Data(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func mustPut(t *testing.T, s blob.Store, key string, r io.Reader, size int64) {
	t.Helper()
	if err := s.Put(context.Background(), key, r, size); err != nil {
		t.Fatalf("Put(%q, size %d): %v", key, size, err)
	}
}

func mustGet(t *testing.T, s blob.Store, key string) []byte {
	t.Helper()
	b, err := get(context.Background(), s, key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return b
}

func get(ctx context.Context, s blob.Store, key string) ([]byte, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(rc)
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing: %w", cerr)
	}
	return b, err
}

func isOneOf(b []byte, versions [][]byte) bool {
	for _, v := range versions {
		if bytes.Equal(b, v) {
			return true
		}
	}
	return false
}

// plainReader hides every method but Read (no Seek, ReadAt or WriteTo).
type plainReader struct{ r io.Reader }

func (p plainReader) Read(b []byte) (int, error) { return p.r.Read(b) }

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// cancelReader cancels a context when first read, and gives no data.
type cancelReader struct{ cancel context.CancelFunc }

func (c *cancelReader) Read([]byte) (int, error) {
	c.cancel()
	return 0, io.EOF
}
