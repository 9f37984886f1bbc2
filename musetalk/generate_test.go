package musetalk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/engine"
)

// fakeNet makes each face a uniform 16×16 image whose blue value is the
// item's first latent value and whose green value is its first prompt
// value, and records the batches it saw.
type fakeNet struct {
	mu      sync.Mutex
	batches []int // items per call
	ll      int
	onCall  func(call int) error // called before each batch; may fail it
}

func (f *fakeNet) latentLen() int { return f.ll }

func (f *fakeNet) generate(ctx context.Context, latents, prompts []float32, n int, _ *Stats) ([]*media.Image8, error) {
	f.mu.Lock()
	call := len(f.batches)
	f.batches = append(f.batches, n)
	f.mu.Unlock()
	if f.onCall != nil {
		if err := f.onCall(call); err != nil {
			return nil, err
		}
	}
	pl := len(prompts) / n
	out := make([]*media.Image8, n)
	for i := range n {
		im := media.NewImage8(16, 16, 3)
		for p := 0; p < len(im.Pix); p += 3 {
			im.Pix[p] = uint8(latents[i*f.ll])
			im.Pix[p+1] = uint8(prompts[i*pl])
			im.Pix[p+2] = 7
		}
		out[i] = im
	}
	return out, nil
}

// fakeAudio's prompt for video frame f is filled with f.
type fakeAudio struct{ n int }

func (a fakeAudio) promptLen() int { return a.n }

func (a fakeAudio) prompts(dst []float32, frames []int) {
	for i, f := range frames {
		for j := range a.n {
			dst[i*a.n+j] = float32(f)
		}
	}
}

// sinkFunc adapts a function to frameSink.
type sinkFunc func(rgb []uint8) error

func (s sinkFunc) WriteFrame(rgb []uint8) error { return s(rgb) }

// testAvatar builds n source frames of w×h whose pixels encode their index;
// frames listed in noFace have no face. Face frames share one face box
// and a mask that is 255 on the box's lower half.
func testAvatar(w, h, n int, noFace ...int) ([]sourceFrame, []*media.Image8) {
	face := media.Box{8, 8, 24, 24}
	crop, _ := media.CropBox(face, 1.5)
	mask := media.NewImage8(crop[2]-crop[0], crop[3]-crop[1], 1)
	for y := face[1] + 8; y < face[3]; y++ {
		for x := face[0]; x < face[2]; x++ {
			mask.Pix[(y-crop[1])*mask.W+x-crop[0]] = 255
		}
	}
	var src []sourceFrame
	var pix []*media.Image8
	for i := range n {
		im := media.NewImage8(w, h, 3)
		for p := range im.Pix {
			px := p / 3
			im.Pix[p] = uint8(10*i + 3*(px%w) + 5*(px/w) + p%3) // textured, as a face is
		}
		pix = append(pix, im)
		lat := make([]float32, 4)
		lat[0] = float32(200 + i)
		sf := sourceFrame{hasFace: !slices.Contains(noFace, i), face: face, crop: crop, latent: lat, mask: mask}
		if !sf.hasFace {
			sf.latent, sf.mask = nil, nil
		}
		src = append(src, sf)
	}
	return src, pix
}

type genBundle struct {
	gen      *generation
	net      *fakeNet
	out      [][]uint8
	progress []int
	reads    int
}

func setupGen(t *testing.T, frames, batch int, noFace ...int) *genBundle {
	t.Helper()
	src, pix := testAvatar(40, 36, 3, noFace...)
	b := &genBundle{net: &fakeNet{ll: 4}}
	b.gen = &generation{
		src: src,
		pixels: func(i int) (*media.Image8, error) {
			b.reads++
			return pix[i], nil
		},
		audio:  fakeAudio{n: 6},
		net:    b.net,
		frames: frames,
		batch:  batch,
		sink: sinkFunc(func(rgb []uint8) error {
			b.out = append(b.out, slices.Clone(rgb))
			return nil
		}),
		progress: func(done int) { b.progress = append(b.progress, done) },
	}
	return b
}

