//go:build !amd64 || purego

package cpu

// The SIMD Winograd transforms exist only for AVX-512; these are never
// called here (no kernel has avx512 set).

func winoDeinterleave(dst, src []float32, colMasks []uint64) {
	panic("cpu: winoDeinterleave needs AVX-512")
}

func winoInput16(dst, plane []float32, parts []winoInPart, qs, vstride int, tmp []float32) {
	panic("cpu: winoInput16 needs AVX-512")
}

func winoOutput16(dst, m []float32, parts []winoOutPart, mstride, w int, bias float32, tmp []float32) {
	panic("cpu: winoOutput16 needs AVX-512")
}
