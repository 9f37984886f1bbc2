package cpu

import (
	"github.com/avatargen/musetalk/kernels"
)

// Add implements [kernels.Ops.Add].
func (b *Backend) Add(dst, a, x *kernels.Tensor) {
	b.binary("Add", dst, a, x, func(d, s, t []float32) {
		d, t = d[:len(s)], t[:len(s)]
		for i, v := range s {
			d[i] = v + t[i]
		}
	}, func(d, s []float32, v float32) {
		d = d[:len(s)]
		for i, u := range s {
			d[i] = u + v
		}
	})
}

// Copy implements [kernels.Ops.Copy].
func (b *Backend) Copy(dst, src *kernels.Tensor) {
	const op = "Copy"
	sd, dd := hostData(op, src), hostData(op, dst)
	check(len(sd) == len(dd), op, "dst %v and src %v differ in length", dst, src)
	b.forChunks(len(sd), 4*elemChunk, func(lo, hi int) { copy(dd[lo:hi], sd[lo:hi]) })
}

// Mul implements [kernels.Ops.Mul].
func (b *Backend) Mul(dst, a, x *kernels.Tensor) {
	b.binary("Mul", dst, a, x, func(d, s, t []float32) {
		d, t = d[:len(s)], t[:len(s)]
		for i, v := range s {
			d[i] = v * t[i]
		}
	}, func(d, s []float32, v float32) {
		d = d[:len(s)]
		for i, u := range s {
			d[i] = u * v
		}
	})
}

// Scale implements [kernels.Ops.Scale].
func (b *Backend) Scale(dst, x *kernels.Tensor, s float32) {
	b.unary("Scale", dst, x, func(d, src []float32) {
		if b.kern.avx512 {
			scaleVec(d, src, s)
			return
		}
		d = d[:len(src)]
		for i, v := range src {
			d[i] = v * s
		}
	})
}

// binary runs dst = a ∘ x with x broadcast to a's shape. vec handles a run
// where x is contiguous, scalar a run where one x value repeats.
func (b *Backend) binary(op string, dst, a, x *kernels.Tensor, vec func(d, s, t []float32), scalar func(d, s []float32, v float32)) {
	ad, xd, dd := hostData(op, a), hostData(op, x), hostData(op, dst)
	checkShape(op, "dst", dst, a.Shape()...)
	sizes, xstr := broadcastPlan(op, a.Shape(), x.Shape())
	inner := sizes[len(sizes)-1]
	innerStr := xstr[len(xstr)-1]
	outer := len(ad) / inner
	run := func(o, lo, hi int) {
		xo := 0
		for d, r := len(sizes)-2, o; d >= 0; d-- {
			xo += r % sizes[d] * xstr[d]
			r /= sizes[d]
		}
		base := o * inner
		if innerStr == 0 {
			scalar(dd[base+lo:base+hi], ad[base+lo:base+hi], xd[xo])
		} else {
			vec(dd[base+lo:base+hi], ad[base+lo:base+hi], xd[xo+lo:xo+hi])
		}
	}
	if outer == 1 {
		b.forChunks(inner, elemChunk, func(lo, hi int) { run(0, lo, hi) })
		return
	}
	b.forChunks(outer, max(1, elemChunk/inner), func(lo, hi int) {
		for o := lo; o < hi; o++ {
			run(o, 0, inner)
		}
	})
}

// broadcastPlan aligns x's shape to a's (NumPy rules) and merges adjacent
// dimensions. It returns the merged sizes and x's stride in each (0 where
// x repeats). The last merged dimension is the contiguous inner run.
func broadcastPlan(op string, a, x []int) (sizes, xstr []int) {
	check(len(x) <= len(a), op, "cannot broadcast %v to %v", x, a)
	pad := len(a) - len(x)
	stride := 1
	rs := make([]int, len(a)) // x's stride per dimension of a, 0 if broadcast
	for i := len(a) - 1; i >= 0; i-- {
		xi := 1
		if i >= pad {
			xi = x[i-pad]
		}
		check(xi == a[i] || xi == 1, op, "cannot broadcast %v to %v", x, a)
		if xi == a[i] && a[i] != 1 {
			rs[i] = stride
		}
		stride *= xi
	}
	for i, n := range a {
		if n == 1 {
			continue
		}
		if k := len(sizes) - 1; k >= 0 {
			switch {
			case xstr[k] == 0 && rs[i] == 0:
				sizes[k] *= n
				continue
			case xstr[k] != 0 && rs[i] != 0 && xstr[k] == rs[i]*n:
				sizes[k] *= n
				xstr[k] = rs[i]
				continue
			}
		}
		sizes = append(sizes, n)
		xstr = append(xstr, rs[i])
	}
	if len(sizes) == 0 {
		sizes, xstr = []int{1}, []int{0}
	}
	return sizes, xstr
}
