package kerneltest

import (
	"fmt"
	"math"
	"slices"

	"github.com/avatargen/musetalk/kernels"
)

// Tolerances (the package documentation states the rules). GEMM-like ops
// are judged against the sum of |terms| of each element (float32
// accumulation over K terms); pointwise ops against the value itself.
// Each helper returns the fp32 tolerance, widened for F16 storage.

// The fp16 allowances.
const (
	// f16Store is the relative error one rounding of a stored result to
	// half may add: 2⁻¹⁰, twice round-to-nearest's bound (2⁻¹¹ of the
	// value), the margin covering the fp32 error the value carried before
	// it was rounded.
	f16Store = 0x1p-10
	// f16Tiny is the absolute error of a rounding in half's subnormal
	// range: 2⁻²⁴, one subnormal step (round-to-nearest: half of it).
	f16Tiny = 0x1p-24
	// f16Accum is the least magRel of an fp32 accumulation in F16 mode:
	// tensor cores align and truncate inside each MMA instead of rounding
	// to nearest, so their errors do not cancel as float32 sums' do.
	f16Accum = 0x1p-16
)

// widen adds one F16 rounding of the output to tl.
func (h *harness) widen(tl tol) tol {
	if h.prec == kernels.F16 {
		tl.abs += f16Tiny
		tl.rel += f16Store
	}
	return tl
}

// tolSum allows 2e-6 of each element's sum of |terms| (GEMM-like ops);
// F16: at least 2⁻¹⁶, plus one output rounding.
func (h *harness) tolSum(mag []float64) tol {
	return h.gemm(tol{abs: 1e-6, magRel: 2e-6, mag: mag})
}

// tolFast allows 1e-5 of the sum of |terms|: sums computed by a fast
// algorithm such as Winograd's, which rounds a few times more than the
// direct sum. F16 as tolSum.
func (h *harness) tolFast(mag []float64) tol {
	return h.gemm(tol{abs: 1e-6, magRel: 1e-5, mag: mag})
}

func (h *harness) gemm(tl tol) tol {
	if h.prec == kernels.F16 {
		tl.magRel = max(tl.magRel, f16Accum)
	}
	return h.widen(tl)
}

// tolAttention allows 1e-5 of the sum of |p·v| terms; F16: as a GEMM,
// plus 2⁻¹⁰ of that sum for the probabilities' rounding to half before
// they multiply v.
func (h *harness) tolAttention(mag []float64) tol {
	tl := h.gemm(tol{abs: 2e-6, magRel: 1e-5, mag: mag})
	if h.prec == kernels.F16 {
		tl.magRel += f16Store
	}
	return tl
}

// tolExact allows no error: the op only moves elements, which are values
// of the storage precision already.
func (h *harness) tolExact() tol { return tol{} }

// tolRounded is for ops that round an exact result once (Add, Mul): no
// error against the float32-rounded reference in fp32; in F16, against
// the exact reference, round-to-nearest's bound 2⁻¹¹ (2⁻²⁵ in the
// subnormal range) plus 2⁻²² for a double rounding through fp32.
func (h *harness) tolRounded() tol {
	if h.prec == kernels.F16 {
		return tol{abs: 0x1p-25, rel: 0x1p-11 + 0x1p-22}
	}
	return tol{}
}

// tolPointwise allows a few float32 ulps of the value; F16: plus one
// output rounding.
func (h *harness) tolPointwise() tol { return h.widen(tol{abs: 2e-6, rel: 2e-6}) }

// tolNorm allows 1e-5 of the normalised value; F16: plus one output
// rounding.
func (h *harness) tolNorm() tol { return h.widen(tol{abs: 1e-5, rel: 1e-5}) }

// tolSoftmax allows 2e-6 of each probability; F16: plus one output
// rounding.
func (h *harness) tolSoftmax() tol { return h.widen(tol{abs: 1e-7, rel: 2e-6}) }

func cases() []testCase {
	var cs []testCase
	cs = append(cs, convCases()...)
	cs = append(cs, gemmCases()...)
	cs = append(cs, attentionCases()...)
	cs = append(cs, normCases()...)
	cs = append(cs, pointwiseCases()...)
	cs = append(cs, layoutCases()...)
	return cs
}

