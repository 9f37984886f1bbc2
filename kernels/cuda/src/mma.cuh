// mma.cuh: tensor-core building blocks (included after common.cuh):
// mma.sync m16n8k16 with fp16 inputs and fp32 accumulators, ldmatrix, and
// cp.async from global to shared memory.
//
// Under nvcc for sm_80 and later they are inline PTX. For older targets
// they compile to __trap() (after zeroing their outputs), so a source that
// includes this header still builds compute_70 PTX; kernels that use them
// keep their bodies under TC_AVAILABLE. On the emulator (no __CUDACC__)
// they are warp meeting points: every lane publishes its operands in a
// block-private scratch (per warp and lane), __syncwarp, every lane reads
// the operands it needs from the lanes that hold them, __syncwarp. That is
// two rendezvous per call; gathering the same registers with __shfl_sync
// would take one shuffle (two rendezvous) per register fetched, 32 for an
// mma. cp.async is a synchronous copy there (it traps on addresses that
// are not 16-byte aligned, as ldmatrix does on misaligned rows), and
// commit and wait do nothing.
//
// Fragment layouts are those of the PTX ISA, section "Matrix Fragments for
// mma.m16n8k16 with floating point type" (numbered 9.7.13.4.8 or
// 9.7.15.5.8 depending on the ISA version; anchor
// #warp-level-matrix-fragment-mma-16816-float of
// https://docs.nvidia.com/cuda/parallel-thread-execution/). With groupID
// g = lane >> 2 and threadID_in_group t = lane % 4:
//   A (16×16, row-major, four .f16x2 registers a[0..3] = a0..a7):
//     a[0] = (A[g][2t],     A[g][2t+1])      a[1] = (A[g+8][2t],   A[g+8][2t+1])
//     a[2] = (A[g][2t+8],   A[g][2t+9])      a[3] = (A[g+8][2t+8], A[g+8][2t+9])
//   B (16×8, k × n, "col": two .f16x2 registers b[0..1] = b0..b3):
//     b[0] = (B[2t][g],     B[2t+1][g])      b[1] = (B[2t+8][g],   B[2t+9][g])
//   C, D (16×8, f32): c[0] = C[g][2t], c[1] = C[g][2t+1],
//                     c[2] = C[g+8][2t], c[3] = C[g+8][2t+1]
// where (x, y) is a register holding x in its low 16 bits (the lower
// column or row index) and y in its high 16 bits; pack_half2 makes one.
//
// ldmatrix (ISA "Warp-level matrix load instruction: ldmatrix", anchor
// #warp-level-matrix-instructions-ldmatrix, Figure "ldmatrix fragment
// layout for one 8x8 Matrix with 16-bit elements"), shape
// .m8n8, 16-bit elements: lanes 8i..8i+7 give the addresses of rows 0..7 of
// matrix i (16-byte aligned, 8 contiguous elements each; .x4 uses all 32
// lanes, .x2 lanes 0..15, the other lanes' addresses are ignored). Register
// r[i] of lane L receives (M_i[L/4][2(L%4)], M_i[L/4][2(L%4)+1]); with
// .trans, (M_i[2(L%4)][L/4], M_i[2(L%4)+1][L/4]). So for an A tile stored
// row-major in shared memory, ldmatrix_x4 with lane L pointing at row
// (L & 15), column 8·(L >> 4) yields a[0..3] directly; a B tile stored as
// [n][k] gives b[] through ldmatrix (non-transposed) and one stored as
// [k][n] through ldmatrix .trans.
//
// All of these must be reached by all 32 lanes of a full warp, with the
// same arguments where the ISA requires (warp-uniform control flow).
#ifndef MUSETALK_MMA_CUH
#define MUSETALK_MMA_CUH

#ifndef MUSETALK_COMMON_CUH
#error "include common.cuh before mma.cuh"
#endif

// TC_AVAILABLE is true where the tensor-core path compiles to real
// instructions (sm_80+) or runs on the emulator; kernels guard their bodies
// with #if TC_AVAILABLE and trap otherwise.
#if !defined(__CUDACC__)
#define TC_AVAILABLE 1
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define TC_AVAILABLE 1
#else
#define TC_AVAILABLE 0
#endif

#ifndef UNROLL
#ifdef __CUDACC__
#define UNROLL _Pragma("unroll")
#else
#define UNROLL
#endif
#endif

// pack_half2 packs two halves into one .f16x2 register: lo in bits 0..15.
__device__ __forceinline__ unsigned pack_half2(__half lo, __half hi) {
	return (unsigned)__half_as_ushort(lo) | ((unsigned)__half_as_ushort(hi) << 16);
}

#if defined(__CUDACC__) && TC_AVAILABLE

// D = A·B + C for one warp; d may alias c.
__device__ __forceinline__ void mma_m16n8k16_f32f16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
	             : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
	             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ unsigned smem_u32(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }

