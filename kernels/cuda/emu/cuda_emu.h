// cuda_emu.h: the CUDA execution model for the host C compiler. The kernel
// sources in ../src include it (through the generated *_cu.c files) in
// place of the CUDA toolkit's headers, so the same .cu text runs on the
// emulator's cooperative fibers: one fiber per CUDA thread, blocks run one
// at a time.
//
// Contract for kernel sources: C-compatible CUDA (no templates, classes,
// references or operator overloads on __half); `__shared__` variables are
// function- or file-scope statics of the block (static thread-local storage
// here, since one OS thread runs a whole launch); dynamic shared memory
// through DYNAMIC_SHARED (common.cuh); warp-synchronous code only through
// the *_sync intrinsics and __syncwarp.
#ifndef CUDA_EMU_H
#define CUDA_EMU_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define __global__
#define __device__ static
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__ static _Thread_local
#define __constant__ static const
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))

#define warpSize 32

typedef struct {
	unsigned int x, y, z;
} uint3;
typedef uint3 dim3;

// The built-in variables of the running fiber. The runtime (emu.c) embeds
// emu_thread_pub at the start of its thread record and points emu_self at
// the fiber it resumes.
struct emu_block_ids {
	uint3 blockIdx;
	dim3 blockDim, gridDim;
};
struct emu_thread_pub {
	uint3 threadIdx;
	const struct emu_block_ids *blk;
};
extern _Thread_local struct emu_thread_pub *emu_self;

#define threadIdx (emu_self->threadIdx)
#define blockIdx (emu_self->blk->blockIdx)
#define blockDim (emu_self->blk->blockDim)
#define gridDim (emu_self->blk->gridDim)

// Synchronisation and traps, implemented by the runtime.
void emu_syncthreads(void);
void emu_syncwarp(unsigned mask);
uint32_t emu_shfl(int mode, unsigned mask, uint32_t v, int arg);
unsigned emu_ballot(unsigned mask, int pred);
int emu_vote_all(unsigned mask, int pred);
void *emu_dynamic_shared(void);
__attribute__((noreturn)) void emu_trap(const char *msg);

#define __syncthreads() emu_syncthreads()
#define __syncwarp(mask) emu_syncwarp(mask)
#define __threadfence() ((void)0)
#define __threadfence_block() ((void)0)
#define __trap() emu_trap("__trap()")

// Warp shuffles. Each is a warp-level rendezvous of the lanes in mask; a
// source lane outside the warp (or the mask) yields the caller's own value,
// as on the GPU for shfl.down/up beyond the warp. The optional width
// argument of CUDA's shuffles is not supported.
enum { EMU_SHFL_IDX, EMU_SHFL_UP, EMU_SHFL_DOWN, EMU_SHFL_XOR };

static inline float emu_shfl_f32(int mode, unsigned mask, float v, int arg) {
	uint32_t u;
	memcpy(&u, &v, 4);
	u = emu_shfl(mode, mask, u, arg);
	memcpy(&v, &u, 4);
	return v;
}
static inline int emu_shfl_i32(int mode, unsigned mask, int v, int arg) {
	return (int)emu_shfl(mode, mask, (uint32_t)v, arg);
}
static inline unsigned emu_shfl_u32(int mode, unsigned mask, unsigned v, int arg) {
	return emu_shfl(mode, mask, v, arg);
}
#define emu_shfl_sel(v) _Generic((v), float: emu_shfl_f32, int: emu_shfl_i32, unsigned int: emu_shfl_u32)
#define __shfl_sync(m, v, l) emu_shfl_sel(v)(EMU_SHFL_IDX, (m), (v), (l))
#define __shfl_up_sync(m, v, d) emu_shfl_sel(v)(EMU_SHFL_UP, (m), (v), (d))
#define __shfl_down_sync(m, v, d) emu_shfl_sel(v)(EMU_SHFL_DOWN, (m), (v), (d))
#define __shfl_xor_sync(m, v, l) emu_shfl_sel(v)(EMU_SHFL_XOR, (m), (v), (l))
#define __ballot_sync(m, p) emu_ballot((m), (p))
#define __any_sync(m, p) (emu_ballot((m), (p)) != 0)
#define __all_sync(m, p) emu_vote_all((m), (p))

