package cpu

import (
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/kernels"
)

func newBackend(t testing.TB, o Options) *Backend {
	t.Helper()
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestSIMDMatchesPortable runs the same convolutions and linear layers on
// the portable path and on each SIMD path and compares them: the paths
// block and round differently, but must agree to float32 accuracy.
func TestSIMDMatchesPortable(t *testing.T) {
	ref := newBackend(t, Options{ISA: ISAGo, Threads: 2})
	rng := rand.New(rand.NewPCG(3, 4))
	x := randTensor(rng, 2, 37, 19, 23)
	w := randTensor(rng, 45, 37, 3, 3)
	bias := randTensor(rng, 45)
	p := kernels.Conv2DPad(1, 1)
	want := kernels.New(p.OutShape(x, w)...)
	ref.Conv2D(want, x, w, bias, p)
	lx, lw := randTensor(rng, 3, 129, 300), randTensor(rng, 77, 300)
	lwant := kernels.New(3, 129, 77)
	ref.Linear(lwant, lx, lw, nil)
	for _, isa := range []ISA{ISAAVX2, ISAAVX512} {
		t.Run(isa.String(), func(t *testing.T) {
			if !isa.Available() {
				t.Skipf("%v not available", isa)
			}
			b := newBackend(t, Options{ISA: isa, Threads: 2})
			got := kernels.New(want.Shape()...)
			b.Conv2D(got, x, w, bias, p)
			assertClose(t, got.Data(), want.Data(), 2e-5)
			lgot := kernels.New(lwant.Shape()...)
			b.Linear(lgot, lx, lw, nil)
			assertClose(t, lgot.Data(), lwant.Data(), 2e-5)
		})
	}
}

// assertClose fails unless |got−want| ≤ rel·max|want| everywhere.
func assertClose(t *testing.T, got, want []float32, rel float64) {
	t.Helper()
	var scale float64
	for _, v := range want {
		scale = math.Max(scale, math.Abs(float64(v)))
	}
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); d > rel*scale || math.IsNaN(float64(got[i])) {
			t.Fatalf("element %d: got %g want %g (|d| %g > %g)", i, got[i], want[i], d, rel*scale)
		}
	}
}

func TestInvalidArgumentsPanic(t *testing.T) {
	b := newBackend(t, Options{Threads: 1})
	x4 := kernels.New(1, 4, 8, 8)
	for name, f := range map[string]func(){
		"conv channels":  func() { b.Conv2D(kernels.New(1, 2, 8, 8), x4, kernels.New(2, 3, 3, 3), nil, kernels.Conv2DPad(1, 1)) },
		"conv dst shape": func() { b.Conv2D(kernels.New(1, 2, 7, 8), x4, kernels.New(2, 4, 3, 3), nil, kernels.Conv2DPad(1, 1)) },
		"conv bias": func() {
			b.Conv2D(kernels.New(1, 2, 8, 8), x4, kernels.New(2, 4, 3, 3), kernels.New(3), kernels.Conv2DPad(1, 1))
		},
		"conv too small": func() {
			b.Conv2D(kernels.New(1, 2, 1, 1), kernels.New(1, 4, 2, 2), kernels.New(2, 4, 3, 3), nil, kernels.Conv2DParams{})
		},
		"conv negative pad": func() {
			b.Conv2D(kernels.New(1, 2, 8, 8), x4, kernels.New(2, 4, 1, 1), nil, kernels.Conv2DParams{PadTop: -1, PadBottom: 1})
		},
		"linear K": func() { b.Linear(kernels.New(3, 5), kernels.New(3, 4), kernels.New(5, 3), nil) },
		"matmul K": func() {
			b.MatMul(kernels.New(2, 3, 5), kernels.New(2, 3, 4), kernels.New(2, 3, 5), kernels.MatMulParams{})
		},
		"matmul batch": func() {
			b.MatMul(kernels.New(2, 3, 5), kernels.New(2, 3, 4), kernels.New(3, 4, 5), kernels.MatMulParams{})
		},
		"attention heads": func() {
			b.Attention(kernels.New(1, 2, 6), kernels.New(1, 2, 6), kernels.New(1, 3, 6), kernels.New(1, 3, 6), kernels.AttentionParams{Heads: 4})
		},
		"groupnorm groups": func() { b.GroupNorm(x4, x4, nil, nil, kernels.GroupNormParams{Groups: 3}) },
		"add broadcast":    func() { b.Add(x4, x4, kernels.New(3, 1, 1)) },
		"permute repeated": func() { b.Permute(x4, x4, 0, 0, 1, 2) },
		"concat sizes":     func() { b.Concat(kernels.New(1, 5, 8, 8), 1, x4, x4) },
		"geglu odd":        func() { b.GEGLU(kernels.New(1, 2), kernels.New(1, 5)) },
		"device tensor":    func() { b.ReLU(kernels.NewDevice(struct{}{}, 0, 3), kernels.New(3)) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatal("no panic")
				}
				if s, ok := r.(string); !ok || !strings.HasPrefix(s, "cpu: ") {
					t.Fatalf("panic %v does not name the backend and op", r)
				}
			}()
			f()
		})
	}
}

