package cuda

import "github.com/avatargen/musetalk/kernels"

// normBlock is the largest block of the norm kernels.
const normBlock = 256

// GroupNorm implements [kernels.Ops.GroupNorm]: group_norm_f32
// (src/norm.cu), one block per (image, group) computing the group's mean
// and variance in two fp32 block reductions, then normalising with the
// affine and SiLU fused. With more groups than 32 blocks per SM the blocks
// loop over groups.
func (b *Backend) GroupNorm(dst, x, weight, bias *kernels.Tensor, p kernels.GroupNormParams) {
	const op = "GroupNorm"
	check(x != nil, op, "x is nil")
	check(x.Rank() >= 2, op, "x is %v, want rank ≥ 2", x)
	checkShape(op, "dst", dst, x.Shape()...)
	n, c, g := x.Dim(0), x.Dim(1), p.Groups
	check(g > 0 && c%g == 0, op, "%d groups do not divide %d channels", g, c)
	if weight != nil {
		checkShape(op, "weight", weight, c)
	}
	if bias != nil {
		checkShape(op, "bias", bias, c)
	}
	i32(op, x.Len())
	if x.Len() == 0 {
		return
	}
	plane := x.Len() / (n * c)
	cg := c / g
	threads := min(normBlock, ceilDiv(cg*plane, 32)*32)
	silu := int32(0)
	if p.SiLU {
		silu = 1
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.launch(op, "group_norm", D1(min(n*g, 4*b.gridLimit)), D1(threads), 0,
		b.ptr(op, "dst", dst), b.ptr(op, "x", x), b.optPtr(op, "weight", weight), b.optPtr(op, "bias", bias),
		int32(n*g), int32(g), int32(cg), int32(plane), p.Eps, silu)
}

// LayerNorm implements [kernels.Ops.LayerNorm]: layer_norm_f32, one warp
// per row of the last dimension, 8 rows per block.
func (b *Backend) LayerNorm(dst, x, weight, bias *kernels.Tensor, p kernels.LayerNormParams) {
	const op = "LayerNorm"
	rows, d, err := kernels.LayerNormShapes(dst, x, weight, bias)
	check(err == nil, op, "%v", err)
	i32(op, x.Len())
	if rows == 0 {
		return
	}
	const warps = normBlock / 32
	b.mu.Lock()
	defer b.mu.Unlock()
	b.launch(op, "layer_norm", D1(min(ceilDiv(rows, warps), 4*b.gridLimit)), D1(normBlock), 0,
		b.ptr(op, "dst", dst), b.ptr(op, "x", x), b.optPtr(op, "weight", weight), b.optPtr(op, "bias", bias),
		int32(rows), int32(d), p.Eps)
}

// L2Norm implements [kernels.Ops.L2Norm]: l2_norm_f32, one thread per
// position walking the channels.
func (b *Backend) L2Norm(dst, x, weight *kernels.Tensor, eps float32) {
	const op = "L2Norm"
	check(x != nil, op, "x is nil")
	check(x.Rank() >= 2, op, "x is %v, want rank ≥ 2", x)
	checkShape(op, "dst", dst, x.Shape()...)
	n, c := x.Dim(0), x.Dim(1)
	checkShape(op, "weight", weight, c)
	i32(op, x.Len())
	if x.Len() == 0 {
		return
	}
	plane := x.Len() / (n * c)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.launch(op, "l2_norm", b.elemGrid(n*plane), D1(elemBlock), 0,
		b.ptr(op, "dst", dst), b.ptr(op, "x", x), b.ptr(op, "weight", weight),
		int32(n*plane), int32(c), int32(plane), eps)
}

// ScaleNorm implements [kernels.Ops.ScaleNorm]: scale_norm_f32, one warp
// per row of the last dimension, 8 rows per block.
func (b *Backend) ScaleNorm(dst, x *kernels.Tensor, p kernels.ScaleNormParams) {
	const op = "ScaleNorm"
	check(x != nil, op, "x is nil")
	check(x.Rank() >= 1, op, "x is %v, want rank ≥ 1", x)
	checkShape(op, "dst", dst, x.Shape()...)
	d := x.Dim(-1)
	i32(op, x.Len())
	if d == 0 || x.Len() == 0 {
		return
	}
	rows := x.Len() / d
	const warps = normBlock / 32
	b.mu.Lock()
	defer b.mu.Unlock()
	b.launch(op, "scale_norm", D1(min(ceilDiv(rows, warps), 4*b.gridLimit)), D1(normBlock), 0,
		b.ptr(op, "dst", dst), b.ptr(op, "x", x), int32(rows), int32(d), p.RowScale(d), p.Eps, p.RowGain())
}
