// Package half converts between float32 and IEEE 754 half precision
// (binary16), held as its bit pattern in a uint16. It is shared by the
// weights readers (musetalk/model/weights) and the kernels' host helpers,
// which must not import each other.
package half

import "math"

// ToFloat32 converts an IEEE 754 half-precision value exactly, subnormals,
// infinities and NaN payloads included (every half is a float32).
func ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: mant·2^-24. Normalise so the leading one becomes implicit.
	e := uint32(113) // biased float32 exponent of 2^-14
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
}

// FromFloat32 rounds f to the nearest half-precision value, ties to even.
// Finite values beyond the half range become infinities; NaNs stay NaNs
// (keeping the top payload bits, made quiet where they would vanish).
func FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant == 0 {
			return sign | 0x7c00
		}
		m := uint16(mant >> 13)
		if m == 0 {
			m = 0x200
		}
		return sign | 0x7c00 | m
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		rem := mant & (1<<shift - 1)
		m := mant >> shift
		if rem > half || (rem == half && m&1 == 1) {
			m++
		}
		return sign | uint16(m)
	}
	h := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // a carry into the exponent is correct, up to infinity
	}
	return sign | uint16(h)
}

// ToFloat32s converts src into dst element by element, exactly. It panics
// unless len(dst) == len(src).
func ToFloat32s(dst []float32, src []uint16) {
	if len(dst) != len(src) {
		panic("half: ToFloat32s: lengths differ")
	}
	for i, h := range src {
		dst[i] = ToFloat32(h)
	}
}

// FromFloat32s rounds src into dst element by element (see [FromFloat32]).
// It panics unless len(dst) == len(src).
func FromFloat32s(dst []uint16, src []float32) {
	if len(dst) != len(src) {
		panic("half: FromFloat32s: lengths differ")
	}
	for i, f := range src {
		dst[i] = FromFloat32(f)
	}
}
