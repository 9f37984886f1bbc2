package kerneltest

import (
	"math"

	"github.com/avatargen/musetalk/kernels"
)

// The reference implementations: naive loops in float64. Each returns the
// expected output and, for ops that sum products, the per-element sum of
// |terms| that scales the rounding error a float32 result may carry.

func refConv2D(x []float64, n, c, h, w int, wt []float64, co, kh, kw int, bias []float64,
	sh, sw, pt, pb, pl, pr int) (out, mag []float64, ho, wo int) {
	ho = (h+pt+pb-kh)/sh + 1
	wo = (w+pl+pr-kw)/sw + 1
	out = make([]float64, n*co*ho*wo)
	mag = make([]float64, len(out))
	for b := range n {
		for o := range co {
			for oy := range ho {
				for ox := range wo {
					var s, m float64
					if bias != nil {
						s, m = bias[o], math.Abs(bias[o])
					}
					for ci := range c {
						for ky := range kh {
							for kx := range kw {
								iy, ix := oy*sh-pt+ky, ox*sw-pl+kx
								if iy < 0 || iy >= h || ix < 0 || ix >= w {
									continue
								}
								t := x[((b*c+ci)*h+iy)*w+ix] * wt[((o*c+ci)*kh+ky)*kw+kx]
								s += t
								m += math.Abs(t)
							}
						}
					}
					i := ((b*co+o)*ho+oy)*wo + ox
					out[i], mag[i] = s, m
				}
			}
		}
	}
	return out, mag, ho, wo
}

// refMatMul computes alpha·op(a)·op(b) for one batch entry; a is m×k (k×m
// if ta), b is k×n (n×k if tb).
func refMatMul(a, b []float64, m, n, k int, ta, tb bool, alpha float64) (out, mag []float64) {
	out = make([]float64, m*n)
	mag = make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s, mg float64
			for p := range k {
				av := a[i*k+p]
				if ta {
					av = a[p*m+i]
				}
				bv := b[p*n+j]
				if tb {
					bv = b[j*k+p]
				}
				s += av * bv
				mg += math.Abs(av * bv)
			}
			out[i*n+j], mag[i*n+j] = alpha*s, math.Abs(alpha)*mg
		}
	}
	return out, mag
}

func refLinear(x []float64, m, k int, w []float64, n int, bias []float64) (out, mag []float64) {
	out, mag = refMatMul(x, w, m, n, k, false, true, 1)
	if bias != nil {
		for i := range m {
			for j := range n {
				out[i*n+j] += bias[j]
				mag[i*n+j] += math.Abs(bias[j])
			}
		}
	}
	return out, mag
}

func refAttention(q, k, v []float64, n, lq, lk, cq, cv, heads int, scale float64) (out, mag []float64) {
	out = make([]float64, n*lq*cv)
	mag = make([]float64, len(out))
	dq, dv := cq/heads, cv/heads
	s := make([]float64, lk)
	for b := range n {
		for h := range heads {
			for i := range lq {
				mx := math.Inf(-1)
				for j := range lk {
					var d float64
					for c := range dq {
						d += q[(b*lq+i)*cq+h*dq+c] * k[(b*lk+j)*cq+h*dq+c]
					}
					s[j] = d * scale
					mx = math.Max(mx, s[j])
				}
				var sum float64
				for j := range s {
					s[j] = math.Exp(s[j] - mx)
					sum += s[j]
				}
				for c := range dv {
					var o, m float64
					for j := range lk {
						t := s[j] / sum * v[(b*lk+j)*cv+h*dv+c]
						o += t
						m += math.Abs(t)
					}
					out[(b*lq+i)*cv+h*dv+c] = o
					mag[(b*lq+i)*cv+h*dv+c] = m
				}
			}
		}
	}
	return out, mag
}

func refGroupNorm(x []float64, n, c, plane, groups int, eps float64, wt, bias []float64) []float64 {
	out := make([]float64, len(x))
	cg := c / groups
	for b := range n {
		for g := range groups {
			seg := x[(b*c+g*cg)*plane : (b*c+(g+1)*cg)*plane]
			mean, inv := meanInv(seg, eps)
			for ci := range cg {
				ch := g*cg + ci
				for p := range plane {
					i := (b*c+ch)*plane + p
					y := (x[i] - mean) * inv
					if wt != nil {
						y *= wt[ch]
					}
					if bias != nil {
						y += bias[ch]
					}
					out[i] = y
				}
			}
		}
	}
	return out
}

