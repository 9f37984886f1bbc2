// Package kerneltest checks a [kernels.Backend] against naive reference
// loops computed in float64. Every backend's tests call [Exercise]; a new
// op lands with its cases here.
//
// Each case fills its inputs with seeded random values, writes its output
// into a view with guard rows before and after it (which must come back
// untouched), and compares element by element with a tolerance relative to
// the magnitude of the terms that produced each element.
package kerneltest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/avatargen/musetalk/kernels"
)

// Exercise runs every case of the op table on b, one subtest per case.
// Cases of ops b does not support are skipped.
func Exercise(t *testing.T, b kernels.Backend) {
	t.Helper()
	for _, c := range cases() {
		t.Run(c.op.String()+"/"+c.name, func(t *testing.T) {
			if !b.Supports(c.op) {
				t.Skipf("%v is not supported by %s", c.op, b.Name())
			}
			h := &harness{t: t, b: b, rng: rand.New(rand.NewPCG(1, uint64(len(c.name))))}
			defer h.free()
			c.run(h)
		})
	}
}

// testCase is one op invocation.
type testCase struct {
	op   kernels.Op
	name string
	run  func(h *harness)
}

// harness allocates a case's tensors on the backend under test and checks
// its outputs.
type harness struct {
	t      *testing.T
	b      kernels.Backend
	rng    *rand.Rand
	owned  []*kernels.Tensor
	guards map[*kernels.Tensor]*kernels.Tensor // output view → guarded whole
}

// sentinel fills guard rows; any change is an out-of-bounds write.
const sentinel = -12345.678

// input returns seeded N(0, 1)·scale values of the given shape, as host
// values and as a backend tensor.
func (h *harness) input(scale float64, shape ...int) ([]float64, *kernels.Tensor) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float64, n)
	f := make([]float32, n)
	for i := range v {
		f[i] = float32(h.rng.NormFloat64() * scale)
		v[i] = float64(f[i])
	}
	t := h.b.Alloc(shape...)
	h.owned = append(h.owned, t)
	h.b.Upload(t, f)
	return v, t
}

// upload returns a backend tensor holding v (rounded to float32).
func (h *harness) upload(v []float64, shape ...int) *kernels.Tensor {
	f := make([]float32, len(v))
	for i, x := range v {
		f[i] = float32(x)
	}
	t := h.b.Alloc(shape...)
	h.owned = append(h.owned, t)
	h.b.Upload(t, f)
	return t
}

// weight returns v (rounded to float32) as a backend weight tensor
// ([kernels.Memory.Weight]).
func (h *harness) weight(v []float64, shape ...int) *kernels.Tensor {
	f := make([]float32, len(v))
	for i, x := range v {
		f[i] = float32(x)
	}
	t := h.b.Weight(f, shape...)
	h.owned = append(h.owned, t)
	return t
}

// output returns a destination tensor of the given shape: the middle of a
// tensor with one guard row (along dimension 0) on each side.
func (h *harness) output(shape ...int) *kernels.Tensor {
	big := slices.Clone(shape)
	big[0] += 2
	t := h.b.Alloc(big...)
	h.owned = append(h.owned, t)
	fill := make([]float32, t.Len())
	for i := range fill {
		fill[i] = sentinel
	}
	h.b.Upload(t, fill)
	v := t.Slice(1, shape[0]+1)
	if h.guards == nil {
		h.guards = make(map[*kernels.Tensor]*kernels.Tensor)
	}
	h.guards[v] = t
	return v
}

// tol is an element's allowed error: abs + rel·|want| + magRel·mag.
type tol struct {
	abs, rel, magRel float64
	mag              []float64
}

// check downloads got (from [harness.output]) and compares it with want.
func (h *harness) check(got *kernels.Tensor, want []float64, tl tol) {
	h.t.Helper()
	if got.Len() != len(want) {
		h.t.Fatalf("output %v has %d elements, reference %d", got, got.Len(), len(want))
	}
	inner := got.Len() / got.Dim(0)
	all := make([]float32, got.Len()+2*inner)
	whole, ok := h.guards[got]
	if !ok {
		h.t.Fatalf("check: %v was not made by output", got)
	}
	if err := h.b.Download(all, whole); err != nil {
		h.t.Fatalf("Download: %v", err)
	}
	for i, v := range append(slices.Clone(all[:inner]), all[len(all)-inner:]...) {
		if v != sentinel {
			h.t.Fatalf("guard element %d overwritten: %g", i, v)
		}
	}
	vals := all[inner : inner+len(want)]
	worst, worstAt, bad := 0.0, -1, 0
	for i, w := range want {
		g := float64(vals[i])
		allowed := tl.abs + tl.rel*math.Abs(w)
		if tl.mag != nil {
			allowed += tl.magRel * tl.mag[i]
		}
		d := math.Abs(g - w)
		if math.IsNaN(g) || math.IsInf(g, 0) || d > allowed {
			bad++
			if worstAt < 0 || d/allowed > worst {
				worst, worstAt = d/allowed, i
			}
		}
	}
	if bad > 0 {
		h.t.Errorf("%d of %d elements out of tolerance; worst at %d (%s): got %g want %g",
			bad, len(want), worstAt, index(got.Shape(), worstAt), vals[worstAt], want[worstAt])
	}
}

// index formats flat index i of shape as [a b c].
func index(shape []int, i int) string {
	idx := make([]int, len(shape))
	for d := len(shape) - 1; d >= 0; d-- {
		idx[d] = i % shape[d]
		i /= shape[d]
	}
	return fmt.Sprint(idx)
}

func (h *harness) free() {
	for _, t := range h.owned {
		h.b.Free(t)
	}
}
