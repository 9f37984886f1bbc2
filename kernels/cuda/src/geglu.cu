// geglu.cu: GEGLU, the gated GELU of transformer feed-forward layers.
#include "common.cuh"

// geglu_f32 reads rows of x [rows][2d] as halves h = x[:d] and gate =
// x[d:] and sets dst [rows][d] = h · GELU(gate), with the exact Φ written
// through erfc so the left tail keeps its relative precision:
// GELU(g) = g·erfc(−g/√2)/2. Grid-stride over the rows·d outputs.
KERNEL void KNAME(geglu)(st_t *dst, const st_t *x, int rows, int d) {
	int n = rows * d;
	GRID_STRIDE(i, n) {
		int r = i / d, c = i % d;
		const st_t *xr = x + (size_t)r * 2 * d;
		float g = ldf(xr[d + c]);
		dst[i] = stf(ldf(xr[c]) * (0.5f * g * erfcf(-g * 0.70710678118654752f)));
	}
}
