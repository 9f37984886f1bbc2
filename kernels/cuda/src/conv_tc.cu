// conv_tc.cu: fp16 2-D convolution on tensor cores (sm_80+), an implicit
// GEMM with mma.sync m16n8k16 (fp16 operands, fp32 accumulators): the
// tiling, ldmatrix fragments and cp.async staging of gemm_tc.cu, with the
// patch matrix gathered from x on the fly as conv.cu gathers it.
//
// Formulation. With K = Cin·KH·KW and k = (ci, ky, kx) in the order of
// w's [Cout, Cin, KH, KW] layout,
//   C [Nimg·Ho·Wo, Cout] = P [Nimg·Ho·Wo, K] · Wᵀ [K, Cout]
// where the rows are the output pixels j = (img, oy, ox), P(j, k) =
// x[img, ci, oy·sh − pt + ky, ox·sw − pl + kx] (0 in the padding), and
// Wᵀ(k, n) = w[n·K + k]. The pixels are the GEMM's rows (the A operand,
// on grid.x, the large dimension: 1024 to 65536 per image in MuseTalk)
// and the output channels its columns (B) because:
//   - B is then w read as [n][k]: each output channel's weights are one
//     contiguous row of K, staged with 16-byte cp.async as hgemm_tc stages
//     Linear's weights (when K % 8 == 0 and w is 16-byte aligned; element
//     loads otherwise, e.g. K = 27 or 147 for the 3-channel input convs);
//   - A, the gather, is the part that cannot use cp.async (any stride,
//     padding, alignment). For a fixed tap k, neighbouring pixels are
//     neighbouring addresses of x (stride 1), so the threads of a warp take
//     32 consecutive pixels of one tap: coalesced loads, and conflict-free
//     2-byte stores into a tile kept as [k][m], which ldmatrix .trans turns
//     into row-major A fragments. The loads for the next slice go to
//     registers before the current slice's MMAs and to shared memory after
//     them, so their latency hides behind the tensor cores.
//   - dst [img][n][pix] is contiguous along pixels, which are the rows of
//     C: the epilogue adds the bias in fp32, rounds once to half, stages
//     the 128×128 tile in shared memory as [n][m] and writes each output
//     channel's run of pixels with 4-byte stores (128 contiguous bytes per
//     warp), instead of the 16-byte pieces the fragment layout would give.
//
// Each thread gathers one pixel (decoded once: image base, top-left input
// corner) for 16 of the slice's 32 taps. The taps of a slice (offset
// ci·H·W + ky·W + kx, ky, kx) are decoded once per block by warp 0 into a
// double-buffered table written two slices ahead, so the gather does no
// division.
#include "common.cuh"
#include "mma.cuh"

// Block tile CT_BM pixels × CT_BN output channels, staged CT_BK taps deep;
// 8 warps in 2 (m) × 4 (n), each computing 64 × 32 of C as 4 × 4 m16n8
// tiles.
#define CT_BM 128
#define CT_BN 128
#define CT_BK 32
#define CT_THREADS 256
// Row strides in halves, padded by 16 bytes so that the eight 16-byte rows
// one ldmatrix matrix reads fall in distinct bank groups: the A tile is
// [k][m] (CT_LDM), the B tile [n][k] (CT_LDK), the output tile [n][m]
// (CT_LDM).
#define CT_LDM (CT_BM + 8)
#define CT_LDK (CT_BK + 8)
#define CT_ASTAGE (CT_BK * CT_LDM)
#define CT_BSTAGE (CT_BN * CT_LDK)
// Halves of shared memory: two stages of each operand (37888 bytes); the
// epilogue's output tile (CT_BN·CT_LDM = 17408 halves) reuses them.
#define CT_SMEM (2 * CT_ASTAGE + 2 * CT_BSTAGE)
// Taps each thread gathers per slice (rows tid/CT_BM + 2r of the A tile).
#define CT_AROWS (CT_BM * CT_BK / CT_THREADS)

