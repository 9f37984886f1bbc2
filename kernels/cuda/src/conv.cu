// conv.cu: fp32 2-D convolution as an implicit GEMM on CUDA cores (the
// tiling of gemm.cu; tensor cores come with fp16).
//
// Layout is NCHW because that is the op table's contract (x [N,Cin,H,W],
// w [Cout,Cin,KH,KW], dst [N,Cout,Ho,Wo]) and the rest of the model's
// tensors are in it: converting to NHWC would cost a pass over memory each
// way. NCHW also suits the GEMM below: the pixel (column) dimension is
// contiguous in x for stride 1 and always in dst, so neighbouring threads
// load and store neighbouring addresses, and each weight row is a
// contiguous row of A.
#include "common.cuh"

#define CONV_BM 64 // output channels per block (GEMM rows)
#define CONV_BN 64 // output pixels per block (GEMM columns)
#define CONV_BK 16 // reduction slice (input channel × tap)

// conv2d_f32 computes dst = conv(x, w) + bias as the GEMM
//   C [Cout, Nimg·Ho·Wo] = W [Cout, K] · P [K, Nimg·Ho·Wo],  K = Cin·KH·KW
// where the patch matrix P is never stored: P(k, j) with k = (ci, ky, kx)
// and j = (img, oy, ox) is x[img, ci, oy·sh − pt + ky, ox·sw − pl + kx],
// or 0 in the padding. bias [Cout] may be null.
//
// The grid is (⌈Nimg·Ho·Wo/64⌉, ⌈Cout/64⌉) blocks of 16×16 threads: the
// pixels, the big dimension, go on grid.x. Each block computes a 64×64
// tile of C, each thread a 4×4 lattice of it with a stride of 16, staging
// 64×16 slices of W and P through shared memory as sgemm_f32 does. Each
// thread loads the same P column (pixel) in every slice, so it decodes
// its pixel once; the taps of a slice are decoded once per block, into a
// double-buffered table written one slice ahead by 16 threads, so the
// inner loops do no division. Any shape works: loads past the edges read
// zeros and stores past them are skipped.
KERNEL void KNAME(conv2d)(st_t *dst, const st_t *x, const st_t *w, const st_t *bias, int nimg, int cin, int h, int wd, int cout, int kh, int kw, int sh, int sw, int pt, int pl, int ho, int wo) {
	__shared__ float As[CONV_BK][CONV_BM + 1];
	__shared__ float Bs[CONV_BK][CONV_BN + 1];
	// Tap table of the slice: koff = ci·h·wd + ky·wd + kx (−1 past K) and
	// ky, kx.
	__shared__ int Koff[2][CONV_BK];
	__shared__ int Ky[2][CONV_BK];
	__shared__ int Kx[2][CONV_BK];
	int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
	int hw = h * wd, taps = kh * kw, K = cin * taps, hwo = ho * wo;
	int npix = nimg * hwo;
	int j0 = blockIdx.x * CONV_BN, m0 = blockIdx.y * CONV_BM;

	// This thread's P column, the same in every slice.
	int nn = tid & (CONV_BN - 1), kb0 = tid >> 6; // rows kb0, kb0+4, ...
	int jcol = j0 + nn;
	bool jvalid = jcol < npix;
	const st_t *ximg = x;
	int iy0 = 0, ix0 = 0;
	if (jvalid) {
		int img = jcol / hwo, pix = jcol - img * hwo;
		int oy = pix / wo, ox = pix - oy * wo;
		ximg = x + (size_t)img * cin * hw;
		iy0 = oy * sh - pt;
		ix0 = ox * sw - pl;
	}
	int pixoff = iy0 * wd + ix0; // may be negative; koff + pixoff is not for taps inside

	if (tid < CONV_BK) {
		int k = tid;
		int ci = k / taps, t = k - ci * taps, ky = t / kw;
		Koff[0][tid] = k < K ? ci * hw + ky * wd + (t - ky * kw) : -1;
		Ky[0][tid] = ky;
		Kx[0][tid] = t - ky * kw;
	}
	__syncthreads();

	float acc[4][4];
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 4; j++)
			acc[i][j] = 0.0f;
	int buf = 0;
	for (int k0 = 0; k0 < K; k0 += CONV_BK, buf ^= 1) {
		// W slice: 64 rows × 16 taps, 4 per thread, k fastest (coalesced).
		for (int e = tid; e < CONV_BM * CONV_BK; e += 256) {
			int kk = e & (CONV_BK - 1), mm = e >> 4;
			int m = m0 + mm, k = k0 + kk;
			As[kk][mm] = m < cout && k < K ? ldf(w[(size_t)m * K + k]) : 0.0f;
		}
		// P slice: 16 taps × 64 pixels, pixel fastest.
		for (int r = 0; r < 4; r++) {
			int kb = kb0 + 4 * r;
			int koff = Koff[buf][kb];
			int iy = iy0 + Ky[buf][kb], ix = ix0 + Kx[buf][kb];
			bool in = jvalid && koff >= 0 && iy >= 0 && iy < h && ix >= 0 && ix < wd;
			Bs[kb][nn] = in ? ldf(ximg[koff + pixoff]) : 0.0f;
		}
		// The next slice's taps, into the other half of the table (last
		// read before the previous slice's closing barrier).
		if (tid < CONV_BK) {
			int k = k0 + CONV_BK + tid;
			int ci = k / taps, t = k - ci * taps, ky = t / kw;
			Koff[buf ^ 1][tid] = k < K ? ci * hw + ky * wd + (t - ky * kw) : -1;
			Ky[buf ^ 1][tid] = ky;
			Kx[buf ^ 1][tid] = t - ky * kw;
		}
		__syncthreads();
		tile_fma_4x4(&As[0][0], &Bs[0][0], CONV_BM + 1, CONV_BK, tx, ty, acc);
		__syncthreads();
	}

	// dst[img, m, pix] for the lattice's columns j = (img, pix).
	for (int j = 0; j < 4; j++) {
		int col = j0 + tx + 16 * j;
		if (col >= npix)
			continue;
		int img = col / hwo, pix = col - img * hwo;
		st_t *d = dst + (size_t)img * cout * hwo + pix;
		for (int i = 0; i < 4; i++) {
			int m = m0 + ty + 16 * i;
			if (m < cout)
				d[(size_t)m * hwo] = stf(acc[i][j] + (bias ? ldf(bias[m]) : 0.0f));
		}
	}
}
