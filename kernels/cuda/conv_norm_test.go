package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/kernels/cuda"
)

// pair runs the same op on the emulator and on the CPU backend, the
// reference, and compares the results within abs + rel·|cpu|.
type pair struct {
	t   *testing.T
	g   *cuda.Backend
	c   kernels.Backend
	rng *rand.Rand
}

func newPair(t *testing.T) *pair {
	t.Helper()
	c, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &pair{t: t, g: newEmu(t, cuda.Options{}), c: c, rng: rand.New(rand.NewPCG(3, 3))}
}

// input uploads N(mean, std²) values to both backends.
func (p *pair) input(mean, std float64, shape ...int) (*kernels.Tensor, *kernels.Tensor) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(mean + std*p.rng.NormFloat64())
	}
	return kernels.Upload(p.g, v, shape...), kernels.Upload(p.c, v, shape...)
}

func (p *pair) alloc(shape ...int) (*kernels.Tensor, *kernels.Tensor) {
	return p.g.Alloc(shape...), p.c.Alloc(shape...)
}

func (p *pair) compare(name string, gt, ct *kernels.Tensor, abs, rel float64) {
	p.t.Helper()
	got, want := make([]float32, gt.Len()), make([]float32, ct.Len())
	if err := p.g.Download(got, gt); err != nil {
		p.t.Fatalf("%s: %v", name, err)
	}
	if err := p.c.Download(want, ct); err != nil {
		p.t.Fatalf("%s: %v", name, err)
	}
	worst := 0.0
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if !(d <= abs+rel*math.Abs(float64(want[i]))) {
			p.t.Errorf("%s: element %d of %d is %g, CPU %g", name, i, len(got), got[i], want[i])
			return
		}
		worst = max(worst, d)
	}
	p.t.Logf("%s: largest difference %.3g", name, worst)
}

// TestConvAgainstCPU covers convolution shapes the shared cases do not:
// stride 2 with padding on odd sizes, 1×1 kernels with stride 2 and with
// both tile dimensions crossing a tile edge, asymmetric strides and
// padding with a K that is no multiple of the tile, views as input and
// output, no bias, and Conv1D with stride 3 and one-sided padding. Sums
// of at most a few hundred terms of size ~1: 2e-5 absolute and relative.
func TestConvAgainstCPU(t *testing.T) {
	p := newPair(t)
	type conv struct {
		n, c, h, w, co, kh, kw int
		p                      kernels.Conv2DParams
		bias                   bool
	}
	for _, c := range []conv{
		{2, 5, 15, 13, 9, 3, 3, kernels.Conv2DPad(2, 1), true},
		{1, 7, 9, 9, 6, 1, 1, kernels.Conv2DPad(2, 0), true},
		{1, 20, 10, 10, 70, 1, 1, kernels.Conv2DPad(1, 0), false},
		{1, 3, 11, 10, 4, 5, 4, kernels.Conv2DParams{PadTop: 2, PadBottom: 1, PadRight: 3, StrideH: 2, StrideW: 3}, true},
		{3, 2, 4, 3, 3, 3, 3, kernels.Conv2DPad(1, 2), true}, // padding larger than half the kernel
	} {
		name := fmt.Sprintf("Conv2D %+v", c)
		gx, cx := p.input(0, 1, c.n, c.c, c.h, c.w)
		gw, cw := p.input(0, 1/math.Sqrt(float64(c.c*c.kh*c.kw)), c.co, c.c, c.kh, c.kw)
		var gb, cb *kernels.Tensor
		if c.bias {
			gb, cb = p.input(0, 0.5, c.co)
		}
		shape := c.p.OutShape(cx, cw)
		gd, cd := p.alloc(shape...)
		p.g.Conv2D(gd, gx, gw, gb, c.p)
		p.c.Conv2D(cd, cx, cw, cb, c.p)
		p.compare(name, gd, cd, 2e-5, 2e-5)
	}

	// Views: images 1..2 of a batch of 4 in, images 1..2 of a batch of 4
	// out; the neighbours must stay untouched.
	gx, cx := p.input(0, 1, 4, 3, 6, 7)
	gw, cw := p.input(0, 0.2, 5, 3, 3, 3)
	gd, cd := p.input(0, 1, 4, 5, 6, 7)
	prm := kernels.Conv2DPad(1, 1)
	p.g.Conv2D(gd.Slice(1, 3), gx.Slice(1, 3), gw, nil, prm)
	p.c.Conv2D(cd.Slice(1, 3), cx.Slice(1, 3), cw, nil, prm)
	p.compare("Conv2D of views", gd, cd, 2e-5, 2e-5)

	gx, cx = p.input(0, 1, 2, 6, 29)
	gw, cw = p.input(0, 0.2, 11, 6, 5)
	gb, cb := p.input(0, 0.5, 11)
	p1 := kernels.Conv1DParams{PadLeft: 2, Stride: 3}
	lo := p1.OutLen(29, 5)
	gd, cd = p.alloc(2, 11, lo)
	p.g.Conv1D(gd, gx, gw, gb, p1)
	p.c.Conv1D(cd, cx, cw, cb, p1)
	p.compare("Conv1D stride 3, padding 2/0", gd, cd, 2e-5, 2e-5)
}

