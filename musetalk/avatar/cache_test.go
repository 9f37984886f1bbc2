package avatar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/media"
)

// cacheBundle is a still avatar with a face box, cheap to prepare (raw
// parsing), and networks whose parser counts preparations.
type cacheBundle struct {
	still  string
	nets   Networks
	parser *fakeParser
}

func setupCache(t *testing.T) cacheBundle {
	t.Helper()
	nets := testNets(t)
	return cacheBundle{still: fixture(t, "still.png"), nets: nets, parser: nets.Parser.(*fakeParser)}
}

// opts returns distinct options (distinct keys) for variant i.
func (b cacheBundle) opts(i int) Options {
	return Options{Version: "v1", BBoxShift: i, FaceBox: &testFaceBox}
}

func (b cacheBundle) key(t *testing.T, i int) string {
	t.Helper()
	k, err := Key(b.still, b.opts(i), "weights-1")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (b cacheBundle) get(t *testing.T, c *Cache, i int) (*Avatar, bool) {
	t.Helper()
	a, cached, err := c.Get(context.Background(), b.key(t, i), b.still, b.opts(i), b.nets, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Key != b.key(t, i) || len(a.Frames) != 1 || !a.Frames[0].HasFace || a.Options.BBoxShift != i {
		t.Fatalf("variant %d: got avatar %q with options %+v", i, a.Key, a.Options)
	}
	return a, cached
}

// entryDirs lists the cache directory's contents.
func entryDirs(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestCacheHitSkipsPreparation(t *testing.T) {
	b := setupCache(t)
	dir := t.TempDir()
	c, err := OpenCache(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	a1, cached := b.get(t, c, 0)
	if cached || b.parser.calls.Load() != 1 {
		t.Fatalf("first Get: cached %v, parser calls %d", cached, b.parser.calls.Load())
	}
	a2, cached := b.get(t, c, 0)
	if !cached || b.parser.calls.Load() != 1 {
		t.Fatalf("second Get: cached %v, parser calls %d", cached, b.parser.calls.Load())
	}
	f1, f2 := a1.Frames[0], a2.Frames[0]
	if f1.Face != f2.Face || !slices.Equal(f1.Latent, f2.Latent) || !bytes.Equal(f1.Mask.Pix, f2.Mask.Pix) {
		t.Error("the cached avatar differs from the prepared one")
	}
	p1, _ := a1.FrameBGR(0)
	p2, _ := a2.FrameBGR(0)
	if !bytes.Equal(p1.Pix, p2.Pix) {
		t.Error("cached frame pixels differ")
	}
	a1.Close()
	a2.Close()
	if got := entryDirs(t, dir); !slices.Equal(got, []string{b.key(t, 0)}) {
		t.Errorf("cache dir holds %v", got)
	}

	// A new Cache on the same directory finds the entry.
	c2, err := OpenCache(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c2.Keys(), []string{b.key(t, 0)}) {
		t.Errorf("reopened keys %v", c2.Keys())
	}
	a3, cached := b.get(t, c2, 0)
	defer a3.Close()
	if !cached || b.parser.calls.Load() != 1 {
		t.Errorf("Get after reopening: cached %v, parser calls %d", cached, b.parser.calls.Load())
	}
}

func TestCacheLRUEviction(t *testing.T) {
	b := setupCache(t)
	dir := t.TempDir()
	probe, err := OpenCache(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := b.get(t, probe, 0)
	a.Close()
	size := probe.Size()
	if size < 512*512*3 {
		t.Fatalf("entry size %d is smaller than its frame", size)
	}

	// Room for two entries and a half.
	c, err := OpenCache(dir, size*5/2)
	if err != nil {
		t.Fatal(err)
	}
	k := func(i int) string { return b.key(t, i) }
	for _, i := range []int{0, 1} {
		a, _ := b.get(t, c, i)
		a.Close()
	}
	a, cached := b.get(t, c, 0) // 0 is now the most recent
	a.Close()
	if !cached || !slices.Equal(c.Keys(), []string{k(0), k(1)}) {
		t.Fatalf("cached %v, keys %v", cached, c.Keys())
	}
	a, _ = b.get(t, c, 2) // evicts 1, the least recently used
	a.Close()
	if !slices.Equal(c.Keys(), []string{k(2), k(0)}) || c.Size() > size*5/2 {
		t.Fatalf("after eviction keys %v, size %d", c.Keys(), c.Size())
	}
	if _, err := os.Stat(filepath.Join(dir, k(1))); !os.IsNotExist(err) {
		t.Errorf("evicted entry still on disk: %v", err)
	}

	// An entry in use is never evicted: hold 0 and 2, add 3 (over the
	// cap) — nothing idle to evict until the holders close.
	h0, _ := b.get(t, c, 0)
	h2, _ := b.get(t, c, 2)
	h3, cached := b.get(t, c, 3)
	if cached || len(c.Keys()) != 3 {
		t.Fatalf("with all held: keys %v", c.Keys())
	}
	if f, err := h0.FrameBGR(0); err != nil || len(f.Pix) != 512*512*3 {
		t.Fatalf("held avatar unreadable: %v", err)
	}
	h0.Close() // 0 is the least recently used idle entry now
	if !slices.Equal(c.Keys(), []string{k(3), k(2)}) {
		t.Fatalf("after releasing 0: keys %v", c.Keys())
	}
	h2.Close()
	h3.Close()
	if c.Size() > size*5/2 {
		t.Errorf("size %d over the cap", c.Size())
	}

	// Reopening keeps the recency order (manifest modification times) and
	// applies a smaller cap.
	c2, err := OpenCache(dir, size*3/2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c2.Keys(), []string{k(3)}) {
		t.Errorf("reopened with a smaller cap: keys %v", c2.Keys())
	}
}

func TestCacheCorruptEntryRecovery(t *testing.T) {
	b := setupCache(t)
	dir := t.TempDir()
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	c, err := OpenCache(dir, 0, WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := b.get(t, c, 0)
	want := slices.Clone(a.Frames[0].Latent)
	a.Close()
	key := b.key(t, 0)
	// Truncate the latents file.
	if err := os.Truncate(filepath.Join(dir, key, latentsFile), 100); err != nil {
		t.Fatal(err)
	}
	a, cached := b.get(t, c, 0)
	if cached || b.parser.calls.Load() != 2 || !slices.Equal(a.Frames[0].Latent, want) {
		t.Fatalf("after truncation: cached %v, parser calls %d", cached, b.parser.calls.Load())
	}
	a.Close()
	mu.Lock()
	if !strings.Contains(logs.String(), "corrupt") || !strings.Contains(logs.String(), latentsFile) {
		t.Errorf("log does not give the reason: %s", logs.String())
	}
	mu.Unlock()

	// On open: an interrupted preparation and an entry without a manifest
	// are removed; a corrupt manifest is caught by the next Get.
	os.Mkdir(filepath.Join(dir, tmpPrefix+"x-1"), 0o755)
	os.Mkdir(filepath.Join(dir, "deadbeef"), 0o755)
	os.WriteFile(filepath.Join(dir, key, manifestFile), []byte("{"), 0o644)
	c2, err := OpenCache(dir, 0, WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	if got := entryDirs(t, dir); !slices.Equal(got, []string{key}) {
		t.Errorf("after reopening the cache dir holds %v", got)
	}
	a, cached = b.get(t, c2, 0)
	defer a.Close()
	if cached || b.parser.calls.Load() != 3 {
		t.Errorf("corrupt manifest: cached %v, parser calls %d", cached, b.parser.calls.Load())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func TestCacheConcurrentGetPreparesOnce(t *testing.T) {
	b := setupCache(t)
	c, err := OpenCache(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	var wg sync.WaitGroup
	res := make([]bool, n)
	errs := make([]error, n)
	avatars := make([]*Avatar, n)
	key := b.key(t, 0)
	for i := range n {
		wg.Go(func() {
			avatars[i], res[i], errs[i] = c.Get(context.Background(), key, b.still, b.opts(0), b.nets, nil)
		})
	}
	wg.Wait()
	prepared := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !res[i] {
			prepared++
		}
		defer avatars[i].Close()
	}
	if prepared != 1 || b.parser.calls.Load() != 1 {
		t.Errorf("%d Gets prepared, parser called %d times", prepared, b.parser.calls.Load())
	}
}

func TestCacheCancelLeavesNothing(t *testing.T) {
	video := fixture(t, "video.mp4")
	nets := testNets(t)
	nets.Detector = &fakeDetector{box: media.Box{170, 50, 280, 190}}
	nets.EncodeBatch = 1
	dir := t.TempDir()
	c, err := OpenCache(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	opt := Options{Version: "v1", FaceDetector: DetectorS3FD}
	key, err := Key(video, opt, "w")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, _, err = c.Get(ctx, key, video, opt, nets, func(d, n int) {
		if d == 2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if len(c.Keys()) != 0 || len(entryDirs(t, dir)) != 0 {
		t.Errorf("after cancel: keys %v, dir %v", c.Keys(), entryDirs(t, dir))
	}
	// The key prepares normally afterwards.
	a, cached, err := c.Get(context.Background(), key, video, opt, nets, nil)
	if err != nil || cached || len(a.Frames) != 6 || a.FPS.Cmp(big.NewRat(25, 1)) != 0 {
		t.Fatalf("after cancel: %v cached %v", err, cached)
	}
	a.Close()
}

func TestCacheRejectsBadKeys(t *testing.T) {
	c, err := OpenCache(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"", "../x", ".hidden", "a/b", strings.Repeat("a", 129)} {
		if _, _, err := c.Get(context.Background(), k, "x", Options{}, Networks{}, nil); err == nil {
			t.Errorf("key %q accepted", k)
		}
	}
}

type panicParser struct{}

func (panicParser) Parse(ctx context.Context, rgb *media.Image8, size int) (*media.Image8, error) {
	panic("parser bug")
}

func TestCacheFailedPreparation(t *testing.T) {
	b := setupCache(t)
	dir := t.TempDir()
	c, err := OpenCache(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Concurrent Gets of a key whose preparation fails all see the error.
	outside := media.Box{500, 500, 600, 600}
	opt := Options{Version: "v1", FaceBox: &outside}
	key, err := Key(b.still, opt, "w")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { _, _, errs[i] = c.Get(context.Background(), key, b.still, opt, b.nets, nil) })
	}
	wg.Wait()
	for _, err := range errs {
		if !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Get: %v", err)
		}
	}

	// A panic during preparation leaves no entry and no waiter behind.
	nets := b.nets
	nets.Parser = panicParser{}
	func() {
		defer func() {
			if r := recover(); r != "parser bug" {
				t.Errorf("recovered %v", r)
			}
		}()
		c.Get(context.Background(), b.key(t, 0), b.still, b.opts(0), nets, nil)
	}()
	if len(c.Keys()) != 0 || len(entryDirs(t, dir)) != 0 {
		t.Fatalf("after failures: keys %v, dir %v", c.Keys(), entryDirs(t, dir))
	}
	a, cached := b.get(t, c, 0)
	defer a.Close()
	if cached {
		t.Error("cached after a panic")
	}
}

// slowParser delays every parse, so that two preparations overlap.
type slowParser struct {
	FaceParser
	delay time.Duration
}

func (p slowParser) Parse(ctx context.Context, rgb *media.Image8, size int) (*media.Image8, error) {
	select {
	case <-time.After(p.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return p.FaceParser.Parse(ctx, rgb, size)
}

// storedEntries lists the cache directory's names other than lock files:
// entries, and any temporary or trash directory left behind.
func storedEntries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, n := range entryDirs(t, dir) {
		if !strings.HasPrefix(n, lockPrefix) {
			out = append(out, n)
		}
	}
	return out
}

func TestCacheSeesEntriesOfAnotherProcess(t *testing.T) {
	b := setupCache(t)
	dir := t.TempDir()
	ca, err := OpenCache(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := OpenCache(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	// B stores the entry after A opened the directory: A's Get is a hit.
	a, cached := b.get(t, cb, 0)
	a.Close()
	if cached || b.parser.calls.Load() != 1 {
		t.Fatalf("B: cached %v, parser calls %d", cached, b.parser.calls.Load())
	}
	a, cached = b.get(t, ca, 0)
	if !cached || b.parser.calls.Load() != 1 {
		t.Fatalf("A: cached %v, parser calls %d, want a hit without preparing", cached, b.parser.calls.Load())
	}
	a.Close()
	if !slices.Equal(ca.Keys(), []string{b.key(t, 0)}) {
		t.Errorf("A's keys %v", ca.Keys())
	}

	// An entry that vanishes from under A (deleted by another process) is
	// prepared again, cleanly.
	if err := os.RemoveAll(filepath.Join(dir, b.key(t, 0))); err != nil {
		t.Fatal(err)
	}
	a, cached = b.get(t, ca, 0)
	a.Close()
	if cached || b.parser.calls.Load() != 2 {
		t.Errorf("after the entry vanished: cached %v, parser calls %d", cached, b.parser.calls.Load())
	}
	if got := storedEntries(t, dir); !slices.Equal(got, []string{b.key(t, 0)}) {
		t.Errorf("cache dir holds %v", got)
	}
}

func TestCacheSharedDirPreparesOnce(t *testing.T) {
	b := setupCache(t)
	dir := t.TempDir()
	nets := b.nets
	nets.Parser = slowParser{b.nets.Parser, 300 * time.Millisecond}
	key := b.key(t, 0)
	var caches [2]*Cache
	for i := range caches {
		c, err := OpenCache(dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		caches[i] = c
	}
	var wg sync.WaitGroup
	var avatars [2]*Avatar
	var cached [2]bool
	var errs [2]error
	for i, c := range caches {
		wg.Go(func() {
			avatars[i], cached[i], errs[i] = c.Get(context.Background(), key, b.still, b.opts(0), nets, nil)
		})
	}
	wg.Wait()
	for i := range caches {
		if errs[i] != nil {
			t.Fatalf("cache %d: %v", i, errs[i])
		}
		defer avatars[i].Close()
	}
	if b.parser.calls.Load() != 1 || cached[0] == cached[1] {
		t.Errorf("parser called %d times, cached %v: want one preparation and one hit", b.parser.calls.Load(), cached)
	}
	p0, err0 := avatars[0].FrameBGR(0)
	p1, err1 := avatars[1].FrameBGR(0)
	if err0 != nil || err1 != nil || !bytes.Equal(p0.Pix, p1.Pix) || !slices.Equal(avatars[0].Frames[0].Latent, avatars[1].Frames[0].Latent) {
		t.Errorf("the two avatars differ (%v, %v)", err0, err1)
	}
	if got := storedEntries(t, dir); !slices.Equal(got, []string{key}) {
		t.Errorf("cache dir holds %v", got)
	}
}

func TestCacheNeverEvictsAnEntryAnotherProcessHolds(t *testing.T) {
	b := setupCache(t)
	probe, err := OpenCache(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := b.get(t, probe, 0)
	a.Close()
	size := probe.Size()

	dir := t.TempDir()
	ca, err := OpenCache(dir, size*3/2)
	if err != nil {
		t.Fatal(err)
	}
	held, _ := b.get(t, ca, 0)
	defer held.Close()
	// B opens the directory with 0 in it, idle as far as B knows.
	cb, err := OpenCache(dir, size*3/2)
	if err != nil {
		t.Fatal(err)
	}
	a, _ = b.get(t, cb, 1)
	a.Close() // over the cap: B evicts what it may
	if _, err := os.Stat(filepath.Join(dir, b.key(t, 0), manifestFile)); err != nil {
		t.Fatalf("B evicted the entry A holds: %v", err)
	}
	if f, err := held.FrameBGR(0); err != nil || len(f.Pix) != 512*512*3 {
		t.Fatalf("held avatar unreadable: %v", err)
	}
	if slices.Contains(cb.Keys(), b.key(t, 1)) && slices.Contains(cb.Keys(), b.key(t, 0)) {
		t.Errorf("B keeps both entries over the cap: %v", cb.Keys())
	}
	held.Close()
	// Released, 0 is evictable again by either process.
	a, cached := b.get(t, cb, 2)
	a.Close()
	if cached || len(storedEntries(t, dir)) != 1 || cb.Size() > size*3/2 {
		t.Errorf("after the release: cache dir holds %v, B's size %d", storedEntries(t, dir), cb.Size())
	}
}

// A cache fault never fails a Get whose avatar can be prepared.
func TestCacheFaultsFallBack(t *testing.T) {
	cases := []struct {
		name string
		// before runs after OpenCache, during runs once during the
		// preparation (from progress), before the entry is stored.
		before func(t *testing.T, dir string)
		during func(t *testing.T, b cacheBundle, dir string)
		stored bool // the entry ends up in the cache anyway
		quiet  bool // nothing worth a warning happened
	}{
		{name: "cache dir replaced by a file", before: func(t *testing.T, dir string) {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dir, []byte("not a directory"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "temporary directory gone before the manifest", during: func(t *testing.T, _ cacheBundle, dir string) {
			for _, n := range entryDirs(t, dir) {
				if strings.HasPrefix(n, tmpPrefix) {
					os.RemoveAll(filepath.Join(dir, n))
				}
			}
		}},
		{name: "cache dir moved away during the preparation", during: func(t *testing.T, _ cacheBundle, dir string) {
			if err := os.Rename(dir, dir+"-moved"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir + "-moved") })
		}},
		{name: "rename target is a non-empty directory", stored: true, during: func(t *testing.T, _ cacheBundle, dir string) {
			if err := os.MkdirAll(filepath.Join(dir, preparedKey(t, dir), "junk"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "another process stored the key without the lock", stored: true, quiet: true, during: func(t *testing.T, b cacheBundle, dir string) {
			// Its entry, prepared elsewhere, appears under the key.
			other := t.TempDir()
			c, err := OpenCache(other, 0)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := b.get(t, c, 0)
			a.Close()
			if err := os.Rename(filepath.Join(other, b.key(t, 0)), filepath.Join(dir, b.key(t, 0))); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "rename target is a file", stored: true, during: func(t *testing.T, _ cacheBundle, dir string) {
			if err := os.WriteFile(filepath.Join(dir, preparedKey(t, dir)), []byte("junk"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := setupCache(t)
			tmpDir := t.TempDir()
			t.Setenv("TMPDIR", tmpDir)
			dir := filepath.Join(t.TempDir(), "avatars")
			var logs bytes.Buffer
			var mu sync.Mutex
			c, err := OpenCache(dir, 0, WithLogger(slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))))
			if err != nil {
				t.Fatal(err)
			}
			if tc.before != nil {
				tc.before(t, dir)
			}
			var once sync.Once
			a, cached, err := c.Get(context.Background(), b.key(t, 0), b.still, b.opts(0), b.nets, func(done, total int) {
				if tc.during != nil {
					once.Do(func() { tc.during(t, b, dir) })
				}
			})
			if err != nil {
				t.Fatalf("Get failed on a cache fault: %v", err)
			}
			if cached || len(a.Frames) != 1 || !a.Frames[0].HasFace || a.Key != b.key(t, 0) {
				t.Fatalf("cached %v, avatar %q with %d frames", cached, a.Key, len(a.Frames))
			}
			if f, err := a.FrameBGR(0); err != nil || len(f.Pix) != 512*512*3 {
				t.Fatalf("avatar unreadable: %v", err)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if left := entryDirs(t, tmpDir); len(left) != 0 {
				t.Errorf("the fallback left %v in the temporary directory", left)
			}
			mu.Lock()
			if warned := strings.Contains(logs.String(), "level=WARN"); warned == tc.quiet {
				t.Errorf("warning logged: %v, want %v: %s", warned, !tc.quiet, logs.String())
			}
			mu.Unlock()
			if tc.stored {
				if got := storedEntries(t, dir); !slices.Equal(got, []string{b.key(t, 0)}) {
					t.Errorf("cache dir holds %v", got)
				}
			}
		})
	}
}

// preparedKey returns the key of the one preparation under way in dir.
func preparedKey(t *testing.T, dir string) string {
	t.Helper()
	for _, n := range entryDirs(t, dir) {
		if strings.HasPrefix(n, tmpPrefix) {
			key := strings.TrimPrefix(n, tmpPrefix)
			return key[:strings.LastIndexByte(key, '-')]
		}
	}
	t.Fatalf("no preparation under way in %v", entryDirs(t, dir))
	return ""
}

// TestCacheCrossProcess shares a cache directory with a second process
// (this test binary re-run as TestCacheHelperProcess) preparing the same
// avatar at the same time: one of them prepares it, the other waits and
// takes the entry.
func TestCacheCrossProcess(t *testing.T) {
	b := setupCache(t)
	dir := t.TempDir()
	c, err := OpenCache(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	started := filepath.Join(t.TempDir(), "started")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCacheHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir, helperStartedEnv+"="+started, helperStillEnv+"="+b.still)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the helper is preparing, then ask for the same avatar.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the helper never started preparing:\n%s", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	a, cached, err := c.Get(context.Background(), b.key(t, 0), b.still, b.opts(0), b.nets, nil)
	werr := cmd.Wait()
	if werr != nil || !strings.Contains(out.String(), "helper: prepared") {
		t.Fatalf("helper: %v\n%s", werr, out.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if !cached || b.parser.calls.Load() != 0 {
		t.Errorf("cached %v, parser calls here %d: want the helper's entry", cached, b.parser.calls.Load())
	}
	if got := storedEntries(t, dir); !slices.Equal(got, []string{b.key(t, 0)}) {
		t.Errorf("cache dir holds %v", got)
	}
}

const (
	helperDirEnv     = "MUSETALK_AVATAR_CACHE_HELPER_DIR"
	helperStartedEnv = "MUSETALK_AVATAR_CACHE_HELPER_STARTED"
	helperStillEnv   = "MUSETALK_AVATAR_CACHE_HELPER_STILL"
)

// startMarker writes a file on its first parse, then parses slowly.
type startMarker struct {
	FaceParser
	path string
	once *sync.Once
}

func (p startMarker) Parse(ctx context.Context, rgb *media.Image8, size int) (*media.Image8, error) {
	p.once.Do(func() { os.WriteFile(p.path, nil, 0o644) })
	time.Sleep(300 * time.Millisecond)
	return p.FaceParser.Parse(ctx, rgb, size)
}

// TestCacheHelperProcess is TestCacheCrossProcess's second process.
func TestCacheHelperProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("runs only as TestCacheCrossProcess's helper")
	}
	nets := testNets(t)
	b := cacheBundle{still: os.Getenv(helperStillEnv), nets: nets, parser: nets.Parser.(*fakeParser)}
	c, err := OpenCache(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	nets.Parser = startMarker{b.nets.Parser, os.Getenv(helperStartedEnv), new(sync.Once)}
	a, cached, err := c.Get(context.Background(), b.key(t, 0), b.still, b.opts(0), nets, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if cached {
		t.Fatal("the helper found the entry cached")
	}
	fmt.Println("helper: prepared")
}
