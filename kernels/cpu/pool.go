package cpu

import (
	"math"

	"github.com/avatargen/musetalk/kernels"
)

// checkPool validates a pooling call and returns x's and dst's sizes.
func checkPool(op string, dst, x *kernels.Tensor, p kernels.Pool2DParams) (nc, h, w, ho, wo int) {
	checkRank(op, "x", x, 4)
	check(p.KernelH > 0 && p.KernelW > 0, op, "kernel %d×%d must be positive", p.KernelH, p.KernelW)
	check(p.StrideH >= 0 && p.StrideW >= 0, op, "negative stride %d×%d", p.StrideH, p.StrideW)
	check(p.PadTop >= 0 && p.PadLeft >= 0 && p.PadBottom >= 0 && p.PadRight >= 0, op, "negative padding %+v", p)
	// A window made only of padding has no maximum; PyTorch forbids it too.
	check(2*max(p.PadTop, p.PadBottom) <= p.KernelH && 2*max(p.PadLeft, p.PadRight) <= p.KernelW, op,
		"padding %+v exceeds half the %d×%d kernel", p, p.KernelH, p.KernelW)
	n, c := x.Dim(0), x.Dim(1)
	h, w = x.Dim(2), x.Dim(3)
	ho, wo = p.OutSize(h, w)
	check(ho > 0 && wo > 0, op, "kernel %d×%d does not fit the padded %d×%d input", p.KernelH, p.KernelW, h, w)
	checkShape(op, "dst", dst, n, c, ho, wo)
	return n * c, h, w, ho, wo
}

// poolWindow returns the input rows (or columns) [lo, hi) that output index
// o's window covers, and the window's extent clipped to the padded input
// (PyTorch's divisor with count_include_pad).
func poolWindow(o, stride, padLo, padHi, k, n int) (lo, hi, padded int) {
	start := o*max(stride, 1) - padLo
	end := min(start+k, n+padHi)
	padded = end - start
	return max(start, 0), min(end, n), padded
}

// MaxPool2D implements [kernels.Ops.MaxPool2D].
func (b *Backend) MaxPool2D(dst, x *kernels.Tensor, p kernels.Pool2DParams) {
	const op = "MaxPool2D"
	xd, dd := hostData(op, x), hostData(op, dst)
	nc, h, w, ho, wo := checkPool(op, dst, x, p)
	b.forChunks(nc, max(1, elemChunk/(h*w)), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src, out := xd[pl*h*w:(pl+1)*h*w], dd[pl*ho*wo:(pl+1)*ho*wo]
			for oy := range ho {
				y0, y1, _ := poolWindow(oy, p.StrideH, p.PadTop, p.PadBottom, p.KernelH, h)
				for ox := range wo {
					x0, x1, _ := poolWindow(ox, p.StrideW, p.PadLeft, p.PadRight, p.KernelW, w)
					m := float32(math.Inf(-1))
					for y := y0; y < y1; y++ {
						for _, v := range src[y*w+x0 : y*w+x1] {
							if v > m || v != v {
								m = v
							}
						}
					}
					out[oy*wo+ox] = m
				}
			}
		}
	})
}

// AvgPool2D implements [kernels.Ops.AvgPool2D]. Sums accumulate in float64.
func (b *Backend) AvgPool2D(dst, x *kernels.Tensor, p kernels.Pool2DParams) {
	const op = "AvgPool2D"
	xd, dd := hostData(op, x), hostData(op, dst)
	nc, h, w, ho, wo := checkPool(op, dst, x, p)
	b.forChunks(nc, max(1, elemChunk/(h*w)), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src, out := xd[pl*h*w:(pl+1)*h*w], dd[pl*ho*wo:(pl+1)*ho*wo]
			for oy := range ho {
				y0, y1, ph := poolWindow(oy, p.StrideH, p.PadTop, p.PadBottom, p.KernelH, h)
				for ox := range wo {
					x0, x1, pw := poolWindow(ox, p.StrideW, p.PadLeft, p.PadRight, p.KernelW, w)
					var s float64
					for y := y0; y < y1; y++ {
						for _, v := range src[y*w+x0 : y*w+x1] {
							s += float64(v)
						}
					}
					out[oy*wo+ox] = float32(s / float64(ph*pw))
				}
			}
		}
	})
}

