package media

import (
	"fmt"
	"math"
)

// Image8 is an 8-bit image stored row-major, interleaved (HWC): pixel (x, y)
// channel c is Pix[(y*W+x)*C+c]. Channel order is whatever the caller keeps
// (BGR for OpenCV-side images, RGB for Pillow-side ones).
type Image8 struct {
	W, H, C int
	Pix     []uint8
}

// NewImage8 returns a zero (black) w×h image with c channels.
func NewImage8(w, h, c int) *Image8 {
	return &Image8{W: w, H: h, C: c, Pix: make([]uint8, w*h*c)}
}

// Clone returns a deep copy of m.
func (m *Image8) Clone() *Image8 {
	return &Image8{W: m.W, H: m.H, C: m.C, Pix: append([]uint8(nil), m.Pix...)}
}

// SwapRB returns a copy with channels 0 and 2 exchanged (BGR <-> RGB); m
// must have 3 channels.
func (m *Image8) SwapRB() *Image8 {
	out := m.Clone()
	for i := 0; i+2 < len(out.Pix); i += 3 {
		out.Pix[i], out.Pix[i+2] = out.Pix[i+2], out.Pix[i]
	}
	return out
}

// Crop returns the region [x0,x1)×[y0,y1) as Pillow's Image.crop does: the
// box may extend past m, and samples outside m are zero.
func (m *Image8) Crop(x0, y0, x1, y1 int) *Image8 {
	out := NewImage8(x1-x0, y1-y0, m.C)
	for y := y0; y < y1; y++ {
		if y < 0 || y >= m.H {
			continue
		}
		for x := x0; x < x1; x++ {
			if x < 0 || x >= m.W {
				continue
			}
			copy(out.Pix[((y-y0)*out.W+x-x0)*m.C:][:m.C], m.Pix[(y*m.W+x)*m.C:][:m.C])
		}
	}
	return out
}

// Paste copies src into m with its top-left corner at (x0, y0), clipped to
// m (Pillow's paste without a mask). Channel counts must match.
func (m *Image8) Paste(src *Image8, x0, y0 int) {
	m.PasteMask(src, x0, y0, nil)
}

// PasteMask blends src into m at (x0, y0) through the single-channel mask
// (same size as src; nil means all 255) exactly as Pillow's paste with an
// "L" mask: out = DIV255(dst·(255−a) + src·a) per channel, clipped to m.
func (m *Image8) PasteMask(src *Image8, x0, y0 int, mask *Image8) {
	if src.C != m.C || (mask != nil && (mask.W != src.W || mask.H != src.H || mask.C != 1)) {
		panic(fmt.Sprintf("media: paste %dx%dx%d into %d channels with mask %v", src.W, src.H, src.C, m.C, mask != nil))
	}
	for y := 0; y < src.H; y++ {
		dy := y + y0
		if dy < 0 || dy >= m.H {
			continue
		}
		for x := 0; x < src.W; x++ {
			dx := x + x0
			if dx < 0 || dx >= m.W {
				continue
			}
			d := m.Pix[(dy*m.W+dx)*m.C:][:m.C]
			s := src.Pix[(y*src.W+x)*m.C:][:m.C]
			if mask == nil {
				copy(d, s)
				continue
			}
			a := int(mask.Pix[y*mask.W+x])
			for c := range d {
				v := int(d[c])*(255-a) + int(s[c])*a + 128
				d[c] = uint8(((v >> 8) + v) >> 8)
			}
		}
	}
}

// checkResize panics unless both m and the w×h target are non-empty.
func checkResize(m *Image8, w, h int) {
	if w <= 0 || h <= 0 || m.W <= 0 || m.H <= 0 || m.C <= 0 {
		panic(fmt.Sprintf("media: resize %dx%dx%d to %dx%d", m.W, m.H, m.C, w, h))
	}
}

