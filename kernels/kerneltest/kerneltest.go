package kerneltest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/avatargen/musetalk/kernels"
)

// Options says how a backend stores tensors ([ExerciseWith]) and which
// sizes [Benchmark] runs.
type Options struct {
	// Precision is the backend's storage precision, kernels.F32 (the zero
	// value) or kernels.F16; the package documentation gives the
	// tolerances of each. Benchmark uses it only for the bytes its GB/s
	// figures count; it must match how the backend was built.
	Precision kernels.Precision
	// Small makes Benchmark run reduced sizes (batch 1, fewer tokens and
	// pixels, the same channel counts) for slow backends such as the CUDA
	// emulator. ExerciseWith ignores it.
	Small bool
}

// Exercise runs every case of the op table on b, one subtest per case,
// with the fp32 tolerances: ExerciseWith(t, b, Options{}).
func Exercise(t *testing.T, b kernels.Backend) {
	t.Helper()
	ExerciseWith(t, b, Options{})
}

// ExerciseWith runs every case of the op table on b, one subtest per
// case, for a backend that stores tensors at o.Precision: inputs are
// rounded to that precision before the reference is computed and the
// tolerances widen by what storing results at it costs (see the package
// documentation). Cases of ops b does not support are skipped.
func ExerciseWith(t *testing.T, b kernels.Backend, o Options) {
	t.Helper()
	if o.Precision != kernels.F32 && o.Precision != kernels.F16 {
		t.Fatalf("kerneltest: unknown precision %v", o.Precision)
	}
	for _, c := range cases() {
		t.Run(c.op.String()+"/"+c.name, func(t *testing.T) {
			if !b.Supports(c.op) {
				t.Skipf("%v is not supported by %s", c.op, b.Name())
			}
			runCase(t, b, o, c)
		})
	}
}

// runCase runs one case on b, reporting to t.
func runCase(t testing.TB, b kernels.Backend, o Options, c testCase) {
	t.Helper()
	h := &harness{t: t, b: b, prec: o.Precision, rng: rand.New(rand.NewPCG(1, uint64(len(c.name))))}
	defer h.free()
	c.run(h)
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
	t      testing.TB
	b      kernels.Backend
	prec   kernels.Precision // how b stores elements
	rng    *rand.Rand
	owned  []*kernels.Tensor
	guards map[*kernels.Tensor]*kernels.Tensor // output view → guarded whole
}

// sentinel fills guard rows; any change is an out-of-bounds write. It is
// not a half value: an F16 backend stores it as −12344 (RoundF16), and
// the guards are compared with the sentinel rounded to the storage
// precision ([harness.stored]). Keeping the fp32 sentinel leaves the fp32
// check as it was, and in F16 makes every output's guards a check of
// Upload's rounding as well.
const sentinel = -12345.678

// stored rounds x to the backend's storage precision.
func (h *harness) stored(x float32) float32 { return roundTo(h.prec, x) }

// toStored rounds v in place to the backend's storage precision (through
// float32) and returns the values to upload.
func (h *harness) toStored(v []float64) []float32 {
	h.t.Helper()
	f := make([]float32, len(v))
	for i, x := range v {
		f[i] = h.stored(float32(x))
		if h.prec == kernels.F16 && math.Abs(float64(f[i])) > halfMax {
			h.t.Fatalf("input %g overflows fp16 (|x| > %d): the case must scale its inputs", x, halfMax)
		}
		v[i] = float64(f[i])
	}
	return f
}

// input returns seeded N(0, 1)·scale values of the given shape, rounded
// to the storage precision, as host values and as a backend tensor.
func (h *harness) input(scale float64, shape ...int) ([]float64, *kernels.Tensor) {
	h.t.Helper()
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float64, n)
	for i := range v {
		v[i] = float64(float32(h.rng.NormFloat64() * scale))
	}
	return v, h.upload(v, shape...)
}

// upload rounds v in place to the storage precision (float32, or half for
// F16), so that a reference computed from v afterwards sees what the
// backend holds, and returns a backend tensor holding it.
func (h *harness) upload(v []float64, shape ...int) *kernels.Tensor {
	h.t.Helper()
	f := h.toStored(v)
	t := h.b.Alloc(shape...)
	h.owned = append(h.owned, t)
	h.b.Upload(t, f)
	return t
}

// weight rounds v in place as upload does and returns it as a backend
// weight tensor ([kernels.Memory.Weight]).
func (h *harness) weight(v []float64, shape ...int) *kernels.Tensor {
	h.t.Helper()
	t := h.b.Weight(h.toStored(v), shape...)
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
	vals := all[inner : inner+len(want)]
	if h.prec == kernels.F16 {
		for i, w := range want {
			if math.Abs(w) > halfMax && !math.IsInf(w, 0) {
				h.t.Fatalf("reference element %d (%s) is %g, beyond fp16's range: the case must scale its inputs",
					i, index(got.Shape(), i), w)
			}
		}
	}
	worst, worstAt, bad := 0.0, -1, 0
	for i, w := range want {
		g := float64(vals[i])
		allowed := tl.abs + tl.rel*math.Abs(w)
		if tl.mag != nil {
			allowed += tl.magRel * tl.mag[i]
		}
		d := math.Abs(g - w)
		if math.IsInf(w, 0) && g == w {
			continue // only the upload_rounding case expects ±Inf
		}
		if math.IsNaN(g) || math.IsInf(g, 0) || d > allowed {
			bad++
			if worstAt < 0 || d/allowed > worst {
				worst, worstAt = d/allowed, i
			}
		}
	}
	if bad > 0 {
		h.t.Errorf("%d of %d elements out of tolerance; worst at %d (%s): got %g want %g (%.3g× the tolerance)",
			bad, len(want), worstAt, index(got.Shape(), worstAt), vals[worstAt], want[worstAt], worst)
	}
	// Storage and guards after the values, so that a wrong result is
	// reported even when the guards are broken too.
	if h.prec == kernels.F16 {
		for i, v := range vals {
			if v == v && RoundF16(v) != v {
				h.t.Fatalf("element %d (%s) = %g is not an fp16 value: does the backend store fp16?",
					i, index(got.Shape(), i), v)
			}
		}
	}
	guard := h.stored(sentinel)
	for i, v := range append(slices.Clone(all[:inner]), all[len(all)-inner:]...) {
		if v != guard {
			h.t.Fatalf("guard element %d overwritten: %g", i, v)
		}
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