func convCases() []testCase {
	type conv struct {
		n, c, h, w, co, kh, kw int
		p                      kernels.Conv2DParams
		bias                   bool
		// fast marks a shape where a backend may use a fast algorithm
		// (Winograd F(4×4, 3×3) for 3×3 convs with ≥ 64 channels), whose
		// rounding is a few times that of the direct sum: tolFast.
		fast bool
	}
	pad := kernels.Conv2DPad
	asym := kernels.Conv2DParams{PadRight: 1, PadBottom: 1, StrideH: 2, StrideW: 2} // VAE downsampler
	list := []conv{
		{1, 1, 1, 1, 1, 1, 1, pad(1, 0), true, false},
		{1, 3, 7, 7, 5, 3, 3, pad(1, 1), true, false},
		{2, 3, 17, 9, 7, 3, 3, pad(2, 1), true, false},
		{1, 8, 16, 16, 13, 3, 3, asym, true, false},
		{2, 5, 5, 6, 33, 1, 1, pad(1, 0), true, false},
		{1, 4, 9, 11, 65, 1, 1, pad(2, 0), false, false},
		{1, 3, 12, 12, 4, 7, 7, pad(2, 3), true, false},
		{1, 16, 33, 33, 17, 3, 3, pad(1, 1), true, false},
		{3, 20, 8, 8, 40, 3, 3, pad(1, 1), false, false},
		{1, 64, 8, 8, 96, 3, 3, pad(1, 1), true, false},
		{2, 32, 32, 32, 32, 3, 3, pad(1, 1), true, false},
		{1, 300, 4, 4, 20, 3, 3, pad(1, 1), true, false},
		{3, 40, 5, 5, 70, 3, 3, pad(1, 1), true, false},
		{1, 4, 6, 10, 5, 2, 3, kernels.Conv2DParams{PadTop: 2, PadLeft: 1, StrideH: 3, StrideW: 1}, true, false},
		{2, 24, 16, 16, 48, 3, 3, pad(2, 1), true, false},
		{2, 64, 21, 19, 72, 3, 3, pad(1, 1), true, true},
		{1, 128, 16, 16, 64, 3, 3, pad(1, 1), false, true},
	}
	var cs []testCase
	for _, c := range list {
		name := fmt.Sprintf("n%d_c%d_%dx%d_co%d_k%dx%d_s%d%d_p%d%d%d%d", c.n, c.c, c.h, c.w, c.co, c.kh, c.kw,
			c.p.StrideH, c.p.StrideW, c.p.PadTop, c.p.PadBottom, c.p.PadLeft, c.p.PadRight)
		cs = append(cs, testCase{kernels.OpConv2D, name, func(h *harness) {
			x, xt := h.input(1, c.n, c.c, c.h, c.w)
			w, wt := h.input(1/math.Sqrt(float64(c.c*c.kh*c.kw)), c.co, c.c, c.kh, c.kw)
			var bias []float64
			var bt *kernels.Tensor
			if c.bias {
				bias, bt = h.input(0.5, c.co)
			}
			want, mag, ho, wo := refConv2D(x, c.n, c.c, c.h, c.w, w, c.co, c.kh, c.kw, bias,
				max(c.p.StrideH, 1), max(c.p.StrideW, 1), c.p.PadTop, c.p.PadBottom, c.p.PadLeft, c.p.PadRight)
			tl := h.tolSum(mag)
			if c.fast {
				tl = h.tolFast(mag)
			}
			dst := h.output(c.n, c.co, ho, wo)
			h.b.Conv2D(dst, xt, wt, bt, c.p)
			h.check(dst, want, tl)
			// As a registered weight, twice: the second call may use
			// panels the backend cached in the first.
			ww := h.weight(w, c.co, c.c, c.kh, c.kw)
			for range 2 {
				dst := h.output(c.n, c.co, ho, wo)
				h.b.Conv2D(dst, xt, ww, bt, c.p)
				h.check(dst, want, tl)
			}
		}})
	}
	type dw struct {
		n, c, h, w, kh, kw int
		p                  kernels.Conv2DParams
		bias               bool
	}
	for _, c := range []dw{
		{1, 1, 1, 1, 1, 1, pad(1, 0), true},
		{2, 3, 9, 7, 5, 5, pad(1, 2), true},     // CSPNeXt's 5×5 blocks
		{1, 16, 24, 18, 5, 5, pad(1, 2), false}, // wider than the tile of a thread block
		{2, 5, 11, 13, 3, 3, pad(2, 1), true},
		{1, 4, 6, 10, 2, 3, kernels.Conv2DParams{PadTop: 2, PadLeft: 1, PadRight: 3, StrideH: 3, StrideW: 2}, true},
		{1, 2, 3, 3, 5, 5, pad(1, 2), true}, // kernel larger than the image
		{1, 64, 48, 36, 5, 5, pad(1, 2), true},
	} {
		name := fmt.Sprintf("n%d_c%d_%dx%d_k%dx%d_s%d%d_p%d%d%d%d", c.n, c.c, c.h, c.w, c.kh, c.kw,
			c.p.StrideH, c.p.StrideW, c.p.PadTop, c.p.PadBottom, c.p.PadLeft, c.p.PadRight)
		cs = append(cs, testCase{kernels.OpDepthwiseConv2D, name, func(h *harness) {
			x, xt := h.input(1, c.n, c.c, c.h, c.w)
			w, wt := h.input(1/math.Sqrt(float64(c.kh*c.kw)), c.c, 1, c.kh, c.kw)
			var bias []float64
			var bt *kernels.Tensor
			if c.bias {
				bias, bt = h.input(0.5, c.c)
			}
			want, mag, ho, wo := refDepthwise(x, c.n, c.c, c.h, c.w, w, c.kh, c.kw, bias,
				max(c.p.StrideH, 1), max(c.p.StrideW, 1), c.p.PadTop, c.p.PadBottom, c.p.PadLeft, c.p.PadRight)
			ww := h.weight(w, c.c, 1, c.kh, c.kw)
			for _, w := range []*kernels.Tensor{wt, ww} {
				dst := h.output(c.n, c.c, ho, wo)
				h.b.DepthwiseConv2D(dst, xt, w, bt, c.p)
				h.check(dst, want, h.tolSum(mag))
			}
		}})
	}
	type conv1 struct{ n, c, l, co, k, stride, pad int }
	for _, c := range []conv1{{1, 1, 1, 1, 1, 1, 0}, {2, 5, 17, 7, 3, 1, 1}, {2, 7, 33, 9, 3, 2, 1}, {1, 80, 100, 32, 3, 1, 1}, {1, 32, 100, 32, 3, 2, 1}} {
		name := fmt.Sprintf("n%d_c%d_l%d_co%d_k%d_s%d_p%d", c.n, c.c, c.l, c.co, c.k, c.stride, c.pad)
		cs = append(cs, testCase{kernels.OpConv1D, name, func(h *harness) {
			x, xt := h.input(1, c.n, c.c, c.l)
			w, wt := h.input(1/math.Sqrt(float64(c.c*c.k)), c.co, c.c, c.k)
			bias, bt := h.input(0.5, c.co)
			want, mag, _, lo := refConv2D(x, c.n, c.c, 1, c.l, w, c.co, 1, c.k, bias, 1, c.stride, 0, 0, c.pad, c.pad)
			tl := h.tolSum(mag)
			p := kernels.Conv1DParams{PadLeft: c.pad, PadRight: c.pad, Stride: c.stride}
			ww := h.weight(w, c.co, c.c, c.k)
			for _, w := range []*kernels.Tensor{wt, ww, ww} {
				dst := h.output(c.n, c.co, lo)
				h.b.Conv1D(dst, xt, w, bt, p)
				h.check(dst, want, tl)
			}
		}})
	}
	return cs
}

