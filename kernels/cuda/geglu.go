package cuda

import "github.com/avatargen/musetalk/kernels"

// GEGLU implements [kernels.Ops.GEGLU]: one thread per output element,
// exact erf GELU as [Backend.GELU].
func (b *Backend) GEGLU(dst, x *kernels.Tensor) {
	const op = "GEGLU"
	check(x != nil && x.Rank() >= 1, op, "x %v must have rank ≥ 1", x)
	d2 := x.Dim(-1)
	check(d2%2 == 0 && d2 > 0, op, "last dimension of x %v is odd", x)
	d := d2 / 2
	shape := x.Shape()
	shape[len(shape)-1] = d
	checkShape(op, "dst", dst, shape...)
	i32(op, x.Len())
	rows := x.Len() / d2
	b.mu.Lock()
	defer b.mu.Unlock()
	b.launch(op, "geglu", b.elemGrid(rows*d), D1(elemBlock), 0,
		b.ptr(op, "dst", dst), b.ptr(op, "x", x), i32(op, rows), i32(op, d))
}
