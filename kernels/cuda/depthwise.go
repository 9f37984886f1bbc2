package cuda

import "github.com/avatargen/musetalk/kernels"

// DepthwiseConv2D implements [kernels.Ops.DepthwiseConv2D]: dwconv2d_f32
// (src/depthwise.cu), one thread per output in a grid-stride loop, fp32
// sums.
func (b *Backend) DepthwiseConv2D(dst, x, w, bias *kernels.Tensor, p kernels.Conv2DParams) {
	const op = "DepthwiseConv2D"
	check(x != nil && w != nil && dst != nil, op, "nil argument")
	check(x.Rank() == 4, op, "x is %v, want rank 4", x)
	check(w.Rank() == 4, op, "w is %v, want rank 4", w)
	n, c, h, wi := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	kh, kw := w.Dim(2), w.Dim(3)
	check(w.Dim(0) == c && w.Dim(1) == 1, op, "x %v has %d channels, w %v wants [%d,1,KH,KW]", x, c, w, c)
	check(p.PadTop >= 0 && p.PadBottom >= 0 && p.PadLeft >= 0 && p.PadRight >= 0 && p.StrideH >= 0 && p.StrideW >= 0,
		op, "negative padding or stride %+v", p)
	check(kh >= 1 && kw >= 1, op, "empty kernel %v", w)
	ho, wo := p.OutSize(h, wi, kh, kw)
	check(ho >= 1 && wo >= 1, op, "kernel %dx%d larger than padded input %v", kh, kw, x)
	checkShape(op, "dst", dst, n, c, ho, wo)
	if bias != nil {
		checkShape(op, "bias", bias, c)
	}
	i32(op, x.Len())
	i32(op, w.Len())
	i32(op, dst.Len())
	i32(op, (h+p.PadTop+p.PadBottom)*(wi+p.PadLeft+p.PadRight))
	if dst.Len() == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.launch(op, "dwconv2d", b.elemGrid(dst.Len()), D1(elemBlock), 0,
		b.ptr(op, "dst", dst), b.ptr(op, "x", x), b.ptr(op, "w", w), b.optPtr(op, "bias", bias),
		int32(n*c), int32(c), int32(h), int32(wi), int32(kh), int32(kw),
		int32(max(p.StrideH, 1)), int32(max(p.StrideW, 1)), int32(p.PadTop), int32(p.PadLeft), int32(ho), int32(wo))
}
