//go:build amd64 && !purego

package cpu

// Implemented in math_amd64.s (AVX-512F). n may be any length; the tail is
// masked.
func siluAVX512(dst, src *float32, n int)
func sigmoidAVX512(dst, src *float32, n int)
func geluAVX512(dst, src *float32, n int)
func gegluAVX512(dst, h, gate *float32, n int)
func expShiftAVX512(dst, src *float32, n int, shift float32) float32
func sumAVX512(x *float32, n int) float64
func sumSqDevAVX512(x *float32, n int, mean float64) float64
func affineAVX512(dst, src *float32, n int, mean, scale, shift float32, silu bool)
func maxAVX512(x *float32, n int) float32
func scaleAVX512(dst, src *float32, n int, s float32)

// The vector versions of the elementwise loops; callers check that the
// backend's kernel is AVX-512 and that len(d) ≥ len(s) > 0.

func siluVec(d, s []float32)    { siluAVX512(&d[0], &s[0], len(s)) }
func sigmoidVec(d, s []float32) { sigmoidAVX512(&d[0], &s[0], len(s)) }
func geluVec(d, s []float32)    { geluAVX512(&d[0], &s[0], len(s)) }
func gegluVec(d, h, gate []float32) {
	_ = h[len(gate)-1]
	gegluAVX512(&d[0], &h[0], &gate[0], len(gate))
}
func expShiftVec(d, s []float32, shift float32) float32 {
	return expShiftAVX512(&d[0], &s[0], len(s), shift)
}

// sumVec returns Σ x in float64.
func sumVec(x []float32) float64 {
	n := len(x) &^ 15
	var s float64
	if n > 0 {
		s = sumAVX512(&x[0], n)
	}
	for _, v := range x[n:] {
		s += float64(v)
	}
	return s
}

// sumSqDevVec returns Σ (x−mean)² in float64.
func sumSqDevVec(x []float32, mean float64) float64 {
	n := len(x) &^ 15
	var s float64
	if n > 0 {
		s = sumSqDevAVX512(&x[0], n, mean)
	}
	for _, v := range x[n:] {
		d := float64(v) - mean
		s += d * d
	}
	return s
}

// affineVec sets d = (s−mean)·scale + shift, then SiLU if silu is set.
func affineVec(d, s []float32, mean, scale, shift float32, silu bool) {
	_ = d[len(s)-1]
	affineAVX512(&d[0], &s[0], len(s), mean, scale, shift, silu)
}

// softmaxVec sets d = softmax(s).
func softmaxVec(d, s []float32) {
	_ = d[len(s)-1]
	m := maxAVX512(&s[0], len(s))
	sum := expShiftAVX512(&d[0], &s[0], len(s), m)
	scaleAVX512(&d[0], &d[0], len(s), 1/sum)
}

// scaleVec sets d = v·s.
func scaleVec(d, s []float32, v float32) {
	_ = d[len(s)-1]
	scaleAVX512(&d[0], &s[0], len(s), v)
}
