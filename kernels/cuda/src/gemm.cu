// gemm.cu: fp32 GEMM with shared-memory tiles (CUDA cores; tensor-core
// kernels come with fp16).
#include "common.cuh"

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16

// sgemm_f32 computes, for each batch entry z (blockIdx.z strides over
// batch),
//   C[z][m][n] = alpha · Σ_k A(m,k)·B(k,n) + bias[n]     (bias may be null)
// with A(m,k) = A[z·sa + m·sam + k·sak] and B(k,n) = B[z·sb + k·sbk +
// n·sbn] (strides in elements, so transposes and shared operands cost
// nothing) and C row-major with rows of N. The grid is (⌈M/64⌉, ⌈N/64⌉,
// ≤ batch) blocks of 16×16 threads; each block computes a 64×64 tile of C, each thread a 4×4 lattice of it with a
// stride of 16, staging 64×16 slices of A and B through shared memory. Any
// M, N, K works: tiles read zeros past the edges and skip the stores.
KERNEL void KNAME(sgemm)(st_t *C, const st_t *A, const st_t *B, const st_t *bias, int M, int N, int K, int batch, int sa, int sam, int sak, int sb, int sbk, int sbn, float alpha) {
	__shared__ float As[GEMM_BK][GEMM_BM + 1];
	__shared__ float Bs[GEMM_BK][GEMM_BN + 1];
	int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
	int m0 = blockIdx.x * GEMM_BM, n0 = blockIdx.y * GEMM_BN; // grid.x has the larger limit
	for (int z = blockIdx.z; z < batch; z += gridDim.z) {
		const st_t *Az = A + (size_t)z * sa;
		const st_t *Bz = B + (size_t)z * sb;
		float acc[4][4];
		for (int i = 0; i < 4; i++)
			for (int j = 0; j < 4; j++)
				acc[i][j] = 0.0f;
		for (int k0 = 0; k0 < K; k0 += GEMM_BK) {
			// 256 threads stage 64×16 elements of each operand, 4 apiece.
			for (int e = tid; e < GEMM_BM * GEMM_BK; e += 256) {
				int kk = e % GEMM_BK, mm = e / GEMM_BK;
				int m = m0 + mm, k = k0 + kk;
				As[kk][mm] = m < M && k < K ? ldf(Az[(size_t)m * sam + (size_t)k * sak]) : 0.0f;
				int nn = e % GEMM_BN, kb = e / GEMM_BN;
				int n = n0 + nn, k2 = k0 + kb;
				Bs[kb][nn] = n < N && k2 < K ? ldf(Bz[(size_t)k2 * sbk + (size_t)n * sbn]) : 0.0f;
			}
			__syncthreads();
			tile_fma_4x4(&As[0][0], &Bs[0][0], GEMM_BM + 1, GEMM_BK, tx, ty, acc);
			__syncthreads();
		}
		st_t *Cz = C + (size_t)z * M * N;
		for (int i = 0; i < 4; i++) {
			int m = m0 + ty + 16 * i;
			if (m >= M)
				continue;
			for (int j = 0; j < 4; j++) {
				int n = n0 + tx + 16 * j;
				if (n < N)
					Cz[(size_t)m * N + n] = stf(alpha * acc[i][j] + (bias ? ldf(bias[n]) : 0.0f));
			}
		}
	}
}
