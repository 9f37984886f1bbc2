package cuda

import (
	"slices"

	"github.com/avatargen/musetalk/kernels"
)

// permRank is the number of merged dimensions permute_f32 indexes; the host
// makes one launch per index of any further outer ones.
const permRank = 6

// Permute implements [kernels.Ops.Permute], for any rank. Size-1
// dimensions are dropped and dimensions that stay adjacent and in order are
// merged; a plain copy results when nothing moves, a swap of the last two
// remaining dimensions (with or without a leading batch dimension: NCHW ↔
// NHWC, heads) runs as a tiled transpose, and anything else as a gather
// through strides.
func (b *Backend) Permute(dst, x *kernels.Tensor, perm ...int) {
	const op = "Permute"
	check(x != nil, op, "x is nil")
	r := x.Rank()
	check(len(perm) == r, op, "perm %v for %v", perm, x)
	seen := make([]bool, r)
	want := make([]int, r)
	for i, p := range perm {
		check(p >= 0 && p < r && !seen[p], op, "perm %v is not a permutation", perm)
		seen[p] = true
		want[i] = x.Dim(p)
	}
	checkShape(op, "dst", dst, want...)
	n := x.Len()
	sizes, order := kernels.SimplifyPermute(x.Shape(), perm)
	b.mu.Lock()
	defer b.mu.Unlock()
	pd, px := b.ptr(op, "dst", dst), b.ptr(op, "x", x)
	switch {
	case len(sizes) == 1:
		b.launch(op, "copy", b.elemGrid(n), D1(elemBlock), 0, pd, px, i32(op, n))
		return
	case slices.Equal(order, []int{1, 0}):
		b.transpose(op, pd, px, 1, sizes[0], sizes[1])
		return
	case slices.Equal(order, []int{0, 2, 1}):
		b.transpose(op, pd, px, sizes[0], sizes[1], sizes[2])
		return
	}
	// x's stride of each merged dimension, then dst's sizes and the x
	// stride of each, padded to permRank with leading size-1 dimensions.
	xs := make([]int, len(sizes))
	for i, s := len(sizes)-1, 1; i >= 0; i-- {
		xs[i] = s
		s *= sizes[i]
	}
	var dsz, dstr []int
	for range permRank - len(order) {
		dsz, dstr = append(dsz, 1), append(dstr, 0)
	}
	for _, o := range order {
		dsz, dstr = append(dsz, sizes[o]), append(dstr, xs[o])
	}
	outer := len(dsz) - permRank
	in, is := dsz[outer:], dstr[outer:]
	inner := 1
	for _, d := range in {
		inner *= d
	}
	idx := make([]int, outer)
	for o := 0; o < n/inner; o++ {
		xo := 0
		for d := range outer {
			xo += idx[d] * dstr[d]
		}
		b.launch(op, "permute", b.elemGrid(inner), D1(elemBlock), 0,
			pd+DevPtr(b.esize*o*inner), px+DevPtr(b.esize*xo), i32(op, inner),
			int32(in[1]), int32(in[2]), int32(in[3]), int32(in[4]), int32(in[5]),
			i32(op, is[0]), i32(op, is[1]), i32(op, is[2]), i32(op, is[3]), i32(op, is[4]), i32(op, is[5]))
		for d := outer - 1; d >= 0; d-- {
			if idx[d]++; idx[d] < dsz[d] {
				break
			}
			idx[d] = 0
		}
	}
}

// transpose launches transpose_f32 over batch × rows × cols; the caller
// holds b.mu.
func (b *Backend) transpose(op string, dst, x DevPtr, batch, rows, cols int) {
	tiles := ceilDiv(rows, 32) * ceilDiv(cols, 32)
	b.launch(op, "transpose", D3(min(tiles, 1<<20), 1, min(batch, 65535)), D3(32, 8, 1), 0,
		dst, x, i32(op, batch), i32(op, rows), i32(op, cols))
}

// Concat implements [kernels.Ops.Concat]: one strided copy per source into
// its columns of dst viewed as [outer, dst.Len()/outer], where outer is the
// product of the dimensions before axis.
func (b *Backend) Concat(dst *kernels.Tensor, axis int, srcs ...*kernels.Tensor) {
	const op = "Concat"
	axis, outer, err := kernels.ConcatShapes(dst, axis, srcs)
	check(err == nil, op, "%v", err)
	row := dst.Len() / max(outer, 1)
	i32(op, dst.Len())
	b.mu.Lock()
	defer b.mu.Unlock()
	pd := b.ptr(op, "dst", dst)
	col := 0
	for _, s := range srcs {
		inner := s.Len() / max(outer, 1)
		ps := b.ptr(op, "source", s)
		if inner > 0 {
			b.launch(op, "concat_part", b.elemGrid(outer*inner), D1(elemBlock), 0,
				pd+DevPtr(b.esize*col), ps, i32(op, outer), i32(op, inner), i32(op, row))
		}
		col += inner
	}
}

// UpsampleBilinear implements [kernels.Ops.UpsampleBilinear]: one thread
// per output element computes its taps with the CPU backend's float32
// coordinate rules (the scales are computed here, in float32).
func (b *Backend) UpsampleBilinear(dst, x *kernels.Tensor, alignCorners bool) {
	const op = "UpsampleBilinear"
	check(x != nil && dst != nil, op, "nil tensor")
	check(x.Rank() == 4 && dst.Rank() == 4, op, "x %v and dst %v must have rank 4", x, dst)
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	h2, w2 := dst.Dim(2), dst.Dim(3)
	checkShape(op, "dst", dst, n, c, h2, w2)
	check(h > 0 && w > 0, op, "empty input %v", x)
	scale := func(in, out int) float32 {
		switch {
		case alignCorners && out > 1:
			return float32(in-1) / float32(out-1)
		case !alignCorners:
			return float32(in) / float32(out)
		}
		return 0
	}
	align := int32(0)
	if alignCorners {
		align = 1
	}
	total := dst.Len()
	i32(op, total)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.launch(op, "upsample_bilinear", b.elemGrid(total), D1(elemBlock), 0,
		b.ptr(op, "dst", dst), b.ptr(op, "x", x), i32(op, n*c), i32(op, h), i32(op, w), i32(op, h2), i32(op, w2),
		scale(h, h2), scale(w, w2), align)
}

// UpsampleNearest implements [kernels.Ops.UpsampleNearest]: one thread per
// output element reads source index floor(i·H/H2) on each axis.
func (b *Backend) UpsampleNearest(dst, x *kernels.Tensor) {
	const op = "UpsampleNearest"
	check(x != nil && dst != nil, op, "nil tensor")
	check(x.Rank() == 4 && dst.Rank() == 4, op, "x %v and dst %v must have rank 4", x, dst)
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	h2, w2 := dst.Dim(2), dst.Dim(3)
	checkShape(op, "dst", dst, n, c, h2, w2)
	check(h > 0 && w > 0, op, "empty input %v", x)
	total := dst.Len()
	i32(op, total)
	i32(op, max(h2*h, w2*w)) // the index products, within the kernel's 64-bit arithmetic anyway
	b.mu.Lock()
	defer b.mu.Unlock()
	b.launch(op, "upsample_nearest", b.elemGrid(total), D1(elemBlock), 0,
		b.ptr(op, "dst", dst), b.ptr(op, "x", x), i32(op, n*c), i32(op, h), i32(op, w), i32(op, h2), i32(op, w2))
}
