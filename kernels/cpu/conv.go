package cpu

import "github.com/avatargen/musetalk/kernels"

// Conv2D implements [kernels.Ops.Conv2D]. 3×3 convolutions with stride 1
// and padding 1 run as Winograd F(4×4, 3×3) where that wins (see
// winograd.go); every other one as an implicit-im2col GEMM:
// C [Cout, N·Hout·Wout] = W [Cout, Cin·KH·KW] · patches, where the patch
// matrix is never stored: B panels are packed straight from x.
func (b *Backend) Conv2D(dst, x, w, bias *kernels.Tensor, p kernels.Conv2DParams) {
	const op = "Conv2D"
	xd, wd, dd, bd := hostData(op, x), hostData(op, w), hostData(op, dst), optData(op, bias)
	checkRank(op, "x", x, 4)
	checkRank(op, "w", w, 4)
	n, c, h, wi := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	co, kh, kw := w.Dim(0), w.Dim(2), w.Dim(3)
	check(w.Dim(1) == c, op, "x %v has %d channels, w %v wants %d", x, c, w, w.Dim(1))
	check(p.PadTop >= 0 && p.PadBottom >= 0 && p.PadLeft >= 0 && p.PadRight >= 0 && p.StrideH >= 0 && p.StrideW >= 0,
		op, "negative padding or stride %+v", p)
	ho, wo := p.OutSize(h, wi, kh, kw)
	check(ho >= 1 && wo >= 1, op, "kernel %dx%d larger than padded input %v", kh, kw, x)
	checkShape(op, "dst", dst, n, co, ho, wo)
	if bias != nil {
		checkShape(op, "bias", bias, co)
	}
	if winoEligible(kh, kw, max(p.StrideH, 1), max(p.StrideW, 1), p.PadTop, p.PadBottom, p.PadLeft, p.PadRight) && b.winoWins(n, c, h, wi, co) {
		b.convWinograd(dd, xd, wd, bd, n, c, h, wi, co, winoBlockFloats)
		return
	}
	b.convGEMM(dd, xd, wd, bd, n, c, h, wi, co, kh, kw, p)
}

// convGEMM is Conv2D as an implicit-im2col GEMM; the arguments are
// checked.
func (b *Backend) convGEMM(dd, xd, wd, bd []float32, n, c, h, wi, co, kh, kw int, p kernels.Conv2DParams) {
	ho, wo := p.OutSize(h, wi, kh, kw)
	src := &convSrc{x: xd, c: c, h: h, w: wi, kh: kh, kw: kw,
		sh: max(p.StrideH, 1), sw: max(p.StrideW, 1), pt: p.PadTop, pl: p.PadLeft, ho: ho, wo: wo}
	if kh == 1 && kw == 1 && src.sh == 1 && src.sw == 1 && p.PadTop == 0 && p.PadLeft == 0 && ho == h && wo == wi {
		// A pointwise conv reads each image as one long row.
		src.h, src.w, src.ho, src.wo = 1, h*wi, 1, h*wi
	}
	k := c * kh * kw
	b.gemm(&gemmSpec{
		m: co, n: n * ho * wo, k: k,
		a:       strided{data: wd, rs: k, cs: 1},
		b:       src,
		c:       matC{data: dd, ld: ho * wo, segCols: ho * wo, segStride: co * ho * wo},
		biasRow: bd,
		preA:    b.weightPanelsA(wd, co, k),
	})
}

// Conv1D implements [kernels.Ops.Conv1D] as a 2-D convolution over a
// 1-pixel-high image.
func (b *Backend) Conv1D(dst, x, w, bias *kernels.Tensor, p kernels.Conv1DParams) {
	const op = "Conv1D"
	checkRank(op, "x", x, 3)
	checkRank(op, "w", w, 3)
	checkRank(op, "dst", dst, 3)
	b.Conv2D(dst.Reshape(dst.Dim(0), dst.Dim(1), 1, dst.Dim(2)),
		x.Reshape(x.Dim(0), x.Dim(1), 1, x.Dim(2)),
		w.Reshape(w.Dim(0), w.Dim(1), 1, w.Dim(2)), bias, p.Conv2D())
}