func refLayerNorm(x []float64, d int, eps float64, wt, bias []float64) []float64 {
	out := make([]float64, len(x))
	for r := 0; r < len(x); r += d {
		mean, inv := meanInv(x[r:r+d], eps)
		for i := range d {
			y := (x[r+i] - mean) * inv
			if wt != nil {
				y *= wt[i]
			}
			if bias != nil {
				y += bias[i]
			}
			out[r+i] = y
		}
	}
	return out
}

func meanInv(x []float64, eps float64) (mean, inv float64) {
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	var vr float64
	for _, v := range x {
		vr += (v - mean) * (v - mean)
	}
	vr /= float64(len(x))
	return mean, 1 / math.Sqrt(vr+eps)
}

func refGELU(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }

func refSigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

func refSoftmax(x []float64, d int) []float64 {
	out := make([]float64, len(x))
	for r := 0; r < len(x); r += d {
		mx := math.Inf(-1)
		for _, v := range x[r : r+d] {
			mx = math.Max(mx, v)
		}
		var sum float64
		for i, v := range x[r : r+d] {
			out[r+i] = math.Exp(v - mx)
			sum += out[r+i]
		}
		for i := range d {
			out[r+i] /= sum
		}
	}
	return out
}

func refUpsample(x []float64, nc, h, w, h2, w2 int) []float64 {
	out := make([]float64, nc*h2*w2)
	for p := range nc {
		for y := range h2 {
			for i := range w2 {
				out[(p*h2+y)*w2+i] = x[(p*h+y*h/h2)*w+i*w/w2]
			}
		}
	}
	return out
}

// refBroadcast applies f to a and b broadcast to a's shape (NumPy rules).
func refBroadcast(a []float64, ashape []int, b []float64, bshape []int, f func(x, y float64) float64) []float64 {
	out := make([]float64, len(a))
	r := len(ashape)
	idx := make([]int, r)
	for i := range a {
		rem := i
		for d := r - 1; d >= 0; d-- {
			idx[d] = rem % ashape[d]
			rem /= ashape[d]
		}
		bi, stride := 0, 1
		for d := len(bshape) - 1; d >= 0; d-- {
			ad := d + r - len(bshape)
			if bshape[d] != 1 {
				bi += idx[ad] * stride
			}
			stride *= bshape[d]
		}
		out[i] = f(a[i], b[bi])
	}
	return out
}

// refPermute returns x (shape) permuted: out dim i is x dim perm[i].
func refPermute(x []float64, shape, perm []int) []float64 {
	r := len(shape)
	xstr := make([]int, r)
	for i, s := r-1, 1; i >= 0; i-- {
		xstr[i] = s
		s *= shape[i]
	}
	out := make([]float64, len(x))
	idx := make([]int, r)
	for o := range out {
		rem := o
		for d := r - 1; d >= 0; d-- {
			n := shape[perm[d]]
			idx[d] = rem % n
			rem /= n
		}
		xi := 0
		for d := range r {
			xi += idx[d] * xstr[perm[d]]
		}
		out[o] = x[xi]
	}
	return out
}

func refConcat(srcs [][]float64, shapes [][]int, axis int) []float64 {
	outer := 1
	for d := range axis {
		outer *= shapes[0][d]
	}
	var out []float64
	for o := range outer {
		for i, s := range srcs {
			inner := len(s) / outer
			_ = shapes[i]
			out = append(out, s[o*inner:(o+1)*inner]...)
		}
	}
	return out
}