// ldmatrix_x4 loads four 8×8 matrices; row is this lane's row (shared
// memory, 16-byte aligned).
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const __half *row) {
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
	             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
	             : "r"(smem_u32(row))
	             : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const __half *row) {
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
	             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
	             : "r"(smem_u32(row))
	             : "memory");
}
__device__ __forceinline__ void ldmatrix_x2(unsigned r[2], const __half *row) {
	asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
	             : "=r"(r[0]), "=r"(r[1])
	             : "r"(smem_u32(row))
	             : "memory");
}
__device__ __forceinline__ void ldmatrix_x2_trans(unsigned r[2], const __half *row) {
	asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
	             : "=r"(r[0]), "=r"(r[1])
	             : "r"(smem_u32(row))
	             : "memory");
}

// cp_async_16 copies 16 bytes from global to shared memory, both 16-byte
// aligned; cp_async_16_zfill copies src_bytes (0..16) of them and fills
// the rest with zeros (src is not read when src_bytes is 0, but it must
// still be a valid global address). The copies land by the matching wait.
__device__ __forceinline__ void cp_async_16(void *smem, const void *gmem) {
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_16_zfill(void *smem, const void *gmem, int src_bytes) {
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes)
	             : "memory");
}
// cp_async_commit closes the group of this thread's copies issued since the
// last commit; cp_async_wait_group(n) (n a constant) waits until at most
// n of its committed groups are pending; cp_async_wait_all waits for all.
__device__ __forceinline__ void cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all(void) { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
#define cp_async_wait_group(n) asm volatile("cp.async.wait_group %0;\n" ::"n"(n) : "memory")

#elif defined(__CUDACC__) // before sm_80: present, but a trap

__device__ __forceinline__ void mma_m16n8k16_f32f16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
	d[0] = d[1] = d[2] = d[3] = 0.0f;
	__trap();
}
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const __half *row) {
	r[0] = r[1] = r[2] = r[3] = 0u;
	__trap();
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const __half *row) {
	r[0] = r[1] = r[2] = r[3] = 0u;
	__trap();
}
__device__ __forceinline__ void ldmatrix_x2(unsigned r[2], const __half *row) {
	r[0] = r[1] = 0u;
	__trap();
}
__device__ __forceinline__ void ldmatrix_x2_trans(unsigned r[2], const __half *row) {
	r[0] = r[1] = 0u;
	__trap();
}
__device__ __forceinline__ void cp_async_16(void *smem, const void *gmem) { __trap(); }
__device__ __forceinline__ void cp_async_16_zfill(void *smem, const void *gmem, int src_bytes) { __trap(); }
__device__ __forceinline__ void cp_async_commit(void) { __trap(); }
__device__ __forceinline__ void cp_async_wait_all(void) { __trap(); }
#define cp_async_wait_group(n) __trap()

#else // the emulator

// Per warp and lane of the running block: the operands a lane publishes,
// and which operation it is in (all lanes of a warp must be in the same).
enum { EMU_TC_MMA = 1, EMU_TC_LDM };
struct emu_tc_lane {
	int op;
	unsigned reg[6];
	const unsigned short *row;
};
__shared__ struct emu_tc_lane emu_tc_slots[32][32] __attribute__((unused));

// emu_tc_enter publishes *mine for the calling lane and waits for the
// warp; it returns the warp's 32 slots. The caller reads them and then
// calls emu_tc_leave, so that no lane overwrites its slot before all have
// read.
static inline struct emu_tc_lane *emu_tc_enter(const struct emu_tc_lane *mine, int *lane) {
	unsigned nthreads = blockDim.x * blockDim.y * blockDim.z;
	unsigned tid = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
	unsigned warp = tid >> 5;
	if (warp * 32 + 32 > nthreads)
		emu_trap("mma.sync/ldmatrix in a partial warp (the block size is not a multiple of 32)");
	struct emu_tc_lane *w = emu_tc_slots[warp];
	*lane = (int)(tid & 31);
	w[*lane] = *mine;
	__syncwarp(FULL_MASK);
	for (int l = 0; l < 32; l++)
		if (w[l].op != mine->op)
			emu_trap("lanes of one warp in different mma.sync/ldmatrix calls");
	return w;
}
static inline void emu_tc_leave(void) { __syncwarp(FULL_MASK); }

static inline float emu_tc_half(unsigned reg, int hi) { return __half2float(__ushort_as_half((unsigned short)(hi ? reg >> 16 : reg & 0xffffu))); }

// The element (row, k) of A and (k, col) of B, read from the lanes and
// registers that hold them by the ISA layout (see the top of the file).
static inline float emu_tc_a(const struct emu_tc_lane *w, int row, int k) {
	int reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
	return emu_tc_half(w[4 * (row & 7) + ((k & 7) >> 1)].reg[reg], k & 1);
}
static inline float emu_tc_b(const struct emu_tc_lane *w, int k, int col) {
	return emu_tc_half(w[4 * col + ((k & 7) >> 1)].reg[4 + (k >= 8)], k & 1);
}