// bilinearTaps returns, for each of out destination indices, the two source
// indices and the weight of the second, with PyTorch's coordinate rules
// (computed in float32 as its CPU kernel does).
func bilinearTaps(in, out int, alignCorners bool) (i0, i1 []int, l1 []float32) {
	i0, i1, l1 = make([]int, out), make([]int, out), make([]float32, out)
	var scale float32
	switch {
	case alignCorners && out > 1:
		scale = float32(in-1) / float32(out-1)
	case !alignCorners:
		scale = float32(in) / float32(out)
	}
	for d := range out {
		var src float32
		if alignCorners {
			src = scale * float32(d)
		} else {
			src = max(scale*(float32(d)+0.5)-0.5, 0)
		}
		s0 := min(int(src), in-1)
		i0[d], l1[d] = s0, src-float32(s0)
		i1[d] = s0
		if s0 < in-1 {
			i1[d] = s0 + 1
		}
	}
	return i0, i1, l1
}

// UpsampleBilinear implements [kernels.Ops.UpsampleBilinear].
func (b *Backend) UpsampleBilinear(dst, x *kernels.Tensor, alignCorners bool) {
	const op = "UpsampleBilinear"
	xd, dd := hostData(op, x), hostData(op, dst)
	checkRank(op, "x", x, 4)
	checkRank(op, "dst", dst, 4)
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	h2, w2 := dst.Dim(2), dst.Dim(3)
	checkShape(op, "dst", dst, n, c, h2, w2)
	check(h > 0 && w > 0, op, "empty input %v", x)
	y0s, y1s, ly := bilinearTaps(h, h2, alignCorners)
	x0s, x1s, lx := bilinearTaps(w, w2, alignCorners)
	b.forChunks(n*c, max(1, elemChunk/(h2*w2)), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src, out := xd[pl*h*w:(pl+1)*h*w], dd[pl*h2*w2:(pl+1)*h2*w2]
			for y := range h2 {
				r0, r1 := src[y0s[y]*w:(y0s[y]+1)*w], src[y1s[y]*w:(y1s[y]+1)*w]
				hl1 := ly[y]
				hl0 := 1 - hl1
				row := out[y*w2 : (y+1)*w2]
				for i := range row {
					wl1 := lx[i]
					wl0 := 1 - wl1
					a, bb := x0s[i], x1s[i]
					row[i] = hl0*(wl0*r0[a]+wl1*r0[bb]) + hl1*(wl0*r1[a]+wl1*r1[bb])
				}
			}
		}
	})
}

// L2Norm implements [kernels.Ops.L2Norm]. The channel sums of squares
// accumulate in float64.
func (b *Backend) L2Norm(dst, x, weight *kernels.Tensor, eps float32) {
	const op = "L2Norm"
	xd, dd, wd := hostData(op, x), hostData(op, dst), hostData(op, weight)
	check(x.Rank() >= 2, op, "x is %v, want rank ≥ 2", x)
	checkShape(op, "dst", dst, x.Shape()...)
	n, c := x.Dim(0), x.Dim(1)
	checkShape(op, "weight", weight, c)
	plane := x.Len() / max(n*c, 1)
	// Tasks are spans of positions within one batch entry; each walks the
	// channels' contiguous rows so memory is read in order.
	span := max(1, elemChunk/max(c, 1))
	tasks := ceilDiv(plane, span)
	b.w.parallel(n*tasks, func(s *scratch, t int) {
		bi, lo := t/tasks, (t%tasks)*span
		hi := min(plane, lo+span)
		sums := make([]float64, hi-lo)
		base := bi * c * plane
		for ch := range c {
			for i, v := range xd[base+ch*plane+lo : base+ch*plane+hi] {
				sums[i] += float64(v) * float64(v)
			}
		}
		inv := make([]float32, hi-lo)
		for i, s := range sums {
			inv[i] = float32(math.Sqrt(s)) + eps
		}
		for ch := range c {
			o := base + ch*plane
			wc := wd[ch]
			for i := lo; i < hi; i++ {
				dd[o+i] = xd[o+i] / inv[i-lo] * wc
			}
		}
	})
}
