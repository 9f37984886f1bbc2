package cpu

import (
	"sync"

	"github.com/avatargen/musetalk/kernels"
)

// weight is a tensor registered by [Backend.Weight] and the GEMM-packed
// copies of it built on first use.
type weight struct {
	n int // elements; a lookup must match the whole tensor

	onceA   sync.Once
	rowsA   int       // A's rows the panels were built for
	panelsA []float32 // as the A operand (conv weights)
	onceB   sync.Once
	colsB   int       // B's columns the panels were built for
	panelsB []float32 // as the transposed B operand (linear weights)
	onceW   sync.Once
	rowsW   int       // output channels the Winograd panels were built for
	panelsW []float32 // Winograd-transformed 3×3 kernel (see winoWeights)
}

// Weight implements [kernels.Memory.Weight]: the tensor uses data in place.
// Unless Options.NoWeightCache is set, the first Conv2D, Conv1D or Linear
// using it stores a packed copy of it (as much memory again) so later calls
// skip packing it.
func (b *Backend) Weight(data []float32, shape ...int) *kernels.Tensor {
	t := kernels.FromSlice(data, shape...)
	b.mu.Lock()
	b.weights[&data[0]] = &weight{n: len(data)}
	b.mu.Unlock()
	return t
}

// lookupWeight returns the registration of d, or nil.
func (b *Backend) lookupWeight(d []float32) *weight {
	if b.noWeightCache || len(d) == 0 {
		return nil
	}
	b.mu.Lock()
	w := b.weights[&d[0]]
	b.mu.Unlock()
	if w == nil || w.n != len(d) {
		return nil
	}
	return w
}

// weightPanelsA returns d (a registered m×k row-major weight) packed whole
// as the A operand, or nil if d is not a registered weight.
func (b *Backend) weightPanelsA(d []float32, m, k int) []float32 {
	w := b.lookupWeight(d)
	if w == nil {
		return nil
	}
	w.onceA.Do(func() {
		p := alignedFloats(roundUp(m, b.kern.mr) * k)
		b.packWholeA(strided{data: d, rs: k, cs: 1}, m, k, 1, p)
		w.rowsA, w.panelsA = m, p
	})
	if w.rowsA != m {
		return nil
	}
	return w.panelsA
}

// weightPanelsB returns d (a registered n×k row-major weight, used
// transposed) packed whole as the B operand, or nil.
func (b *Backend) weightPanelsB(d []float32, n, k int) []float32 {
	w := b.lookupWeight(d)
	if w == nil {
		return nil
	}
	w.onceB.Do(func() {
		p := alignedFloats(roundUp(n, b.kern.nr) * k)
		b.packWholeB(strided{data: d, rs: 1, cs: k}, k, n, p)
		w.colsB, w.panelsB = n, p
	})
	if w.colsB != n {
		return nil
	}
	return w.panelsB
}
