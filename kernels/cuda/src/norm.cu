// norm.cu: GroupNorm (with optional fused SiLU), LayerNorm, L2Norm and
// ScaleNorm, fp32 throughout. Mean and variance are computed in two passes
// (the variance as the mean of squared deviations from the mean), which
// avoids the cancellation of E[x²] − E[x]² for inputs whose mean is large
// next to their spread.
#include "common.cuh"

__device__ __forceinline__ float norm_silu(float v) { return v / (1.0f + expf(-v)); }

// group_norm_f32 normalises each of ngroups (= N·G) groups of x: group r
// is the cg·plane contiguous elements from r·cg·plane, channels c =
// (r mod G)·cg + i/plane. One block per group (blocks stride over groups),
// blockDim.x a multiple of 32. The sums are block reductions (warp
// shuffles, then one value per warp in shared memory). The normalising
// pass applies the affine weight and bias [C] (either may be null) and
// then SiLU if silu is non-zero. dst may be x: each thread writes only
// the elements it has itself read.
KERNEL void KNAME(group_norm)(st_t *dst, const st_t *x, const st_t *weight, const st_t *bias, int ngroups, int groups, int cg, int plane, float eps, int silu) {
	__shared__ float scratch[33];
	int len = cg * plane;
	for (int r = blockIdx.x; r < ngroups; r += gridDim.x) {
		const st_t *xr = x + (size_t)r * len;
		st_t *dr = dst + (size_t)r * len;
		float s = 0.0f;
		for (int i = threadIdx.x; i < len; i += blockDim.x)
			s += ldf(xr[i]);
		float mean = block_sum(s, scratch) / (float)len;
		float q = 0.0f;
		for (int i = threadIdx.x; i < len; i += blockDim.x) {
			float d = ldf(xr[i]) - mean;
			q = fmaf(d, d, q);
		}
		float inv = 1.0f / sqrtf(block_sum(q, scratch) / (float)len + eps);
		int c0 = (r % groups) * cg;
		if (plane >= (int)blockDim.x) {
			// Channel by channel: the scale and shift are uniform.
			for (int ci = 0; ci < cg; ci++) {
				float scale = weight ? inv * ldf(weight[c0 + ci]) : inv;
				float shift = bias ? ldf(bias[c0 + ci]) : 0.0f;
				const st_t *xc = xr + (size_t)ci * plane;
				st_t *dc = dr + (size_t)ci * plane;
				for (int i = threadIdx.x; i < plane; i += blockDim.x) {
					float v = fmaf(ldf(xc[i]) - mean, scale, shift);
					dc[i] = stf(silu ? norm_silu(v) : v);
				}
			}
		} else {
			for (int i = threadIdx.x; i < len; i += blockDim.x) {
				int c = c0 + i / plane;
				float scale = weight ? inv * ldf(weight[c]) : inv;
				float shift = bias ? ldf(bias[c]) : 0.0f;
				float v = fmaf(ldf(xr[i]) - mean, scale, shift);
				dr[i] = stf(silu ? norm_silu(v) : v);
			}
		}
	}
}

// layer_norm_f32 normalises each of rows rows of d contiguous elements
// and applies weight and bias [d] (either may be null). One warp per row
// (the rows of a model are a few hundred to a few thousand wide, and many):
// its reductions are warp shuffles only. Warps stride over rows; every
// lane of a warp takes the same rows. dst may be x.
KERNEL void KNAME(layer_norm)(st_t *dst, const st_t *x, const st_t *weight, const st_t *bias, int rows, int d, float eps) {
	int lane = threadIdx.x & 31;
	int warps = (blockDim.x >> 5) * gridDim.x;
	for (int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
		const st_t *xr = x + (size_t)r * d;
		st_t *dr = dst + (size_t)r * d;
		float s = 0.0f;
		for (int i = lane; i < d; i += 32)
			s += ldf(xr[i]);
		float mean = warp_sum(s) / (float)d;
		float q = 0.0f;
		for (int i = lane; i < d; i += 32) {
			float t = ldf(xr[i]) - mean;
			q = fmaf(t, t, q);
		}
		float inv = 1.0f / sqrtf(warp_sum(q) / (float)d + eps);
		for (int i = lane; i < d; i += 32) {
			float v = (ldf(xr[i]) - mean) * inv;
			if (weight)
				v *= ldf(weight[i]);
			if (bias)
				v += ldf(bias[i]);
			dr[i] = stf(v);
		}
	}
}

// l2_norm_f32 sets dst[n, c, p] = x[n, c, p] / (sqrt(Σ_c x[n, c, p]²) +
// eps) · weight[c] for npos = N·plane positions: one thread per position
// (grid-stride), walking the channels, so neighbouring threads read
// neighbouring addresses. dst may be x: a thread reads all of its
// position's channels before writing them.
KERNEL void KNAME(l2_norm)(st_t *dst, const st_t *x, const st_t *weight, int npos, int c, int plane, float eps) {
	GRID_STRIDE(i, npos) {
		int n = i / plane, p = i - n * plane;
		size_t base = (size_t)n * c * plane + p;
		float s = 0.0f;
		for (int ch = 0; ch < c; ch++) {
			float v = ldf(x[base + (size_t)ch * plane]);
			s = fmaf(v, v, s);
		}
		float den = sqrtf(s) + eps;
		for (int ch = 0; ch < c; ch++) {
			size_t o = base + (size_t)ch * plane;
			dst[o] = stf(ldf(x[o]) / den * ldf(weight[ch]));
		}
	}
}

// scale_norm_f32 sets each of rows rows of d contiguous elements to x /
// max(sqrt(Σ x²)·scale, eps) · gain (RTMPose's ScaleNorm; NaN stays NaN).
// One warp per row, as layer_norm; the division comes before the gain, as
// in PyTorch. dst may be x: every lane reads its elements before the warp
// reduction and writes only those.
KERNEL void KNAME(scale_norm)(st_t *dst, const st_t *x, int rows, int d, float scale, float eps, float gain) {
	int lane = threadIdx.x & 31;
	int warps = (blockDim.x >> 5) * gridDim.x;
	for (int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
		const st_t *xr = x + (size_t)r * d;
		st_t *dr = dst + (size_t)r * d;
		float q = 0.0f;
		for (int i = lane; i < d; i += 32) {
			float v = ldf(xr[i]);
			q = fmaf(v, v, q);
		}
		float nrm = sqrtf(warp_sum(q)) * scale;
		nrm = nrm < eps ? eps : nrm;
		for (int i = lane; i < d; i += 32)
			dr[i] = stf(ldf(xr[i]) / nrm * gain);
	}
}