// hconv_tc is built for two blocks per SM (37.8 KiB of shared memory
// each), which needs at most 128 registers: it uses 125 to 128 (nvcc 11.8,
// sm_80 to sm_90; 125 on sm_86 without the bound), no spills. The
// declaration keeps the one-line form the emulator's generator reads (see
// hgemm_tc in gemm_tc.cu for the macro).
#ifdef __CUDACC__
#define hconv_tc __launch_bounds__(CT_THREADS, 2) hconv_tc
#endif

#if TC_AVAILABLE

// hconv_tc_taps decodes tap k into the table slot i: koff = ci·hw + ky·wd
// + kx (−1 for k ≥ K), ky, kx.
__device__ __forceinline__ void hconv_tc_taps(int *koff, int *ky, int *kx, int i, int k, int K, int taps, int kw, int hw, int wd) {
	int ci = k / taps, t = k - ci * taps, y = t / kw, xx = t - y * kw;
	koff[i] = k < K ? ci * hw + y * wd + xx : -1;
	ky[i] = y;
	kx[i] = xx;
}

// hconv_tc_gather loads this thread's CT_AROWS elements of the slice
// whose taps are in the table: pixel (base ximg, offset pixoff = iy0·wd +
// ix0 of its top-left input corner, iy0 = h for a pixel past the end),
// taps kb0 + 2r; zeros in the padding and past K.
__device__ __forceinline__ void hconv_tc_gather(__half v[CT_AROWS], const __half *ximg, int pixoff, int iy0, int ix0, int h, int wd, const int *koff, const int *ky, const int *kx, int kb0) {
	UNROLL
	for (int r = 0; r < CT_AROWS; r++) {
		int k = kb0 + 2 * r;
		int ko = koff[k];
		// Unsigned sums: a row or column above or left of the image wraps
		// to ≥ 2³¹, so one comparison checks both sides.
		unsigned iy = (unsigned)iy0 + (unsigned)ky[k], ix = (unsigned)ix0 + (unsigned)kx[k];
		v[r] = ko >= 0 && iy < (unsigned)h && ix < (unsigned)wd ? ximg[ko + pixoff] : __ushort_as_half(0);
	}
}

// hconv_tc_store_a writes the gathered elements into the [k][m] tile.
__device__ __forceinline__ void hconv_tc_store_a(__half *As, const __half v[CT_AROWS], int m, int kb0) {
	UNROLL
	for (int r = 0; r < CT_AROWS; r++)
		As[(kb0 + 2 * r) * CT_LDM + m] = v[r];
}

// hconv_tc_load_b stages w rows [n0, n0+CT_BN), taps [k0, k0+CT_BK) into
// Bs ([n][k]), zeros outside Cout×K: 16-byte cp.async chunks (zero filled
// past the edges) when vec, else element loads.
__device__ __forceinline__ void hconv_tc_load_b(__half *Bs, const __half *w, int n0, int k0, int N, int K, int vec, int tid) {
	for (int c = tid; c < CT_BN * CT_BK / 8; c += CT_THREADS) {
		int r = c >> 2, kc = (c & 3) * 8;
		int n = n0 + r, k = k0 + kc;
		__half *dst = Bs + r * CT_LDK + kc;
		if (vec) {
			int bytes = n < N ? 2 * imax(0, imin(8, K - k)) : 0;
			cp_async_16_zfill(dst, bytes > 0 ? w + (size_t)n * K + k : w, bytes);
		} else {
			for (int j = 0; j < 8; j++)
				dst[j] = n < N && k + j < K ? w[(size_t)n * K + k + j] : __ushort_as_half(0);
		}
	}
}

