// layout.cu: ops that move elements: permute (a tiled transpose and a
// general gather through strides), concat and bilinear resizing.
#include "common.cuh"

// permute_f32 writes dst, contiguous [n/(d1·…·d5), d1, d2, d3, d4, d5],
// in order, gathering from x with element strides s0..s5 per dst dimension
// (the host merges and pads dimensions to six). Grid-stride.
KERNEL void KNAME(permute)(st_t *dst, const st_t *x, int n, int d1, int d2, int d3, int d4, int d5, int s0, int s1, int s2, int s3, int s4, int s5) {
	GRID_STRIDE(i, n) {
		int r = i;
		size_t off = (size_t)(r % d5) * s5;
		r /= d5;
		off += (size_t)(r % d4) * s4;
		r /= d4;
		off += (size_t)(r % d3) * s3;
		r /= d3;
		off += (size_t)(r % d2) * s2;
		r /= d2;
		off += (size_t)(r % d1) * s1;
		r /= d1;
		off += (size_t)r * s0;
		dst[i] = x[off];
	}
}

#define TR_TILE 32

// transpose_f32 sets dst[b][c][r] = x[b][r][c] for batch × rows × cols
// through 32×33 shared tiles, so both the reads and the writes are
// coalesced. Blocks are 32×8 threads; blockIdx.x strides over the ⌈rows/32⌉
// ·⌈cols/32⌉ tiles and blockIdx.z over the batch.
KERNEL void KNAME(transpose)(st_t *dst, const st_t *x, int batch, int rows, int cols) {
	__shared__ st_t tile[TR_TILE][TR_TILE + 1];
	int tr = (rows + TR_TILE - 1) / TR_TILE, tc = (cols + TR_TILE - 1) / TR_TILE;
	for (int b = blockIdx.z; b < batch; b += gridDim.z) {
		const st_t *xb = x + (size_t)b * rows * cols;
		st_t *db = dst + (size_t)b * rows * cols;
		for (int t = blockIdx.x; t < tr * tc; t += gridDim.x) {
			int r0 = t / tc * TR_TILE, c0 = t % tc * TR_TILE;
			__syncthreads(); // the previous tile is written out
			for (int i = threadIdx.y; i < TR_TILE; i += blockDim.y) {
				int r = r0 + i, c = c0 + threadIdx.x;
				if (r < rows && c < cols)
					tile[i][threadIdx.x] = xb[(size_t)r * cols + c];
			}
			__syncthreads();
			for (int i = threadIdx.y; i < TR_TILE; i += blockDim.y) {
				int c = c0 + i, r = r0 + threadIdx.x;
				if (r < rows && c < cols)
					db[(size_t)c * rows + r] = tile[threadIdx.x][i];
			}
		}
	}
}

// concat_part_f32 copies src, [outer, inner] contiguous, into the columns
// [0, inner) of dst's rows of dstRow elements (dst points at the source's
// first column): one launch per source of a concat.
KERNEL void KNAME(concat_part)(st_t *dst, const st_t *src, int outer, int inner, int dstRow) {
	int n = outer * inner;
	GRID_STRIDE(i, n) dst[(size_t)(i / inner) * dstRow + i % inner] = src[i];
}

// bilinear_tap maps destination index d to the source indices i0, i1 and the
// weight of i1, as PyTorch's coordinate rules in float32: with alignCorners
// src = scale·d (scale = (in−1)/(out−1), 0 for one output), without it
// src = max(scale·(d+0.5) − 0.5, 0) (scale = in/out).
__device__ __forceinline__ void bilinear_tap(int d, int in, float scale, int alignCorners, int *i0, int *i1, float *w1) {
	float src;
	if (alignCorners) {
		src = scale * (float)d;
	} else {
		float t = scale * ((float)d + 0.5f); // two roundings, as the CPU backend
		src = fmaxf(t - 0.5f, 0.0f);
	}
	int s0 = imin((int)src, in - 1);
	*i0 = s0;
	*i1 = s0 < in - 1 ? s0 + 1 : s0;
	*w1 = src - (float)s0;
}

// upsample_bilinear_f32 resizes planes of h×w (nc of them) to h2×w2;
// scaleH and scaleW come from the host (see bilinear_tap). Grid-stride over
// the destination.
KERNEL void KNAME(upsample_bilinear)(st_t *dst, const st_t *x, int nc, int h, int w, int h2, int w2, float scaleH, float scaleW, int alignCorners) {
	int n = nc * h2 * w2;
	GRID_STRIDE(i, n) {
		int ox = i % w2, oy = i / w2 % h2, p = i / (w2 * h2);
		int y0, y1, x0, x1;
		float ly, lx;
		bilinear_tap(oy, h, scaleH, alignCorners, &y0, &y1, &ly);
		bilinear_tap(ox, w, scaleW, alignCorners, &x0, &x1, &lx);
		const st_t *src = x + (size_t)p * h * w;
		const st_t *r0 = src + (size_t)y0 * w, *r1 = src + (size_t)y1 * w;
		float hy = 1.0f - ly, hx = 1.0f - lx;
		dst[i] = stf(hy * (hx * ldf(r0[x0]) + lx * ldf(r0[x1])) + ly * (hx * ldf(r1[x0]) + lx * ldf(r1[x1])));
	}
}

// upsample_nearest_f32 resizes planes of h×w (nc of them) to h2×w2 by
// nearest neighbour, reading source row oy·h/h2 and column ox·w/w2
// (PyTorch's legacy "nearest"). Grid-stride over the destination.
KERNEL void KNAME(upsample_nearest)(st_t *dst, const st_t *x, int nc, int h, int w, int h2, int w2) {
	int n = nc * h2 * w2;
	GRID_STRIDE(i, n) {
		int ox = i % w2, oy = i / w2 % h2, p = i / (w2 * h2);
		int sy = (int)((long long)oy * h / h2), sx = (int)((long long)ox * w / w2);
		dst[i] = x[(size_t)p * h * w + (size_t)sy * w + sx];
	}
}
