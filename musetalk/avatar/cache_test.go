package avatar

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

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
	opt := Options{Version: "v1"}
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
