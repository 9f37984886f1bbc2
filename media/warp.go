package media

import (
	"errors"
	"math"
)

// Affine is a 2×3 affine matrix in OpenCV's layout: (x, y) maps to
// (A[0][0]·x + A[0][1]·y + A[0][2], A[1][0]·x + A[1][1]·y + A[1][2]).
type Affine [2][3]float64

// GetAffineTransform is cv2.getAffineTransform(src, dst) for three float32
// point pairs (the dtype mmpose hands it): the affine matrix mapping each
// src point to its dst point, solved as OpenCV 4.6 solves it (the 6×6
// system of the six unknowns by Gaussian elimination with partial
// pivoting, DECOMP_LU, in float64), so the matrix is cv2's bit for bit. It
// fails when the points are collinear (the system is singular).
func GetAffineTransform(src, dst [3][2]float32) (Affine, error) {
	var a [6][6]float64
	var b [6]float64
	for i := range 3 {
		x, y := float64(src[i][0]), float64(src[i][1])
		a[2*i] = [6]float64{x, y, 1, 0, 0, 0}
		a[2*i+1] = [6]float64{0, 0, 0, x, y, 1}
		b[2*i], b[2*i+1] = float64(dst[i][0]), float64(dst[i][1])
	}
	// OpenCV's LUImpl (core/src/matrix_decomp.cpp) with eps DBL_EPSILON·100.
	const eps = 2.220446049250313e-16 * 100
	const m = 6
	for i := range m {
		k := i
		for j := i + 1; j < m; j++ {
			if math.Abs(a[j][i]) > math.Abs(a[k][i]) {
				k = j
			}
		}
		if math.Abs(a[k][i]) < eps {
			return Affine{}, errors.New("media: GetAffineTransform: the points are collinear")
		}
		if k != i {
			a[i], a[k] = a[k], a[i]
			b[i], b[k] = b[k], b[i]
		}
		d := -1 / a[i][i]
		for j := i + 1; j < m; j++ {
			alpha := a[j][i] * d
			for c := i + 1; c < m; c++ {
				a[j][c] += float64(alpha * a[i][c])
			}
			b[j] += float64(alpha * b[i])
		}
	}
	for i := m - 1; i >= 0; i-- {
		s := b[i]
		for c := i + 1; c < m; c++ {
			s -= float64(a[i][c] * b[c])
		}
		b[i] = s / a[i][i]
	}
	return Affine{{b[0], b[1], b[2]}, {b[3], b[4], b[5]}}, nil
}

// The fixed-point geometry of OpenCV's warpAffine (imgwarp.cpp): source
// coordinates in 1/1024 pixel (AB_BITS), quantised to a 1/32 pixel grid
// (INTER_BITS) that indexes the bilinear weight table.
const (
	warpABBits    = 10
	warpInterBits = 5
	warpTab       = 1 << warpInterBits
	// warpRoundDelta rounds to the nearest 1/32 pixel (AB_SCALE /
	// INTER_TAB_SIZE / 2).
	warpRoundDelta = (1 << warpABBits) / warpTab / 2
)

// WarpAffineLinear is cv2.warpAffine(m, M, (w, h),
// flags=cv2.INTER_LINEAR) for 8-bit images of any channel count, with the
// default border (BORDER_CONSTANT, value 0), bit-exact with OpenCV 4.6's
// fixed-point path (no IPP, no OpenCL): M maps source to destination
// pixels and is inverted first (in float64, as cv2 does); each destination
// pixel's source position is taken in 1/1024 pixel, rounded to a 1/32
// pixel grid, and interpolated with integer weights (32−fy)(32−fx),
// (32−fy)fx, fy(32−fx), fy·fx over 1024, rounding half up; a tap outside
// the image reads 0. An exact float bilinear warp differs from cv2's by up
// to a few grey levels.
func WarpAffineLinear(m *Image8, M Affine, w, h int) *Image8 {
	if w <= 0 || h <= 0 {
		panic("media: WarpAffineLinear to an empty image")
	}
	inv := invertAffineCV(M)
	out := NewImage8(w, h, m.C)
	const abScale = 1 << warpABBits
	adelta, bdelta := make([]int, w), make([]int, w)
	for x := range w {
		adelta[x] = cvRound(float64(inv[0][0]*float64(x)) * abScale)
		bdelta[x] = cvRound(float64(inv[1][0]*float64(x)) * abScale)
	}
	cn := m.C
	for y := range h {
		x0 := cvRound(float64(float64(inv[0][1]*float64(y))+inv[0][2])*abScale) + warpRoundDelta
		y0 := cvRound(float64(float64(inv[1][1]*float64(y))+inv[1][2])*abScale) + warpRoundDelta
		row := out.Pix[y*w*cn : (y+1)*w*cn]
		for x := range w {
			X := (x0 + adelta[x]) >> (warpABBits - warpInterBits)
			Y := (y0 + bdelta[x]) >> (warpABBits - warpInterBits)
			sx, sy := sat16(X>>warpInterBits), sat16(Y>>warpInterBits)
			fx, fy := X&(warpTab-1), Y&(warpTab-1)
			w00, w01 := (warpTab-fy)*(warpTab-fx), (warpTab-fy)*fx
			w10, w11 := fy*(warpTab-fx), fy*fx
			in0 := sy >= 0 && sy < m.H
			in1 := sy+1 >= 0 && sy+1 < m.H
			l0 := sx >= 0 && sx < m.W
			l1 := sx+1 >= 0 && sx+1 < m.W
			d := row[x*cn : (x+1)*cn]
			for c := range cn {
				s := 0
				if in0 && l0 {
					s += int(m.Pix[(sy*m.W+sx)*cn+c]) * w00
				}
				if in0 && l1 {
					s += int(m.Pix[(sy*m.W+sx+1)*cn+c]) * w01
				}
				if in1 && l0 {
					s += int(m.Pix[((sy+1)*m.W+sx)*cn+c]) * w10
				}
				if in1 && l1 {
					s += int(m.Pix[((sy+1)*m.W+sx+1)*cn+c]) * w11
				}
				d[c] = sat8((s + 1<<(2*warpInterBits-1)) >> (2 * warpInterBits))
			}
		}
	}
	return out
}

// invertAffineCV inverts M as cv::warpAffine does without
// WARP_INVERSE_MAP (a zero determinant gives a zero linear part).
func invertAffineCV(M Affine) Affine {
	d := float64(M[0][0]*M[1][1]) - float64(M[0][1]*M[1][0])
	if d != 0 {
		d = 1 / d
	}
	a11, a22 := M[1][1]*d, M[0][0]*d
	m01, m10 := M[0][1]*-d, M[1][0]*-d
	b1 := float64(-a11*M[0][2]) - float64(m01*M[1][2])
	b2 := float64(-m10*M[0][2]) - float64(a22*M[1][2])
	return Affine{{a11, m01, b1}, {m10, a22, b2}}
}

// cvRound is OpenCV's cvRound (saturate_cast<int> of a double) on x86-64,
// cvtsd2si: round half to even; NaN and values outside int32 give the
// instruction's "integer indefinite", math.MinInt32.
func cvRound(v float64) int {
	r := math.RoundToEven(v)
	if !(r >= math.MinInt32 && r <= math.MaxInt32) {
		return math.MinInt32
	}
	return int(r)
}

// sat16 is saturate_cast<short>.
func sat16(v int) int { return min(max(v, math.MinInt16), math.MaxInt16) }
