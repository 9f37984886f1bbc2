package cuda

import (
	"fmt"

	"github.com/avatargen/musetalk/kernels"
)

// The ops below have no kernels yet: each panics, and Supports reports
// false for it.

func unsupported(op kernels.Op) string {
	return fmt.Sprintf("cuda: %v is not implemented by this backend yet (Supports reports false)", op)
}

// Attention panics: not implemented yet.
func (b *Backend) Attention(dst, q, k, v *kernels.Tensor, p kernels.AttentionParams) {
	panic(unsupported(kernels.OpAttention))
}

// AvgPool2D panics: not implemented yet.
func (b *Backend) AvgPool2D(dst, x *kernels.Tensor, p kernels.Pool2DParams) {
	panic(unsupported(kernels.OpAvgPool2D))
}

// Concat panics: not implemented yet.
func (b *Backend) Concat(dst *kernels.Tensor, axis int, srcs ...*kernels.Tensor) {
	panic(unsupported(kernels.OpConcat))
}

// GEGLU panics: not implemented yet.
func (b *Backend) GEGLU(dst, x *kernels.Tensor) { panic(unsupported(kernels.OpGEGLU)) }

// MaxPool2D panics: not implemented yet.
func (b *Backend) MaxPool2D(dst, x *kernels.Tensor, p kernels.Pool2DParams) {
	panic(unsupported(kernels.OpMaxPool2D))
}

// Permute panics: not implemented yet.
func (b *Backend) Permute(dst, x *kernels.Tensor, perm ...int) { panic(unsupported(kernels.OpPermute)) }

// UpsampleBilinear panics: not implemented yet.
func (b *Backend) UpsampleBilinear(dst, x *kernels.Tensor, alignCorners bool) {
	panic(unsupported(kernels.OpUpsampleBilinear))
}

// UpsampleNearest panics: not implemented yet.
func (b *Backend) UpsampleNearest(dst, x *kernels.Tensor) {
	panic(unsupported(kernels.OpUpsampleNearest))
}
