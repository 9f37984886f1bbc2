package cuda_test

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/kernels/cuda"
	"github.com/avatargen/musetalk/kernels/cuda/emu"
)

// spyDriver counts allocations and can fail chosen calls.
type spyDriver struct {
	cuda.Driver
	allocs, frees int
	failLaunch    string // kernel whose launches fail
	failSync      error
	launched      []string // kernel names, in order
}

func (s *spyDriver) Alloc(n int) (cuda.DevPtr, error) {
	s.allocs++
	return s.Driver.Alloc(n)
}

func (s *spyDriver) Free(p cuda.DevPtr) error {
	s.frees++
	return s.Driver.Free(p)
}

func (s *spyDriver) Launch(k string, grid, block cuda.Dim3, shared int, args ...any) error {
	if k == s.failLaunch {
		return errors.New("injected launch failure")
	}
	s.launched = append(s.launched, k)
	return s.Driver.Launch(k, grid, block, shared, args...)
}

func (s *spyDriver) Sync() error {
	if s.failSync != nil {
		return s.failSync
	}
	return s.Driver.Sync()
}

func newSpy(t *testing.T, opts cuda.Options) (*cuda.Backend, *spyDriver) {
	t.Helper()
	s := &spyDriver{Driver: emu.New()}
	b, err := cuda.New(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, s
}

func random(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// TestPoolReuse runs a small layer twice: the second pass allocates no
// device memory.
func TestPoolReuse(t *testing.T) {
	b, spy := newSpy(t, cuda.Options{})
	rng := rand.New(rand.NewPCG(1, 1))
	w := b.Weight(random(rng, 16*8), 16, 8)
	pass := func() {
		x := kernels.Upload(b, random(rng, 5*8), 5, 8)
		h := b.Alloc(5, 16)
		b.Linear(h, x, w, nil)
		b.Softmax(h, h)
		o := b.Alloc(5, 16)
		b.GELU(o, h)
		b.Free(x)
		b.Free(h)
		b.Free(o)
	}
	pass()
	first := spy.allocs
	pass()
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if spy.allocs != first {
		t.Errorf("second pass allocated %d times", spy.allocs-first)
	}
	b.ReleasePool()
	if spy.frees != first-1 { // all but the weight
		t.Errorf("ReleasePool freed %d allocations, want %d", spy.frees, first-1)
	}
}

// TestDeviceMemory follows the allocator's bytes through Alloc, Free,
// the pool bound and ReleasePool.
func TestDeviceMemory(t *testing.T) {
	b, _ := newSpy(t, cuda.Options{MaxPoolBytes: 2048})
	want := func(inUse, pooled int64) {
		t.Helper()
		if u, p := b.DeviceMemory(); u != inUse || p != pooled {
			t.Errorf("DeviceMemory() = %d in use, %d pooled; want %d, %d", u, p, inUse, pooled)
		}
	}
	want(0, 0)
	x, y, z := b.Alloc(200), b.Alloc(200), b.Alloc(400) // 1024, 1024, 1792 bytes after rounding
	want(3840, 0)
	b.Free(x)
	b.Free(y)
	want(1792, 2048)
	b.Free(z) // beyond the pool's bound: back to the driver
	want(0, 2048)
	b.ReleasePool()
	want(0, 0)
}

func TestMaxPoolBytes(t *testing.T) {
	b, spy := newSpy(t, cuda.Options{MaxPoolBytes: 1024})
	x, y := b.Alloc(200), b.Alloc(200) // 1024 bytes each after rounding
	b.Free(x)
	b.Free(y)
	if spy.frees != 1 {
		t.Errorf("%d frees reached the driver, want 1 (one buffer fits the pool)", spy.frees)
	}
}

// TestErrorsSurfaceAtSync checks that a failed launch is reported, naming
// the op, by Sync and Download, and sticks.
func TestErrorsSurfaceAtSync(t *testing.T) {
	b, spy := newSpy(t, cuda.Options{})
	spy.failLaunch = "softmax_rows_f32"
	x := kernels.Upload(b, []float32{1, 2, 3}, 1, 3)
	b.Softmax(x, x) // returns: the error is asynchronous
	err := b.Sync()
	if err == nil || !strings.Contains(err.Error(), "cuda: Softmax: injected launch failure") {
		t.Fatalf("Sync = %v", err)
	}
	if err2 := b.Download(make([]float32, 3), x); err2 != err {
		t.Errorf("Download = %v, want the sticky %v", err2, err)
	}

	b2, spy2 := newSpy(t, cuda.Options{})
	spy2.failSync = errors.New("device lost")
	if err := b2.Sync(); err == nil || !strings.Contains(err.Error(), "device lost") {
		t.Errorf("Sync = %v, want the driver's error", err)
	}
}

func TestPanics(t *testing.T) {
	b := newEmu(t, cuda.Options{})
	other := newEmu(t, cuda.Options{})
	x := b.Alloc(2, 3)
	freed := b.Alloc(2, 3)
	b.Free(freed)
	for _, c := range []struct {
		name, want string
		f          func()
	}{
		{"host tensor", "is not a tensor of backend cuda/emu", func() { b.ReLU(x, kernels.New(2, 3)) }},
		{"other backend", "is not a tensor of backend", func() { b.ReLU(x, other.Alloc(2, 3)) }},
		{"freed", "was freed", func() { b.ReLU(x, freed) }},
		{"double free", "was freed", func() { b.Free(freed) }},
		{"free a view", "is a view", func() { b.Free(x.Slice(1, 2)) }},
		{"shape", "want shape [2 3]", func() { b.ReLU(b.Alloc(3, 2), x) }},
		{"broadcast", "cannot broadcast", func() { b.Add(x, x, b.Alloc(2, 1, 3)) }},
		{"matmul K", "disagree on K", func() { b.MatMul(b.Alloc(2, 2), x, x, kernels.MatMulParams{}) }},
		{"upload length", "Upload: 5 floats", func() { b.Upload(x, make([]float32, 5)) }},
	} {
		func() {
			defer func() {
				r := recover()
				msg, _ := r.(string)
				if !strings.Contains(msg, c.want) {
					t.Errorf("%s: panic %v, want one containing %q", c.name, r, c.want)
				}
			}()
			c.f()
		}()
	}
	// The whole op table: a GPU build refuses a backend that lacks an op.
	for _, op := range kernels.AllOps() {
		if !b.Supports(op) {
			t.Errorf("Supports(%v) = false", op)
		}
	}
}

// TestAgainstCPU covers launch paths the shared cases do not reach: more
// than four merged broadcast dimensions (several launches), softmax blocks
// looping over rows, and inputs that are views at an offset. The CPU
// backend is the reference; these ops round the same way on both.
func TestAgainstCPU(t *testing.T) {
	g := newEmu(t, cuda.Options{})
	c, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(2, 2))
	both := func(data []float32, shape ...int) (*kernels.Tensor, *kernels.Tensor) {
		return kernels.Upload(g, data, shape...), kernels.Upload(c, data, shape...)
	}
	compare := func(name string, gt, ct *kernels.Tensor, tol float32) {
		t.Helper()
		got, want := make([]float32, gt.Len()), make([]float32, ct.Len())
		if err := g.Download(got, gt); err != nil {
			t.Fatal(err)
		}
		c.Download(want, ct)
		for i := range got {
			if d := got[i] - want[i]; d > tol || -d > tol || got[i] != got[i] {
				t.Errorf("%s: element %d is %g, CPU %g", name, i, got[i], want[i])
				return
			}
		}
	}

	a := []int{2, 3, 2, 3, 2, 3, 5}
	x := []int{2, 1, 2, 1, 2, 1, 5}
	ga, ca := both(random(rng, 2*3*2*3*2*3*5), a...)
	gx, cx := both(random(rng, 2*2*2*5), x...)
	for _, op := range []string{"Add", "Mul"} {
		gd, cd := g.Alloc(a...), c.Alloc(a...)
		if op == "Add" {
			g.Add(gd, ga, gx)
			c.Add(cd, ca, cx)
		} else {
			g.Mul(gd, ga, gx)
			c.Mul(cd, ca, cx)
		}
		compare(op+" with six merged dimensions", gd, cd, 0)
	}

	gs, cs := both(random(rng, 300*70), 300, 70)
	gd, cd := g.Alloc(300, 70), c.Alloc(300, 70)
	g.Softmax(gd, gs)
	c.Softmax(cd, cs)
	compare("Softmax of 300 rows", gd, cd, 1e-6)

	// Views: rows 2..5 of a larger tensor, as inputs of Copy, Linear and
	// MatMul.
	gb, cb := both(random(rng, 7*24), 7, 24)
	gv, cv := gb.Slice(2, 5), cb.Slice(2, 5)
	gd, cd = g.Alloc(3, 24), c.Alloc(3, 24)
	g.Copy(gd, gv)
	c.Copy(cd, cv)
	compare("Copy of a view", gd, cd, 0)
	gw, cw := both(random(rng, 10*24), 10, 24)
	gd, cd = g.Alloc(3, 10), c.Alloc(3, 10)
	g.Linear(gd, gv, gw, nil)
	c.Linear(cd, cv, cw, nil)
	compare("Linear of a view", gd, cd, 1e-5)
	gd, cd = g.Alloc(1, 3, 3), c.Alloc(1, 3, 3)
	g.MatMul(gd, gv.Reshape(1, 3, 24), gv.Reshape(3, 24), kernels.MatMulParams{TransB: true})
	c.MatMul(cd, cv.Reshape(1, 3, 24), cv.Reshape(3, 24), kernels.MatMulParams{TransB: true})
	compare("MatMul of views", gd, cd, 1e-5)
}

// TestConcurrentUse issues ops on one backend from several goroutines.
func TestConcurrentUse(t *testing.T) {
	b := newEmu(t, cuda.Options{})
	done := make(chan string, 4)
	for g := range 4 {
		go func() {
			for i := range 10 {
				s := float32(g*10 + i)
				x := kernels.Upload(b, []float32{1, 2, 3, 4, 5}, 5)
				b.Scale(x, x, s)
				got := make([]float32, 5)
				if err := b.Download(got, x); err != nil {
					done <- err.Error()
					return
				}
				b.Free(x)
				for j, v := range got {
					if v != float32(j+1)*s {
						done <- "wrong result under concurrent use"
						return
					}
				}
			}
			done <- ""
		}()
	}
	for range 4 {
		if e := <-done; e != "" {
			t.Error(e)
		}
	}
}

// TestGEMMPaths checks which kernel runs a Linear and a transposed MatMul
// for each storage type and card: tensor cores for fp16 from sm_80, the
// storage type's SGEMM otherwise, and the f16 kernels for fp16 elementwise
// ops.
func TestGEMMPaths(t *testing.T) {
	for _, c := range []struct {
		prec                   kernels.Precision
		arch                   int
		linear, matmulT, scale string
	}{
		{kernels.F32, 86, "sgemm_f32", "sgemm_f32", "scale_f32"},
		{kernels.F16, 86, "hgemm_tc", "sgemm_f16", "scale_f16"},
		{kernels.F16, 75, "sgemm_f16", "sgemm_f16", "scale_f16"},
	} {
		s := &spyDriver{Driver: emu.NewArch(c.arch)}
		b, err := cuda.New(s, cuda.Options{Precision: c.prec})
		if err != nil {
			t.Fatal(err)
		}
		x, w := b.Alloc(3, 8), b.Alloc(5, 8)
		b.Upload(x, make([]float32, 24))
		b.Upload(w, make([]float32, 40))
		y := b.Alloc(3, 5)
		b.Linear(y, x, w, nil)
		z := b.Alloc(8, 8)
		b.MatMul(z, x.Reshape(3, 8), x, kernels.MatMulParams{TransA: true})
		b.Scale(y, y, 2)
		if err := b.Sync(); err != nil {
			t.Fatal(err)
		}
		want := []string{c.linear, c.matmulT, c.scale}
		if strings.Join(s.launched, " ") != strings.Join(want, " ") {
			t.Errorf("%v on sm_%d: launched %v, want %v", c.prec, c.arch, s.launched, want)
		}
		b.Close()
	}
}
