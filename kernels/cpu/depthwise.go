package cpu

import "github.com/avatargen/musetalk/kernels"

// DepthwiseConv2D implements [kernels.Ops.DepthwiseConv2D] directly: one
// task per (image, channel) plane, each output row accumulated tap by tap
// in float32 (the bias first), over the columns whose input is inside the
// image (padding reads zeros, so the rest add nothing).
func (b *Backend) DepthwiseConv2D(dst, x, w, bias *kernels.Tensor, p kernels.Conv2DParams) {
	const op = "DepthwiseConv2D"
	xd, wd, dd, bd := hostData(op, x), hostData(op, w), hostData(op, dst), optData(op, bias)
	checkRank(op, "x", x, 4)
	checkRank(op, "w", w, 4)
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
	sh, sw := max(p.StrideH, 1), max(p.StrideW, 1)
	b.w.parallel(n*c, func(_ *scratch, pl int) {
		ch := pl % c
		src := xd[pl*h*wi : (pl+1)*h*wi]
		out := dd[pl*ho*wo : (pl+1)*ho*wo]
		taps := wd[ch*kh*kw : (ch+1)*kh*kw]
		var b0 float32
		if bd != nil {
			b0 = bd[ch]
		}
		for oy := range ho {
			row := out[oy*wo : (oy+1)*wo]
			for i := range row {
				row[i] = b0
			}
			for ky := range kh {
				iy := oy*sh - p.PadTop + ky
				if iy < 0 || iy >= h {
					continue
				}
				in := src[iy*wi : (iy+1)*wi]
				for kx := range kw {
					// Columns ox with 0 ≤ ox·sw − PadLeft + kx < wi.
					off := kx - p.PadLeft
					ox0 := 0
					if off < 0 {
						ox0 = ceilDiv(-off, sw)
					}
					if wi-1-off < 0 {
						continue
					}
					ox1 := min(wo, (wi-1-off)/sw+1)
					if ox0 >= ox1 {
						continue
					}
					wv := taps[ky*kw+kx]
					if sw == 1 {
						seg := in[ox0+off : ox1+off]
						r := row[ox0:ox1]
						r = r[:len(seg)]
						for i, v := range seg {
							r[i] += wv * v
						}
						continue
					}
					for ox := ox0; ox < ox1; ox++ {
						row[ox] += wv * in[ox*sw+off]
					}
				}
			}
		}
	})
}
