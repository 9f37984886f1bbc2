package cuda

import (
	"slices"

	"github.com/avatargen/musetalk/kernels"
)

// gemm describes one GEMM launch, of hgemm_tc on tensor cores or else of
// sgemm (src/gemm.cu, CUDA cores, either storage type): batch entries of
// C [M,N] = alpha·A·B + bias with element strides for A and B.
type gemm struct {
	m, n, k, batch int
	sa, sam, sak   int // A(z,m,k) = A[z·sa + m·sam + k·sak]
	sb, sbk, sbn   int // B(z,k,n) = B[z·sb + k·sbk + n·sbn]
	alpha          float32
}

// gemmTile is the side of the C tile one block computes.
const gemmTile = 64

// tcTile is the side of the C tile one hgemm_tc block computes.
const tcTile = 128

// tensorCores reports whether g runs on hgemm_tc (src/gemm_tc.cu): fp16
// storage on an sm_80+ device, and A with contiguous rows (every Linear,
// and MatMul unless A is transposed). hgemm_tc is correct for any sizes,
// strides and alignment; it loads with cp.async where they allow.
func (b *Backend) tensorCores(g gemm) bool {
	return b.prec == kernels.F16 && b.info.Arch >= 80 && g.sak == 1 && g.sam == g.k
}

// runGEMM launches g; the caller holds b.mu.
func (b *Backend) runGEMM(op string, g gemm, c, a, bm, bias DevPtr) {
	if b.tensorCores(g) {
		grid := D3(ceilDiv(g.m, tcTile), ceilDiv(g.n, tcTile), min(g.batch, 65535))
		check(grid.Y <= 65535, op, "N = %d exceeds the GEMM's limit", g.n)
		b.launchExact(op, "hgemm_tc", grid, D1(256), 0, c, a, bm, bias,
			i32(op, g.m), i32(op, g.n), i32(op, g.k), i32(op, g.batch),
			i32(op, g.sa), i32(op, g.sb), i32(op, g.sbk), i32(op, g.sbn), g.alpha)
		return
	}
	grid := D3(ceilDiv(g.m, gemmTile), ceilDiv(g.n, gemmTile), min(g.batch, 65535))
	check(grid.Y <= 65535, op, "N = %d exceeds the GEMM's limit", g.n)
	b.launch(op, "sgemm", grid, D3(16, 16, 1), 0, c, a, bm, bias,
		i32(op, g.m), i32(op, g.n), i32(op, g.k), i32(op, g.batch),
		i32(op, g.sa), i32(op, g.sam), i32(op, g.sak), i32(op, g.sb), i32(op, g.sbk), i32(op, g.sbn), g.alpha)
}

// Linear implements [kernels.Ops.Linear] as one GEMM over all rows of x,
// reading w [N,K] as the transposed B.
func (b *Backend) Linear(dst, x, w, bias *kernels.Tensor) {
	const op = "Linear"
	m, n, k, err := kernels.LinearShapes(dst, x, w, bias)
	check(err == nil, op, "%v", err)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.runGEMM(op, gemm{m: m, n: n, k: k, batch: 1, sam: k, sak: 1, sbk: 1, sbn: k, alpha: 1},
		b.ptr(op, "dst", dst), b.ptr(op, "x", x), b.ptr(op, "w", w), b.optPtr(op, "bias", bias))
}

// MatMul implements [kernels.Ops.MatMul] as one batched GEMM; transposes
// and a shared rank-2 b are strides.
func (b *Backend) MatMul(dst, a, bm *kernels.Tensor, p kernels.MatMulParams) {
	const op = "MatMul"
	check(a != nil && bm != nil, op, "nil input")
	check(a.Rank() >= 2 && bm.Rank() >= 2, op, "a %v and b %v need rank ≥ 2", a, bm)
	g := gemm{alpha: p.Alpha}
	if g.alpha == 0 {
		g.alpha = 1
	}
	g.m, g.k = a.Dim(-2), a.Dim(-1)
	g.sam, g.sak = g.k, 1
	if p.TransA {
		g.m, g.k = g.k, g.m
		g.sam, g.sak = 1, g.m
	}
	k2, n := bm.Dim(-2), bm.Dim(-1)
	g.sbk, g.sbn = n, 1
	if p.TransB {
		k2, n = n, k2
		g.sbk, g.sbn = 1, k2
	}
	g.n = n
	check(g.k == k2, op, "a %v and b %v disagree on K (trans %v %v)", a, bm, p.TransA, p.TransB)
	g.batch = a.Len() / (g.m * g.k)
	g.sa = g.m * g.k
	if bm.Rank() > 2 {
		check(slices.Equal(a.Shape()[:a.Rank()-2], bm.Shape()[:bm.Rank()-2]), op, "batch dimensions of a %v and b %v differ", a, bm)
		g.sb = g.k * g.n
	}
	shape := a.Shape()
	shape[len(shape)-2], shape[len(shape)-1] = g.m, g.n
	checkShape(op, "dst", dst, shape...)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.runGEMM(op, g, b.ptr(op, "dst", dst), b.ptr(op, "a", a), b.ptr(op, "b", bm), 0)
}
