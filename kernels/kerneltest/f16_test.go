package kerneltest

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
)

// rounding is a test backend: the CPU backend with every stored value
// rounded by round, as a backend with a narrower storage format holds
// them. Upload and Weight round their data; every op runs on the CPU in
// float32 and then rounds its destination in place (the host tensor's
// elements), so accumulation stays fp32 and each result is rounded once,
// as the fp16 CUDA backend does.
type rounding struct {
	kernels.Backend
	name  string
	round func(float32) float32
}

func newRounding(t testing.TB, name string, round func(float32) float32) *rounding {
	b, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &rounding{Backend: b, name: name, round: round}
}

func (r *rounding) Name() string { return r.name + "(" + r.Backend.Name() + ")" }

func (r *rounding) rounded(src []float32) []float32 {
	out := make([]float32, len(src))
	for i, v := range src {
		out[i] = r.round(v)
	}
	return out
}

// fix rounds t's elements in place.
func (r *rounding) fix(t *kernels.Tensor) {
	d := t.Data()
	for i, v := range d {
		d[i] = r.round(v)
	}
}

func (r *rounding) Upload(dst *kernels.Tensor, src []float32) { r.Backend.Upload(dst, r.rounded(src)) }
func (r *rounding) Weight(data []float32, shape ...int) *kernels.Tensor {
	return r.Backend.Weight(r.rounded(data), shape...)
}

func (r *rounding) Add(dst, a, b *kernels.Tensor) { r.Backend.Add(dst, a, b); r.fix(dst) }
func (r *rounding) Attention(dst, q, k, v *kernels.Tensor, p kernels.AttentionParams) {
	r.Backend.Attention(dst, q, k, v, p)
	r.fix(dst)
}
func (r *rounding) AvgPool2D(dst, x *kernels.Tensor, p kernels.Pool2DParams) {
	r.Backend.AvgPool2D(dst, x, p)
	r.fix(dst)
}
func (r *rounding) Concat(dst *kernels.Tensor, axis int, srcs ...*kernels.Tensor) {
	r.Backend.Concat(dst, axis, srcs...)
	r.fix(dst)
}
func (r *rounding) Conv1D(dst, x, w, bias *kernels.Tensor, p kernels.Conv1DParams) {
	r.Backend.Conv1D(dst, x, w, bias, p)
	r.fix(dst)
}
func (r *rounding) Conv2D(dst, x, w, bias *kernels.Tensor, p kernels.Conv2DParams) {
	r.Backend.Conv2D(dst, x, w, bias, p)
	r.fix(dst)
}
func (r *rounding) Copy(dst, src *kernels.Tensor) { r.Backend.Copy(dst, src); r.fix(dst) }
func (r *rounding) DepthwiseConv2D(dst, x, w, bias *kernels.Tensor, p kernels.Conv2DParams) {
	r.Backend.DepthwiseConv2D(dst, x, w, bias, p)
	r.fix(dst)
}
func (r *rounding) GEGLU(dst, x *kernels.Tensor) { r.Backend.GEGLU(dst, x); r.fix(dst) }
func (r *rounding) GELU(dst, x *kernels.Tensor)  { r.Backend.GELU(dst, x); r.fix(dst) }
func (r *rounding) GroupNorm(dst, x, weight, bias *kernels.Tensor, p kernels.GroupNormParams) {
	r.Backend.GroupNorm(dst, x, weight, bias, p)
	r.fix(dst)
}
func (r *rounding) HardSigmoid(dst, x *kernels.Tensor) { r.Backend.HardSigmoid(dst, x); r.fix(dst) }
func (r *rounding) LayerNorm(dst, x, weight, bias *kernels.Tensor, p kernels.LayerNormParams) {
	r.Backend.LayerNorm(dst, x, weight, bias, p)
	r.fix(dst)
}
func (r *rounding) L2Norm(dst, x, weight *kernels.Tensor, eps float32) {
	r.Backend.L2Norm(dst, x, weight, eps)
	r.fix(dst)
}
func (r *rounding) Linear(dst, x, w, bias *kernels.Tensor) {
	r.Backend.Linear(dst, x, w, bias)
	r.fix(dst)
}
func (r *rounding) MatMul(dst, a, b *kernels.Tensor, p kernels.MatMulParams) {
	r.Backend.MatMul(dst, a, b, p)
	r.fix(dst)
}
func (r *rounding) MaxPool2D(dst, x *kernels.Tensor, p kernels.Pool2DParams) {
	r.Backend.MaxPool2D(dst, x, p)
	r.fix(dst)
}
func (r *rounding) Mul(dst, a, b *kernels.Tensor) { r.Backend.Mul(dst, a, b); r.fix(dst) }
func (r *rounding) Permute(dst, x *kernels.Tensor, perm ...int) {
	r.Backend.Permute(dst, x, perm...)
	r.fix(dst)
}
func (r *rounding) ReLU(dst, x *kernels.Tensor)             { r.Backend.ReLU(dst, x); r.fix(dst) }
func (r *rounding) Scale(dst, x *kernels.Tensor, s float32) { r.Backend.Scale(dst, x, s); r.fix(dst) }
func (r *rounding) ScaleNorm(dst, x *kernels.Tensor, p kernels.ScaleNormParams) {
	r.Backend.ScaleNorm(dst, x, p)
	r.fix(dst)
}
func (r *rounding) Sigmoid(dst, x *kernels.Tensor) { r.Backend.Sigmoid(dst, x); r.fix(dst) }
func (r *rounding) SiLU(dst, x *kernels.Tensor)    { r.Backend.SiLU(dst, x); r.fix(dst) }
func (r *rounding) Softmax(dst, x *kernels.Tensor) { r.Backend.Softmax(dst, x); r.fix(dst) }
func (r *rounding) UpsampleNearest(dst, x *kernels.Tensor) {
	r.Backend.UpsampleNearest(dst, x)
	r.fix(dst)
}
func (r *rounding) UpsampleBilinear(dst, x *kernels.Tensor, a bool) {
	r.Backend.UpsampleBilinear(dst, x, a)
	r.fix(dst)
}