// refPool applies a max or average pool (count_include_pad) to each of nc
// planes.
func refPool(x []float64, nc, h, w int, p kernels.Pool2DParams, isMax bool) []float64 {
	ho, wo := p.OutSize(h, w)
	out := make([]float64, 0, nc*ho*wo)
	sh, sw := max(p.StrideH, 1), max(p.StrideW, 1)
	for pl := range nc {
		for oy := range ho {
			for ox := range wo {
				ys, xs := oy*sh-p.PadTop, ox*sw-p.PadLeft
				ye, xe := min(ys+p.KernelH, h+p.PadBottom), min(xs+p.KernelW, w+p.PadRight)
				acc, n := math.Inf(-1), (ye-ys)*(xe-xs)
				if !isMax {
					acc = 0
				}
				for y := max(ys, 0); y < min(ye, h); y++ {
					for xx := max(xs, 0); xx < min(xe, w); xx++ {
						v := x[(pl*h+y)*w+xx]
						if isMax {
							acc = math.Max(acc, v)
						} else {
							acc += v
						}
					}
				}
				if !isMax {
					acc /= float64(n)
				}
				out = append(out, acc)
			}
		}
	}
	return out
}

// refBilinear resizes each of nc planes with PyTorch's bilinear rules.
func refBilinear(x []float64, nc, h, w, h2, w2 int, align bool) []float64 {
	src := func(d, in, out int) (int, int, float64) {
		var s float64
		switch {
		case align && out > 1:
			s = float64(d) * float64(in-1) / float64(out-1)
		case !align:
			s = math.Max((float64(d)+0.5)*float64(in)/float64(out)-0.5, 0)
		}
		i0 := min(int(s), in-1)
		return i0, min(i0+1, in-1), s - float64(i0)
	}
	out := make([]float64, 0, nc*h2*w2)
	for pl := range nc {
		for y := range h2 {
			y0, y1, ly := src(y, h, h2)
			for i := range w2 {
				x0, x1, lx := src(i, w, w2)
				at := func(yy, xx int) float64 { return x[(pl*h+yy)*w+xx] }
				out = append(out, (1-ly)*((1-lx)*at(y0, x0)+lx*at(y0, x1))+ly*((1-lx)*at(y1, x0)+lx*at(y1, x1)))
			}
		}
	}
	return out
}

// refL2Norm normalises x [n, c, plane] across channels and scales by wt.
func refL2Norm(x []float64, n, c, plane int, wt []float64, eps float64) []float64 {
	out := make([]float64, len(x))
	for b := range n {
		for p := range plane {
			var s float64
			for ch := range c {
				v := x[(b*c+ch)*plane+p]
				s += v * v
			}
			norm := math.Sqrt(s) + eps
			for ch := range c {
				i := (b*c+ch)*plane + p
				out[i] = x[i] / norm * wt[ch]
			}
		}
	}
	return out
}

// refDepthwise is refConv2D with one filter per channel: x [n, c, h, w],
// wt [c, 1, kh, kw].
func refDepthwise(x []float64, n, c, h, w int, wt []float64, kh, kw int, bias []float64,
	sh, sw, pt, pb, pl, pr int) (out, mag []float64, ho, wo int) {
	for b := range n {
		for ch := range c {
			var bc []float64
			if bias != nil {
				bc = bias[ch : ch+1]
			}
			o, m, oh, ow := refConv2D(x[(b*c+ch)*h*w:(b*c+ch+1)*h*w], 1, 1, h, w, wt[ch*kh*kw:(ch+1)*kh*kw], 1, kh, kw, bc,
				sh, sw, pt, pb, pl, pr)
			out, mag, ho, wo = append(out, o...), append(mag, m...), oh, ow
		}
	}
	return out, mag, ho, wo
}

// refHardSigmoid is min(max(x + 3, 0), 6) / 6.
func refHardSigmoid(x float64) float64 { return math.Min(math.Max(x+3, 0), 6) / 6 }

// refScaleNorm normalises each row of d elements: x / max(‖x‖·scale, eps)
// · gain.
func refScaleNorm(x []float64, d int, scale, eps, gain float64) []float64 {
	out := make([]float64, len(x))
	for r := 0; r < len(x); r += d {
		var s float64
		for _, v := range x[r : r+d] {
			s += v * v
		}
		n := math.Max(math.Sqrt(s)*scale, eps)
		for i, v := range x[r : r+d] {
			out[r+i] = v / n * gain
		}
	}
	return out
}
