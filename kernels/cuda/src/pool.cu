// pool.cu: 2-D max and average pooling over planes of [N·C, H, W].
#include "common.cuh"

// pool_window clips output index o's window to the input [0, n) and
// returns in *padded its extent within the padded input (PyTorch's divisor
// with count_include_pad).
__device__ __forceinline__ void pool_window(int o, int stride, int padLo, int padHi, int k, int n, int *lo, int *hi, int *padded) {
	int start = o * stride - padLo;
	int end = imin(start + k, n + padHi);
	*padded = end - start;
	*lo = imax(start, 0);
	*hi = imin(end, n);
}

// maxpool2d_f32 sets each output to the maximum of its window; padded cells
// never win, and a NaN in the window gives NaN. Grid-stride over the nc·ho·wo
// outputs.
KERNEL void KNAME(maxpool2d)(st_t *dst, const st_t *x, int nc, int h, int w, int ho, int wo, int kh, int kw, int sh, int sw, int padTop, int padLeft, int padBottom, int padRight) {
	int n = nc * ho * wo;
	GRID_STRIDE(i, n) {
		int ox = i % wo, oy = i / wo % ho, p = i / (wo * ho);
		int y0, y1, x0, x1, ph, pw;
		pool_window(oy, sh, padTop, padBottom, kh, h, &y0, &y1, &ph);
		pool_window(ox, sw, padLeft, padRight, kw, w, &x0, &x1, &pw);
		const st_t *src = x + (size_t)p * h * w;
		float m = -INFINITY;
		for (int y = y0; y < y1; y++)
			for (int xx = x0; xx < x1; xx++) {
				float v = ldf(src[(size_t)y * w + xx]);
				if (v > m || v != v)
					m = v;
			}
		dst[i] = stf(m);
	}
}

// avgpool2d_f32 sets each output to its window's sum over the padded
// window's cell count (padding counts as zeros). The sum accumulates in
// double, so the result is the correctly rounded mean of the float inputs
// for any window a model uses.
KERNEL void KNAME(avgpool2d)(st_t *dst, const st_t *x, int nc, int h, int w, int ho, int wo, int kh, int kw, int sh, int sw, int padTop, int padLeft, int padBottom, int padRight) {
	int n = nc * ho * wo;
	GRID_STRIDE(i, n) {
		int ox = i % wo, oy = i / wo % ho, p = i / (wo * ho);
		int y0, y1, x0, x1, ph, pw;
		pool_window(oy, sh, padTop, padBottom, kh, h, &y0, &y1, &ph);
		pool_window(ox, sw, padLeft, padRight, kw, w, &x0, &x1, &pw);
		const st_t *src = x + (size_t)p * h * w;
		double s = 0.0;
		for (int y = y0; y < y1; y++)
			for (int xx = x0; xx < x1; xx++)
				s += (double)ldf(src[(size_t)y * w + xx]);
		dst[i] = stf((float)(s / (double)(ph * pw)));
	}
}
