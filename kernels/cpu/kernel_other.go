//go:build !amd64 || purego

package cpu

// kernelFor returns the portable micro-kernel, the only one here.
func kernelFor(ISA) microKernel { return goKernel() }

// runPeak does nothing: no SIMD peak loop exists here.
func runPeak(ISA, int) {}
