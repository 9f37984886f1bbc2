package cuda

import "github.com/avatargen/musetalk/kernels"

// Softmax implements [kernels.Ops.Softmax]: a block per row, as many
// threads as the row has elements rounded up to a warp, at most 256; with
// more rows than 32 blocks per SM (enough to fill the device) the blocks
// loop over rows.
func (b *Backend) Softmax(dst, x *kernels.Tensor) {
	const op = "Softmax"
	check(x != nil, op, "x is nil")
	checkShape(op, "dst", dst, x.Shape()...)
	cols := x.Dim(-1)
	rows := x.Len() / cols
	threads := min(256, ceilDiv(cols, 32)*32)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.launch(op, "softmax_rows", D1(min(rows, 4*b.gridLimit)), D1(threads), 0,
		b.ptr(op, "dst", dst), b.ptr(op, "x", x), i32(op, rows), i32(op, cols))
}
