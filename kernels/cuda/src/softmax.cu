// softmax.cu: softmax over the last dimension, fp32 throughout.
#include "common.cuh"

// softmax_rows_f32 normalises each of rows rows of cols elements: one
// block per row (blocks stride over rows), blockDim.x a multiple of 32.
// The row maximum and the sum of exponentials are block reductions (warp
// shuffles, then one value per warp in shared memory). dst may be x.
KERNEL void KNAME(softmax_rows)(st_t *dst, const st_t *x, int rows, int cols) {
	__shared__ float scratch[33];
	for (int r = blockIdx.x; r < rows; r += gridDim.x) {
		const st_t *xr = x + (size_t)r * cols;
		st_t *dr = dst + (size_t)r * cols;
		float m = -INFINITY;
		for (int i = threadIdx.x; i < cols; i += blockDim.x)
			m = fmaxf(m, ldf(xr[i]));
		m = block_max(m, scratch);
		float s = 0.0f;
		for (int i = threadIdx.x; i < cols; i += blockDim.x) {
			float e = expf(ldf(xr[i]) - m);
			s += e;
		}
		s = block_sum(s, scratch);
		// Exponentials are recomputed rather than stored, so fp16 storage
		// rounds each output once.
		for (int i = threadIdx.x; i < cols; i += blockDim.x)
			dr[i] = stf(expf(ldf(xr[i]) - m) / s); // the same thread reads x[i], then writes dst[i]
	}
}