func gemmCases() []testCase {
	var cs []testCase
	type lin struct {
		lead    []int
		k, n    int
		hasBias bool
	}
	for _, c := range []lin{
		{[]int{1}, 1, 1, true}, {[]int{3}, 7, 5, true}, {[]int{17}, 33, 65, false}, {[]int{65}, 17, 33, true},
		{[]int{100}, 300, 70, true}, {[]int{2, 50}, 24, 72, true}, {[]int{2, 256}, 96, 96, false},
		{[]int{7, 3}, 513, 13, true}, {[]int{1000}, 40, 200, true},
	} {
		name := fmt.Sprintf("x%v_k%d_n%d_bias%v", c.lead, c.k, c.n, c.hasBias)
		cs = append(cs, testCase{kernels.OpLinear, name, func(h *harness) {
			m := 1
			for _, d := range c.lead {
				m *= d
			}
			x, xt := h.input(1, append(append([]int{}, c.lead...), c.k)...)
			w, wt := h.input(1/math.Sqrt(float64(c.k)), c.n, c.k)
			var bias []float64
			var bt *kernels.Tensor
			if c.hasBias {
				bias, bt = h.input(0.5, c.n)
			}
			want, mag := refLinear(x, m, c.k, w, c.n, bias)
			tl := h.tolSum(mag)
			dst := h.output(append(append([]int{}, c.lead...), c.n)...)
			h.b.Linear(dst, xt, wt, bt)
			h.check(dst, want, tl)
			ww := h.weight(w, c.n, c.k)
			for range 2 {
				dst := h.output(append(append([]int{}, c.lead...), c.n)...)
				h.b.Linear(dst, xt, ww, bt)
				h.check(dst, want, tl)
			}
		}})
	}
	type mm struct {
		batch           int
		m, k, n         int
		ta, tb, sharedB bool
		alpha           float32
	}
	for _, c := range []mm{
		{1, 1, 1, 1, false, false, false, 0}, {3, 7, 5, 9, false, false, false, 0}, {2, 17, 33, 65, true, false, false, 0.5},
		{2, 33, 17, 40, false, true, false, 0}, {4, 13, 70, 29, true, true, false, -2}, {3, 20, 30, 12, false, false, true, 0},
		{1, 300, 200, 250, false, false, false, 0}, {2, 129, 257, 65, false, true, true, 0.125}, {8, 64, 40, 64, false, true, false, 0},
	} {
		name := fmt.Sprintf("b%d_m%d_k%d_n%d_t%v%v_shared%v_alpha%g", c.batch, c.m, c.k, c.n, c.ta, c.tb, c.sharedB, c.alpha)
		cs = append(cs, testCase{kernels.OpMatMul, name, func(h *harness) {
			ashape := []int{c.batch, c.m, c.k}
			if c.ta {
				ashape = []int{c.batch, c.k, c.m}
			}
			bshape := []int{c.batch, c.k, c.n}
			if c.tb {
				bshape = []int{c.batch, c.n, c.k}
			}
			if c.sharedB {
				bshape = bshape[1:]
			}
			a, at := h.input(1, ashape...)
			b, bt := h.input(1, bshape...)
			alpha := float64(c.alpha)
			if alpha == 0 {
				alpha = 1
			}
			var want, mag []float64
			for i := range c.batch {
				bi := b
				if !c.sharedB {
					bi = b[i*c.k*c.n : (i+1)*c.k*c.n]
				}
				w, m := refMatMul(a[i*c.m*c.k:(i+1)*c.m*c.k], bi, c.m, c.n, c.k, c.ta, c.tb, alpha)
				want, mag = append(want, w...), append(mag, m...)
			}
			dst := h.output(c.batch, c.m, c.n)
			h.b.MatMul(dst, at, bt, kernels.MatMulParams{Alpha: c.alpha, TransA: c.ta, TransB: c.tb})
			tl := h.tolSum(mag)
			h.check(dst, want, tl)
		}})
	}
	return cs
}

