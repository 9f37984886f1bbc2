package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/kernels/cuda"
)

// cmpPair runs the same ops on the emulated CUDA backend and the CPU backend
// and compares results.
type cmpPair struct {
	t   *testing.T
	g   *cuda.Backend
	c   *cpu.Backend
	rng *rand.Rand
}

func newCmpPair(t *testing.T, seed uint64) *cmpPair {
	c, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &cmpPair{t: t, g: newEmu(t, cuda.Options{}), c: c, rng: rand.New(rand.NewPCG(seed, seed))}
}

// input uploads the same random tensor to both backends.
func (p *cmpPair) input(shape ...int) (*kernels.Tensor, *kernels.Tensor) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return p.upload(random(p.rng, n), shape...)
}

func (p *cmpPair) upload(data []float32, shape ...int) (*kernels.Tensor, *kernels.Tensor) {
	return kernels.Upload(p.g, data, shape...), kernels.Upload(p.c, data, shape...)
}

func (p *cmpPair) alloc(shape ...int) (*kernels.Tensor, *kernels.Tensor) {
	return p.g.Alloc(shape...), p.c.Alloc(shape...)
}

// compare checks |got − want| ≤ tol·(1 + |want|) element by element;
// infinities must match exactly and NaN must match NaN.
func (p *cmpPair) compare(name string, gt, ct *kernels.Tensor, tol float64) {
	p.t.Helper()
	got, want := make([]float32, gt.Len()), make([]float32, ct.Len())
	if err := p.g.Download(got, gt); err != nil {
		p.t.Fatalf("%s: %v", name, err)
	}
	if err := p.c.Download(want, ct); err != nil {
		p.t.Fatalf("%s: %v", name, err)
	}
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		if g == w || math.IsNaN(w) && math.IsNaN(g) {
			continue
		}
		if d := math.Abs(g - w); !(d <= tol*(1+math.Abs(w))) {
			p.t.Errorf("%s: element %d is %g, CPU %g", name, i, g, w)
			return
		}
	}
}

// TestAttentionShapes covers MuseTalk's head dimensions (40, 80, 160 with
// 8 heads at 320, 640 and 1280 channels, here with fewer heads to keep the
// emulator fast), cross-attention with 50 audio tokens, query lengths that
// are not a multiple of the 32-row block, one query row, different q and v
// head dimensions, each kernel variant, and inputs that are views.
// Tolerance 2e-5·(1+|want|): both sides accumulate fp32 in different
// orders.
func TestAttentionShapes(t *testing.T) {
	p := newCmpPair(t, 3)
	for _, c := range []struct{ n, lq, lk, cq, cv, heads int }{
		{2, 70, 50, 320, 320, 8},  // head dim 40, cross-attention over 50 tokens
		{1, 45, 45, 160, 160, 2},  // head dim 80
		{1, 33, 20, 160, 160, 1},  // head dim 160
		{1, 1, 50, 80, 80, 2},     // a single query row
		{1, 40, 19, 24, 400, 2},   // dq 12, dv 200 (the d256 kernel, smaller row blocks)
		{3, 17, 100, 16, 48, 4},   // several key tiles with a partial last one
		{1, 9, 3, 256, 256, 1},    // head dim 256: the smallest row block
		{1, 64, 33, 6, 330, 3},    // dv 110
		{2, 31, 1, 12, 12, 3},     // one key
		{1, 100, 37, 120, 120, 3}, // head dim 40, odd lengths
	} {
		name := fmt.Sprintf("%+v", c)
		gq, cq := p.input(c.n, c.lq, c.cq)
		gk, ck := p.input(c.n, c.lk, c.cq)
		gv, cv := p.input(c.n, c.lk, c.cv)
		gd, cd := p.alloc(c.n, c.lq, c.cv)
		ap := kernels.AttentionParams{Heads: c.heads}
		p.g.Attention(gd, gq, gk, gv, ap)
		p.c.Attention(cd, cq, ck, cv, ap)
		p.compare("Attention "+name, gd, cd, 2e-5)
	}

	// Views at an offset, an explicit scale, and large scores.
	gq, cq := p.input(3, 12, 40)
	gk, ck := p.input(3, 50, 40)
	gv, cv := p.input(3, 50, 40)
	gd, cd := p.alloc(2, 12, 40)
	ap := kernels.AttentionParams{Heads: 1, Scale: 3}
	p.g.Attention(gd, gq.Slice(1, 3), gk.Slice(1, 3), gv.Slice(1, 3), ap)
	p.c.Attention(cd, cq.Slice(1, 3), ck.Slice(1, 3), cv.Slice(1, 3), ap)
	p.compare("Attention of views, scale 3", gd, cd, 2e-5)
}

