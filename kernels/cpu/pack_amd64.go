//go:build amd64 && !purego

package cpu

// Implemented in pack_amd64.s; they need AVX-512F (masked moves, scatters).
// None keeps a pointer past the call, so go:noescape lets callers keep idx,
// the convRun table and convPackArgs on the stack (without it every sliver
// packed heap-allocated its 2.5 KB run table: ~94 MB per VAE decode).

//go:noescape
func packRowsAVX512(dst, src *float32, ld, cols, width, kc int)

//go:noescape
func packScatterAVX512(dst, src *float32, ld, n, width, kc int, idx *int32)

//go:noescape
func packConvAVX512(a *convPackArgs)

// packRows is packRowsGo in assembly; it reports false if kern has no
// SIMD packer.
func packRows(kern *microKernel, d, src []float32, ld, n, width, kc int) bool {
	if !kern.avx512 || width > 32 {
		return false
	}
	_, _ = d[kc*width-1], src[(kc-1)*ld+n-1]
	packRowsAVX512(&d[0], &src[0], ld, n, width, kc)
	return true
}

// packGather is packGatherGo in assembly; it reports false if kern has no
// SIMD packer.
func packGather(kern *microKernel, d, src []float32, ld, n, width, kc int) bool {
	if !kern.avx512 || width > 32 || n <= 0 {
		return false
	}
	_, _ = d[kc*width-1], src[(n-1)*ld+kc-1]
	if n < width {
		clear(d[:kc*width])
	}
	var idx [16]int32
	for i := range idx {
		idx[i] = int32(i * width)
	}
	packScatterAVX512(&d[0], &src[0], ld, n, width, kc, &idx[0])
	return true
}

// packConv runs packConvAVX512; the caller has checked that every tap it
// reads lies inside x.
func packConv(a *convPackArgs) { packConvAVX512(a) }
