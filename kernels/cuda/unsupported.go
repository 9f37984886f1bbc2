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

// UpsampleNearest panics: not implemented yet.
func (b *Backend) UpsampleNearest(dst, x *kernels.Tensor) {
	panic(unsupported(kernels.OpUpsampleNearest))
}
