package cpu

// The GEMM engine: C = alpha·A·B (+ bias), cache-blocked GotoBLAS style.
// A is packed into mr-row slivers and B into nr-column slivers; a
// micro-kernel multiplies one sliver pair into an mr×nr tile of C. The
// smaller operand is packed whole once (in parallel), or comes pre-packed
// from the weight cache, and is shared; the threads split the other
// operand's dimension and pack their own blocks of it.

// microKernel is one ISA's GEMM micro-kernel and its blocking.
type microKernel struct {
	mr, nr int // tile rows and columns
	kc     int // k block: an A sliver and a B sliver stay in L1/L2
	mc     int // rows of A per block (a multiple of mr)
	nc     int // columns of B per block (a multiple of nr)
	// fn computes the tile from packed slivers a (k·mr) and b (k·nr) and
	// stores it to c with row stride ldc, or adds it to c if acc is set.
	fn func(k int, a, b, c []float32, ldc int, acc bool)
	// avx512 selects the AVX-512 packing and elementwise routines.
	avx512 bool
}

// matC is the destination. Its columns come in segments of segCols
// (a convolution's pixels per image): element (i, j) with j = s·segCols + q
// lives at s·segStride + i·ld + q.
type matC struct {
	data      []float32
	ld        int
	segCols   int
	segStride int
}

func (c *matC) at(i, j int) int {
	s := j / c.segCols
	return s*c.segStride + i*c.ld + j - s*c.segCols
}

// gemmSpec is one GEMM: C (m×n) = alpha·A (m×k)·B (k×n) + bias.
type gemmSpec struct {
	m, n, k int
	a       aPacker
	b       bPacker
	alpha   float32
	c       matC
	biasRow []float32 // biasRow[i] added to row i, or nil
	biasCol []float32 // biasCol[j] added to column j, or nil
	// preA and preB, when set, hold the whole operand already packed
	// (see packWholeA and packWholeB); a and b are then not read.
	preA, preB []float32
}

func (g *gemmSpec) hasInit() bool { return g.biasRow != nil || g.biasCol != nil }

// initC writes the bias into C rows [i0,i1), columns [j0,j1).
func (g *gemmSpec) initC(i0, i1, j0, j1 int) {
	c := &g.c
	for i := i0; i < i1; i++ {
		for j := j0; j < j1; {
			end := min(j1, (j/c.segCols+1)*c.segCols)
			row := c.data[c.at(i, j):][:end-j]
			if g.biasRow != nil {
				v := g.biasRow[i]
				for q := range row {
					row[q] = v
				}
			} else {
				copy(row, g.biasCol[j:end])
			}
			j = end
		}
	}
}

// macro multiplies a packed A block (mc rows from i0) by a packed B block
// (nc columns from j0) over kc into C, adding to C if acc is set.
func (g *gemmSpec) macro(kern *microKernel, s *scratch, ap, bp []float32, i0, mc, j0, nc, kc int, acc bool) {
	mr, nr := kern.mr, kern.nr
	c := &g.c
	for jr := 0; jr < nc; jr += nr {
		b := bp[jr*kc : (jr+nr)*kc]
		cols := min(nr, nc-jr)
		j := j0 + jr
		direct := cols == nr && j%c.segCols+nr <= c.segCols
		for ir := 0; ir < mc; ir += mr {
			a := ap[ir*kc : (ir+mr)*kc]
			rows := min(mr, mc-ir)
			i := i0 + ir
			if direct && rows == mr {
				kern.fn(kc, a, b, c.data[c.at(i, j):], c.ld, acc)
				continue
			}
			tile := s.get(slotTile, mr*nr)
			kern.fn(kc, a, b, tile, nr, false)
			for r := range rows {
				for q := 0; q < cols; {
					end := min(cols, ((j+q)/c.segCols+1)*c.segCols-j)
					dst := c.data[c.at(i+r, j+q):][:end-q]
					src := tile[r*nr+q : r*nr+end]
					if acc {
						for x, v := range src {
							dst[x] += v
						}
					} else {
						copy(dst, src)
					}
					q = end
				}
			}
		}
	}
}

// aBlock returns the packed A block of rows [i0,i0+mc), k block k0: a
// window of preA, or packed into s.
func (g *gemmSpec) aBlock(kern *microKernel, s *scratch, i0, mc, k0, kc int) []float32 {
	if g.preA != nil {
		return g.preA[k0*roundUp(g.m, kern.mr)+i0*kc:]
	}
	ap := s.get(slotPackA, roundUp(mc, kern.mr)*kc)
	g.a.packA(kern, ap, i0, mc, k0, kc, g.alpha)
	return ap
}

// bBlock returns the packed B block of columns [j0,j0+nc), k block k0.
func (g *gemmSpec) bBlock(kern *microKernel, s *scratch, k0, kc, j0, nc int) []float32 {
	if g.preB != nil {
		return g.preB[k0*roundUp(g.n, kern.nr)+j0*kc:]
	}
	bp := s.get(slotPackB, roundUp(nc, kern.nr)*kc)
	g.b.packB(kern, bp, k0, kc, j0, nc)
	return bp
}

