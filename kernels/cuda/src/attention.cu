// attention.cu: fused multi-head attention, flash style: scores, an online
// softmax in fp32 and the weighted sum of values in one pass over the keys,
// so no Lq×Lk score matrix is ever stored.
#include "common.cuh"

// Keys staged per step, and threads that share one query row (consecutive
// lanes of one warp).
#define ATT_BK 16
#define ATT_TPR 4

// Loops over register arrays are unrolled by nvcc so the arrays stay in
// registers; the host compiler needs no hint.
#ifdef __CUDACC__
#define UNROLL _Pragma("unroll")
#else
#define UNROLL
#endif

// attention_tile computes, for one batch entry z, one head h and the query
// rows [q0, q0 + blockDim.x/4) of it,
//   dst[z][r][h·dv + c] = Σ_j softmax_j(scale · q_r·k_j) · v[j][c]
// with q [N][Lq][Cq], k [N][Lk][Cq], v [N][Lk][Cv] and dst [N][Lq][Cv]
// (head h uses channels [h·dq, (h+1)·dq) of q and k, [h·dv, (h+1)·dv) of v
// and dst). Four lanes share a query row: lane t4 of the row owns keys
// t4, t4+4, … of each key tile and output channels t4, t4+4, … of the row,
// OJ of them at most (dv ≤ 4·OJ; OJ is a constant at each call site, so the
// accumulator lives in registers). Dynamic shared memory holds the row
// block's scaled queries (rows × dq), a tile of ATT_BK keys (× dq) and
// values (× dv), and the tile's probabilities (rows × ATT_BK).
//
// Per key tile: scores s, the row's tile maximum by shuffles among its four
// lanes, the running maximum m and sum l rescaled by exp(m_old − m_new),
// the accumulator rescaled the same way, then acc += p·V. Keys past Lk get
// probability 0 and zero values; rows past Lq compute on zeros and store
// nothing.
__device__ __forceinline__ void attention_tile(st_t *dst, const st_t *q, const st_t *k, const st_t *v, int z, int h, int q0, int Lq, int Lk, int Cq, int Cv, int dq, int dv, float scale, const int OJ) {
	DYNAMIC_SHARED(float, smem);
	int rows = blockDim.x / ATT_TPR;
	float *Qs = smem;                  // [rows][dq], scaled
	float *Ks = Qs + rows * dq;        // [ATT_BK][dq]
	float *Vs = Ks + ATT_BK * dq;      // [ATT_BK][dv]
	float *Ps = Vs + ATT_BK * dv;      // [rows][ATT_BK]
	int tid = threadIdx.x, r = tid / ATT_TPR, t4 = tid % ATT_TPR;
	const st_t *qz = q + (size_t)z * Lq * Cq + (size_t)h * dq;
	const st_t *kz = k + (size_t)z * Lk * Cq + (size_t)h * dq;
	const st_t *vz = v + (size_t)z * Lk * Cv + (size_t)h * dv;

	__syncthreads(); // a previous batch entry's last tile is consumed
	for (int e = tid; e < rows * dq; e += blockDim.x) {
		int rr = e / dq, d = e % dq, qr = q0 + rr;
		Qs[e] = qr < Lq ? scale * ldf(qz[(size_t)qr * Cq + d]) : 0.0f;
	}
	float acc[64];
UNROLL
	for (int j = 0; j < OJ; j++)
		acc[j] = 0.0f;
	float m = -INFINITY, l = 0.0f;
	const float *qrow = Qs + r * dq;
	float *prow = Ps + r * ATT_BK;

	for (int k0 = 0; k0 < Lk; k0 += ATT_BK) {
		__syncthreads(); // the previous tile's Ks, Vs and Ps are consumed (and Qs is staged)
		for (int e = tid; e < ATT_BK * dq; e += blockDim.x) {
			int kk = e / dq, d = e % dq, key = k0 + kk;
			Ks[e] = key < Lk ? ldf(kz[(size_t)key * Cq + d]) : 0.0f;
		}
		for (int e = tid; e < ATT_BK * dv; e += blockDim.x) {
			int kk = e / dv, c = e % dv, key = k0 + kk;
			Vs[e] = key < Lk ? ldf(vz[(size_t)key * Cv + c]) : 0.0f;
		}
		__syncthreads();

		float s[ATT_BK / ATT_TPR];
UNROLL
		for (int j = 0; j < ATT_BK / ATT_TPR; j++)
			s[j] = 0.0f;
		for (int d = 0; d < dq; d++) {
			float qd = qrow[d];
UNROLL
			for (int j = 0; j < ATT_BK / ATT_TPR; j++)
				s[j] = fmaf(qd, Ks[(t4 + ATT_TPR * j) * dq + d], s[j]);
		}
		float tmax = -INFINITY;
UNROLL
		for (int j = 0; j < ATT_BK / ATT_TPR; j++) {
			if (k0 + t4 + ATT_TPR * j >= Lk)
				s[j] = -INFINITY;
			tmax = fmaxf(tmax, s[j]);
		}
		tmax = fmaxf(tmax, __shfl_xor_sync(FULL_MASK, tmax, 1));
		tmax = fmaxf(tmax, __shfl_xor_sync(FULL_MASK, tmax, 2));
		// Every tile has at least one key, so mnew is finite for finite
		// inputs; alpha is 0 on the first tile (m = −∞).
		float mnew = fmaxf(m, tmax);
		float alpha = expf(m - mnew);
		float psum = 0.0f;
UNROLL
		for (int j = 0; j < ATT_BK / ATT_TPR; j++) {
			float p = expf(s[j] - mnew); // 0 for masked keys
			prow[t4 + ATT_TPR * j] = p;
			psum += p;
		}
		psum += __shfl_xor_sync(FULL_MASK, psum, 1);
		psum += __shfl_xor_sync(FULL_MASK, psum, 2);
		l = l * alpha + psum;
		m = mnew;
		__syncwarp(FULL_MASK); // the row's four lanes wrote prow
UNROLL
		for (int j = 0; j < OJ; j++)
			acc[j] *= alpha;
		for (int kk = 0; kk < ATT_BK; kk++) {
			float p = prow[kk];
			const float *vrow = Vs + kk * dv + t4;
UNROLL
			for (int j = 0; j < OJ; j++)
				if (t4 + ATT_TPR * j < dv)
					acc[j] = fmaf(p, vrow[ATT_TPR * j], acc[j]);
		}
	}
	int qr = q0 + r;
	if (qr < Lq) {
		float inv = 1.0f / l;
		st_t *out = dst + ((size_t)z * Lq + qr) * Cv + (size_t)h * dv;
UNROLL
		for (int j = 0; j < OJ; j++)
			if (t4 + ATT_TPR * j < dv)
				out[t4 + ATT_TPR * j] = stf(acc[j] * inv);
	}
}

