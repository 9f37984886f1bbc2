// depthwise.cu: depthwise 2-D convolution (PyTorch's Conv2d with groups =
// channels), NCHW. The convolutions a model runs depthwise are small
// (CSPNeXt's 5×5 blocks: C·H·W·25 multiply-adds), memory-bound rather
// than arithmetic-bound, so this is a direct kernel, not a GEMM.
#include "common.cuh"

// dwconv2d_f32 sets each output of dst [N, C, ho, wo] (grid-stride over
// the nc = N·C planes' ho·wo outputs) to bias[c] (0 when bias is null)
// plus the kh×kw window of its plane of x [N, C, h, wd], at stride (sh,
// sw) from (−pt, −pl), weighted by w [C, 1, kh, kw]; cells outside the
// image count as zeros. Sums are fp32, taps in row-major order.
KERNEL void KNAME(dwconv2d)(st_t *dst, const st_t *x, const st_t *w, const st_t *bias, int nc, int c, int h, int wd, int kh, int kw, int sh, int sw, int pt, int pl, int ho, int wo) {
	int n = nc * ho * wo;
	GRID_STRIDE(i, n) {
		int ox = i % wo, oy = i / wo % ho, p = i / (wo * ho), ch = p % c;
		const st_t *src = x + (size_t)p * h * wd;
		const st_t *wc = w + (size_t)ch * kh * kw;
		float s = bias ? ldf(bias[ch]) : 0.0f;
		int iy0 = oy * sh - pt, ix0 = ox * sw - pl;
		for (int ky = 0; ky < kh; ky++) {
			int iy = iy0 + ky;
			if (iy < 0 || iy >= h)
				continue;
			for (int kx = 0; kx < kw; kx++) {
				int ix = ix0 + kx;
				if (ix < 0 || ix >= wd)
					continue;
				s = fmaf(ldf(src[(size_t)iy * wd + ix]), ldf(wc[ky * kw + kx]), s);
			}
		}
		dst[i] = stf(s);
	}
}
