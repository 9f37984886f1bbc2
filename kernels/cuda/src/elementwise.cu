// elementwise.cu: pointwise ops over contiguous fp32 tensors, in
// grid-stride loops so any grid size covers any n. dst may equal the first
// input (in place): each element is read before it is written, by the same
// thread.
#include "common.cuh"

KERNEL void KNAME(copy)(st_t *dst, const st_t *src, int n) {
	GRID_STRIDE(i, n) dst[i] = src[i];
}

KERNEL void KNAME(scale)(st_t *dst, const st_t *x, int n, float s) {
	GRID_STRIDE(i, n) dst[i] = stf(ldf(x[i]) * s);
}

KERNEL void KNAME(relu)(st_t *dst, const st_t *x, int n) {
	GRID_STRIDE(i, n) {
		float v = ldf(x[i]);
		dst[i] = stf(v < 0.0f ? 0.0f : v); // NaN stays NaN
	}
}

// sigmoid saturates to 0 and 1 without overflow: expf(-x) may be +Inf,
// and 1/(1+Inf) is 0.
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

KERNEL void KNAME(sigmoid)(st_t *dst, const st_t *x, int n) {
	GRID_STRIDE(i, n) dst[i] = stf(sigmoid(ldf(x[i])));
}

KERNEL void KNAME(silu)(st_t *dst, const st_t *x, int n) {
	GRID_STRIDE(i, n) {
		float v = ldf(x[i]);
		dst[i] = stf(v * sigmoid(v));
	}
}

// hard_sigmoid is PyTorch's Hardsigmoid as its CPU kernel computes it,
// min(max(x + 3, 0), 6) / 6 (a true division); NaN stays NaN.
KERNEL void KNAME(hard_sigmoid)(st_t *dst, const st_t *x, int n) {
	GRID_STRIDE(i, n) {
		float t = ldf(x[i]) + 3.0f;
		t = t < 0.0f ? 0.0f : t;
		t = t > 6.0f ? 6.0f : t;
		dst[i] = stf(t / 6.0f);
	}
}

// GELU with the exact Φ, written with erfc so that the left tail keeps its
// relative precision: x·Φ(x) = x·erfc(−x/√2)/2.
KERNEL void KNAME(gelu)(st_t *dst, const st_t *x, int n) {
	GRID_STRIDE(i, n) {
		float v = ldf(x[i]);
		dst[i] = stf(0.5f * v * erfcf(-v * 0.70710678118654752f));
	}
}

KERNEL void KNAME(add)(st_t *dst, const st_t *a, const st_t *b, int n) {
	GRID_STRIDE(i, n) dst[i] = stf(ldf(a[i]) + ldf(b[i]));
}

KERNEL void KNAME(mul)(st_t *dst, const st_t *a, const st_t *b, int n) {
	GRID_STRIDE(i, n) dst[i] = stf(ldf(a[i]) * ldf(b[i]));
}

// bcast_index maps element i of a contiguous [d0,d1,d2,d3] tensor (n
// elements) to the offset of the broadcast operand, whose stride is s0..s3
// per dimension (0 where it repeats).
__device__ __forceinline__ int bcast_index(int i, int d1, int d2, int d3, int s0, int s1, int s2, int s3) {
	int i3 = i % d3;
	i /= d3;
	int i2 = i % d2;
	i /= d2;
	int i1 = i % d1;
	return i / d1 * s0 + i1 * s1 + i2 * s2 + i3 * s3;
}

// add_bcast_f32 sets dst = a + b where b is broadcast to a's merged shape
// [n/(d1·d2·d3), d1, d2, d3] through strides s0..s3.
KERNEL void KNAME(add_bcast)(st_t *dst, const st_t *a, const st_t *b, int n, int d1, int d2, int d3, int s0, int s1, int s2, int s3) {
	GRID_STRIDE(i, n) dst[i] = stf(ldf(a[i]) + ldf(b[bcast_index(i, d1, d2, d3, s0, s1, s2, s3)]));
}

KERNEL void KNAME(mul_bcast)(st_t *dst, const st_t *a, const st_t *b, int n, int d1, int d2, int d3, int s0, int s1, int s2, int s3) {
	GRID_STRIDE(i, n) dst[i] = stf(ldf(a[i]) * ldf(b[bcast_index(i, d1, d2, d3, s0, s1, s2, s3)]));
}
