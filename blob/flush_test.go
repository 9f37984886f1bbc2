package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFlusherCoversEveryCaller checks the flusher's promise: each sync
// returns only after a flush that started after the call, and callers
// that arrive together share flushes.
func TestFlusherCoversEveryCaller(t *testing.T) {
	var started atomic.Int64 // flushes started so far
	var running atomic.Int32
	f := newFlusher(func() error {
		if running.Add(1) != 1 {
			t.Error("two flushes ran at once")
		}
		started.Add(1)
		time.Sleep(2 * time.Millisecond)
		running.Add(-1)
		return nil
	})
	const callers, rounds = 32, 20
	var wg sync.WaitGroup
	var calls atomic.Int64
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				before := started.Load()
				if err := f.sync(); err != nil {
					t.Error(err)
					return
				}
				calls.Add(1)
				// A flush that started after the call has also finished:
				// at least one more flush than before it.
				if started.Load() <= before {
					t.Errorf("sync returned without a flush started after it (flushes %d before and after)", before)
				}
			}
		}()
	}
	wg.Wait()
	n := started.Load()
	t.Logf("%d syncs, %d flushes", calls.Load(), n)
	if n >= calls.Load()/2 {
		t.Errorf("%d flushes for %d concurrent syncs: callers did not share flushes", n, calls.Load())
	}
}

// TestFlusherError gives a failed flush's error to every caller of that
// flush, and the next flush runs afresh.
func TestFlusherError(t *testing.T) {
	fail := errors.New("disk on fire")
	var n atomic.Int32
	f := newFlusher(func() error {
		if n.Add(1) == 1 {
			return fail
		}
		return nil
	})
	if err := f.sync(); !errors.Is(err, fail) {
		t.Fatalf("first sync: %v, want %v", err, fail)
	}
	if err := f.sync(); err != nil {
		t.Fatalf("second sync: %v", err)
	}
}

// BenchmarkDirPut stores 4 KiB objects, each in a new directory (as
// outputs/<job>/<attempt>.mp4 are), from 64 goroutines per CPU: with the
// shared filesystem syncs, and with an fsync of file and directory per
// Put.
func BenchmarkDirPut(b *testing.B) {
	for _, mode := range []string{"syncfs", "fsync"} {
		b.Run(mode, func(b *testing.B) {
			d, err := NewDir(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			if mode == "fsync" {
				d.flush = nil
			} else if d.flush == nil {
				b.Skip("no syncfs here")
			}
			data := bytes.Repeat([]byte("x"), 4096)
			var n atomic.Int64
			b.SetParallelism(64)
			b.SetBytes(int64(len(data)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					key := fmt.Sprintf("outputs/job-%d/1.mp4", n.Add(1))
					if err := d.Put(context.Background(), key, bytes.NewReader(data), int64(len(data))); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestDirPutWithoutSyncFS: where syncfs is missing, Put fsyncs the file
// and its directory instead, with the same result.
func TestDirPutWithoutSyncFS(t *testing.T) {
	d, err := NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.flush = nil
	ctx := context.Background()
	if err := d.Put(ctx, "outputs/j/1.mp4", strings.NewReader("video"), 5); err != nil {
		t.Fatal(err)
	}
	rc, err := d.Get(ctx, "outputs/j/1.mp4")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if b, _ := io.ReadAll(rc); string(b) != "video" {
		t.Errorf("got %q, want %q", b, "video")
	}
}
