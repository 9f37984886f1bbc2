package cuda

import "github.com/avatargen/musetalk/kernels"

// attnMaxHead is the largest per-head value dimension the attention
// kernels hold in registers.
const attnMaxHead = 256

// attnSharedLimit bounds the attention kernels' dynamic shared memory: the
// default per-block limit of every CUDA card (more needs an opt-in).
const attnSharedLimit = 48 << 10

// Attention implements [kernels.Ops.Attention] with one fused kernel
// (src/attention.cu): each block takes a block of query rows of one head of
// one batch entry and streams the keys and values through shared memory in
// tiles of 16, keeping a running maximum and sum (online softmax, fp32),
// so the Lq×Lk scores are never stored. Heads are channel ranges, read in
// place. The row block is 32 rows, fewer when the head dimensions need the
// shared memory; the kernel variant is picked by the value head dimension.
func (b *Backend) Attention(dst, q, k, v *kernels.Tensor, p kernels.AttentionParams) {
	const op = "Attention"
	check(q != nil && k != nil && v != nil, op, "nil input")
	check(q.Rank() == 3 && k.Rank() == 3 && v.Rank() == 3, op, "q %v, k %v and v %v must have rank 3", q, k, v)
	n, lq, cq := q.Dim(0), q.Dim(1), q.Dim(2)
	lk, cv := k.Dim(1), v.Dim(2)
	checkShape(op, "k", k, n, lk, cq)
	checkShape(op, "v", v, n, lk, cv)
	checkShape(op, "dst", dst, n, lq, cv)
	heads := p.Heads
	check(heads > 0 && cq%heads == 0 && cv%heads == 0, op, "%d heads do not divide channels %d and %d", heads, cq, cv)
	check(heads <= 65535, op, "%d heads exceed the grid's limit", heads)
	check(n > 0 && lq > 0 && lk > 0 && cq > 0 && cv > 0, op, "empty input: q %v, k %v, v %v", q, k, v)
	dq, dv := cq/heads, cv/heads
	check(dv <= attnMaxHead, op, "value head dimension %d exceeds %d", dv, attnMaxHead)
	kernel := "attention_d256"
	switch {
	case dv <= 64:
		kernel = "attention_d64"
	case dv <= 160:
		kernel = "attention_d160"
	}
	limit := min(attnSharedLimit, b.info.SharedPerBlock)
	rows, shared := 0, 0
	for _, r := range []int{32, 16, 8} {
		if s := 4 * (r*dq + 16*dq + 16*dv + 16*r); s <= limit {
			rows, shared = r, s
			break
		}
	}
	check(rows > 0, op, "head dimensions %d and %d need more than %d bytes of shared memory", dq, dv, limit)
	rows = min(rows, max(8, ceilDiv(lq, 8)*8)) // short queries (a token or a few) use small blocks
	shared = 4 * (rows*dq + 16*dq + 16*dv + 16*rows)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.launch(op, kernel, D3(ceilDiv(lq, rows), heads, min(n, 65535)), D1(4*rows), shared,
		b.ptr(op, "dst", dst), b.ptr(op, "q", q), b.ptr(op, "k", k), b.ptr(op, "v", v),
		i32(op, n), i32(op, lq), i32(op, lk), i32(op, cq), i32(op, cv), int32(heads), p.HeadScale(cq))
}