// The kernels differ only in the most value channels per head they hold in
// registers (4·OJ). The grid is (⌈Lq/rows⌉, heads, ≤ N) blocks of 4·rows
// threads (a multiple of 32), blockIdx.z striding over the batch; dynamic
// shared memory is (rows·dq + 16·dq + 16·dv + 16·rows) floats.
#define ATTENTION_BODY(OJ)                                                                                  \
	for (int z = blockIdx.z; z < N; z += gridDim.z)                                                     \
		attention_tile(dst, q, k, v, z, blockIdx.y, blockIdx.x * (blockDim.x / ATT_TPR), Lq, Lk, Cq, Cv, \
		               Cq / heads, Cv / heads, scale, OJ)

KERNEL void KNAME(attention_d64)(st_t *dst, const st_t *q, const st_t *k, const st_t *v, int N, int Lq, int Lk, int Cq, int Cv, int heads, float scale) {
	ATTENTION_BODY(16);
}

KERNEL void KNAME(attention_d160)(st_t *dst, const st_t *q, const st_t *k, const st_t *v, int N, int Lq, int Lk, int Cq, int Cv, int heads, float scale) {
	ATTENTION_BODY(40);
}

KERNEL void KNAME(attention_d256)(st_t *dst, const st_t *q, const st_t *k, const st_t *v, int N, int Lq, int Lk, int Cq, int Cv, int heads, float scale) {
	ATTENTION_BODY(64);
}
