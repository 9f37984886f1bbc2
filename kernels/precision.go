package kernels

import "fmt"

// Precision is how a backend stores tensor elements. Arithmetic that
// accumulates (GEMM, convolution, reductions, softmax, normalisation
// statistics) runs in fp32 in either case; F16 halves memory and traffic
// and lets GEMMs use tensor cores, at the cost of rounding every stored
// element to 11 significant bits.
type Precision int

const (
	// F32 stores float32 elements. It is the CPU backend's only precision
	// and the reference the golden files are checked in.
	F32 Precision = iota
	// F16 stores IEEE half-precision elements (CUDA backend only).
	F16
)

// String returns "fp32" or "fp16".
func (p Precision) String() string {
	switch p {
	case F32:
		return "fp32"
	case F16:
		return "fp16"
	}
	return fmt.Sprintf("Precision(%d)", int(p))
}

// ParsePrecision reads "fp32" or "fp16" (as --precision takes them).
func ParsePrecision(s string) (Precision, error) {
	switch s {
	case "fp32":
		return F32, nil
	case "fp16":
		return F16, nil
	}
	return 0, fmt.Errorf("unknown precision %q: want fp16 or fp32", s)
}

// ElemBytes is the size of one stored element.
func (p Precision) ElemBytes() int {
	if p == F16 {
		return 2
	}
	return 4
}