// TestNormsAgainstCPU covers normalisation paths the shared cases do not:
// GroupNorm with more groups than the grid has blocks (blocks loop), one
// channel per group, planes wider than a block (the channel-by-channel
// pass) with only a weight or only a bias, in place; one 32×64×64 group
// with a mean 50 times its spread (the fp32 two-pass statistics);
// LayerNorm with more rows than warps in the grid, wide rows, in place;
// L2Norm of rank 2, in place, and with more positions than threads.
// Normalised values are ~1: 1e-5 absolute and relative (the large group
// comes within 1e-6 of the CPU's float64 statistics).
func TestNormsAgainstCPU(t *testing.T) {
	p := newPair(t)
	type gn struct {
		shape        []int
		groups       int
		weight, bias bool
		silu, inPl   bool
		mean         float64
	}
	for _, c := range []gn{
		{[]int{3, 64, 2, 3}, 64, true, true, true, false, 1},
		{[]int{1, 8, 20, 20}, 2, true, false, false, true, 3},
		{[]int{2, 6, 17, 19}, 3, false, true, true, true, -2},
		{[]int{1, 32, 64, 64}, 1, true, true, true, false, 50},
	} {
		name := fmt.Sprintf("GroupNorm %+v", c)
		gx, cx := p.input(c.mean, 1, c.shape...)
		var gw, cw, gb, cb *kernels.Tensor
		if c.weight {
			gw, cw = p.input(0, 1, c.shape[1])
		}
		if c.bias {
			gb, cb = p.input(0, 1, c.shape[1])
		}
		gd, cd := gx, cx
		if !c.inPl {
			gd, cd = p.alloc(c.shape...)
		}
		prm := kernels.GroupNormParams{Eps: 1e-5, Groups: c.groups, SiLU: c.silu}
		p.g.GroupNorm(gd, gx, gw, gb, prm)
		p.c.GroupNorm(cd, cx, cw, cb, prm)
		p.compare(name, gd, cd, 1e-5, 1e-5)
	}

	type ln struct {
		shape        []int
		weight, bias bool
		inPl         bool
	}
	for _, c := range []ln{
		{[]int{1100, 5}, true, true, false},
		{[]int{3, 1500}, false, true, true},
		{[]int{2, 3, 40}, true, false, true},
	} {
		name := fmt.Sprintf("LayerNorm %+v", c)
		d := c.shape[len(c.shape)-1]
		gx, cx := p.input(1, 2, c.shape...)
		var gw, cw, gb, cb *kernels.Tensor
		if c.weight {
			gw, cw = p.input(0, 1, d)
		}
		if c.bias {
			gb, cb = p.input(0, 1, d)
		}
		gd, cd := gx, cx
		if !c.inPl {
			gd, cd = p.alloc(c.shape...)
		}
		p.g.LayerNorm(gd, gx, gw, gb, kernels.LayerNormParams{Eps: 1e-5})
		p.c.LayerNorm(cd, cx, cw, cb, kernels.LayerNormParams{Eps: 1e-5})
		p.compare(name, gd, cd, 1e-5, 1e-5)
	}

	for _, c := range []struct {
		shape []int
		inPl  bool
	}{{[]int{5, 33}, true}, {[]int{2, 3, 70, 70}, false}, {[]int{1, 40, 3, 5}, true}} {
		name := fmt.Sprintf("L2Norm %v in place %v", c.shape, c.inPl)
		gx, cx := p.input(0, 1, c.shape...)
		gw, cw := p.input(0, 1, c.shape[1])
		gd, cd := gx, cx
		if !c.inPl {
			gd, cd = p.alloc(c.shape...)
		}
		p.g.L2Norm(gd, gx, gw, 1e-10)
		p.c.L2Norm(cd, cx, cw, 1e-10)
		p.compare(name, gd, cd, 1e-5, 1e-5)
	}
}

// TestConvNormChecks: invalid arguments panic naming the op.
func TestConvNormChecks(t *testing.T) {
	b := newEmu(t, cuda.Options{})
	x := b.Alloc(1, 4, 5, 5)
	for name, f := range map[string]func(){
		"Conv2D": func() { b.Conv2D(b.Alloc(1, 2, 5, 5), x, b.Alloc(2, 3, 3, 3), nil, kernels.Conv2DPad(1, 1)) },
		"Conv1D": func() { b.Conv1D(b.Alloc(1, 2, 5), x, b.Alloc(2, 4, 3), nil, kernels.Conv1DParams{}) },
		"GroupNorm": func() {
			b.GroupNorm(x, x, nil, nil, kernels.GroupNormParams{Groups: 3})
		},
		"LayerNorm": func() { b.LayerNorm(x, x, b.Alloc(4), nil, kernels.LayerNormParams{}) },
		"L2Norm":    func() { b.L2Norm(x, x, b.Alloc(5), 1e-10) },
	} {
		func() {
			defer func() {
				r := recover()
				if s, ok := r.(string); !ok || !strings.Contains(s, "cuda: "+name+":") {
					t.Errorf("%s: panic %v, want one naming the op", name, r)
				}
			}()
			f()
		}()
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
}