// TestPermuteShapes covers permutations Exercise does not: every axis of a
// rank-4 tensor moved, ranks 5 and 6 gathered through strides, rank 7
// (launches per outer index), transposes whose sides are not multiples of
// the 32×32 tile, and a view as input. Moves are exact.
func TestPermuteShapes(t *testing.T) {
	p := newCmpPair(t, 4)
	for _, c := range []struct{ shape, perm []int }{
		{[]int{2, 3, 4, 5}, []int{1, 3, 0, 2}},
		{[]int{2, 3, 4, 5}, []int{2, 0, 3, 1}},
		{[]int{3, 2, 4, 5, 3}, []int{4, 2, 0, 3, 1}},
		{[]int{2, 3, 2, 3, 2, 3}, []int{5, 0, 4, 1, 3, 2}},
		{[]int{2, 3, 2, 2, 3, 2, 2}, []int{6, 5, 4, 3, 2, 1, 0}},
		{[]int{3, 37, 45}, []int{0, 2, 1}},
		{[]int{65, 33}, []int{1, 0}},
		{[]int{2, 40, 3, 30}, []int{0, 3, 1, 2}}, // NCHW → NHWC after merging
		{[]int{1, 1, 1}, []int{2, 0, 1}},
		{[]int{4, 1, 6}, []int{2, 1, 0}},
	} {
		gx, cx := p.input(c.shape...)
		out := make([]int, len(c.perm))
		for i, q := range c.perm {
			out[i] = c.shape[q]
		}
		gd, cd := p.alloc(out...)
		p.g.Permute(gd, gx, c.perm...)
		p.c.Permute(cd, cx, c.perm...)
		p.compare(fmt.Sprintf("Permute %v %v", c.shape, c.perm), gd, cd, 0)
	}
	gx, cx := p.input(4, 5, 7)
	gd, cd := p.alloc(7, 2, 5)
	p.g.Permute(gd, gx.Slice(1, 3), 2, 0, 1)
	p.c.Permute(cd, cx.Slice(1, 3), 2, 0, 1)
	p.compare("Permute of a view", gd, cd, 0)
}

// TestConcatShapes concatenates three sources along each axis of a rank-3
// tensor, one of them a view. Exact.
func TestConcatShapes(t *testing.T) {
	p := newCmpPair(t, 5)
	for axis := -1; axis < 3; axis++ {
		ax := (axis + 3) % 3
		shapes := [][]int{{2, 3, 4}, {2, 3, 4}, {2, 3, 4}}
		for i := range shapes {
			shapes[i][ax] += i
		}
		var gs, cs []*kernels.Tensor
		out := []int{2, 3, 4}
		out[ax] = 0
		for i, s := range shapes {
			big := append([]int{s[0] + 1}, s[1:]...)
			g, c := p.input(big...)
			if i == 1 { // a view at an offset
				g, c = g.Slice(1, s[0]+1), c.Slice(1, s[0]+1)
			} else {
				g, c = g.Slice(0, s[0]), c.Slice(0, s[0])
			}
			gs, cs = append(gs, g), append(cs, c)
			out[ax] += s[ax]
		}
		gd, cd := p.alloc(out...)
		p.g.Concat(gd, axis, gs...)
		p.c.Concat(cd, axis, cs...)
		p.compare(fmt.Sprintf("Concat axis %d", axis), gd, cd, 0)
	}
}

// TestResizeAndPool covers bilinear resizing up, down and to one pixel in
// both corner modes, pooling with asymmetric padding and strides, a NaN
// in a max-pool window, and GEGLU. Bilinear allows 1e-6·(1+|want|) (the
// GPU may fuse multiply-adds); pooling is exact (max moves a value, the
// mean is the correctly rounded double sum on both sides); GEGLU allows
// 1e-6·(1+|want|) for erfc's ulps.
func TestResizeAndPool(t *testing.T) {
	p := newCmpPair(t, 6)
	for _, c := range []struct{ in, out []int }{
		{[]int{1, 2, 5, 7}, []int{1, 2, 3, 4}},
		{[]int{2, 1, 4, 4}, []int{2, 1, 1, 1}},
		{[]int{1, 3, 3, 1}, []int{1, 3, 8, 5}},
		{[]int{1, 1, 16, 16}, []int{1, 1, 32, 32}},
	} {
		for _, align := range []bool{false, true} {
			gx, cx := p.input(c.in...)
			gd, cd := p.alloc(c.out...)
			p.g.UpsampleBilinear(gd, gx, align)
			p.c.UpsampleBilinear(cd, cx, align)
			p.compare(fmt.Sprintf("UpsampleBilinear %v→%v align %v", c.in, c.out, align), gd, cd, 1e-6)
		}
	}

	data := random(p.rng, 2*3*9*10)
	data[5] = float32(math.NaN())
	data[200] = float32(math.Inf(1))
	gx, cx := p.upload(data, 2, 3, 9, 10)
	for _, pp := range []kernels.Pool2DParams{
		{KernelH: 3, KernelW: 2, StrideH: 2, StrideW: 1, PadTop: 1, PadBottom: 0, PadLeft: 0, PadRight: 1},
		{KernelH: 4, KernelW: 4, StrideH: 3, StrideW: 3, PadTop: 2, PadBottom: 2, PadLeft: 1, PadRight: 2},
		kernels.Pool2D(2, 2, 1),
		kernels.Pool2D(1, 1, 0),
	} {
		ho, wo := pp.OutSize(9, 10)
		gd, cd := p.alloc(2, 3, ho, wo)
		p.g.MaxPool2D(gd, gx, pp)
		p.c.MaxPool2D(cd, cx, pp)
		p.compare(fmt.Sprintf("MaxPool2D %+v", pp), gd, cd, 0)
		p.g.AvgPool2D(gd, gx, pp)
		p.c.AvgPool2D(cd, cx, pp)
		p.compare(fmt.Sprintf("AvgPool2D %+v", pp), gd, cd, 0)
	}

	gx, cx = p.input(3, 7, 2*45)
	gd, cd := p.alloc(3, 7, 45)
	p.g.GEGLU(gd, gx)
	p.c.GEGLU(cd, cx)
	p.compare("GEGLU", gd, cd, 1e-6)
}