// Atomics: fibers are cooperative and blocks run one at a time, so a plain
// read-modify-write is atomic.
static inline float emu_atomic_add_f32(float *p, float v) {
	float old = *p;
	*p = old + v;
	return old;
}
static inline int emu_atomic_add_i32(int *p, int v) {
	int old = *p;
	*p = old + v;
	return old;
}
static inline unsigned emu_atomic_add_u32(unsigned *p, unsigned v) {
	unsigned old = *p;
	*p = old + v;
	return old;
}
#define atomicAdd(p, v) \
	_Generic((p), float *: emu_atomic_add_f32, int *: emu_atomic_add_i32, unsigned int *: emu_atomic_add_u32)((p), (v))

// Device math beyond C99's libm.
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
#define __expf(x) expf(x) // glibc declares __expf and __logf itself
#define __logf(x) logf(x)
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static inline float __int_as_float(int i) {
	float f;
	memcpy(&f, &i, 4);
	return f;
}
static inline int __float_as_int(float f) {
	int i;
	memcpy(&i, &f, 4);
	return i;
}
static inline unsigned __float_as_uint(float f) {
	unsigned u;
	memcpy(&u, &f, 4);
	return u;
}
static inline float __uint_as_float(unsigned u) {
	float f;
	memcpy(&f, &u, 4);
	return f;
}

// __half: IEEE 754 binary16 held as its bits. Kernels use the conversion
// intrinsics only (no arithmetic operators, which CUDA defines for C++).
typedef struct {
	unsigned short x;
} __half;

static inline unsigned short __half_as_ushort(__half h) { return h.x; }
static inline __half __ushort_as_half(unsigned short u) {
	__half h = {u};
	return h;
}

// __float2half rounds to nearest, ties to even: overflow gives infinity,
// values below half the smallest subnormal give (signed) zero, NaN gives
// the canonical quiet NaN 0x7fff as cvt.rn.f16.f32 does.
static inline __half __float2half(float f) {
	uint32_t x = __float_as_uint(f);
	uint32_t sign = (x >> 16) & 0x8000u;
	uint32_t ax = x & 0x7fffffffu;
	if (ax > 0x7f800000u)
		return __ushort_as_half(0x7fff);
	if (ax >= 0x477ff000u) // at least 65520, halfway from 65504 to 2^16
		return __ushort_as_half((unsigned short)(sign | 0x7c00u));
	if (ax >= 0x38800000u) { // 2^-14, the smallest normal half
		uint32_t h = (ax - 0x38000000u) >> 13; // rebias 127 -> 15
		uint32_t rest = ax & 0x1fffu;
		if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
			h++;
		return __ushort_as_half((unsigned short)(sign | h));
	}
	if (ax <= 0x33000000u) // at most 2^-25: rounds to zero
		return __ushort_as_half((unsigned short)sign);
	// Subnormal half: the value in units of 2^-24, rounded.
	uint32_t e = ax >> 23; // 102..112
	uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
	uint32_t shift = 126u - e; // 14..24
	uint32_t h = mant >> shift;
	uint32_t rest = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
	if (rest > halfway || (rest == halfway && (h & 1u)))
		h++;
	return __ushort_as_half((unsigned short)(sign | h));
}
static inline __half __float2half_rn(float f) { return __float2half(f); }

// __half2float is exact.
static inline float __half2float(__half h) {
	uint32_t sign = (uint32_t)(h.x & 0x8000u) << 16;
	uint32_t e = (h.x >> 10) & 0x1fu, m = h.x & 0x3ffu;
	if (e == 0) {
		float v = (float)m * 5.9604644775390625e-8f; // m·2^-24, exact
		return sign ? -v : v;
	}
	if (e == 31)
		return __uint_as_float(sign | 0x7f800000u | (m << 13));
	return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

#endif
