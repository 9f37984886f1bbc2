package cpu

import "math"

// exp32 returns e^x in float32 (Cephes expf: relative error below 1e-7
// over the whole range; +Inf above 88.72, 0 below −103.97).
func exp32(x float32) float32 {
	if x > 88.72283 {
		return float32(math.Inf(1))
	}
	if x < -103.972 {
		return 0
	}
	t := x*1.442695040888963 + 0.5
	n := int32(t)
	if float32(n) > t {
		n--
	}
	fn := float32(n)
	r := x - fn*0.693359375 - fn*-2.12194440e-4
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	y := p*r*r + r + 1
	switch {
	case n < -126:
		return y * math.Float32frombits(uint32(n+126+127)<<23) * math.Float32frombits(1<<23)
	case n > 127:
		return y * 2 * math.Float32frombits(uint32(n-1+127)<<23)
	}
	return y * math.Float32frombits(uint32(n+127)<<23)
}

// gelu32 is the exact GELU, x·Φ(x) with Φ(x) = erfc(−x/√2)/2. erfc uses
// the Chebyshev fit of Numerical Recipes (relative error ≈1.2e-7 for all
// arguments), so the negative tail keeps its relative accuracy instead of
// cancelling in 1 + erf.
func gelu32(x float32) float32 {
	z := x * 0.70710678118654752
	if z < 0 {
		z = -z
	}
	t := 1 / (1 + 0.5*z)
	p := t*0.17087277 - 0.82215223
	p = t*p + 1.48851587
	p = t*p - 1.13520398
	p = t*p + 0.27886807
	p = t*p - 0.18628806
	p = t*p + 0.09678418
	p = t*p + 0.37409196
	p = t*p + 1.00002368
	p = t*p - 1.26551223
	e := t * exp32(p-z*z) // erfc(|x|/√2)
	if x >= 0 {
		return x - 0.5*x*e
	}
	return 0.5 * x * e
}

// sigmoid32 is 1/(1+e^−x).
func sigmoid32(x float32) float32 {
	return 1 / (1 + exp32(-x))
}
