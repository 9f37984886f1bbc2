// selftest.cu: kernels that check the execution model itself (barriers,
// shared memory, warp shuffles and votes, __half conversions, atomics) and
// kernels that misbehave on purpose. The emulator's tests run them; on a
// GPU the well-behaved ones must give the same answers.
#include "common.cuh"

// selftest_ids writes, for every thread of a 3-D grid of 3-D blocks, its
// threadIdx, blockIdx, blockDim and gridDim (12 values) at its global
// linear index.
KERNEL void selftest_ids(unsigned *out) {
	unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
	unsigned tid = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
	unsigned *o = out + 12 * (block * blockDim.x * blockDim.y * blockDim.z + tid);
	o[0] = threadIdx.x, o[1] = threadIdx.y, o[2] = threadIdx.z;
	o[3] = blockIdx.x, o[4] = blockIdx.y, o[5] = blockIdx.z;
	o[6] = blockDim.x, o[7] = blockDim.y, o[8] = blockDim.z;
	o[9] = gridDim.x, o[10] = gridDim.y, o[11] = gridDim.z;
}

// selftest_barrier runs rounds of: every thread writes its slot of dynamic
// shared memory, barrier, reads its neighbours' slots, barrier. It counts
// the values that were not the current round's into bad[global thread].
KERNEL void selftest_barrier(int *bad, int rounds) {
	DYNAMIC_SHARED(int, s);
	int n = blockDim.x, t = threadIdx.x, errs = 0;
	for (int r = 0; r < rounds; r++) {
		s[t] = r * 4096 + t;
		__syncthreads();
		for (int d = 1; d < n; d *= 3) {
			int u = (t + d) % n;
			if (s[u] != r * 4096 + u)
				errs++;
		}
		__syncthreads();
	}
	bad[blockIdx.x * n + t] = errs;
}

// selftest_shared_blocks: thread 0 of each block stores a block-specific
// value in a __shared__ variable; after the barrier every thread reports
// what it sees.
KERNEL void selftest_shared_blocks(int *out) {
	__shared__ int v;
	if (threadIdx.x == 0)
		v = 1000 + (int)blockIdx.x;
	__syncthreads();
	out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

// selftest_shuffles writes, per thread, 8 values: the xor-1, down-3, up-5
// and idx-7 shuffles of lane·10+warp, the warp sum of the lane number, the
// ballot of lane%3 == 0, any(lane == 5), all(lane < 20). Lanes past the
// end of a partial warp do not exist.
KERNEL void selftest_shuffles(float *out) {
	int t = blockIdx.x * blockDim.x + threadIdx.x;
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	unsigned mask = __ballot_sync(FULL_MASK, 1);
	float v = (float)(lane * 10 + warp);
	float *o = out + 8 * t;
	o[0] = __shfl_xor_sync(mask, v, 1);
	o[1] = __shfl_down_sync(mask, v, 3);
	o[2] = __shfl_up_sync(mask, v, 5);
	o[3] = __shfl_sync(mask, v, 7);
	o[4] = warp_sum((float)lane);
	o[5] = (float)__ballot_sync(mask, lane % 3 == 0);
	o[6] = (float)__any_sync(mask, lane == 5);
	o[7] = (float)__all_sync(mask, lane < 20);
}

// selftest_block_reduce reduces in over each block with block_sum and
// block_max.
KERNEL void selftest_block_reduce(float *sum, float *mx, const float *in) {
	__shared__ float scratch[33];
	float v = in[blockIdx.x * blockDim.x + threadIdx.x];
	float s = block_sum(v, scratch);
	float m = block_max(v, scratch);
	if (threadIdx.x == 0) {
		sum[blockIdx.x] = s;
		mx[blockIdx.x] = m;
	}
}

// selftest_half converts in[i] to half bits (h) and half bits hin[i] to
// float (f).
KERNEL void selftest_half(unsigned short *h, float *f, const float *in, const unsigned short *hin, int n) {
	GRID_STRIDE(i, n) {
		h[i] = __half_as_ushort(__float2half(in[i]));
		f[i] = __half2float(__ushort_as_half(hin[i]));
	}
}

// selftest_atomic counts every thread of the grid into *count and adds
// 0.5 per thread to *sum.
KERNEL void selftest_atomic(int *count, float *sum) {
	atomicAdd(count, 1);
	atomicAdd(sum, 0.5f);
}

// selftest_unmatched_barrier: half the block returns before a barrier the
// other half waits at (undefined behaviour in CUDA; an error here).
KERNEL void selftest_unmatched_barrier(int *out) {
	if (threadIdx.x >= blockDim.x / 2)
		return;
	__syncthreads();
	out[threadIdx.x] = 1;
}

// selftest_warp_exit: half of each warp returns before a full-mask shuffle.
KERNEL void selftest_warp_exit(float *out) {
	if ((threadIdx.x & 31) >= 16)
		return;
	out[threadIdx.x] = __shfl_xor_sync(FULL_MASK, 1.0f, 1);
}

// selftest_write_past writes p[n] (one element past an n-element buffer)
// from one thread.
KERNEL void selftest_write_past(float *p, int n) {
	if (blockIdx.x == 0 && threadIdx.x == 0)
		p[n] = 1.0f;
}

// selftest_trap traps in thread 3 of block 1.
KERNEL void selftest_trap(int *out) {
	if (blockIdx.x == 1 && threadIdx.x == 3)
		__trap();
	out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}
