package cpu

import (
	"slices"

	"github.com/avatargen/musetalk/kernels"
)

// Linear implements [kernels.Ops.Linear] as one GEMM over all rows of x.
func (b *Backend) Linear(dst, x, w, bias *kernels.Tensor) {
	const op = "Linear"
	xd, wd, dd, bd := hostData(op, x), hostData(op, w), hostData(op, dst), optData(op, bias)
	m, n, k, err := kernels.LinearShapes(dst, x, w, bias)
	check(err == nil, op, "%v", err)
	b.gemm(&gemmSpec{
		m: m, n: n, k: k,
		a:       strided{data: xd, rs: k, cs: 1},
		b:       strided{data: wd, rs: 1, cs: k},
		c:       matC{data: dd, ld: n, segCols: n},
		biasCol: bd,
		preB:    b.weightPanelsB(wd, n, k),
	})
}

// MatMul implements [kernels.Ops.MatMul]: one GEMM per batch entry, the
// entries spread over the threads when they are many and small.
func (b *Backend) MatMul(dst, a, bm *kernels.Tensor, p kernels.MatMulParams) {
	const op = "MatMul"
	ad, bd, dd := hostData(op, a), hostData(op, bm), hostData(op, dst)
	check(a.Rank() >= 2 && bm.Rank() >= 2, op, "a %v and b %v need rank ≥ 2", a, bm)
	m, k := a.Dim(-2), a.Dim(-1)
	as := strided{rs: k, cs: 1}
	if p.TransA {
		m, k = k, m
		as = strided{rs: 1, cs: m}
	}
	k2, n := bm.Dim(-2), bm.Dim(-1)
	bs := strided{rs: n, cs: 1}
	if p.TransB {
		k2, n = n, k2
		bs = strided{rs: 1, cs: k2}
	}
	check(k == k2, op, "a %v and b %v disagree on K (trans %v %v)", a, bm, p.TransA, p.TransB)
	batch := a.Len() / (m * k)
	shape := a.Shape()
	shape[len(shape)-2], shape[len(shape)-1] = m, n
	checkShape(op, "dst", dst, shape...)
	bStride := 0
	if bm.Rank() > 2 {
		check(slices.Equal(a.Shape()[:a.Rank()-2], bm.Shape()[:bm.Rank()-2]), op, "batch dimensions of a %v and b %v differ", a, bm)
		bStride = k * n
	}
	spec := func(i int) *gemmSpec {
		ai, bi := as, bs
		ai.data = ad[i*m*k : (i+1)*m*k]
		bi.data = bd[i*bStride : i*bStride+k*n]
		return &gemmSpec{m: m, n: n, k: k, a: ai, b: bi, alpha: p.Alpha, c: matC{data: dd[i*m*n : (i+1)*m*n], ld: n, segCols: n}}
	}
	if batch >= b.w.threads && m*n*k < 1<<22 {
		b.w.parallel(batch, func(s *scratch, i int) {
			g := spec(i)
			g.block(&b.kern, s, 0, m, 0, n)
		})
		return
	}
	for i := range batch {
		b.gemm(spec(i))
	}
}
