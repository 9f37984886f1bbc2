package kerneltest

import (
	"math"

	"github.com/avatargen/musetalk/kernels"
)

// Half precision (IEEE 754 binary16): 1 sign bit, 5 exponent bits, 10
// fraction bits; 11 significant bits for normal values.
const (
	// halfMax is the largest finite half value, (2 − 2⁻¹⁰)·2¹⁵.
	halfMax = 65504
	// halfMinNormal is the smallest normal half value, 2⁻¹⁴. Below it
	// values are subnormal: multiples of 2⁻²⁴.
	halfMinNormal = 0x1p-14
)

// RoundF16 is written independently of internal/half on purpose: it is
// the oracle for backends whose Upload uses that package, and an oracle
// must not share code with what it checks.
//
// RoundF16 returns x rounded to the nearest IEEE 754 half-precision
// value, ties to even, and widened back to float32: what a backend that
// stores fp16 holds after uploading x. Magnitudes of 65520 (half's
// largest finite value, 65504, plus half an ulp) or more become ±Inf, as
// IEEE rounding requires; values in half's subnormal range round to
// multiples of 2⁻²⁴, so magnitudes up to 2⁻²⁵ become ±0. Signs of zeros
// and infinities are kept, and NaN stays NaN.
func RoundF16(x float32) float32 {
	bits := math.Float32bits(x)
	sign := bits & 0x8000_0000
	a := bits &^ 0x8000_0000
	switch {
	case a > 0x7f80_0000: // NaN
		return x
	case a >= 0x477f_f000: // ≥ 65520: overflows to Inf
		return math.Float32frombits(sign | 0x7f80_0000)
	case a >= 0x3880_0000: // ≥ 2⁻¹⁴: normal in half
		// Keep 10 of float32's 23 fraction bits: add just under half of
		// the dropped 13 bits' weight, plus one for an odd kept bit, so
		// that a tie carries only into odd values. A carry out of the
		// fraction increments the exponent, which is right; it cannot
		// reach Inf below 65520.
		a += 0x0fff + (a>>13)&1
		return math.Float32frombits(sign | a&^0x1fff)
	default: // subnormal in half, or zero: multiples of 2⁻²⁴
		v := float64(math.Float32frombits(a)) * 0x1p24 // < 2¹⁰, exact
		r := float32(math.RoundToEven(v) * 0x1p-24)    // exact
		return math.Float32frombits(sign | math.Float32bits(r))
	}
}

// roundTo rounds x to what a backend storing elements at precision p
// holds: unchanged for F32, [RoundF16] for F16.
func roundTo(p kernels.Precision, x float32) float32 {
	if p == kernels.F16 {
		return RoundF16(x)
	}
	return x
}