func TestGenerationCycleBatchesAndPassThrough(t *testing.T) {
	t.Parallel()
	const frames, batch = 11, 4
	b := setupGen(t, frames, batch, 1)
	if err := b.gen.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(b.out) != frames {
		t.Fatalf("%d frames written, want %d", len(b.out), frames)
	}
	// Cycle 0 1 2 2 1 0 0 1 2 2 1; source frame 1 has no face, so each
	// batch holds only the face frames among its 4.
	wantBatches := []int{3, 2, 2}
	if !slices.Equal(b.net.batches, wantBatches) {
		t.Errorf("network batches %v, want %v", b.net.batches, wantBatches)
	}
	if !slices.Equal(b.progress, []int{4, 8, 11}) {
		t.Errorf("progress %v, want [4 8 11]", b.progress)
	}
	src, pix := testAvatar(40, 36, 3, 1)
	for i, rgb := range b.out {
		k := cycleIndex(i, 3)
		want := pix[k].SwapRB().Pix
		f := src[k]
		for y := range 36 {
			for x := range 40 {
				p := (y*40 + x) * 3
				got := rgb[p : p+3]
				inBlend := f.hasFace && x >= f.face[0] && x < f.face[2] && y >= f.face[1]+8 && y < f.face[3]
				if !inBlend {
					if !slices.Equal(got, want[p:p+3]) {
						t.Fatalf("frame %d (source %d) pixel (%d,%d) = %v, want the source's %v", i, k, x, y, got, want[p:p+3])
					}
					continue
				}
				// The face: BGR (200+k, frame i, 7) shown as RGB.
				if exp := []uint8{7, uint8(i), uint8(200 + k)}; !slices.Equal(got, exp) {
					t.Fatalf("frame %d (source %d) face pixel (%d,%d) = %v, want %v", i, k, x, y, got, exp)
				}
			}
		}
	}
	if b.reads > frames {
		t.Errorf("%d source frame reads for %d frames", b.reads, frames)
	}
}

func TestGenerationNoFaceAtAll(t *testing.T) {
	t.Parallel()
	b := setupGen(t, 5, 2, 0, 1, 2)
	if err := b.gen.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(b.net.batches) != 0 {
		t.Errorf("network ran %v with no face in the avatar", b.net.batches)
	}
	if len(b.out) != 5 {
		t.Errorf("%d frames, want 5", len(b.out))
	}
}

func TestGenerationCancelStopsWithinABatch(t *testing.T) {
	t.Parallel()
	const frames, batch = 200, 5
	b := setupGen(t, frames, batch)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.net.onCall = func(call int) error {
		if call == 3 {
			cancel()
		}
		return nil
	}
	err := b.gen.run(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v, want context.Canceled", err)
	}
	// The batch running at the cancel may finish; the one after it may
	// have been started already; nothing more.
	if n := len(b.net.batches); n > 5 {
		t.Errorf("%d batches ran after a cancel during batch 4", n)
	}
	if len(b.out) > 4*batch {
		t.Errorf("%d frames written after a cancel during batch 4", len(b.out))
	}
	for i := 1; i < len(b.progress); i++ {
		if b.progress[i] < b.progress[i-1] {
			t.Fatalf("progress went back: %v", b.progress)
		}
	}
}

func TestGenerationErrors(t *testing.T) {
	t.Parallel()
	t.Run("network", func(t *testing.T) {
		t.Parallel()
		b := setupGen(t, 30, 4)
		boom := errors.New("device lost")
		b.net.onCall = func(call int) error {
			if call == 2 {
				return boom
			}
			return nil
		}
		if err := b.gen.run(context.Background()); !errors.Is(err, boom) {
			t.Fatalf("run: %v, want the network's error", err)
		}
		if len(b.net.batches) != 3 || len(b.out) > 8 {
			t.Errorf("%d batches, %d frames after a failure in batch 3", len(b.net.batches), len(b.out))
		}
	})
	t.Run("sink", func(t *testing.T) {
		t.Parallel()
		b := setupGen(t, 300, 4)
		full := errors.New("disk full")
		n := 0
		b.gen.sink = sinkFunc(func([]uint8) error {
			if n++; n == 6 {
				return full
			}
			return nil
		})
		if err := b.gen.run(context.Background()); !errors.Is(err, full) {
			t.Fatalf("run: %v, want the sink's error", err)
		}
		if len(b.net.batches) > 4 {
			t.Errorf("the networks ran %d batches after the sink failed in batch 2", len(b.net.batches))
		}
	})
	t.Run("pixels", func(t *testing.T) {
		t.Parallel()
		b := setupGen(t, 10, 4)
		b.gen.pixels = func(i int) (*media.Image8, error) { return nil, fmt.Errorf("frame file truncated") }
		if err := b.gen.run(context.Background()); err == nil {
			t.Fatal("run succeeded without source pixels")
		}
	})
	t.Run("latent size", func(t *testing.T) {
		t.Parallel()
		b := setupGen(t, 10, 4)
		b.net.ll = 8
		if err := b.gen.run(context.Background()); err == nil {
			t.Fatal("run succeeded with latents of the wrong size")
		}
	})
}

func TestDecodedToBGR(t *testing.T) {
	t.Parallel()
	// Two 1×2 images, RGB planes.
	px := []float32{
		-1, 1, // R
		0, 2, // G
		-3, 0.0039215686, // B: 0.50196 → 127.99.. → 128
		1, -1,
		-0.00392157, float32Nan(),
		0.5, 0.1,
	}
	got := decodedToBGR(px, 2, 1, 2)
	want := [][]uint8{
		{0, 128, 0, 128, 255, 255},
		{191, 127, 255, 140, 0, 0},
	}
	for i := range got {
		if !slices.Equal(got[i].Pix, want[i]) {
			t.Errorf("image %d: %v, want %v", i, got[i].Pix, want[i])
		}
	}
}