func attentionCases() []testCase {
	type att struct {
		n, lq, lk, cq, cv, heads int
		scale                    float32
	}
	var cs []testCase
	for _, c := range []att{
		{1, 1, 1, 1, 1, 1, 0}, {2, 7, 5, 6, 6, 2, 0}, {1, 100, 50, 24, 24, 4, 0}, {2, 130, 130, 16, 8, 2, 0},
		{1, 256, 256, 64, 64, 8, 0}, {1, 64, 50, 320, 320, 8, 0}, {2, 33, 17, 12, 12, 3, 0.3}, {1, 200, 200, 32, 32, 1, 0},
	} {
		name := fmt.Sprintf("n%d_lq%d_lk%d_cq%d_cv%d_h%d_s%g", c.n, c.lq, c.lk, c.cq, c.cv, c.heads, c.scale)
		cs = append(cs, testCase{kernels.OpAttention, name, func(h *harness) {
			q, qt := h.input(1, c.n, c.lq, c.cq)
			k, kt := h.input(1, c.n, c.lk, c.cq)
			v, vt := h.input(1, c.n, c.lk, c.cv)
			p := kernels.AttentionParams{Heads: c.heads, Scale: c.scale}
			want, mag := refAttention(q, k, v, c.n, c.lq, c.lk, c.cq, c.cv, c.heads, float64(p.HeadScale(c.cq)))
			dst := h.output(c.n, c.lq, c.cv)
			h.b.Attention(dst, qt, kt, vt, p)
			h.check(dst, want, h.tolAttention(mag))
		}})
	}
	return cs
}

