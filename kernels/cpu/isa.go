package cpu

import "fmt"

// ISA selects the instruction set of the GEMM and convolution micro-kernels.
type ISA uint8

// The code paths. ISAAuto picks the best one the CPU and OS support.
const (
	ISAAuto   ISA = iota
	ISAGo         // portable pure Go; available everywhere
	ISAAVX2       // AVX2 + FMA, 6×16 micro-kernel
	ISAAVX512     // AVX-512F, 12×32 micro-kernel
)

// String returns the ISA's lower-case name.
func (i ISA) String() string {
	switch i {
	case ISAAuto:
		return "auto"
	case ISAGo:
		return "go"
	case ISAAVX2:
		return "avx2"
	case ISAAVX512:
		return "avx512"
	}
	return fmt.Sprintf("ISA(%d)", uint8(i))
}

// Available reports whether this machine can run i.
func (i ISA) Available() bool {
	switch i {
	case ISAAuto, ISAGo:
		return true
	case ISAAVX2:
		return hostFeatures.avx2
	case ISAAVX512:
		return hostFeatures.avx512
	}
	return false
}

// BestISA returns the fastest ISA this machine supports.
func BestISA() ISA {
	switch {
	case hostFeatures.avx512:
		return ISAAVX512
	case hostFeatures.avx2:
		return ISAAVX2
	}
	return ISAGo
}

// features is what the CPU and OS support, detected once at start-up.
type features struct {
	avx2   bool // AVX2 and FMA with OS-enabled YMM state
	avx512 bool // AVX-512F with OS-enabled ZMM state
}
