//go:build amd64 && !purego

package cpu

import (
	"math"
	"testing"
)

// TestVectorMath checks the AVX-512 elementwise routines against float64
// over a dense grid, including saturation, on every tail length.
func TestVectorMath(t *testing.T) {
	b := newBackend(t, Options{Threads: 1})
	if !b.kern.avx512 {
		t.Skip("no AVX-512")
	}
	var xs []float32
	for x := float32(-120); x < 120; x += 0.00917 {
		xs = append(xs, x)
	}
	xs = append(xs, 0, float32(math.Copysign(0, -1)), 1e-30, -1e-30, float32(math.Inf(1)), float32(math.Inf(-1)))
	sig := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	check := func(name string, got []float32, want func(x float64) float64, tol float64) {
		t.Helper()
		for i, x := range xs {
			if math.IsInf(float64(x), 0) && name != "sigmoid" {
				continue // x·sigmoid(x) at ±Inf is not pinned down (PyTorch gives NaN)
			}
			w := want(float64(x))
			if d := math.Abs(float64(got[i]) - w); d > tol*math.Max(1e-6, math.Abs(w)) && d > 1e-30 && !(math.IsInf(w, 0) && float64(got[i]) == w) {
				t.Fatalf("%s(%g) = %g, want %g", name, x, got[i], w)
			}
		}
	}
	got := make([]float32, len(xs))
	for _, n := range []int{1, 15, 16, 17, len(xs)} { // tail lengths
		clear(got)
		siluVec(got[:n], xs[:n])
		for i := n; i < len(got); i++ {
			if got[i] != 0 {
				t.Fatalf("siluVec(n=%d) wrote element %d", n, i)
			}
		}
	}
	siluVec(got, xs)
	check("silu", got, func(x float64) float64 {
		if math.IsInf(x, -1) {
			return 0
		}
		return x * sig(x)
	}, 1e-6)
	sigmoidVec(got, xs)
	check("sigmoid", got, sig, 1e-6)
	geluVec(got, xs)
	check("gelu", got, func(x float64) float64 {
		if math.IsInf(x, -1) {
			return 0
		}
		return 0.5 * x * math.Erfc(-x/math.Sqrt2)
	}, 3e-6)
	h := make([]float32, len(xs))
	for i := range h {
		h[i] = 0.5
	}
	gegluVec(got, h, xs)
	check("geglu", got, func(x float64) float64 {
		if math.IsInf(x, -1) {
			return 0
		}
		return 0.25 * x * math.Erfc(-x/math.Sqrt2)
	}, 3e-6)
	fin := xs[:len(xs)-2]
	for n := 1; n <= 40; n++ { // the maximum in every lane and in the tail
		v := make([]float32, n)
		for i := range v {
			v[i] = -float32(1000 + i)
		}
		for at := range n {
			v[at] = -3
			if m := maxAVX512(&v[0], n); m != -3 {
				t.Fatalf("max of %d values with -3 at %d = %g", n, at, m)
			}
			v[at] = -float32(1000 + at)
		}
	}
	const shift = 120 // softmax shifts by the maximum
	sum := expShiftVec(got[:len(fin)], fin, shift)
	var want float64
	for i, x := range fin {
		w := math.Exp(float64(x - shift)) // the argument rounds to float32 first
		want += float64(got[i])
		if d := math.Abs(float64(got[i])-w) / w; d > 1e-6 && w > 1e-37 {
			t.Fatalf("exp(%g-%d) = %g, want %g", x, shift, got[i], w)
		}
	}
	if math.Abs(float64(sum)-want)/want > 1e-5 {
		t.Fatalf("expShift sum %g, want %g", sum, want)
	}
}
