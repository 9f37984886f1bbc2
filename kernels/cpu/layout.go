package cpu

import (
	"slices"

	"github.com/avatargen/musetalk/kernels"
)

// Concat implements [kernels.Ops.Concat].
func (b *Backend) Concat(dst *kernels.Tensor, axis int, srcs ...*kernels.Tensor) {
	const op = "Concat"
	dd := hostData(op, dst)
	for _, s := range srcs {
		hostData(op, s)
	}
	_, outer, err := kernels.ConcatShapes(dst, axis, srcs)
	check(err == nil, op, "%v", err)
	dInner := dst.Len() / outer
	b.forChunks(outer, max(1, elemChunk/dInner), func(lo, hi int) {
		for o := lo; o < hi; o++ {
			off := o * dInner
			for _, s := range srcs {
				inner := s.Len() / outer
				copy(dd[off:off+inner], s.Data()[o*inner:(o+1)*inner])
				off += inner
			}
		}
	})
}

// Permute implements [kernels.Ops.Permute]. Size-1 dimensions are dropped
// and dimensions that stay adjacent are merged first; a transpose of the
// last two remaining dimensions runs in cache-sized tiles.
func (b *Backend) Permute(dst, x *kernels.Tensor, perm ...int) {
	const op = "Permute"
	xd, dd := hostData(op, x), hostData(op, dst)
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
	sizes, order := kernels.SimplifyPermute(x.Shape(), perm)
	switch {
	case len(sizes) == 1:
		b.forChunks(len(xd), 4*elemChunk, func(lo, hi int) { copy(dd[lo:hi], xd[lo:hi]) })
	case slices.Equal(order, []int{1, 0}):
		b.transpose(dd, xd, 1, sizes[0], sizes[1])
	case slices.Equal(order, []int{0, 2, 1}):
		b.transpose(dd, xd, sizes[0], sizes[1], sizes[2])
	default:
		b.permuteGeneric(dd, xd, sizes, order)
	}
}

// transpose sets dst[b][j][i] = x[b][i][j] for batch × rows × cols, in
// 32×32 tiles spread over the threads.
func (b *Backend) transpose(dst, x []float32, batch, rows, cols int) {
	const tile = 32
	tr, tc := ceilDiv(rows, tile), ceilDiv(cols, tile)
	per := max(1, elemChunk/(tile*tile))
	b.forChunks(batch*tr*tc, per, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			bi, i0, j0 := t/(tr*tc), t/tc%tr*tile, t%tc*tile
			src, out := x[bi*rows*cols:], dst[bi*rows*cols:]
			for i := i0; i < min(i0+tile, rows); i++ {
				row := src[i*cols:]
				for j := j0; j < min(j0+tile, cols); j++ {
					out[j*rows+i] = row[j]
				}
			}
		}
	})
}

// permuteGeneric walks dst in order and gathers from x.
func (b *Backend) permuteGeneric(dst, x []float32, sizes, order []int) {
	r := len(sizes)
	xstr := make([]int, r)
	for i, s := r-1, 1; i >= 0; i-- {
		xstr[i] = s
		s *= sizes[i]
	}
	dsz, dstr := make([]int, r), make([]int, r) // dst sizes and the x stride of each
	for i, o := range order {
		dsz[i], dstr[i] = sizes[o], xstr[o]
	}
	inner, istr := dsz[r-1], dstr[r-1]
	b.forChunks(len(dst)/inner, max(1, elemChunk/inner), func(lo, hi int) {
		for o := lo; o < hi; o++ {
			xo := 0
			for d, rem := r-2, o; d >= 0; d-- {
				xo += rem % dsz[d] * dstr[d]
				rem /= dsz[d]
			}
			out := dst[o*inner : (o+1)*inner]
			for i := range out {
				out[i] = x[xo+i*istr]
			}
		}
	})
}

// UpsampleNearest implements [kernels.Ops.UpsampleNearest].
func (b *Backend) UpsampleNearest(dst, x *kernels.Tensor) {
	const op = "UpsampleNearest"
	xd, dd := hostData(op, x), hostData(op, dst)
	checkRank(op, "x", x, 4)
	checkRank(op, "dst", dst, 4)
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	h2, w2 := dst.Dim(2), dst.Dim(3)
	checkShape(op, "dst", dst, n, c, h2, w2)
	xs := make([]int, w2)
	for i := range xs {
		xs[i] = i * w / w2
	}
	b.forChunks(n*c, max(1, elemChunk/(h2*w2)), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			src, out := xd[p*h*w:(p+1)*h*w], dd[p*h2*w2:(p+1)*h2*w2]
			prev := -1
			for y := range h2 {
				sy := y * h / h2
				row := out[y*w2 : (y+1)*w2]
				if sy == prev {
					copy(row, out[(y-1)*w2:y*w2])
					continue
				}
				prev = sy
				srow := src[sy*w : (sy+1)*w]
				for i, sx := range xs {
					row[i] = srow[sx]
				}
			}
		}
	})
}
