// common.cuh: included first by every kernel source. It keeps one .cu text
// valid for nvcc (PTX for the GPU) and for the host C compiler running on
// the emulator (kernels/cuda/emu, whose cuda_emu.h comes first).
//
// Rules for kernel sources: the C-compatible subset of CUDA C++ (no
// templates, classes, references or overloads); kernels are declared
//   KERNEL void name(params)
// on one line up to the opening parenthesis, with parameters of type
// pointer, int, unsigned or float (the generator of the emulator's
// trampolines reads these declarations); names are unique across files.
#ifndef MUSETALK_COMMON_CUH
#define MUSETALK_COMMON_CUH

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define KERNEL extern "C" __global__
#define DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#else
#ifndef CUDA_EMU_H
#error "the emulator includes cuda_emu.h before the kernel sources"
#endif
#define KERNEL __global__
#define DYNAMIC_SHARED(type, name) type *name = (type *)emu_dynamic_shared()
#endif

#define FULL_MASK 0xffffffffu

// Storage type. A source whose kernels are declared KERNEL void
// KNAME(base)(...) is compiled twice: as is, storing tensors as float
// (kernels named base_f32), and with MUSETALK_F16 defined, storing them as
// __half (base_f16). Kernels read elements with ldf, which widens to
// float, compute in float, and store with stf, which rounds to nearest
// even; copies move st_t values untouched. A source's kernels are either
// all KNAME or all plain names (compiled once).
#ifdef MUSETALK_F16
typedef __half st_t;
#define KNAME(base) base##_f16
__device__ __forceinline__ float ldf(st_t v) { return __half2float(v); }
__device__ __forceinline__ st_t stf(float v) { return __float2half_rn(v); }
#else
typedef float st_t;
#define KNAME(base) base##_f32
__device__ __forceinline__ float ldf(st_t v) { return v; }
__device__ __forceinline__ st_t stf(float v) { return v; }
#endif

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// Grid-stride loop over [0, n): every thread of the grid takes every
// (blockDim.x·gridDim.x)-th index.
#define GRID_STRIDE(i, n) \
	for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

__device__ __forceinline__ float warp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(FULL_MASK, v, o);
	return v;
}

__device__ __forceinline__ float warp_max(float v) {
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
	return v;
}

// block_sum and block_max reduce v over a one-dimensional block whose size
// is a multiple of 32 and return the result to every thread. scratch is
// __shared__ float[33] of the caller; the block may reuse it after the
// call returns.
__device__ __forceinline__ float block_sum(float v, float *scratch) {
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
	v = warp_sum(v);
	if (lane == 0)
		scratch[warp] = v;
	__syncthreads();
	if (warp == 0) {
		v = lane < nwarps ? scratch[lane] : 0.0f;
		v = warp_sum(v);
		if (lane == 0)
			scratch[32] = v;
	}
	__syncthreads();
	v = scratch[32];
	__syncthreads();
	return v;
}

__device__ __forceinline__ float block_max(float v, float *scratch) {
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
	v = warp_max(v);
	if (lane == 0)
		scratch[warp] = v;
	__syncthreads();
	if (warp == 0) {
		v = lane < nwarps ? scratch[lane] : -INFINITY;
		v = warp_max(v);
		if (lane == 0)
			scratch[32] = v;
	}
	__syncthreads();
	v = scratch[32];
	__syncthreads();
	return v;
}

// tile_fma_4x4 is the inner step of the 64×64×16 tiles that the SGEMM and
// the implicit-GEMM convolution share: for each k of the slice, thread
// (tx, ty) of a 16×16 block multiplies rows ty+16i of the A tile by columns
// tx+16j of the B tile into its 4×4 lattice acc. The tiles are row-major
// [bk][ld] in shared memory.
__device__ __forceinline__ void tile_fma_4x4(const float *As, const float *Bs, int ld, int bk, int tx, int ty, float acc[4][4]) {
	for (int kk = 0; kk < bk; kk++) {
		float a[4], b[4];
		for (int i = 0; i < 4; i++)
			a[i] = As[kk * ld + ty + 16 * i];
		for (int j = 0; j < 4; j++)
			b[j] = Bs[kk * ld + tx + 16 * j];
		for (int i = 0; i < 4; i++)
			for (int j = 0; j < 4; j++)
				acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
	}
}

#endif
