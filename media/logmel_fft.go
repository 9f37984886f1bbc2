package media

import "math"

// fftPlan is a mixed-radix complex FFT of any length (Cooley–Tukey,
// decimation in time, the structure of KISS FFT): n is factored into 4s, 2s,
// 3s, 5s and then larger primes, with specialised butterflies for 2, 3, 4
// and 5 and a generic one for other factors. Whisper's n_fft = 400 = 4·4·5·5.
type fftPlan struct {
	n        int
	factors  []int        // p0, m0, p1, m1, …: radix p and the remaining length m
	twiddles []complex128 // exp(−2πik/n)
	maxP     int
}

func newFFTPlan(n int) *fftPlan {
	p := &fftPlan{n: n, twiddles: make([]complex128, n), maxP: 1}
	for k := range n {
		s, c := math.Sincos(-2 * math.Pi * float64(k) / float64(n))
		p.twiddles[k] = complex(c, s)
	}
	rest := n
	next := 4
	for rest > 1 {
		for rest%next != 0 {
			switch next {
			case 4:
				next = 2
			case 2:
				next = 3
			default:
				next += 2
			}
			if next*next > rest {
				next = rest
			}
		}
		rest /= next
		p.factors = append(p.factors, next, rest)
		p.maxP = max(p.maxP, next)
	}
	return p
}

// scratchLen is the length of the scratch slice transform needs.
func (p *fftPlan) scratchLen() int { return p.maxP }

// transform sets out to the DFT of in: out[k] = Σ in[j]·exp(−2πijk/n).
// out and in must not overlap.
func (p *fftPlan) transform(out, in, scratch []complex128) {
	if p.n == 1 {
		out[0] = in[0]
		return
	}
	p.work(out, in, 1, p.factors, scratch)
}

func (p *fftPlan) work(out, in []complex128, fstride int, factors []int, scratch []complex128) {
	radix, m := factors[0], factors[1]
	if m == 1 {
		for i := range radix {
			out[i] = in[i*fstride]
		}
	} else {
		for q := range radix {
			p.work(out[q*m:], in[q*fstride:], fstride*radix, factors[2:], scratch)
		}
	}
	switch radix {
	case 2:
		p.bfly2(out, fstride, m)
	case 3:
		p.bfly3(out, fstride, m)
	case 4:
		p.bfly4(out, fstride, m)
	case 5:
		p.bfly5(out, fstride, m)
	default:
		p.bflyGeneric(out, fstride, m, radix, scratch)
	}
}

func (p *fftPlan) bfly2(out []complex128, fstride, m int) {
	for u := range m {
		t := out[u+m] * p.twiddles[u*fstride]
		out[u+m] = out[u] - t
		out[u] += t
	}
}

func (p *fftPlan) bfly3(out []complex128, fstride, m int) {
	// exp(−2πi/3) = −½ − i·(√3/2)
	const s3 = 0.86602540378443864676
	tw := p.twiddles
	for u := range m {
		a0 := out[u]
		a1 := out[u+m] * tw[u*fstride]
		a2 := out[u+2*m] * tw[2*u*fstride]
		sum := a1 + a2
		diff := a1 - a2
		mid := a0 - sum/2
		rot := complex(imag(diff)*s3, -real(diff)*s3) // −i·(√3/2)·diff
		out[u] = a0 + sum
		out[u+m] = mid + rot
		out[u+2*m] = mid - rot
	}
}

func (p *fftPlan) bfly4(out []complex128, fstride, m int) {
	tw := p.twiddles
	for u := range m {
		a0 := out[u]
		a1 := out[u+m] * tw[u*fstride]
		a2 := out[u+2*m] * tw[2*u*fstride]
		a3 := out[u+3*m] * tw[3*u*fstride]
		s02, d02 := a0+a2, a0-a2
		s13, d13 := a1+a3, a1-a3
		rot := complex(imag(d13), -real(d13)) // −i·d13
		out[u] = s02 + s13
		out[u+m] = d02 + rot
		out[u+2*m] = s02 - s13
		out[u+3*m] = d02 - rot
	}
}

func (p *fftPlan) bfly5(out []complex128, fstride, m int) {
	tw := p.twiddles
	ya := tw[fstride*m]   // exp(−2πi/5)
	yb := tw[2*fstride*m] // exp(−4πi/5)
	for u := range m {
		a0 := out[u]
		a1 := out[u+m] * tw[u*fstride]
		a2 := out[u+2*m] * tw[2*u*fstride]
		a3 := out[u+3*m] * tw[3*u*fstride]
		a4 := out[u+4*m] * tw[4*u*fstride]
		s7, s10 := a1+a4, a1-a4
		s8, s9 := a2+a3, a2-a3
		out[u] = a0 + s7 + s8
		s5 := a0 + complex(real(s7)*real(ya)+real(s8)*real(yb), imag(s7)*real(ya)+imag(s8)*real(yb))
		s6 := complex(imag(s10)*imag(ya)+imag(s9)*imag(yb), -real(s10)*imag(ya)-real(s9)*imag(yb))
		out[u+m] = s5 - s6
		out[u+4*m] = s5 + s6
		s11 := a0 + complex(real(s7)*real(yb)+real(s8)*real(ya), imag(s7)*real(yb)+imag(s8)*real(ya))
		s12 := complex(-imag(s10)*imag(yb)+imag(s9)*imag(ya), real(s10)*imag(yb)-real(s9)*imag(ya))
		out[u+2*m] = s11 + s12
		out[u+3*m] = s11 - s12
	}
}

func (p *fftPlan) bflyGeneric(out []complex128, fstride, m, radix int, scratch []complex128) {
	tw := p.twiddles
	for u := range m {
		for q := range radix {
			scratch[q] = out[u+q*m]
		}
		for q1 := range radix {
			k := u + q1*m
			acc := scratch[0]
			idx := 0
			for q := 1; q < radix; q++ {
				idx += fstride * k
				if idx >= p.n {
					idx %= p.n
				}
				acc += scratch[q] * tw[idx]
			}
			out[k] = acc
		}
	}
}