func TestAllocReusesFreedBuffers(t *testing.T) {
	b := newBackend(t, Options{Threads: 1})
	x := b.Alloc(4, 5)
	first := &x.Data()[0]
	b.Free(x)
	y := b.Alloc(2, 10) // same length, other shape
	if &y.Data()[0] != first {
		t.Fatal("Alloc after Free did not reuse the buffer")
	}
	z := b.Alloc(2, 10)
	if &z.Data()[0] == first {
		t.Fatal("Alloc handed out a buffer that is in use")
	}
	if uintptr(unsafePointer(z.Data()))%64 != 0 {
		t.Fatal("Alloc buffer not 64-byte aligned")
	}
}

// TestConcurrentOps runs ops from several goroutines on one backend; each
// result must match a run on a private backend (and -race must stay quiet).
func TestConcurrentOps(t *testing.T) {
	shared := newBackend(t, Options{Threads: 2})
	solo := newBackend(t, Options{Threads: 1})
	rng := rand.New(rand.NewPCG(5, 6))
	type job struct{ x, w, want *kernels.Tensor }
	var jobs []job
	for range 6 {
		j := job{x: randTensor(rng, 1, 16, 20, 20), w: randTensor(rng, 24, 16, 3, 3), want: kernels.New(1, 24, 20, 20)}
		solo.Conv2D(j.want, j.x, j.w, nil, kernels.Conv2DPad(1, 1))
		jobs = append(jobs, j)
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() {
			for range 3 {
				got := shared.Alloc(1, 24, 20, 20)
				shared.Conv2D(got, j.x, j.w, nil, kernels.Conv2DPad(1, 1))
				for i, v := range got.Data() {
					if math.Abs(float64(v-j.want.Data()[i])) > 1e-4 {
						t.Errorf("concurrent conv element %d: %g want %g", i, v, j.want.Data()[i])
						return
					}
				}
				shared.Free(got)
			}
		})
	}
	wg.Wait()
}

func TestWorkerPanicReachesCaller(t *testing.T) {
	w := newWorkers(3)
	defer w.close()
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("recovered %v, want boom", r)
		}
	}()
	w.parallel(100, func(_ *scratch, i int) {
		if i == 57 {
			panic("boom")
		}
	})
}

func TestParallelRunsEveryItemOnce(t *testing.T) {
	w := newWorkers(4)
	defer w.close()
	counts := make([]int32, 1000)
	var mu sync.Mutex
	w.parallel(len(counts), func(_ *scratch, i int) {
		mu.Lock()
		counts[i]++
		mu.Unlock()
	})
	for i, c := range counts {
		if c != 1 {
			t.Fatalf("item %d ran %d times", i, c)
		}
	}
}

func TestCloseStopsWorkers(t *testing.T) {
	before := runtime.NumGoroutine()
	b, err := New(Options{Threads: 8})
	if err != nil {
		t.Fatal(err)
	}
	b.ReLU(kernels.New(1<<16), kernels.New(1<<16))
	b.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewRejectsUnavailableISA(t *testing.T) {
	for _, isa := range []ISA{ISAAVX2, ISAAVX512, ISA(99)} {
		if isa.Available() {
			continue
		}
		if _, err := New(Options{ISA: isa}); err == nil {
			t.Fatalf("New accepted %v", isa)
		}
	}
	b := newBackend(t, Options{})
	if b.ISA() != BestISA() || !strings.HasPrefix(b.Name(), "cpu/") || b.Threads() != runtime.GOMAXPROCS(0) {
		t.Fatalf("defaults: %s with %d threads", b.Name(), b.Threads())
	}
	for _, op := range kernels.AllOps() {
		if !b.Supports(op) {
			t.Fatalf("CPU backend does not support %v", op)
		}
	}
}

// TestMath32 checks the float32 exp and GELU against float64 over their
// whole useful range.
func TestMath32(t *testing.T) {
	for x := float32(-104); x < 89; x += 0.00173 {
		want := math.Exp(float64(x))
		if d := math.Abs(float64(exp32(x))-want) / want; d > 2e-7 && want > 1e-37 && want < math.MaxFloat32 {
			t.Fatalf("exp32(%g) = %g, want %g (rel %g)", x, exp32(x), want, d)
		}
	}
	if !math.IsInf(float64(exp32(100)), 1) || exp32(-200) != 0 {
		t.Fatal("exp32 overflow/underflow")
	}
	for x := float32(-12); x < 12; x += 0.000731 {
		want := 0.5 * float64(x) * math.Erfc(-float64(x)/math.Sqrt2)
		if d := math.Abs(float64(gelu32(x)) - want); d > 3e-7*math.Max(1, math.Abs(want)) && d > 2e-6*math.Abs(want) {
			t.Fatalf("gelu32(%g) = %g, want %g", x, gelu32(x), want)
		}
	}
}
