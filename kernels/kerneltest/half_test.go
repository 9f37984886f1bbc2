package kerneltest

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// halfValue decodes half-precision bits h into a float64, independently of
// RoundF16: (−1)^s · 2^(e−15) · (1 + f/1024) for normal values,
// 2⁻¹⁴ · f/1024 for subnormal ones.
func halfValue(h uint16) float64 {
	s, e, f := h>>15, int(h>>10)&0x1f, float64(h&0x3ff)
	var v float64
	switch e {
	case 0:
		v = math.Ldexp(f, -24)
	case 0x1f:
		if f != 0 {
			return math.NaN()
		}
		v = math.Inf(1)
	default:
		v = math.Ldexp(1024+f, e-25)
	}
	if s == 1 {
		v = -v
	}
	return v
}

// halfGrid holds every non-negative finite half value in increasing
// order (index = bit pattern), then 65536: the value the next bit
// pattern would have with an unbounded exponent, which IEEE rounding uses
// to decide overflow (a value that rounds to it becomes Inf).
var halfGrid = func() []float64 {
	g := make([]float64, 0x7c01)
	for h := range 0x7c00 {
		g[h] = halfValue(uint16(h))
	}
	g[0x7c00] = 65536
	return g
}()

// bruteRound rounds x to half by searching halfGrid for its neighbours and
// taking the nearer one, the one with the even bit pattern on a tie.
func bruteRound(x float32) float32 {
	if x != x {
		return x
	}
	v := math.Abs(float64(x))
	i := sort.SearchFloat64s(halfGrid, v) // first grid value ≥ v
	var r float64
	switch {
	case i == len(halfGrid):
		r = math.Inf(1)
	case halfGrid[i] == v:
		r = v
	default:
		lo, hi := halfGrid[i-1], halfGrid[i]
		switch dl, dh := v-lo, hi-v; {
		case dl < dh, dl == dh && (i-1)%2 == 0:
			r = lo
		default:
			r = hi
		}
	}
	if r == 65536 {
		r = math.Inf(1)
	}
	return float32(math.Copysign(r, float64(x)))
}

func TestHalfValue(t *testing.T) {
	for h, want := range map[uint16]float64{
		0x0000: 0, 0x0001: 0x1p-24, 0x03ff: 1023 * 0x1p-24, 0x0400: 0x1p-14, 0x3c00: 1, 0x3c01: 1 + 0x1p-10,
		0x3555: 0.333251953125, 0x7bff: 65504, 0x7c00: math.Inf(1), 0xc000: -2, 0xfbff: -65504,
	} {
		if got := halfValue(h); got != want {
			t.Errorf("halfValue(%#04x) = %g, want %g", h, got, want)
		}
	}
}

func TestRoundF16(t *testing.T) {
	check := func(x float32) {
		t.Helper()
		got, want := RoundF16(x), bruteRound(x)
		if math.Float32bits(got) != math.Float32bits(want) && !(got != got && want != want) {
			t.Fatalf("RoundF16(%g = %#08x) = %g (%#08x), want %g (%#08x)",
				x, math.Float32bits(x), got, math.Float32bits(got), want, math.Float32bits(want))
		}
	}
	next := func(x float32, dir float32) float32 { return math.Nextafter32(x, dir) }
	inf := float32(math.Inf(1))
	// Every half value, the midpoints between neighbours (ties, exactly
	// representable in float32) and the float32 values on either side of
	// each, with both signs.
	for i, v := range halfGrid {
		for _, s := range []float32{1, -1} {
			x := s * float32(v)
			check(x)
			check(next(x, inf))
			check(next(x, -inf))
			if i+1 < len(halfGrid) {
				m := s * float32((v+halfGrid[i+1])/2)
				check(m)
				check(next(m, inf))
				check(next(m, -inf))
			}
		}
	}
	// Edges: zero, the bottom of the subnormal range (2⁻²⁵ is a tie that
	// goes to 0), the subnormal/normal boundary, overflow (65520 is a tie
	// between 65504, odd, and 2¹⁶, which overflows), float32's extremes.
	for _, x := range []float32{0, 0x1p-25, 0x1p-26, 3 * 0x1p-26, 0x1p-24, 0x1p-14, 0x1p-14 - 0x1p-25, 0x1p-14 - 0x1p-26,
		1, 2047, 2049, 4097, 65504, 65519, 65519.996, 65520, 65536, 1e5, math.MaxFloat32, math.SmallestNonzeroFloat32,
		0x1p-126, 1.0 / 3, 0.1, -12345.678} {
		for _, s := range []float32{1, -1} {
			check(s * x)
			check(next(s*x, inf))
			check(next(s*x, -inf))
		}
	}
	for _, x := range []float32{inf, -inf, float32(math.NaN())} {
		check(x)
	}
	if got := RoundF16(float32(math.Copysign(0, -1))); math.Float32bits(got) != 0x8000_0000 {
		t.Errorf("RoundF16(-0) = %g, want -0", got)
	}
	if got := RoundF16(-12345.678); got != -12344 {
		t.Errorf("RoundF16(-12345.678) = %g, want -12344", got)
	}
	// Random floats: uniform bit patterns (mostly far outside half's
	// range), and random fractions with exponents around half's range.
	rng := rand.New(rand.NewPCG(3, 4))
	for range 1 << 16 {
		check(math.Float32frombits(rng.Uint32()))
	}
	for range 1 << 18 {
		e := rng.IntN(50) - 30 // 2⁻³⁰ … 2¹⁹
		x := float32(math.Ldexp(1+rng.Float64(), e))
		if rng.IntN(2) == 0 {
			x = -x
		}
		check(x)
	}
}
