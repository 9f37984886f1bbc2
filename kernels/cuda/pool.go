package cuda

import "github.com/avatargen/musetalk/kernels"

// MaxPool2D implements [kernels.Ops.MaxPool2D]: one thread per output.
func (b *Backend) MaxPool2D(dst, x *kernels.Tensor, p kernels.Pool2DParams) {
	b.pool2D("MaxPool2D", "maxpool2d", dst, x, p)
}

// AvgPool2D implements [kernels.Ops.AvgPool2D]: one thread per output,
// summing in double; padded cells count in the divisor.
func (b *Backend) AvgPool2D(dst, x *kernels.Tensor, p kernels.Pool2DParams) {
	b.pool2D("AvgPool2D", "avgpool2d", dst, x, p)
}

// pool2D checks a pooling call as the CPU backend does and launches kernel.
func (b *Backend) pool2D(op, kernel string, dst, x *kernels.Tensor, p kernels.Pool2DParams) {
	check(x != nil && x.Rank() == 4, op, "x %v must have rank 4", x)
	check(p.KernelH > 0 && p.KernelW > 0, op, "kernel %d×%d must be positive", p.KernelH, p.KernelW)
	check(p.StrideH >= 0 && p.StrideW >= 0, op, "negative stride %d×%d", p.StrideH, p.StrideW)
	check(p.PadTop >= 0 && p.PadLeft >= 0 && p.PadBottom >= 0 && p.PadRight >= 0, op, "negative padding %+v", p)
	// A window made only of padding has no maximum; PyTorch forbids it too.
	check(2*max(p.PadTop, p.PadBottom) <= p.KernelH && 2*max(p.PadLeft, p.PadRight) <= p.KernelW, op,
		"padding %+v exceeds half the %d×%d kernel", p, p.KernelH, p.KernelW)
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	ho, wo := p.OutSize(h, w)
	check(ho > 0 && wo > 0, op, "kernel %d×%d does not fit the padded %d×%d input", p.KernelH, p.KernelW, h, w)
	checkShape(op, "dst", dst, n, c, ho, wo)
	total := dst.Len()
	i32(op, total)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.launch(op, kernel, b.elemGrid(total), D1(elemBlock), 0, b.ptr(op, "dst", dst), b.ptr(op, "x", x),
		i32(op, n*c), i32(op, h), i32(op, w), int32(ho), int32(wo), i32(op, p.KernelH), i32(op, p.KernelW),
		int32(max(p.StrideH, 1)), int32(max(p.StrideW, 1)),
		i32(op, p.PadTop), i32(op, p.PadLeft), i32(op, p.PadBottom), i32(op, p.PadRight))
}