func normCases() []testCase {
	var cs []testCase
	type gn struct {
		shape        []int
		groups       int
		eps          float32
		affine, silu bool
	}
	for _, c := range []gn{
		{[]int{1, 1, 1}, 1, 1e-5, true, false}, {[]int{2, 12, 5, 7}, 4, 1e-5, true, true}, {[]int{2, 12, 5, 7}, 3, 1e-6, false, false},
		{[]int{1, 64, 33}, 32, 1e-6, true, true}, {[]int{3, 8, 16, 16}, 8, 1e-5, true, false}, {[]int{1, 320, 16, 16}, 32, 1e-5, true, true},
		{[]int{2, 6, 3}, 2, 1e-6, false, true},
	} {
		name := fmt.Sprintf("%v_g%d_eps%g_affine%v_silu%v", c.shape, c.groups, c.eps, c.affine, c.silu)
		for _, inPlace := range []bool{false, true} {
			cs = append(cs, testCase{kernels.OpGroupNorm, name + map[bool]string{true: "_inplace"}[inPlace], func(h *harness) {
				x, xt := h.input(2, c.shape...)
				for i := range x { // a non-zero mean per element tests the variance pass
					x[i] += 3
				}
				xt = h.upload(x, c.shape...)
				var w, b []float64
				var wt, bt *kernels.Tensor
				if c.affine {
					w, wt = h.input(1, c.shape[1])
					b, bt = h.input(1, c.shape[1])
				}
				plane := len(x) / (c.shape[0] * c.shape[1])
				want := refGroupNorm(x, c.shape[0], c.shape[1], plane, c.groups, float64(c.eps), w, b)
				if c.silu {
					for i, v := range want {
						want[i] = v * refSigmoid(v)
					}
				}
				dst := h.output(c.shape...)
				src := xt
				if inPlace {
					h.b.Copy(dst, xt)
					src = dst
				}
				h.b.GroupNorm(dst, src, wt, bt, kernels.GroupNormParams{Eps: c.eps, Groups: c.groups, SiLU: c.silu})
				h.check(dst, want, h.tolNorm())
			}})
		}
	}
	type ln struct {
		shape  []int
		affine bool
	}
	for _, c := range []ln{{[]int{1, 1}, true}, {[]int{3, 7, 33}, true}, {[]int{5, 17}, false}, {[]int{2, 1024, 320}, true}} {
		name := fmt.Sprintf("%v_affine%v", c.shape, c.affine)
		cs = append(cs, testCase{kernels.OpLayerNorm, name, func(h *harness) {
			x, xt := h.input(3, c.shape...)
			d := c.shape[len(c.shape)-1]
			var w, b []float64
			var wt, bt *kernels.Tensor
			if c.affine {
				w, wt = h.input(1, d)
				b, bt = h.input(1, d)
			}
			want := refLayerNorm(x, d, 1e-5, w, b)
			dst := h.output(c.shape...)
			h.b.LayerNorm(dst, xt, wt, bt, kernels.LayerNormParams{Eps: 1e-5})
			h.check(dst, want, h.tolNorm())
		}})
	}
	type sn struct {
		shape []int
		p     kernels.ScaleNormParams
	}
	for _, c := range []sn{
		{[]int{1, 1}, kernels.ScaleNormParams{Eps: 1e-5}},
		{[]int{3, 7, 33}, kernels.ScaleNormParams{Eps: 1e-5, Gain: 1.3}},
		{[]int{2, 133, 108}, kernels.ScaleNormParams{Eps: 1e-5, Gain: 0.8}}, // RTMCC's mlp
		{[]int{5, 300}, kernels.ScaleNormParams{Eps: 1e-5, Scale: 0.5, Gain: -2}},
		{[]int{4, 17}, kernels.ScaleNormParams{Eps: 0.5, Gain: 1.1}}, // the clamp: rows 0 and 2 are small
	} {
		name := fmt.Sprintf("%v_%+v", c.shape, c.p)
		for _, inPlace := range []bool{false, true} {
			cs = append(cs, testCase{kernels.OpScaleNorm, name + map[bool]string{true: "_inplace"}[inPlace], func(h *harness) {
				x, _ := h.input(2, c.shape...)
				d := c.shape[len(c.shape)-1]
				if c.p.Eps >= 0.5 {
					for i := range d {
						x[i] *= 1e-3
						x[2*d+i] = 0
					}
				}
				xt := h.upload(x, c.shape...)
				want := refScaleNorm(x, d, float64(c.p.RowScale(d)), float64(c.p.Eps), float64(c.p.RowGain()))
				dst := h.output(c.shape...)
				src := xt
				if inPlace {
					h.b.Copy(dst, xt)
					src = dst
				}
				h.b.ScaleNorm(dst, src, c.p)
				h.check(dst, want, h.tolNorm())
			}})
		}
	}
	return cs
}