func float32Nan() float32 {
	var z float32
	return z / z
}

// checkPanicError checks the error a recovered panic becomes: retryable
// for the worker, naming the panic's value and where it happened (frame
// names and source files, no directories).
func checkPanicError(t *testing.T, err error, value, frame string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error after a panic")
	}
	if retryable, classified := engine.Classify(err); !retryable || !classified {
		t.Errorf("%v: retryable %v, classified %v; want a retryable failure", err, retryable, classified)
	}
	if pe := (*PanicError)(nil); !errors.As(err, &pe) || len(pe.Stack) == 0 {
		t.Errorf("%v: no *PanicError with a stack", err)
	}
	msg := err.Error()
	t.Log(msg)
	if !strings.Contains(msg, value) || !strings.Contains(msg, frame) {
		t.Errorf("%q does not name the panic %q and the frame %q", msg, value, frame)
	}
	if wd, _ := os.Getwd(); strings.Contains(msg, wd) || strings.Contains(msg, os.TempDir()) {
		t.Errorf("%q holds file paths", msg)
	}
}

// stopped checks that nothing calls the network once run has returned.
func (b *genBundle) stopped(t *testing.T) {
	t.Helper()
	b.net.mu.Lock()
	n := len(b.net.batches)
	b.net.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	b.net.mu.Lock()
	defer b.net.mu.Unlock()
	if len(b.net.batches) != n {
		t.Errorf("the networks ran %d more batches after run returned", len(b.net.batches)-n)
	}
}

func TestGenerationRecoversPanics(t *testing.T) {
	t.Parallel()
	t.Run("network", func(t *testing.T) {
		t.Parallel()
		b := setupGen(t, 30, 4)
		b.net.onCall = func(call int) error {
			if call == 2 {
				var m map[int]int
				m[call] = 1 // a runtime error, as an op's bug would raise
			}
			return nil
		}
		err := b.gen.run(context.Background())
		checkPanicError(t, err, "assignment to entry in nil map", "generate_test.go:")
		if !strings.Contains(err.Error(), "frames 8-11") {
			t.Errorf("%q does not name the batch", err)
		}
		if len(b.out) > 8 {
			t.Errorf("%d frames written after a panic in batch 3", len(b.out))
		}
		b.stopped(t)
	})
	t.Run("compositing", func(t *testing.T) {
		t.Parallel()
		b := setupGen(t, 300, 4)
		n := 0
		b.gen.sink = sinkFunc(func([]uint8) error {
			if n++; n == 6 {
				panic("sink bug")
			}
			return nil
		})
		err := b.gen.run(context.Background())
		checkPanicError(t, err, "sink bug", "generate_test.go:")
		b.stopped(t)
	})
}

// panicBackend is a backend whose Conv2D panics while armed.
type panicBackend struct {
	kernels.Backend
	armed atomic.Bool
}

func (b *panicBackend) Conv2D(dst, x, w, bias *kernels.Tensor, p kernels.Conv2DParams) {
	if b.armed.Load() {
		panic("injected Conv2D fault")
	}
	b.Backend.Conv2D(dst, x, w, bias, p)
}

// TestEnginePanicInAnOpIsRetryable makes an op panic on the network
// goroutine of a real render: the job fails retryably, no output is left,
// and the engine renders the next job.
func TestEnginePanicInAnOpIsRetryable(t *testing.T) {
	t.Parallel()
	needFFmpeg(t)
	dir := t.TempDir()
	cb, err := cpu.New(cpu.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	be := &panicBackend{Backend: cb}
	e := NewEngine(EngineOptions{Options: Options{WeightsDir: tinyWeights(t), CacheDir: filepath.Join(dir, "c"), Backend: be,
		Preset: "ultrafast", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}})
	defer e.Close()
	writePNG(t, filepath.Join(dir, "a.png"), 64, 64)
	writeWAV(t, filepath.Join(dir, "a.wav"), 0.3)
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	job := &engine.Job{ID: "j", AvatarPath: filepath.Join(dir, "a.png"), AudioPath: filepath.Join(dir, "a.wav"),
		OutputPath: filepath.Join(out, "o.mp4"), Params: protocol.JobParams{FaceBox: []int{16, 16, 48, 48}, ParsingMode: "raw"}}
	err = e.Run(context.Background(), job, func(p protocol.Progress) {
		if p.Stage == StageGenerate {
			be.armed.Store(true) // the UNet's convolutions, on the network goroutine
		}
	})
	checkPanicError(t, err, "injected Conv2D fault", "Conv2D")
	if left, _ := os.ReadDir(out); len(left) != 0 {
		t.Errorf("the failed render left %v", left)
	}
	be.armed.Store(false)
	if err := e.Run(context.Background(), job, nil); err != nil {
		t.Fatalf("the next render: %v", err)
	}
	if st, err := os.Stat(job.OutputPath); err != nil || st.Size() == 0 {
		t.Errorf("the next render wrote no output: %v", err)
	}
}
