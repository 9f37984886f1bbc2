package cuda

import (
	"github.com/avatargen/musetalk/kernels"
)

// elemBlock is the block size of elementwise kernels.
const elemBlock = 256

// elemGrid returns the grid of a grid-stride kernel over n elements: one
// thread per element up to gridLimit blocks, fewer threads each looping
// beyond.
func (b *Backend) elemGrid(n int) Dim3 { return D1(max(1, min(ceilDiv(n, elemBlock), b.gridLimit))) }

// unary launches kernel(dst, x, n, extra...) for an op whose dst has x's
// shape.
func (b *Backend) unary(op, kernel string, dst, x *kernels.Tensor, extra ...any) {
	check(x != nil, op, "x is nil")
	checkShape(op, "dst", dst, x.Shape()...)
	n := x.Len()
	b.mu.Lock()
	defer b.mu.Unlock()
	args := append([]any{b.ptr(op, "dst", dst), b.ptr(op, "x", x), i32(op, n)}, extra...)
	b.launch(op, kernel, b.elemGrid(n), D1(elemBlock), 0, args...)
}

// Copy implements [kernels.Ops.Copy].
func (b *Backend) Copy(dst, src *kernels.Tensor) {
	check(dst != nil && src != nil && dst.Len() == src.Len(), "Copy", "dst %v and src %v differ in length", dst, src)
	b.unary("Copy", "copy", dst, src.Reshape(dst.Shape()...))
}

// GELU implements [kernels.Ops.GELU].
func (b *Backend) GELU(dst, x *kernels.Tensor) { b.unary("GELU", "gelu", dst, x) }

// ReLU implements [kernels.Ops.ReLU].
func (b *Backend) ReLU(dst, x *kernels.Tensor) { b.unary("ReLU", "relu", dst, x) }

// Scale implements [kernels.Ops.Scale].
func (b *Backend) Scale(dst, x *kernels.Tensor, s float32) { b.unary("Scale", "scale", dst, x, s) }

// Sigmoid implements [kernels.Ops.Sigmoid].
func (b *Backend) Sigmoid(dst, x *kernels.Tensor) { b.unary("Sigmoid", "sigmoid", dst, x) }

// SiLU implements [kernels.Ops.SiLU].
func (b *Backend) SiLU(dst, x *kernels.Tensor) { b.unary("SiLU", "silu", dst, x) }

// Add implements [kernels.Ops.Add].
func (b *Backend) Add(dst, a, x *kernels.Tensor) { b.binary("Add", "add", dst, a, x) }

// Mul implements [kernels.Ops.Mul].
func (b *Backend) Mul(dst, a, x *kernels.Tensor) { b.binary("Mul", "mul", dst, a, x) }

// bcastRank is the number of merged dimensions the broadcasting kernels
// index; the host loops over any further outer ones.
const bcastRank = 4

// binary sets dst = a ∘ x with x broadcast to a's shape: the kernel
// <name>_f32 when the shapes agree, else <name>_bcast_f32 over the merged
// dimensions.
func (b *Backend) binary(op, name string, dst, a, x *kernels.Tensor) {
	check(a != nil && x != nil, op, "nil input")
	checkShape(op, "dst", dst, a.Shape()...)
	sizes, strides := broadcastPlan(op, a.Shape(), x.Shape())
	n := a.Len()
	b.mu.Lock()
	defer b.mu.Unlock()
	pd, pa, px := b.ptr(op, "dst", dst), b.ptr(op, "a", a), b.ptr(op, "b", x)
	if len(sizes) == 1 && strides[0] == 1 {
		b.launch(op, name, b.elemGrid(n), D1(elemBlock), 0, pd, pa, px, i32(op, n))
		return
	}
	for len(sizes) < bcastRank {
		sizes, strides = append([]int{1}, sizes...), append([]int{0}, strides...)
	}
	outer := len(sizes) - bcastRank
	in, is := sizes[outer:], strides[outer:]
	inner := in[0] * in[1] * in[2] * in[3]
	// One launch per index of the outer dimensions (none in the usual case
	// of at most four merged dimensions).
	idx := make([]int, outer)
	for o := 0; o < n/inner; o++ {
		xo := 0
		for d := range outer {
			xo += idx[d] * strides[d]
		}
		off := DevPtr(b.esize * o * inner)
		b.launch(op, name+"_bcast", b.elemGrid(inner), D1(elemBlock), 0,
			pd+off, pa+off, px+DevPtr(b.esize*xo), i32(op, inner),
			int32(in[1]), int32(in[2]), int32(in[3]),
			i32(op, is[0]), i32(op, is[1]), i32(op, is[2]), i32(op, is[3]))
		for d := outer - 1; d >= 0; d-- {
			if idx[d]++; idx[d] < sizes[d] {
				break
			}
			idx[d] = 0
		}
	}
}

// broadcastPlan aligns x's shape with a's by NumPy's rules (trailing
// dimensions aligned, size-1 dimensions repeated) and merges neighbouring
// dimensions where x is contiguous across both or repeats across both. It
// returns the merged sizes of a, outermost first, and x's stride in each
// (0 where x repeats).
func broadcastPlan(op string, a, x []int) (sizes, strides []int) {
	check(len(x) <= len(a), op, "cannot broadcast %v to %v", x, a)
	pad := len(a) - len(x)
	xs := make([]int, len(a)) // x's stride along each dimension of a
	s := 1
	for i := len(a) - 1; i >= 0; i-- {
		xi := 1
		if i >= pad {
			xi = x[i-pad]
		}
		check(xi == a[i] || xi == 1, op, "cannot broadcast %v to %v", x, a)
		if xi > 1 {
			xs[i] = s
		}
		s *= xi
	}
	// Innermost first, then reversed.
	for i := len(a) - 1; i >= 0; i-- {
		if a[i] == 1 {
			continue
		}
		if k := len(sizes) - 1; k >= 0 {
			repeat := xs[i] == 0 && strides[k] == 0
			contiguous := xs[i] != 0 && strides[k] != 0 && xs[i] == strides[k]*sizes[k]
			if repeat || contiguous {
				sizes[k] *= a[i]
				continue
			}
		}
		sizes, strides = append(sizes, a[i]), append(strides, xs[i])
	}
	if len(sizes) == 0 {
		return []int{1}, []int{0}
	}
	for i, j := 0, len(sizes)-1; i < j; i, j = i+1, j-1 {
		sizes[i], sizes[j] = sizes[j], sizes[i]
		strides[i], strides[j] = strides[j], strides[i]
	}
	return sizes, strides
}

// HardSigmoid implements [kernels.Ops.HardSigmoid].
func (b *Backend) HardSigmoid(dst, x *kernels.Tensor) { b.unary("HardSigmoid", "hard_sigmoid", dst, x) }
