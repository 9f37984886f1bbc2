package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/kernels/cuda"
	"github.com/avatargen/musetalk/kernels/cuda/emu"
	"github.com/avatargen/musetalk/kernels/kerneltest"
)

// halfPair runs fp16 convolutions on the emulator (sm_86, so on hconv_tc)
// and the same convolutions on the CPU backend in fp32, from inputs
// rounded to half, which both then hold exactly.
type halfPair struct {
	t   *testing.T
	g   *cuda.Backend
	c   kernels.Backend
	rng *rand.Rand
}

func newHalfPair(t *testing.T) *halfPair {
	t.Helper()
	c, err := cpu.New(cpu.Options{Threads: 1, Conv3x3: cpu.ConvDirect})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &halfPair{t: t, g: newEmu(t, cuda.Options{Precision: kernels.F16}), c: c, rng: rand.New(rand.NewPCG(7, 11))}
}

// input returns std·N(0,1) values rounded to half, uploaded to both
// backends, and their magnitudes uploaded to the CPU backend.
func (p *halfPair) input(std float64, shape ...int) (g, c, abs *kernels.Tensor) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v, a := make([]float32, n), make([]float32, n)
	for i := range v {
		v[i] = kerneltest.RoundF16(float32(std * p.rng.NormFloat64()))
		a[i] = float32(math.Abs(float64(v[i])))
	}
	return kernels.Upload(p.g, v, shape...), kernels.Upload(p.c, v, shape...), kernels.Upload(p.c, a, shape...)
}

// compare checks got (fp16, from the emulator) against want (the CPU's
// fp32 result) element by element with kerneltest's fp16 rule for
// GEMM-like ops: abs 1e-6 + 2⁻²⁴, rel 2⁻¹⁰ (one rounding of the output
// to half), magRel 2⁻¹⁶ (fp32 accumulation on tensor cores) of mag, the
// sum of |terms| of the element, plus 2e-6 of mag for the reference's own
// fp32 accumulation (kerneltest's reference is float64; this one is the
// CPU backend).
func (p *halfPair) compare(name string, got, want, mag *kernels.Tensor) {
	p.t.Helper()
	gv, wv, mv := make([]float32, got.Len()), make([]float32, want.Len()), make([]float32, mag.Len())
	if err := p.g.Download(gv, got); err != nil {
		p.t.Fatalf("%s: %v", name, err)
	}
	for _, d := range []struct {
		dst []float32
		t   *kernels.Tensor
	}{{wv, want}, {mv, mag}} {
		if err := p.c.Download(d.dst, d.t); err != nil {
			p.t.Fatalf("%s: %v", name, err)
		}
	}
	worst := 0.0 // largest error as a fraction of the tolerance
	for i := range gv {
		w := float64(wv[i])
		tol := 1e-6 + 0x1p-24 + 0x1p-10*math.Abs(w) + (0x1p-16+2e-6)*float64(mv[i])
		d := math.Abs(float64(gv[i]) - w)
		if !(d <= tol) {
			p.t.Errorf("%s: element %d of %d is %g, CPU %g (tolerance %.3g)", name, i, len(gv), gv[i], wv[i], tol)
			return
		}
		worst = max(worst, d/tol)
	}
	p.t.Logf("%s: largest error %.2f of the tolerance", name, worst)
}

