package cpu

import (
	"math"

	"github.com/avatargen/musetalk/kernels"
)

// GroupNorm implements [kernels.Ops.GroupNorm]; one task per (image,
// group). Statistics accumulate in float64.
func (b *Backend) GroupNorm(dst, x, weight, bias *kernels.Tensor, p kernels.GroupNormParams) {
	const op = "GroupNorm"
	xd, dd, wd, bd := hostData(op, x), hostData(op, dst), optData(op, weight), optData(op, bias)
	check(x.Rank() >= 2, op, "x %v needs rank ≥ 2", x)
	checkShape(op, "dst", dst, x.Shape()...)
	n, c := x.Dim(0), x.Dim(1)
	g := p.Groups
	check(g > 0 && c%g == 0, op, "%d groups do not divide %d channels", g, c)
	if weight != nil {
		checkShape(op, "weight", weight, c)
	}
	if bias != nil {
		checkShape(op, "bias", bias, c)
	}
	plane := x.Len() / (n * c)
	cg := c / g
	b.w.parallel(n*g, func(_ *scratch, t int) {
		lo := t * cg * plane
		mean, inv := meanInvStd(&b.kern, xd[lo:lo+cg*plane], p.Eps)
		c0 := t % g * cg
		for ci := range cg {
			scale, shift := inv, 0.0
			if wd != nil {
				scale *= float64(wd[c0+ci])
			}
			if bd != nil {
				shift = float64(bd[c0+ci])
			}
			off := lo + ci*plane
			if b.kern.avx512 {
				affineVec(dd[off:off+plane], xd[off:off+plane], float32(mean), float32(scale), float32(shift), p.SiLU)
				continue
			}
			out := dd[off : off+plane]
			affine(out, xd[off:off+plane], float32(mean), float32(scale), float32(shift))
			if p.SiLU {
				for i, v := range out {
					out[i] = v * sigmoid32(v)
				}
			}
		}
	})
}

// LayerNorm implements [kernels.Ops.LayerNorm]; rows are spread over the
// threads. Statistics accumulate in float64.
func (b *Backend) LayerNorm(dst, x, weight, bias *kernels.Tensor, p kernels.LayerNormParams) {
	const op = "LayerNorm"
	xd, dd, wd, bd := hostData(op, x), hostData(op, dst), optData(op, weight), optData(op, bias)
	rows, d, err := kernels.LayerNormShapes(dst, x, weight, bias)
	check(err == nil, op, "%v", err)
	if rows == 0 {
		return
	}
	b.forChunks(rows, max(1, elemChunk/d), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			src, out := xd[r*d:(r+1)*d], dd[r*d:(r+1)*d]
			mean, inv := meanInvStd(&b.kern, src, p.Eps)
			m, s := float32(mean), float32(inv)
			switch {
			case wd != nil && bd != nil:
				for i, v := range src {
					out[i] = (v-m)*s*wd[i] + bd[i]
				}
			case wd != nil:
				for i, v := range src {
					out[i] = (v - m) * s * wd[i]
				}
			default:
				for i, v := range src {
					out[i] = (v - m) * s
				}
				if bd != nil {
					for i := range out {
						out[i] += bd[i]
					}
				}
			}
		}
	})
}

// meanInvStd returns the mean of x and 1/sqrt(biased variance + eps),
// computed in two passes in float64.
func meanInvStd(kern *microKernel, x []float32, eps float32) (mean, inv float64) {
	if kern.avx512 {
		mean = sumVec(x) / float64(len(x))
		return mean, 1 / math.Sqrt(sumSqDevVec(x, mean)/float64(len(x))+float64(eps))
	}
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += float64(x[i])
		s1 += float64(x[i+1])
		s2 += float64(x[i+2])
		s3 += float64(x[i+3])
	}
	for ; i < len(x); i++ {
		s0 += float64(x[i])
	}
	mean = (s0 + s1 + s2 + s3) / float64(len(x))
	s0, s1, s2, s3 = 0, 0, 0, 0
	i = 0
	for ; i+4 <= len(x); i += 4 {
		d0, d1, d2, d3 := float64(x[i])-mean, float64(x[i+1])-mean, float64(x[i+2])-mean, float64(x[i+3])-mean
		s0 += d0 * d0
		s1 += d1 * d1
		s2 += d2 * d2
		s3 += d3 * d3
	}
	for ; i < len(x); i++ {
		d := float64(x[i]) - mean
		s0 += d * d
	}
	variance := (s0 + s1 + s2 + s3) / float64(len(x))
	return mean, 1 / math.Sqrt(variance+float64(eps))
}

// affine sets dst = (x − mean)·scale + shift; subtracting the mean first
// avoids the cancellation of x·scale − mean·scale when scale is large.
func affine(dst, x []float32, mean, scale, shift float32) {
	dst = dst[:len(x)]
	for i, v := range x {
		dst[i] = (v-mean)*scale + shift
	}
}

// ScaleNorm implements [kernels.Ops.ScaleNorm]; rows are spread over the
// threads. The sum of squares accumulates in float64, and each element is
// divided by the clamped norm and then multiplied by the gain, in the
// order PyTorch's x / norm.clamp(min=eps) * g takes.
func (b *Backend) ScaleNorm(dst, x *kernels.Tensor, p kernels.ScaleNormParams) {
	const op = "ScaleNorm"
	xd, dd := hostData(op, x), hostData(op, dst)
	check(x.Rank() >= 1, op, "x is %v, want rank ≥ 1", x)
	checkShape(op, "dst", dst, x.Shape()...)
	d := x.Dim(-1)
	if d == 0 || x.Len() == 0 {
		return
	}
	rows := x.Len() / d
	scale, gain := p.RowScale(d), p.RowGain()
	b.forChunks(rows, max(1, elemChunk/d), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			src, out := xd[r*d:(r+1)*d], dd[r*d:(r+1)*d]
			var s float64
			for _, v := range src {
				s += float64(v) * float64(v)
			}
			n := max(float32(math.Sqrt(s))*scale, p.Eps)
			for i, v := range src {
				out[i] = v / n * gain
			}
		}
	})
}