// D = A·B + C: each product of two halves is exact in fp32; the sum is
// accumulated in fp32 in order of k, starting from C.
static inline void mma_m16n8k16_f32f16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
	struct emu_tc_lane me = {EMU_TC_MMA, {a[0], a[1], a[2], a[3], b[0], b[1]}, NULL};
	float acc[4] = {c[0], c[1], c[2], c[3]};
	int lane;
	struct emu_tc_lane *w = emu_tc_enter(&me, &lane);
	int g = lane >> 2, t = lane & 3;
	float ar[2][16], bc[2][16]; // rows g, g+8 of A; columns 2t, 2t+1 of B
	for (int k = 0; k < 16; k++) {
		ar[0][k] = emu_tc_a(w, g, k);
		ar[1][k] = emu_tc_a(w, g + 8, k);
		bc[0][k] = emu_tc_b(w, k, 2 * t);
		bc[1][k] = emu_tc_b(w, k, 2 * t + 1);
	}
	emu_tc_leave();
	// The product of two halves is exact in fp32, so a * b + acc rounds
	// once, as fmaf would (and without a library call).
	for (int i = 0; i < 4; i++)
		for (int k = 0; k < 16; k++)
			acc[i] += ar[i >> 1][k] * bc[i & 1][k];
	for (int i = 0; i < 4; i++)
		d[i] = acc[i];
}

// emu_ldmatrix serves ldmatrix .m8n8 .x1/.x2/.x4 (nmat matrices), .trans
// or not.
static inline void emu_ldmatrix(unsigned *r, const __half *row, int nmat, int trans) {
	struct emu_tc_lane me = {EMU_TC_LDM, {0}, (const unsigned short *)row};
	int lane;
	struct emu_tc_lane *w = emu_tc_enter(&me, &lane);
	if (lane < 8 * nmat && ((uintptr_t)row & 15) != 0)
		emu_trap("ldmatrix: a row address that is not 16-byte aligned");
	int g = lane >> 2, t = lane & 3;
	for (int i = 0; i < nmat; i++) {
		unsigned lo, hi;
		if (trans) {
			lo = w[8 * i + 2 * t].row[g];
			hi = w[8 * i + 2 * t + 1].row[g];
		} else {
			lo = w[8 * i + g].row[2 * t];
			hi = w[8 * i + g].row[2 * t + 1];
		}
		r[i] = lo | hi << 16;
	}
	emu_tc_leave();
}
static inline void ldmatrix_x4(unsigned r[4], const __half *row) { emu_ldmatrix(r, row, 4, 0); }
static inline void ldmatrix_x4_trans(unsigned r[4], const __half *row) { emu_ldmatrix(r, row, 4, 1); }
static inline void ldmatrix_x2(unsigned r[2], const __half *row) { emu_ldmatrix(r, row, 2, 0); }
static inline void ldmatrix_x2_trans(unsigned r[2], const __half *row) { emu_ldmatrix(r, row, 2, 1); }

// cp.async: a synchronous copy (with the alignment the hardware demands).
static inline void cp_async_16_zfill(void *smem, const void *gmem, int src_bytes) {
	if (((uintptr_t)smem & 15) != 0 || ((uintptr_t)gmem & 15) != 0)
		emu_trap("cp.async: an address that is not 16-byte aligned");
	if (src_bytes < 0 || src_bytes > 16)
		emu_trap("cp.async: src-size outside 0..16");
	if (src_bytes > 0)
		memcpy(smem, gmem, (size_t)src_bytes);
	memset((char *)smem + src_bytes, 0, (size_t)(16 - src_bytes));
}
static inline void cp_async_16(void *smem, const void *gmem) { cp_async_16_zfill(smem, gmem, 16); }
static inline void cp_async_commit(void) {}
static inline void cp_async_wait_all(void) {}
#define cp_async_wait_group(n) ((void)(n))

#endif

// The 64×32 warp tile that hgemm_tc and hconv_tc share: four m16 row
// tiles by four n8 column tiles of fp32 accumulators.

// ldmatrix_b_nk loads the warp's four B fragments (columns n0 + 8j, k
// kk..kk+15) from a [n][k] tile whose rows are ld halves apart: two x4
// loads, matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n
// 8-15, k 8-15) of each 16 columns.
__device__ __forceinline__ void ldmatrix_b_nk(unsigned b[4][2], const __half *Bs, int ld, int n0, int kk, int lane) {
	UNROLL
	for (int j = 0; j < 2; j++) {
		unsigned r[4];
		ldmatrix_x4(r, Bs + (n0 + 16 * j + (lane & 7) + 8 * (lane >> 4)) * ld + kk + 8 * ((lane >> 3) & 1));
		b[2 * j][0] = r[0];
		b[2 * j][1] = r[1];
		b[2 * j + 1][0] = r[2];
		b[2 * j + 1][1] = r[3];
	}
}

// warp_tile_mma adds a[i]·b[j] to acc[i][j] for the 4×4 m16n8k16 tiles.
__device__ __forceinline__ void warp_tile_mma(float acc[4][4][4], unsigned a[4][4], unsigned b[4][2]) {
	UNROLL
	for (int i = 0; i < 4; i++)
		UNROLL
		for (int j = 0; j < 4; j++)
			mma_m16n8k16_f32f16(acc[i][j], a[i], b[j], acc[i][j]);
}

#endif
