//go:build !amd64 || purego

package cpu

// packRows reports false: there is no SIMD packer here.
func packRows(*microKernel, []float32, []float32, int, int, int, int) bool { return false }

// packGather reports false: there is no SIMD packer here.
func packGather(*microKernel, []float32, []float32, int, int, int, int) bool { return false }

// packConv is never called here: no kernel sets avx512.
func packConv(*convPackArgs) { panic("cpu: no SIMD conv packer") }
