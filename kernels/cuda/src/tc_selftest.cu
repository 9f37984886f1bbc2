// tc_selftest.cu: kernels that check the tensor-core building blocks of
// mma.cuh (mma.sync, ldmatrix, cp.async) against the PTX ISA's definitions.
// The emulator's tests run them; on an sm_80+ GPU they must give the same
// answers (before sm_80 they trap).
#include "common.cuh"
#include "mma.cuh"

// selftest_mma: warp w of block b computes problem p = b·(blockDim.x/32) + w,
//   D[p] = A[p]·B[p] + C[p]
// with A [16][16] and B [16 k][8 n] fp16 bits, row-major, C and D [16][8]
// fp32. The fragments are built from global memory by the ISA's formulas
// (not through ldmatrix), so the test checks mma_m16n8k16_f32f16 alone.
KERNEL void selftest_mma(float *D, const unsigned short *A, const unsigned short *B, const float *C) {
	int lane = threadIdx.x & 31;
	int p = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	int g = lane >> 2, t = lane & 3;
	const unsigned short *a = A + 256 * p, *b = B + 128 * p;
	const float *c = C + 128 * p;
	unsigned af[4], bf[2];
	float cf[4], d[4];
	for (int i = 0; i < 4; i++) {
		int row = g + 8 * (i & 1), col = 2 * t + 8 * (i >> 1);
		af[i] = pack_half2(__ushort_as_half(a[16 * row + col]), __ushort_as_half(a[16 * row + col + 1]));
	}
	for (int i = 0; i < 2; i++) {
		int k = 2 * t + 8 * i;
		bf[i] = pack_half2(__ushort_as_half(b[8 * k + g]), __ushort_as_half(b[8 * (k + 1) + g]));
	}
	for (int i = 0; i < 4; i++)
		cf[i] = c[8 * (g + 8 * (i >> 1)) + 2 * t + (i & 1)];
	mma_m16n8k16_f32f16(d, af, bf, cf);
	for (int i = 0; i < 4; i++)
		D[128 * p + 8 * (g + 8 * (i >> 1)) + 2 * t + (i & 1)] = d[i];
}

// LDM_ROWS × LDM_LD halves of shared memory that the ldmatrix test reads.
#define LDM_ROWS 32
#define LDM_LD 24

// selftest_ldmatrix: the block copies in (LDM_ROWS × LDM_LD halves, row
// -major) to shared memory; lane L of warp w then points at row
// (5L + 3 + 7w) mod 32, column 8·((L + w) mod 3), and writes, at out +
// 12·(global thread), the registers of ldmatrix_x4 (4), ldmatrix_x4_trans
// (4), ldmatrix_x2 (2) and ldmatrix_x2_trans (2).
KERNEL void selftest_ldmatrix(unsigned *out, const unsigned short *in) {
	__shared__ __align__(16) __half S[LDM_ROWS * LDM_LD];
	for (int i = threadIdx.x; i < LDM_ROWS * LDM_LD; i += blockDim.x)
		S[i] = __ushort_as_half(in[i]);
	__syncthreads();
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	const __half *row = S + LDM_LD * ((5 * lane + 3 + 7 * w) & 31) + 8 * ((lane + w) % 3);
	unsigned r[12];
	ldmatrix_x4(r, row);
	ldmatrix_x4_trans(r + 4, row);
	ldmatrix_x2(r + 8, row);
	ldmatrix_x2_trans(r + 10, row);
	unsigned *o = out + 12 * (blockIdx.x * blockDim.x + threadIdx.x);
	for (int i = 0; i < 12; i++)
		o[i] = r[i];
}

// selftest_cp_async: 32 threads; shared memory starts as 0xab bytes.
// Thread t copies the 16-byte chunk t of in to chunk t of shared memory:
// with cp_async_16_zfill and src_bytes = t for t ≤ 16, with cp_async_16
// for 17 ≤ t < 24, and with src_bytes = 0 after that. Threads below 16
// commit one group and the others two; mode 0 waits with
// cp_async_wait_all, mode 1 with cp_async_wait_group(0). After a barrier,
// thread t writes shared chunk (t + 1) mod 32 to chunk t of out.
KERNEL void selftest_cp_async(unsigned char *out, const unsigned char *in, int mode) {
	__shared__ __align__(16) unsigned char S[32 * 16];
	int t = threadIdx.x;
	for (int i = 0; i < 16; i++)
		S[16 * t + i] = 0xab;
	__syncthreads();
	if (t <= 16)
		cp_async_16_zfill(S + 16 * t, in + 16 * t, t);
	else if (t < 24)
		cp_async_16(S + 16 * t, in + 16 * t);
	cp_async_commit();
	if (t >= 16) {
		if (t >= 24)
			cp_async_16_zfill(S + 16 * t, in + 16 * t, 0);
		cp_async_commit();
	}
	if (mode == 0)
		cp_async_wait_all();
	else
		cp_async_wait_group(0);
	__syncthreads();
	int u = (t + 1) & 31;
	for (int i = 0; i < 16; i++)
		out[16 * t + i] = S[16 * u + i];
}