// hconv_tc_compute multiplies one stage: for each 16-deep slice, the warp
// loads its four A fragments (pixels wm·64 + 16i, with ldmatrix .trans
// from the [k][m] tile) and four B fragments (channels wn·32 + 8j) and
// issues 16 mma.sync.
__device__ __forceinline__ void hconv_tc_compute(const __half *As, const __half *Bs, int wm, int wn, int lane, float acc[4][4][4]) {
	UNROLL
	for (int kk = 0; kk < CT_BK; kk += 16) {
		unsigned a[4][4], b[4][2];
		// Matrices 0..3: (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15),
		// (m 8-15, k 8-15); lane L gives row (k) L & 7 of matrix L >> 3.
		UNROLL
		for (int i = 0; i < 4; i++)
			ldmatrix_x4_trans(a[i], As + (kk + (lane & 7) + 8 * (lane >> 4)) * CT_LDM + wm * 64 + 16 * i + 8 * ((lane >> 3) & 1));
		ldmatrix_b_nk(b, Bs, CT_LDK, wn * 32, kk, lane);
		warp_tile_mma(acc, a, b);
	}
}

#endif

// hconv_tc computes dst = conv(x, w) + bias in fp16 storage with fp32
// products and sums and one rounding to half at the end: x [nimg, cin, h,
// wd], w [cout, cin, kh, kw], dst [nimg, cout, ho, wo], bias [cout] or
// null; stride (sh, sw) ≥ 1; padding pt on top and pl on the left (the
// bottom and right padding follow from ho and wo). The arguments are
// conv2d_f16's (conv.cu).
//
// Launch: grid (⌈nimg·ho·wo/128⌉, ⌈cout/128⌉, 1), block (256, 1, 1), no
// dynamic shared memory (37.8 KiB static). Needs sm_80 (traps before).
// Any shape, stride, padding and alignment are correct; w is staged with
// 16-byte cp.async when K = cin·kh·kw is a multiple of 8 and w is 16-byte
// aligned, with element loads otherwise. The host keeps nimg·ho·wo + 128,
// cin·kh·kw + 96 and every tensor's length within int.
KERNEL void hconv_tc(__half *dst, const __half *x, const __half *w, const __half *bias, int nimg, int cin, int h, int wd, int cout, int kh, int kw, int sh, int sw, int pt, int pl, int ho, int wo) {
#if TC_AVAILABLE
	__shared__ __align__(16) __half Sm[CT_SMEM];
	__shared__ int Koff[2][CT_BK], Ky[2][CT_BK], Kx[2][CT_BK];
	__half *As = Sm, *Bs = Sm + 2 * CT_ASTAGE;
	int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	int wm = warp >> 2, wn = warp & 3;
	int hw = h * wd, taps = kh * kw, K = cin * taps, hwo = ho * wo, npix = nimg * hwo;
	int m0 = blockIdx.x * CT_BM, n0 = blockIdx.y * CT_BN;
	int bvec = (K & 7) == 0 && ((size_t)w & 15) == 0;
	int nk = (K + CT_BK - 1) / CT_BK;
	// A warp whose 64 pixels or 32 channels all lie past the edge of C
	// (edge tiles; Cout of 32 or 64) skips its MMAs: a warp-uniform test.
	int active = m0 + wm * 64 < npix && n0 + wn * 32 < cout;

	// This thread's pixel of the gather, the same in every slice.
	int am = tid & (CT_BM - 1), kb0 = tid / CT_BM;
	const __half *ximg = x;
	int iy0 = h, ix0 = 0, pixoff = 0; // past the end: iy0 = h fails every bounds check
	{
		int j = m0 + am;
		if (j < npix) {
			int img = j / hwo, pix = j - img * hwo;
			int oy = pix / wo, ox = pix - oy * wo;
			ximg = x + (size_t)img * cin * hw;
			iy0 = oy * sh - pt;
			ix0 = ox * sw - pl;
			pixoff = iy0 * wd + ix0; // may be negative; ko + pixoff is not for taps inside
		}
	}

	if (tid < CT_BK) {
		hconv_tc_taps(Koff[0], Ky[0], Kx[0], tid, tid, K, taps, kw, hw, wd);
		hconv_tc_taps(Koff[1], Ky[1], Kx[1], tid, CT_BK + tid, K, taps, kw, hw, wd);
	}
	__syncthreads();

	float acc[4][4][4];
	UNROLL
	for (int i = 0; i < 4; i++)
		UNROLL
		for (int j = 0; j < 4; j++)
			UNROLL
			for (int e = 0; e < 4; e++)
				acc[i][j][e] = 0.0f;
	__half av[CT_AROWS];
	hconv_tc_gather(av, ximg, pixoff, iy0, ix0, h, wd, Koff[0], Ky[0], Kx[0], kb0);
	hconv_tc_store_a(As, av, am, kb0);
	hconv_tc_load_b(Bs, w, n0, 0, cout, K, bvec, tid);
	cp_async_commit();
	cp_async_wait_all();
	__syncthreads();
	// One barrier per slice: stage s^1 and table half kt&1 are written in
	// slice kt only after the barrier that ended slice kt−1, their last
	// reader; the gather of slice kt+1 reads table half (kt+1)&1, written
	// before that barrier.
	for (int kt = 0; kt < nk; kt++) {
		int s = kt & 1, more = kt + 1 < nk;
		if (more) {
			hconv_tc_load_b(Bs + (s ^ 1) * CT_BSTAGE, w, n0, (kt + 1) * CT_BK, cout, K, bvec, tid);
			cp_async_commit();
			int t = (kt + 1) & 1;
			hconv_tc_gather(av, ximg, pixoff, iy0, ix0, h, wd, Koff[t], Ky[t], Kx[t], kb0);
		}
		if (active)
			hconv_tc_compute(As + s * CT_ASTAGE, Bs + s * CT_BSTAGE, wm, wn, lane, acc);
		if (more) {
			hconv_tc_store_a(As + (s ^ 1) * CT_ASTAGE, av, am, kb0);
			if (tid < CT_BK)
				hconv_tc_taps(Koff[s], Ky[s], Kx[s], tid, (kt + 2) * CT_BK + tid, K, taps, kw, hw, wd);
		}
		cp_async_wait_all();
		__syncthreads();
	}

	// The output tile, biased and rounded, as Cs[n][m] over the operand
	// stages (free after the loop's last barrier). Lane (g, t) holds pixels
	// g and g+8, channels 2t and 2t+1 of each m16n8 tile.
	__half *Cs = Sm;
	{
		int g = lane >> 2, t = lane & 3;
		UNROLL
		for (int j = 0; j < 4; j++)
			UNROLL
			for (int e = 0; e < 2; e++) {
				int n = wn * 32 + 8 * j + 2 * t + e;
				float bn = bias && n0 + n < cout ? __half2float(bias[n0 + n]) : 0.0f;
				UNROLL
				for (int i = 0; i < 4; i++)
					UNROLL
					for (int hh = 0; hh < 2; hh++)
						Cs[n * CT_LDM + wm * 64 + 16 * i + g + 8 * hh] = __float2half(acc[i][j][2 * hh + e] + bn);
			}
	}
	__syncthreads();
	// Each thread stores pixels m0+pm and m0+pm+1 of channels n0 + (tid >>
	// 6) + 4r: one 4-byte store where both are in one image and aligned.
	int pm = 2 * (tid & 63);
	int j = m0 + pm;
	if (j < npix) {
		int img = j / hwo, pix = j - img * hwo;
		__half *d = dst + (size_t)img * cout * hwo + pix;
		int pair = j + 1 < npix && pix + 1 < hwo;
		__half *d1 = d + 1; // pixel j+1 when pair, else (if valid) the next image's first
		if (!pair && j + 1 < npix)
			d1 = dst + (size_t)(img + 1) * cout * hwo;
		for (int n = tid >> 6; n < CT_BN && n0 + n < cout; n += CT_THREADS / 64) {
			__half *p = d + (size_t)(n0 + n) * hwo;
			const __half *c = Cs + n * CT_LDM + pm;
			unsigned v = pack_half2(c[0], c[1]);
			if (pair && ((size_t)p & 3) == 0) {
				*(unsigned *)p = v;
			} else {
				p[0] = __ushort_as_half((unsigned short)(v & 0xffffu));
				if (j + 1 < npix)
					d1[(size_t)(n0 + n) * hwo] = __ushort_as_half((unsigned short)(v >> 16));
			}
		}
	}
#else
	__trap();
#endif
}