func pointwiseCases() []testCase {
	var cs []testCase
	type un struct {
		op  kernels.Op
		ref func(float64) float64
		run func(b kernels.Backend, dst, x *kernels.Tensor)
	}
	unary := []un{
		{kernels.OpGELU, refGELU, func(b kernels.Backend, d, x *kernels.Tensor) { b.GELU(d, x) }},
		{kernels.OpSiLU, func(x float64) float64 { return x * refSigmoid(x) }, func(b kernels.Backend, d, x *kernels.Tensor) { b.SiLU(d, x) }},
		{kernels.OpSigmoid, refSigmoid, func(b kernels.Backend, d, x *kernels.Tensor) { b.Sigmoid(d, x) }},
		{kernels.OpReLU, func(x float64) float64 { return math.Max(x, 0) }, func(b kernels.Backend, d, x *kernels.Tensor) { b.ReLU(d, x) }},
		{kernels.OpScale, func(x float64) float64 { return x * float64(float32(-0.7)) }, func(b kernels.Backend, d, x *kernels.Tensor) { b.Scale(d, x, -0.7) }},
		{kernels.OpHardSigmoid, refHardSigmoid, func(b kernels.Backend, d, x *kernels.Tensor) { b.HardSigmoid(d, x) }},
	}
	for _, u := range unary {
		for _, shape := range [][]int{{1}, {17}, {3, 100003}} {
			cs = append(cs, testCase{u.op, fmt.Sprint(shape), func(h *harness) {
				x, _ := h.input(3, shape...)
				// Extremes: saturation, overflow of exp, tiny values. Half
				// rounds 1e-8 to zero; 1e-6 is a half subnormal.
				tiny := 1e-8
				if h.prec == kernels.F16 {
					tiny = 1e-6
				}
				for i, v := range []float64{0, -0, tiny, -tiny, 20, -20, 90, -90, 200, -200, 5.5, -5.5} {
					if i < len(x) {
						x[len(x)-1-i] = v
					}
				}
				xt := h.upload(x, shape...)
				want := make([]float64, len(x))
				for i, v := range x {
					want[i] = u.ref(v)
				}
				dst := h.output(shape...)
				u.run(h.b, dst, xt)
				h.check(dst, want, h.tolPointwise())
				u.run(h.b, xt, xt) // in place
				inPlace := h.output(shape...)
				h.b.Copy(inPlace, xt)
				h.check(inPlace, want, h.tolPointwise())
			}})
		}
	}
	for _, shape := range [][]int{{1, 2}, {2, 5, 66}, {1, 256, 2560}} {
		cs = append(cs, testCase{kernels.OpGEGLU, fmt.Sprint(shape), func(h *harness) {
			x, xt := h.input(2, shape...)
			d2 := shape[len(shape)-1]
			d := d2 / 2
			var want []float64
			for r := 0; r < len(x); r += d2 {
				for i := range d {
					want = append(want, x[r+i]*refGELU(x[r+d+i]))
				}
			}
			out := append([]int{}, shape...)
			out[len(out)-1] = d
			dst := h.output(out...)
			h.b.GEGLU(dst, xt)
			h.check(dst, want, h.tolPointwise())
		}})
	}
	for _, shape := range [][]int{{1, 1}, {3, 7, 129}, {2, 50}, {4, 1024}} {
		cs = append(cs, testCase{kernels.OpSoftmax, fmt.Sprint(shape), func(h *harness) {
			x, _ := h.input(4, shape...)
			x[0] = 80 // large values must not overflow
			xt := h.upload(x, shape...)
			want := refSoftmax(x, shape[len(shape)-1])
			dst := h.output(shape...)
			h.b.Softmax(dst, xt)
			h.check(dst, want, h.tolSoftmax())
		}})
	}
	type bin struct{ a, b []int }
	for _, s := range []bin{
		{[]int{1}, []int{1}}, {[]int{2, 3, 4, 5}, []int{2, 3, 4, 5}}, {[]int{2, 3, 4, 5}, []int{2, 3, 1, 1}},
		{[]int{2, 3, 4, 5}, []int{3, 1, 1}}, {[]int{2, 50, 24}, []int{1, 50, 24}}, {[]int{2, 50, 24}, []int{24}},
		{[]int{2, 3, 4, 5}, []int{1}}, {[]int{2, 3, 4, 5}, []int{2, 1, 4, 1}}, {[]int{1, 300000}, []int{1, 300000}},
		{[]int{4, 70000}, []int{4, 1}},
	} {
		for _, op := range []kernels.Op{kernels.OpAdd, kernels.OpMul} {
			cs = append(cs, testCase{op, fmt.Sprintf("%v_%v", s.a, s.b), func(h *harness) {
				a, at := h.input(1, s.a...)
				b, bt := h.input(1, s.b...)
				f, run := func(x, y float64) float64 { return x + y }, h.b.Add
				if op == kernels.OpMul {
					f, run = func(x, y float64) float64 { return x * y }, h.b.Mul
				}
				// fp32: the float32-rounded result, exactly. F16: the sum or
				// product of two halves, exact in float64, rounded once.
				round := func(v float64) float64 { return float64(float32(v)) }
				if h.prec == kernels.F16 {
					round = func(v float64) float64 { return v }
				}
				want := refBroadcast(a, s.a, b, s.b, func(x, y float64) float64 { return round(f(x, y)) })
				dst := h.output(s.a...)
				run(dst, at, bt)
				h.check(dst, want, h.tolRounded())
				run(at, at, bt) // in place
				inPlace := h.output(s.a...)
				h.b.Copy(inPlace, at)
				h.check(inPlace, want, h.tolRounded())
			}})
		}
	}
	return cs
}