// block computes C rows [i0,i0+mm) × columns [j0,j0+nn) on one thread. i0
// and j0 are multiples of mr and nr. When exactly one operand is
// pre-packed, the loops are ordered so that the other is packed once per k
// block.
func (g *gemmSpec) block(kern *microKernel, s *scratch, i0, mm, j0, nn int) {
	for k0 := 0; k0 < g.k; k0 += kern.kc {
		kc := min(kern.kc, g.k-k0)
		if k0 == 0 && g.hasInit() {
			g.initC(i0, i0+mm, j0, j0+nn)
		}
		acc := k0 > 0 || g.hasInit()
		if g.preA == nil && g.preB != nil {
			for ic := i0; ic < i0+mm; ic += kern.mc {
				mc := min(kern.mc, i0+mm-ic)
				ap := g.aBlock(kern, s, ic, mc, k0, kc)
				for jc := j0; jc < j0+nn; jc += kern.nc {
					nc := min(kern.nc, j0+nn-jc)
					g.macro(kern, s, ap, g.bBlock(kern, s, k0, kc, jc, nc), ic, mc, jc, nc, kc, acc)
				}
			}
			continue
		}
		for jc := j0; jc < j0+nn; jc += kern.nc {
			nc := min(kern.nc, j0+nn-jc)
			bp := g.bBlock(kern, s, k0, kc, jc, nc)
			for ic := i0; ic < i0+mm; ic += kern.mc {
				mc := min(kern.mc, i0+mm-ic)
				g.macro(kern, s, g.aBlock(kern, s, ic, mc, k0, kc), bp, ic, mc, jc, nc, kc, acc)
			}
		}
	}
}

// parallelMinWork is the m·n·k below which a GEMM runs on the calling
// thread without packing an operand whole first.
const parallelMinWork = 1 << 18

// gemm runs g on the backend's threads. The smaller operand is packed
// whole first, in parallel, unless it comes pre-packed (a cached weight),
// and shared by all threads; the threads then split the larger operand's
// dimension and pack their own blocks of it if it is not pre-packed too.
func (b *Backend) gemm(g *gemmSpec) {
	kern := &b.kern
	threads := b.w.threads
	if g.alpha == 0 {
		g.alpha = 1
	}
	if g.m*g.n*g.k < parallelMinWork {
		s := b.w.getScratch()
		g.block(kern, s, 0, g.m, 0, g.n)
		b.w.putScratch(s)
		return
	}
	if g.m <= g.n && g.preA == nil {
		pa := b.getBuf(roundUp(g.m, kern.mr) * g.k)
		defer b.putBuf(pa)
		b.packWholeA(g.a, g.m, g.k, g.alpha, pa)
		g.preA = pa
	}
	if g.m > g.n && g.preB == nil {
		pb := b.getBuf(roundUp(g.n, kern.nr) * g.k)
		defer b.putBuf(pb)
		b.packWholeB(g.b, g.k, g.n, pb)
		g.preB = pb
	}
	cm, cn := roundUp(g.m, kern.mr), roundUp(g.n, kern.nr)
	if g.m <= g.n {
		cn = chunkSize(g.n, kern.nr, threads, kern.nc)
	} else {
		cm = chunkSize(g.m, kern.mr, threads, kern.mc)
	}
	tm, tn := ceilDiv(g.m, cm), ceilDiv(g.n, cn)
	b.w.parallel(tm*tn, func(s *scratch, t int) {
		i0, j0 := t/tn*cm, t%tn*cn
		g.block(kern, s, i0, min(cm, g.m-i0), j0, min(cn, g.n-j0))
	})
}

// packWholeA packs all of A (m×k) into dst, k block by k block: block k0
// holds roundUp(m, mr)·kc values, sliver i0 of it starts at i0·kc.
func (b *Backend) packWholeA(a aPacker, m, k int, alpha float32, dst []float32) {
	kern := &b.kern
	mpad, rows := roundUp(m, kern.mr), roundUp(kern.mc, kern.mr)
	mb := ceilDiv(m, rows)
	b.w.parallel(ceilDiv(k, kern.kc)*mb, func(_ *scratch, t int) {
		k0, i0 := t/mb*kern.kc, t%mb*rows
		kc := min(kern.kc, k-k0)
		a.packA(kern, dst[k0*mpad+i0*kc:], i0, min(rows, m-i0), k0, kc, alpha)
	})
}

// packWholeBSerial is packWholeB on the calling thread.
func packWholeBSerial(kern *microKernel, bp bPacker, k, n int, dst []float32) {
	npad := roundUp(n, kern.nr)
	for k0 := 0; k0 < k; k0 += kern.kc {
		kc := min(kern.kc, k-k0)
		bp.packB(kern, dst[k0*npad:], k0, kc, 0, n)
	}
}

// packWholeB packs all of B (k×n) into dst, laid out like packWholeA.
func (b *Backend) packWholeB(bp bPacker, k, n int, dst []float32) {
	kern := &b.kern
	npad := roundUp(n, kern.nr)
	nb := ceilDiv(n, kern.nc)
	b.w.parallel(ceilDiv(k, kern.kc)*nb, func(_ *scratch, t int) {
		k0, j0 := t/nb*kern.kc, t%nb*kern.nc
		kc := min(kern.kc, k-k0)
		bp.packB(kern, dst[k0*npad+j0*kc:], k0, kc, j0, min(kern.nc, n-j0))
	})
}

// chunkSize splits total into pieces, a multiple of align and at most
// limit, giving each of threads about two pieces.
func chunkSize(total, align, threads, limit int) int {
	c := roundUp(ceilDiv(total, 2*threads), align)
	return max(align, min(c, roundUp(limit, align)))
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func roundUp(a, b int) int { return ceilDiv(a, b) * b }