func clampInt(v, lo, hi int) int {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

func sat8(v int) uint8 {
	return uint8(clampInt(v, 0, 255))
}

// roundEven is OpenCV's cvRound: round half to even.
func roundEven(v float64) int { return int(math.RoundToEven(v)) }

// cvCoord returns OpenCV resize's source position for output index d:
// floor s and fraction t, both as OpenCV computes them in float32.
func cvCoord(d int, scale float64) (int, float32) {
	f := float32((float64(d)+0.5)*scale - 0.5)
	s := int(math.Floor(float64(f)))
	return s, f - float32(s)
}

// lanczos4Coeffs is OpenCV's interpolateLanczos4 followed by the
// conversion to 11-bit fixed point.
func lanczos4Coeffs(t float32) [8]int {
	const r = 0.70710678118654752440084436210485
	cs := [8][2]float64{{1, 0}, {-r, -r}, {0, 1}, {r, -r}, {-1, 0}, {r, r}, {0, -1}, {-r, r}}
	y0 := -float64(t+3) * math.Pi * 0.25
	s0, c0 := math.Sin(y0), math.Cos(y0)
	var c [8]float32
	var sum float32
	for i := range c {
		yi := t + 3 - float32(i)
		if math.Abs(float64(yi)) >= 1e-6 {
			y := -float64(yi) * math.Pi * 0.25
			c[i] = float32((cs[i][0]*s0 + cs[i][1]*c0) / (y * y))
		} else {
			c[i] = 1e30
		}
		sum += c[i]
	}
	inv := 1 / sum
	var k [8]int
	for i := range c {
		k[i] = clampInt(roundEven(float64(c[i]*inv*2048)), math.MinInt16, math.MaxInt16)
	}
	return k
}

// ResizeLanczos4 is cv2.resize(m, (w, h), interpolation=INTER_LANCZOS4) for
// 8-bit images, bit-exact with OpenCV 4.6's fixed-point path (replicated
// borders). It panics on empty sizes, as do the other resizers.
func ResizeLanczos4(m *Image8, w, h int) *Image8 {
	checkResize(m, w, h)
	sx, sy := 1/(float64(w)/float64(m.W)), 1/(float64(h)/float64(m.H))
	xo := make([]int, w)
	xk := make([][8]int, w)
	for d := range w {
		s, t := cvCoord(d, sx)
		xo[d], xk[d] = s, lanczos4Coeffs(t)
	}
	// Horizontal pass over every source row, into int.
	C := m.C
	hrow := make([]int, m.H*w*C)
	for y := range m.H {
		src := m.Pix[y*m.W*C:]
		dst := hrow[y*w*C:]
		for d := range w {
			for c := range C {
				acc := 0
				for i, k := range xk[d] {
					acc += int(src[clampInt(xo[d]+i-3, 0, m.W-1)*C+c]) * k
				}
				dst[d*C+c] = acc
			}
		}
	}
	out := NewImage8(w, h, C)
	for d := range h {
		s, t := cvCoord(d, sy)
		ky := lanczos4Coeffs(t)
		var rows [8][]int
		for i := range rows {
			rows[i] = hrow[clampInt(s+i-3, 0, m.H-1)*w*C:][:w*C]
		}
		o := out.Pix[d*w*C:]
		for j := range w * C {
			v := 0
			for i, k := range ky {
				v += rows[i][j] * k
			}
			o[j] = sat8((v + 1<<21) >> 22)
		}
	}
	return out
}

// ResizeLinear is cv2.resize(m, (w, h)) with the default INTER_LINEAR for
// 8-bit images, bit-exact with OpenCV 4.6 on x86 (11-bit coefficients and
// the SIMD vertical rounding of VResizeLinearVec_32s8u).
func ResizeLinear(m *Image8, w, h int) *Image8 {
	checkResize(m, w, h)
	sx, sy := 1/(float64(w)/float64(m.W)), 1/(float64(h)/float64(m.H))
	C := m.C
	x0 := make([]int, w)
	a0, a1 := make([]int, w), make([]int, w)
	for d := range w {
		s, t := cvCoord(d, sx)
		if s < 0 {
			s, t = 0, 0
		}
		if s >= m.W-1 {
			s, t = m.W-1, 0
		}
		x0[d] = s
		a0[d] = roundEven(float64((1 - t) * 2048))
		a1[d] = roundEven(float64(t * 2048))
	}
	hz := func(y int, dst []int) {
		src := m.Pix[y*m.W*C:]
		for d := range w {
			s1 := min(x0[d]+1, m.W-1)
			for c := range C {
				dst[d*C+c] = int(src[x0[d]*C+c])*a0[d] + int(src[s1*C+c])*a1[d]
			}
		}
	}
	h0, h1 := make([]int, w*C), make([]int, w*C)
	out := NewImage8(w, h, C)
	for d := range h {
		s, t := cvCoord(d, sy)
		b0 := roundEven(float64((1 - t) * 2048))
		b1 := roundEven(float64(t * 2048))
		hz(clampInt(s, 0, m.H-1), h0)
		hz(clampInt(s+1, 0, m.H-1), h1)
		o := out.Pix[d*w*C:]
		for j := range w * C {
			o[j] = sat8((((b0 * (h0[j] >> 4)) >> 16) + ((b1 * (h1[j] >> 4)) >> 16) + 2) >> 2)
		}
	}
	return out
}

// pilBicubic is Pillow's bicubic filter (a = −0.5), in its evaluation order.
func pilBicubic(x float64) float64 {
	const a = -0.5
	if x < 0 {
		x = -x
	}
	if x < 1 {
		return ((a+2)*x-(a+3))*x*x + 1
	}
	if x < 2 {
		return (((x-5)*x+8)*x - 4) * a
	}
	return 0
}

// pilBilinear is Pillow's triangle filter.
func pilBilinear(x float64) float64 {
	if x < 0 {
		x = -x
	}
	if x < 1 {
		return 1 - x
	}
	return 0
}

// pilCoeffs is Pillow's precompute_coeffs + normalize_coeffs_8bpc: for each
// output index, the first source index and the 22-bit fixed-point weights.
func pilCoeffs(in, out int, filter func(float64) float64, support float64) ([]int, [][]int) {
	scale := float64(in) / float64(out)
	fs := max(scale, 1)
	support *= fs
	ss := 1 / fs
	first := make([]int, out)
	ks := make([][]int, out)
	for i := range out {
		center := (float64(i) + 0.5) * scale
		xmin := max(int(center-support+0.5), 0)
		xmax := min(int(center+support+0.5), in) - xmin
		w := make([]float64, xmax)
		ww := 0.0
		for j := range w {
			w[j] = filter((float64(j+xmin) - center + 0.5) * ss)
			ww += w[j]
		}
		k := make([]int, xmax)
		for j := range w {
			if ww != 0 {
				w[j] /= ww
			}
			if w[j] < 0 {
				k[j] = int(w[j]*(1<<22) - 0.5)
			} else {
				k[j] = int(w[j]*(1<<22) + 0.5)
			}
		}
		first[i], ks[i] = xmin, k
	}
	return first, ks
}

// PILFilter selects a Pillow resampling filter.
type PILFilter int

// Pillow filters supported by ResizePIL.
const (
	PILBilinear PILFilter = iota
	PILBicubic
)

// ResizePIL is Pillow 9.4's Image.resize((w, h), filter) for 8-bit images,
// bit-exact: the horizontal pass runs first and rounds to uint8, and a pass
// whose size is unchanged is skipped.
func ResizePIL(m *Image8, w, h int, filter PILFilter) *Image8 {
	checkResize(m, w, h)
	f, sup := pilBilinear, 1.0
	if filter == PILBicubic {
		f, sup = pilBicubic, 2.0
	}
	C := m.C
	cur := m
	if w != m.W {
		first, ks := pilCoeffs(m.W, w, f, sup)
		nx := NewImage8(w, m.H, C)
		for y := range m.H {
			for d := range w {
				for c := range C {
					acc := 1 << 21
					for j, k := range ks[d] {
						acc += int(cur.Pix[(y*m.W+first[d]+j)*C+c]) * k
					}
					nx.Pix[(y*w+d)*C+c] = sat8(acc >> 22)
				}
			}
		}
		cur = nx
	}
	if h != m.H {
		first, ks := pilCoeffs(m.H, h, f, sup)
		ny := NewImage8(cur.W, h, C)
		for d := range h {
			for j := range cur.W * C {
				acc := 1 << 21
				for i, k := range ks[d] {
					acc += int(cur.Pix[(first[d]+i)*cur.W*C+j]) * k
				}
				ny.Pix[d*cur.W*C+j] = sat8(acc >> 22)
			}
		}
		cur = ny
	}
	if cur == m {
		cur = m.Clone()
	}
	return cur
}

// GaussianKernel8 returns OpenCV's bit-exact 8-bit Gaussian kernel for an odd
// ksize and sigma 0 (σ = 0.15·ksize + 0.35): weights in 1/256 that sum to 256.
func GaussianKernel8(ksize int) []int {
	switch ksize {
	case 1:
		return []int{256}
	case 3:
		return []int{64, 128, 64}
	case 5:
		return []int{16, 64, 96, 64, 16}
	case 7:
		return []int{8, 28, 56, 72, 56, 28, 8}
	}
	if ksize < 1 || ksize%2 == 0 {
		panic(fmt.Sprintf("media: Gaussian ksize %d is not odd and positive", ksize))
	}
	sigma := math.FMA(float64(ksize), 0.15, 0.35)
	scale2 := -0.125 / (sigma * sigma)
	n2 := (ksize - 1) / 2
	vals := make([]float64, n2)
	sum := 0.0
	for i, x := 0, 1-ksize; i < n2; i, x = i+1, x+2 {
		vals[i] = math.Exp(float64(x*x) * scale2)
		sum += vals[i]
	}
	sum = sum*2 + 1
	mul := 1 / sum
	k := make([]int, ksize)
	err, tot := 0.0, 0
	for i := range n2 {
		adj := vals[i]*mul*256 + err
		v := roundEven(adj)
		err = adj - float64(v)
		k[i], k[ksize-1-i] = v, v
		tot += 2 * v
	}
	k[n2] = 256 - tot
	return k
}

// reflect101 maps i into [0, n) with OpenCV's BORDER_REFLECT_101.
func reflect101(i, n int) int {
	if n == 1 {
		return 0
	}
	for i < 0 || i >= n {
		if i < 0 {
			i = -i
		}
		if i >= n {
			i = 2*n - 2 - i
		}
	}
	return i
}

// GaussianBlur is cv2.GaussianBlur(m, (ksize, ksize), 0) for 8-bit images,
// bit-exact with OpenCV's fixed-point path (BORDER_REFLECT_101).
func GaussianBlur(m *Image8, ksize int) *Image8 {
	k := GaussianKernel8(ksize)
	r := ksize / 2
	C := m.C
	tmp := make([]int, len(m.Pix))
	for y := range m.H {
		for x := range m.W {
			for c := range C {
				acc := 0
				for j, kj := range k {
					acc += kj * int(m.Pix[(y*m.W+reflect101(x+j-r, m.W))*C+c])
				}
				tmp[(y*m.W+x)*C+c] = acc
			}
		}
	}
	out := NewImage8(m.W, m.H, C)
	for y := range m.H {
		for i := range m.W * C {
			acc := 0
			for j, kj := range k {
				acc += kj * tmp[reflect101(y+j-r, m.H)*m.W*C+i]
			}
			out.Pix[y*m.W*C+i] = sat8((acc + 1<<15) >> 16)
		}
	}
	return out
}

// Morph applies cv2.dilate (dilate true) or cv2.erode to the single-channel
// image m with a kh×kw structuring element (non-zero entries count) anchored
// at (ay, ax): samples outside m are ignored, and the kernel is not
// reflected.
func Morph(m *Image8, kernel []uint8, kh, kw, ay, ax int, dilate bool) *Image8 {
	// The element is split into horizontal runs of ones; a run of length L
	// at kernel row i is one lookup in a table of windowed extrema of
	// length L, built by doubling (a window of L is two overlapping windows
	// of the largest power of two ≤ L). Rows are padded with the identity
	// so that samples outside m are ignored, as OpenCV's default border.
	ident := uint8(255)
	pick := func(a, b uint8) uint8 { return min(a, b) }
	if dilate {
		ident = 0
		pick = func(a, b uint8) uint8 { return max(a, b) }
	}
	type run struct{ row, col, n int }
	var runs []run
	for i := range kh {
		for j := 0; j < kw; {
			if kernel[i*kw+j] == 0 {
				j++
				continue
			}
			j0 := j
			for j < kw && kernel[i*kw+j] != 0 {
				j++
			}
			runs = append(runs, run{i, j0, j - j0})
		}
	}
	pw := m.W + kw // padded row: ax identity samples, the row, then the rest
	pow := map[int][]uint8{1: make([]uint8, m.H*pw)}
	for y := range m.H {
		row := pow[1][y*pw : (y+1)*pw]
		for x := range row {
			row[x] = ident
		}
		copy(row[ax:], m.Pix[y*m.W:(y+1)*m.W])
	}
	for p := 1; 2*p <= kw; p *= 2 {
		src, dst := pow[p], make([]uint8, m.H*pw)
		for i := range dst {
			dst[i] = ident
		}
		for y := range m.H {
			s, d := src[y*pw:(y+1)*pw], dst[y*pw:(y+1)*pw]
			for x := 0; x+p < pw; x++ {
				d[x] = pick(s[x], s[x+p])
			}
		}
		pow[2*p] = dst
	}
	table := map[int][]uint8{}
	for _, r := range runs {
		if _, ok := table[r.n]; ok {
			continue
		}
		p := 1
		for 2*p <= r.n {
			p *= 2
		}
		src := pow[p]
		if p == r.n {
			table[r.n] = src
			continue
		}
		dst := make([]uint8, m.H*pw)
		for i := range dst {
			dst[i] = ident
		}
		for y := range m.H {
			s, d := src[y*pw:(y+1)*pw], dst[y*pw:(y+1)*pw]
			for x := 0; x+r.n-p < pw; x++ {
				d[x] = pick(s[x], s[x+r.n-p])
			}
		}
		table[r.n] = dst
	}
	out := NewImage8(m.W, m.H, 1)
	for y := range m.H {
		o := out.Pix[y*m.W : (y+1)*m.W]
		for x := range o {
			o[x] = ident
		}
		for _, r := range runs {
			sy := y + r.row - ay
			if sy < 0 || sy >= m.H {
				continue
			}
			// Output x reads padded columns x+col … x+col+n−1.
			t := table[r.n][sy*pw+r.col : sy*pw+r.col+m.W]
			for x, v := range t {
				o[x] = pick(o[x], v)
			}
		}
	}
	return out
}
