package cuda

import "github.com/avatargen/musetalk/kernels"

// convTile is the side of the output tile one conv2d_f32 block computes.
const convTile = 64

// Conv2D implements [kernels.Ops.Conv2D] as one implicit-GEMM launch
// (conv2d_f32, src/conv.cu) over every image: output channels are the
// GEMM's rows, the images' output pixels its columns (on grid.x), and the
// bias is added in the store.
func (b *Backend) Conv2D(dst, x, w, bias *kernels.Tensor, p kernels.Conv2DParams) {
	b.conv2D("Conv2D", dst, x, w, bias, p)
}

// Conv1D implements [kernels.Ops.Conv1D] as a 2-D convolution of a 1×K
// kernel over a 1-pixel-high image.
func (b *Backend) Conv1D(dst, x, w, bias *kernels.Tensor, p kernels.Conv1DParams) {
	const op = "Conv1D"
	for _, a := range []struct {
		name string
		t    *kernels.Tensor
	}{{"x", x}, {"w", w}, {"dst", dst}} {
		check(a.t != nil, op, "%s is nil", a.name)
		check(a.t.Rank() == 3, op, "%s is %v, want rank 3", a.name, a.t)
	}
	b.conv2D(op, dst.Reshape(dst.Dim(0), dst.Dim(1), 1, dst.Dim(2)),
		x.Reshape(x.Dim(0), x.Dim(1), 1, x.Dim(2)),
		w.Reshape(w.Dim(0), w.Dim(1), 1, w.Dim(2)), bias, p.Conv2D())
}

func (b *Backend) conv2D(op string, dst, x, w, bias *kernels.Tensor, p kernels.Conv2DParams) {
	check(x != nil && w != nil && dst != nil, op, "nil argument")
	check(x.Rank() == 4, op, "x is %v, want rank 4", x)
	check(w.Rank() == 4, op, "w is %v, want rank 4", w)
	n, c, h, wi := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	co, kh, kw := w.Dim(0), w.Dim(2), w.Dim(3)
	check(w.Dim(1) == c, op, "x %v has %d channels, w %v wants %d", x, c, w, w.Dim(1))
	check(p.PadTop >= 0 && p.PadBottom >= 0 && p.PadLeft >= 0 && p.PadRight >= 0 && p.StrideH >= 0 && p.StrideW >= 0,
		op, "negative padding or stride %+v", p)
	check(kh >= 1 && kw >= 1, op, "empty kernel %v", w)
	ho, wo := p.OutSize(h, wi, kh, kw)
	check(ho >= 1 && wo >= 1, op, "kernel %dx%d larger than padded input %v", kh, kw, x)
	checkShape(op, "dst", dst, n, co, ho, wo)
	if bias != nil {
		checkShape(op, "bias", bias, co)
	}
	// Every size and index the kernel forms must fit its int arithmetic.
	i32(op, x.Len())
	i32(op, w.Len())
	i32(op, dst.Len())
	i32(op, n*ho*wo)
	i32(op, c*kh*kw+convTile)
	i32(op, (h+p.PadTop+p.PadBottom)*(wi+p.PadLeft+p.PadRight))
	if dst.Len() == 0 {
		return
	}
	grid := D3(ceilDiv(n*ho*wo, convTile), ceilDiv(co, convTile), 1)
	check(grid.Y <= 65535, op, "%d output channels exceed the kernel's limit", co)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.launch(op, "conv2d", grid, D3(16, 16, 1), 0,
		b.ptr(op, "dst", dst), b.ptr(op, "x", x), b.ptr(op, "w", w), b.optPtr(op, "bias", bias),
		int32(n), int32(c), int32(h), int32(wi), int32(co), int32(kh), int32(kw),
		int32(max(p.StrideH, 1)), int32(max(p.StrideW, 1)), int32(p.PadTop), int32(p.PadLeft), int32(ho), int32(wo))
}