// roundBF16 rounds x to 8 significant bits (bfloat16), ties to even:
// three bits coarser than half, with float32's exponent range.
func roundBF16(x float32) float32 {
	b := math.Float32bits(x)
	if b&0x7fff_ffff > 0x7f80_0000 {
		return x
	}
	b += 0x7fff + (b>>16)&1
	return math.Float32frombits(b &^ 0xffff)
}

// recorder is a testing.TB that records failures instead of reporting
// them, so a test can assert that a case fails. Fatalf ends the
// goroutine, as testing.T's does.
type recorder struct {
	testing.TB
	failed bool
	msgs   []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.failed = true
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

// outOfTolerance reports whether a check found elements out of tolerance
// (as opposed to the storage or guard checks that follow it).
func (r *recorder) outOfTolerance() bool {
	for _, m := range r.msgs {
		if strings.Contains(m, "out of tolerance") {
			return true
		}
	}
	return false
}

// record runs case c on b with a recorder and returns it.
func record(t *testing.T, b kernels.Backend, o Options, c testCase) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runCase(r, b, o, c)
	}()
	<-done
	return r
}

// TestF16OnRoundingBackend runs the F16 harness on the CPU backend with
// half storage: the tolerances must hold for a backend that rounds each
// input and each result once.
func TestF16OnRoundingBackend(t *testing.T) {
	ExerciseWith(t, newRounding(t, "f16", RoundF16), Options{Precision: kernels.F16})
}

// TestF16CatchesCoarserStorage runs every case of the F16 harness on a
// backend that stores bfloat16 (8 significant bits, against half's 11):
// the tolerances must notice. Every op has to fail all its cases but at
// most two, which may pass only because their one to four elements happen
// to be bfloat16 values (in this seeded run: the one-element cases and
// bilinear's 1×3 → 4×1); a failure must be "out of tolerance", not a guard
// or storage check.
func TestF16CatchesCoarserStorage(t *testing.T) {
	bf := newRounding(t, "bf16", roundBF16)
	f16 := Options{Precision: kernels.F16}
	failed := map[kernels.Op]int{}
	total := map[kernels.Op]int{}
	for _, c := range cases() {
		total[c.op]++
		if r := record(t, bf, f16, c); r.outOfTolerance() {
			failed[c.op]++
		} else {
			t.Logf("passes with bfloat16 storage: %v/%s", c.op, c.name)
		}
	}
	var missed []string
	for op, n := range total {
		if failed[op] == 0 || failed[op] < n-2 {
			missed = append(missed, fmt.Sprintf("%v (%d of %d cases fail)", op, failed[op], n))
		}
	}
	slices.Sort(missed)
	if len(missed) > 0 {
		t.Errorf("the F16 tolerances miss bfloat16 storage in %s", strings.Join(missed, ", "))
	}
}

// TestF16RejectsF32Backend checks that F16 mode notices a backend that
// keeps float32 (one whose precision option was ignored): its outputs are
// not halves.
func TestF16RejectsF32Backend(t *testing.T) {
	b, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	seen := map[kernels.Op]int{}
	for _, c := range cases() {
		// The second case of each (the first has one element).
		if seen[c.op]++; seen[c.op] != 2 || (c.op != kernels.OpLinear && c.op != kernels.OpGELU) {
			continue
		}
		r := record(t, b, Options{Precision: kernels.F16}, c)
		if !r.failed || !strings.Contains(strings.Join(r.msgs, "\n"), "not an fp16 value") {
			t.Errorf("%v/%s passes F16 on an fp32 backend: %v", c.op, c.name, r.msgs)
		}
	}
}