// convSrc is the implicit patch matrix of a convolution: row k = (ci, ky,
// kx), column j = (image, oy, ox), value x[image, ci, oy·sh−pt+ky,
// ox·sw−pl+kx] or 0 in the padding.
type convSrc struct {
	x              []float32
	c, h, w        int
	kh, kw         int
	sh, sw, pt, pl int
	ho, wo         int
}

// convRun is a stretch of sliver columns with the same image and output
// row and consecutive output columns. The layout is shared with
// packConvAVX512.
type convRun struct {
	col, n   int // first column in the sliver, length
	off      int // x offset of the first column's tap (0, 0) in channel 0
	iy0, ix0 int // input coordinates of that tap (may be in the padding)
}

// convPackArgs are packConvAVX512's arguments (field offsets are fixed).
type convPackArgs struct {
	dst, x      *float32
	runs        *convRun
	nrun, kc    int
	koff        int // x offset of tap (ky, kx) of channel ci: ci·plane + ky·w + kx
	ky, kx      int
	kh, kw      int
	h, w, plane int
}

func (s *convSrc) packB(kern *microKernel, dst []float32, k0, kc, j0, nc int) {
	nr := kern.nr
	hw := s.ho * s.wo
	plane := s.h * s.w
	var runs [64]convRun
	ci, ky, kx := k0/(s.kh*s.kw), k0/s.kw%s.kh, k0%s.kw
	for js := 0; js < nc; js += nr {
		d := dst[js*kc : (js+nr)*kc]
		cols := min(nr, nc-js)
		nrun := 0
		for j, q := j0+js, 0; q < cols; nrun++ {
			img, pix := j/hw, j%hw
			oy, ox := pix/s.wo, pix%s.wo
			n := min(cols-q, s.wo-ox)
			iy0, ix0 := oy*s.sh-s.pt, ox*s.sw-s.pl
			runs[nrun] = convRun{col: q, n: n, off: img*s.c*plane + iy0*s.w + ix0, iy0: iy0, ix0: ix0}
			q += n
			j += n
		}
		if kern.avx512 && nr == 32 && s.sw == 1 {
			packConv(&convPackArgs{dst: &d[0], x: &s.x[0], runs: &runs[0], nrun: nrun, kc: kc,
				koff: ci*plane + ky*s.w + kx, ky: ky, kx: kx, kh: s.kh, kw: s.kw, h: s.h, w: s.w, plane: plane})
			continue
		}
		s.packSliver(d, runs[:nrun], nr, cols, kc, ci, ky, kx)
	}
}

// packSliver is the portable packB of one sliver.
func (s *convSrc) packSliver(d []float32, runs []convRun, nr, cols, kc, ci, ky, kx int) {
	plane := s.h * s.w
	for k := range kc {
		row := d[k*nr : k*nr+nr]
		koff := ci*plane + ky*s.w + kx
		for _, r := range runs {
			seg := row[r.col : r.col+r.n]
			if iy := r.iy0 + ky; iy < 0 || iy >= s.h {
				clear(seg)
				continue
			}
			ix := r.ix0 + kx
			src := s.x[r.off+koff-ix:] // the start of the input row
			if s.sw == 1 {
				lo, hi := max(0, -ix), min(r.n, s.w-ix)
				if hi <= lo {
					clear(seg)
					continue
				}
				clear(seg[:lo])
				copy(seg[lo:hi], src[ix+lo:ix+hi])
				clear(seg[hi:])
				continue
			}
			for t := range seg {
				if xx := ix + t*s.sw; xx >= 0 && xx < s.w {
					seg[t] = src[xx]
				} else {
					seg[t] = 0
				}
			}
		}
		clear(row[cols:])
		if kx++; kx == s.kw {
			kx = 0
			if ky++; ky == s.kh {
				ky = 0
				ci++
			}
		}
	}
}
