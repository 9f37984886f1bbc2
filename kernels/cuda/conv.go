package cuda

import "github.com/avatargen/musetalk/kernels"

// convTile is the side of the output tile one conv2d block computes.
const convTile = 64

// convTCTile is the side of the output tile one hconv_tc block computes.
const convTCTile = 128

// Conv2D implements [kernels.Ops.Conv2D] as one implicit-GEMM launch over
// every image, the bias added in the store. With fp16 storage on sm_80+
// it runs on tensor cores (hconv_tc, src/conv_tc.cu: the images' output
// pixels are the GEMM's rows, the output channels its columns);
// otherwise on CUDA cores (conv2d, src/conv.cu, either storage type:
// output channels are the rows, pixels the columns). Either way the
// pixels, the big dimension, go on grid.x.
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
	i32(op, n*ho*wo+convTCTile)
	i32(op, c*kh*kw+convTCTile)
	i32(op, (h+p.PadTop+p.PadBottom)*(wi+p.PadLeft+p.PadRight))
	if dst.Len() == 0 {
		return
	}
	kernel, tile, block := "conv2d"+b.suffix, convTile, D3(16, 16, 1)
	if b.convTensorCores() {
		kernel, tile, block = "hconv_tc", convTCTile, D1(256)
	}
	grid := D3(ceilDiv(n*ho*wo, tile), ceilDiv(co, tile), 1)
	check(grid.Y <= 65535, op, "%d output channels exceed the kernel's limit", co)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.launchExact(op, kernel, grid, block, 0,
		b.ptr(op, "dst", dst), b.ptr(op, "x", x), b.ptr(op, "w", w), b.optPtr(op, "bias", bias),
		int32(n), int32(c), int32(h), int32(wi), int32(co), int32(kh), int32(kw),
		int32(max(p.StrideH, 1)), int32(max(p.StrideW, 1)), int32(p.PadTop), int32(p.PadLeft), int32(ho), int32(wo))
}

// convTensorCores reports whether convolutions run on hconv_tc: fp16
// storage on an sm_80+ device. hconv_tc is correct for any shape, stride,
// padding and alignment (it stages w with cp.async where they allow).
func (b *Backend) convTensorCores() bool {
	return b.prec == kernels.F16 && b.info.Arch >= 80
}