func layoutCases() []testCase {
	var cs []testCase
	type perm struct{ shape, perm []int }
	for _, c := range []perm{
		{[]int{5}, []int{0}}, {[]int{2, 3, 4, 5}, []int{0, 2, 3, 1}}, {[]int{2, 3, 4, 5}, []int{0, 3, 1, 2}},
		{[]int{2, 3, 4, 5}, []int{3, 2, 1, 0}}, {[]int{2, 3, 4, 5}, []int{0, 1, 3, 2}}, {[]int{2, 3, 4, 5}, []int{0, 1, 2, 3}},
		{[]int{2, 64, 40}, []int{0, 2, 1}}, {[]int{1, 320, 33, 31}, []int{0, 2, 3, 1}}, {[]int{2, 1, 7, 1, 9}, []int{4, 1, 0, 3, 2}},
		{[]int{70, 45}, []int{1, 0}}, {[]int{2, 50, 8, 40}, []int{0, 2, 1, 3}},
	} {
		cs = append(cs, testCase{kernels.OpPermute, fmt.Sprintf("%v_%v", c.shape, c.perm), func(h *harness) {
			x, xt := h.input(1, c.shape...)
			want := refPermute(x, c.shape, c.perm)
			out := make([]int, len(c.perm))
			for i, p := range c.perm {
				out[i] = c.shape[p]
			}
			dst := h.output(out...)
			h.b.Permute(dst, xt, c.perm...)
			h.check(dst, want, h.tolExact())
		}})
	}
	type cat struct {
		shapes [][]int
		axis   int
	}
	for _, c := range []cat{
		{[][]int{{2, 3, 4, 5}, {2, 5, 4, 5}}, 1}, {[][]int{{1, 2}, {3, 2}, {1, 2}}, 0}, {[][]int{{2, 3, 4}, {2, 3, 1}}, -1},
		{[][]int{{2, 320, 8, 8}, {2, 640, 8, 8}}, 1},
	} {
		cs = append(cs, testCase{kernels.OpConcat, fmt.Sprintf("%v_axis%d", c.shapes, c.axis), func(h *harness) {
			var srcs [][]float64
			var ts []*kernels.Tensor
			for _, s := range c.shapes {
				v, t := h.input(1, s...)
				srcs, ts = append(srcs, v), append(ts, t)
			}
			axis := c.axis
			if axis < 0 {
				axis += len(c.shapes[0])
			}
			out := append([]int{}, c.shapes[0]...)
			for _, s := range c.shapes[1:] {
				out[axis] += s[axis]
			}
			dst := h.output(out...)
			h.b.Concat(dst, c.axis, ts...)
			h.check(dst, refConcat(srcs, c.shapes, axis), h.tolExact())
		}})
	}
	type up struct{ in, out []int }
	for _, c := range []up{
		{[]int{1, 1, 1, 1}, []int{1, 1, 2, 2}}, {[]int{2, 3, 5, 7}, []int{2, 3, 10, 14}}, {[]int{1, 2, 8, 8}, []int{1, 2, 15, 15}},
		{[]int{1, 4, 32, 32}, []int{1, 4, 64, 64}}, {[]int{1, 2, 6, 6}, []int{1, 2, 4, 9}},
	} {
		cs = append(cs, testCase{kernels.OpUpsampleNearest, fmt.Sprintf("%v_to_%v", c.in, c.out), func(h *harness) {
			x, xt := h.input(1, c.in...)
			want := refUpsample(x, c.in[0]*c.in[1], c.in[2], c.in[3], c.out[2], c.out[3])
			dst := h.output(c.out...)
			h.b.UpsampleNearest(dst, xt)
			h.check(dst, want, h.tolExact())
		}})
	}
	type pool struct {
		in []int
		p  kernels.Pool2DParams
	}
	for _, c := range []pool{
		{[]int{1, 3, 8, 8}, kernels.Pool2D(2, 2, 0)}, {[]int{2, 2, 7, 9}, kernels.Pool2D(2, 2, 0)},
		{[]int{1, 4, 15, 15}, kernels.Pool2D(3, 2, 1)}, {[]int{1, 2, 6, 5}, kernels.Pool2DParams{KernelH: 6, KernelW: 5}},
		{[]int{1, 64, 8, 8}, kernels.Pool2D(8, 8, 0)}, {[]int{1, 1, 9, 11}, kernels.Pool2DParams{KernelH: 2, KernelW: 3, StrideH: 1, StrideW: 2, PadLeft: 1}},
	} {
		nc, h, w := c.in[0]*c.in[1], c.in[2], c.in[3]
		ho, wo := c.p.OutSize(h, w)
		name := fmt.Sprintf("%v_%+v", c.in, c.p)
		cs = append(cs, testCase{kernels.OpMaxPool2D, name, func(h2 *harness) {
			x, xt := h2.input(1, c.in...)
			dst := h2.output(c.in[0], c.in[1], ho, wo)
			h2.b.MaxPool2D(dst, xt, c.p)
			h2.check(dst, refPool(x, nc, h, w, c.p, true), h2.tolExact())
		}}, testCase{kernels.OpAvgPool2D, name, func(h2 *harness) {
			x, xt := h2.input(1, c.in...)
			dst := h2.output(c.in[0], c.in[1], ho, wo)
			h2.b.AvgPool2D(dst, xt, c.p)
			h2.check(dst, refPool(x, nc, h, w, c.p, false), h2.tolPointwise())
		}})
	}
	for _, c := range []up{
		{[]int{1, 19, 30, 30}, []int{1, 19, 240, 240}}, {[]int{2, 3, 5, 7}, []int{2, 3, 10, 14}},
		{[]int{1, 2, 8, 8}, []int{1, 2, 15, 15}}, {[]int{1, 2, 6, 6}, []int{1, 2, 4, 9}}, {[]int{1, 1, 1, 3}, []int{1, 1, 4, 1}},
	} {
		for _, align := range []bool{true, false} {
			cs = append(cs, testCase{kernels.OpUpsampleBilinear, fmt.Sprintf("%v_to_%v_align%v", c.in, c.out, align), func(h *harness) {
				x, xt := h.input(1, c.in...)
				want := refBilinear(x, c.in[0]*c.in[1], c.in[2], c.in[3], c.out[2], c.out[3], align)
				dst := h.output(c.out...)
				h.b.UpsampleBilinear(dst, xt, align)
				h.check(dst, want, h.tolNorm())
			}})
		}
	}
	for _, shape := range [][]int{{1, 256, 32, 32}, {2, 3, 5, 7}, {1, 512, 4, 3}, {3, 7}} {
		cs = append(cs, testCase{kernels.OpL2Norm, fmt.Sprint(shape), func(h *harness) {
			x, xt := h.input(1, shape...)
			c := shape[1]
			wt, wtt := h.input(1, c)
			plane := len(x) / (shape[0] * c)
			dst := h.output(shape...)
			h.b.L2Norm(dst, xt, wtt, 1e-10)
			h.check(dst, refL2Norm(x, shape[0], c, plane, wt, 1e-10), h.tolNorm())
		}})
	}
	for _, shape := range [][]int{{1}, {3, 70001}} {
		cs = append(cs, testCase{kernels.OpCopy, fmt.Sprint(shape), func(h *harness) {
			x, xt := h.input(1, shape...)
			dst := h.output(shape...)
			h.b.Copy(dst, xt)
			h.check(dst, x, h.tolExact())
		}})
	}
	// Upload's rounding: values that are not halves (ties between
	// neighbours, subnormals, overflow), uploaded as they are, must come
	// back rounded as the storage precision rounds them (unchanged in
	// fp32; RoundF16 in F16, which gives ±Inf beyond 65520).
	cs = append(cs, testCase{kernels.OpCopy, "upload_rounding", func(h *harness) {
		raw := []float32{0.1, 1.0 / 3, 1 + 0x1p-11, 1 + 3*0x1p-11, 2049, 2051, 0x1p-25, 3 * 0x1p-26, 1e-6, 0x1p-14 - 0x1p-26,
			65519, 65520, 1e6, -12345.678, math.Nextafter32(1+0x1p-11, 2), 6e-8, 3e-8, 1e-30}
		for _, v := range slices.Clone(raw) {
			raw = append(raw, -v)
		}
		for range 1000 {
			raw = append(raw, float32(h.rng.NormFloat64()*100))
		}
		want := make([]float64, len(raw))
		for i, v := range raw {
			want[i] = float64(h.stored(v))
		}
		xt := h.b.Alloc(len(raw))
		h.owned = append(h.owned, xt)
		h.b.Upload(xt, raw)
		dst := h.output(len(raw))
		h.b.Copy(dst, xt)
		h.check(dst, want, h.tolExact())
	}})
	return cs
}
