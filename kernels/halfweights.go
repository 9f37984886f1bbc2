package kernels

import "github.com/avatargen/musetalk/internal/half"

// HalfWeighter is an optional extension of [Memory] for backends that take
// model parameters stored in IEEE 754 half precision without a float32
// detour on the host. A weight loader probes for it with a type assertion
// and, where the weights file stores a tensor as F16, hands over its bits
// as they are.
//
// WeightF16 returns an immutable tensor of the given shape holding the
// half-precision values whose bit patterns bits holds, in row-major order
// (len(bits) must equal the product of shape; a mismatch or an invalid
// shape panics, as [Memory.Weight] does). The tensor is a weight in every
// respect: it behaves exactly as Weight(data, shape...) would with data[i]
// the exact float32 value of bits[i] (every half value is a float32), and
// [Memory.Free] releases it.
//
// A backend that stores fp16 copies the bits as they are (no rounding:
// they are already half values); one that stores fp32 widens them. Either
// way the backend keeps no reference to bits: the caller may reuse or
// release bits (unmap the file it views) as soon as WeightF16 returns, so
// an implementation must copy (or finish the transfer of) bits before it
// returns. bits is only read.
//
// Host backends that compute on float32 slices in place (package
// kernels/cpu) do not implement HalfWeighter: the loader then converts
// and calls Weight, whose slice they keep.
type HalfWeighter interface {
	WeightF16(bits []uint16, shape ...int) *Tensor
}

// PrecisionReporter is an optional extension of [Backend] for backends
// whose storage precision is a setting (the CUDA backend's
// Options.Precision). See [PrecisionOf].
type PrecisionReporter interface {
	// Precision is how the backend stores tensor elements.
	Precision() Precision
}

// PrecisionOf returns how b stores tensor elements: b.Precision() when b
// implements [PrecisionReporter], else [F32] (the CPU backend, and any
// backend that stores float32 only).
func PrecisionOf(b Backend) Precision {
	if p, ok := b.(PrecisionReporter); ok {
		return p.Precision()
	}
	return F32
}

// WeightFromHalf is [HalfWeighter.WeightF16] for a backend that stores
// fp32: it widens bits on the host (exactly) into a new slice and returns
// m.Weight of it. bits is not retained.
func WeightFromHalf(m Memory, bits []uint16, shape ...int) *Tensor {
	data := make([]float32, len(bits))
	half.ToFloat32s(data, bits)
	return m.Weight(data, shape...)
}
