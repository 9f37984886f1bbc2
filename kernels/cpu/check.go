package cpu

import (
	"fmt"
	"slices"

	"github.com/avatargen/musetalk/kernels"
)

// check panics with "cpu: op: message" unless ok.
func check(ok bool, op string, format string, args ...any) {
	if !ok {
		panic(fmt.Sprintf("cpu: %s: %s", op, fmt.Sprintf(format, args...)))
	}
}

// checkShape panics unless t has exactly the given shape.
func checkShape(op, name string, t *kernels.Tensor, shape ...int) {
	check(slices.Equal(t.Shape(), shape), op, "%s is %v, want shape %v", name, t, shape)
}

// checkRank panics unless t has the given rank.
func checkRank(op, name string, t *kernels.Tensor, rank int) {
	check(t.Rank() == rank, op, "%s is %v, want rank %d", name, t, rank)
}

// optData returns t's host elements, or nil if t is nil.
func optData(op string, t *kernels.Tensor) []float32 {
	if t == nil {
		return nil
	}
	return hostData(op, t)
}

// elemChunk is the number of elements one task of an elementwise op
// handles.
const elemChunk = 1 << 14

// forChunks splits [0, n) into chunks of about size elements and runs fn
// on each, in parallel when there are several.
func (b *Backend) forChunks(n, size int, fn func(lo, hi int)) {
	b.w.parallel(ceilDiv(n, size), func(_ *scratch, t int) {
		fn(t*size, min(n, (t+1)*size))
	})
}
