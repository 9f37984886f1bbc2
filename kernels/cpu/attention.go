package cpu

import "github.com/avatargen/musetalk/kernels"

// attnRows is the number of query rows one attention task handles; its
// score block (attnRows × Lk) lives in the thread's scratch arena.
const attnRows = 96

// Attention implements [kernels.Ops.Attention]. Each task takes one batch
// entry, one head and a block of query rows: S = scale·q·kᵀ (a GEMM reading
// the head's channels in place, no permute), softmax over S's rows, then
// dst = S·v written straight into the head's channels of dst.
func (b *Backend) Attention(dst, q, k, v *kernels.Tensor, p kernels.AttentionParams) {
	const op = "Attention"
	qd, kd, vd, dd := hostData(op, q), hostData(op, k), hostData(op, v), hostData(op, dst)
	checkRank(op, "q", q, 3)
	n, lq, cq := q.Dim(0), q.Dim(1), q.Dim(2)
	checkRank(op, "k", k, 3)
	lk := k.Dim(1)
	checkShape(op, "k", k, n, lk, cq)
	checkRank(op, "v", v, 3)
	cv := v.Dim(2)
	checkShape(op, "v", v, n, lk, cv)
	checkShape(op, "dst", dst, n, lq, cv)
	heads := p.Heads
	check(heads > 0 && cq%heads == 0 && cv%heads == 0, op, "%d heads do not divide channels %d and %d", heads, cq, cv)
	dq, dv := cq/heads, cv/heads
	scale := p.HeadScale(cq)
	kern := &b.kern
	// Pack every (image, head)'s k (the B operand of q·kᵀ) and v (of s·v)
	// once; the row blocks of that head share them.
	kSize, vSize := roundUp(lk, kern.nr)*dq, roundUp(dv, kern.nr)*lk
	panels := b.getBuf(n * heads * (kSize + vSize))
	defer b.putBuf(panels)
	b.w.parallel(n*heads, func(_ *scratch, t int) {
		i, h := t/heads, t%heads
		kp := panels[t*(kSize+vSize):]
		packWholeBSerial(kern, strided{data: kd[i*lk*cq+h*dq:], rs: 1, cs: cq}, dq, lk, kp[:kSize])
		packWholeBSerial(kern, strided{data: vd[i*lk*cv+h*dv:], rs: cv, cs: 1}, lk, dv, kp[kSize:kSize+vSize])
	})
	blocks := ceilDiv(lq, attnRows)
	b.w.parallel(n*heads*blocks, func(s *scratch, t int) {
		i, h, r0 := t/(heads*blocks), t/blocks%heads, t%blocks*attnRows
		rows := min(attnRows, lq-r0)
		kp := panels[(i*heads+h)*(kSize+vSize):]
		// Score rows are padded by a cache line so a 4 KiB multiple of keys
		// does not map every row to the same L1 set when s is packed.
		ld := roundUp(lk, 16) + 16
		scores := s.get(slotScores, rows*ld)
		g := gemmSpec{
			m: rows, n: lk, k: dq,
			a:     strided{data: qd[(i*lq+r0)*cq+h*dq:], rs: cq, cs: 1},
			alpha: scale,
			c:     matC{data: scores, ld: ld, segCols: lk},
			preB:  kp[:kSize],
		}
		g.block(kern, s, 0, rows, 0, lk)
		for r := range rows {
			row := scores[r*ld : r*ld+lk]
			softmaxRow(kern, row, row)
		}
		g = gemmSpec{
			m: rows, n: dv, k: lk,
			a:     strided{data: scores, rs: ld, cs: 1},
			alpha: 1,
			c:     matC{data: dd[(i*lq+r0)*cv+h*dv:], ld: cv, segCols: dv},
			preB:  kp[kSize : kSize+vSize],
		}
		g.block(kern, s, 0, rows, 0, dv)
	})
}