// TestConvTensorCores checks hconv_tc (fp16 on sm_86) against the CPU
// backend on shapes the op table's cases may miss: K = Cin·KH·KW not a
// multiple of 8 (w loaded element by element) or of the 32-deep slice
// (a zero-filled last slice), K = 3, Cout not a multiple of 8, 7×7 stride
// 2, the VAE's stride-2 (0,1,0,1) padding, batches whose images straddle
// pixel tiles (odd Ho·Wo, so output pairs straddle images and alternate
// alignment), several blocks in each grid dimension, no bias, w not
// 16-byte aligned with K % 8 == 0, views as input and output, and Conv1D.
func TestConvTensorCores(t *testing.T) {
	p := newHalfPair(t)
	type conv struct {
		n, c, h, w, co, kh, kw int
		p                      kernels.Conv2DParams
		bias                   bool
	}
	pad := kernels.Conv2DPad
	asym := kernels.Conv2DParams{PadRight: 1, PadBottom: 1, StrideH: 2, StrideW: 2}
	start := time.Now()
	for _, c := range []conv{
		{1, 5, 9, 11, 13, 3, 3, pad(1, 1), true},    // K = 45, Cout = 13
		{2, 3, 10, 12, 16, 1, 1, pad(1, 0), true},   // K = 3
		{1, 3, 37, 41, 24, 7, 7, pad(2, 3), true},   // 7×7 stride 2, K = 147; 399 pixels
		{2, 16, 17, 18, 20, 3, 3, asym, true},       // VAE downsampler, K = 144
		{2, 24, 15, 15, 260, 3, 3, pad(1, 1), true}, // 4 × 3 blocks, K = 216
		{1, 32, 12, 12, 40, 3, 3, pad(1, 1), false}, // K = 288, nine full slices
		{3, 64, 5, 7, 72, 1, 1, pad(1, 0), true},    // 1×1, K = 64; 35 pixels per image
		{1, 8, 6, 10, 9, 2, 3, kernels.Conv2DParams{PadTop: 2, PadLeft: 1, PadRight: 2, StrideH: 3, StrideW: 1}, true},
	} {
		name := fmt.Sprintf("Conv2D %+v", c)
		gx, cx, ax := p.input(1, c.n, c.c, c.h, c.w)
		gw, cw, aw := p.input(1/math.Sqrt(float64(c.c*c.kh*c.kw)), c.co, c.c, c.kh, c.kw)
		var gb, cb, ab *kernels.Tensor
		if c.bias {
			gb, cb, ab = p.input(0.5, c.co)
		}
		shape := c.p.OutShape(cx, cw)
		gd, cd, md := p.g.Alloc(shape...), p.c.Alloc(shape...), p.c.Alloc(shape...)
		p.g.Conv2D(gd, gx, gw, gb, c.p)
		p.c.Conv2D(cd, cx, cw, cb, c.p)
		p.c.Conv2D(md, ax, aw, ab, c.p)
		p.compare(name, gd, cd, md)
	}

	// w at an odd element offset: K = 72 is a multiple of 8, but w is not
	// 16-byte aligned, so it is loaded element by element.
	gx, cx, ax := p.input(1, 2, 8, 9, 9)
	gwf, cwf, awf := p.input(1/math.Sqrt(72), 1+11*72)
	wv := func(t *kernels.Tensor) *kernels.Tensor { return t.Slice(1, 1+11*72).Reshape(11, 8, 3, 3) }
	gb, cb, ab := p.input(0.5, 11)
	gd, cd, md := p.g.Alloc(2, 11, 9, 9), p.c.Alloc(2, 11, 9, 9), p.c.Alloc(2, 11, 9, 9)
	prm := pad(1, 1)
	p.g.Conv2D(gd, gx, wv(gwf), gb, prm)
	p.c.Conv2D(cd, cx, wv(cwf), cb, prm)
	p.c.Conv2D(md, ax, wv(awf), ab, prm)
	p.compare("Conv2D, w misaligned", gd, cd, md)

	// Views: images 1..2 of a batch of 4 in and out (5×7 pixels, so the
	// output view starts at an odd element); the neighbours must stay
	// untouched.
	gx, cx, ax = p.input(1, 4, 6, 5, 7)
	gw, cw, aw := p.input(0.2, 9, 6, 3, 3)
	gd, cd, _ = p.input(1, 4, 9, 5, 7)
	p.g.Conv2D(gd.Slice(1, 3), gx.Slice(1, 3), gw, nil, prm)
	p.c.Conv2D(cd.Slice(1, 3), cx.Slice(1, 3), cw, nil, prm)
	md = kernels.Upload(p.c, make([]float32, gd.Len()), 4, 9, 5, 7) // 0 for the neighbours
	p.c.Conv2D(md.Slice(1, 3), ax.Slice(1, 3), aw, nil, prm)
	p.compare("Conv2D of views", gd, cd, md)

	// Conv1D (a 1×3 Conv2D): K = 240, stride 2.
	gx, cx, ax = p.input(1, 2, 80, 50)
	gw, cw, aw = p.input(1/math.Sqrt(240), 36, 80, 3)
	gb, cb, ab = p.input(0.5, 36)
	p1 := kernels.Conv1DParams{PadLeft: 1, PadRight: 1, Stride: 2}
	lo := p1.OutLen(50, 3)
	gd, cd, md = p.g.Alloc(2, 36, lo), p.c.Alloc(2, 36, lo), p.c.Alloc(2, 36, lo)
	p.g.Conv1D(gd, gx, gw, gb, p1)
	p.c.Conv1D(cd, cx, cw, cb, p1)
	p.c.Conv1D(md, ax, aw, ab, p1)
	p.compare("Conv1D", gd, cd, md)
	t.Logf("%v on the emulator and the CPU", time.Since(start))
}

// TestConvPaths checks which kernel runs Conv2D and Conv1D for each
// storage type and card: hconv_tc for fp16 from sm_80, the storage
// type's conv2d otherwise.
func TestConvPaths(t *testing.T) {
	for _, c := range []struct {
		prec kernels.Precision
		arch int
		want string
	}{
		{kernels.F32, 86, "conv2d_f32"},
		{kernels.F16, 86, "hconv_tc"},
		{kernels.F16, 80, "hconv_tc"},
		{kernels.F16, 75, "conv2d_f16"},
	} {
		s := &spyDriver{Driver: emu.NewArch(c.arch)}
		b, err := cuda.New(s, cuda.Options{Precision: c.prec})
		if err != nil {
			t.Fatal(err)
		}
		x, w := b.Alloc(1, 3, 4, 4), b.Alloc(2, 3, 3, 3)
		b.Upload(x, make([]float32, x.Len()))
		b.Upload(w, make([]float32, w.Len()))
		y := b.Alloc(1, 2, 4, 4)
		b.Conv2D(y, x, w, nil, kernels.Conv2DPad(1, 1))
		x1, w1 := b.Alloc(1, 3, 6), b.Alloc(2, 3, 3)
		b.Upload(x1, make([]float32, x1.Len()))
		b.Upload(w1, make([]float32, w1.Len()))
		y1 := b.Alloc(1, 2, 4)
		b.Conv1D(y1, x1, w1, nil, kernels.Conv1DParams{})
		if err := b.Sync(); err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Join(s.launched, " "), c.want+" "+c.want; got != want {
			t.Errorf("%v on sm_%d: launched %v, want %v", c.prec, c.arch, got, want)
		}
		b.Close()
	}
}
