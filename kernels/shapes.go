package kernels

import (
	"fmt"
	"slices"
)

// The shape rules of ops whose arguments every backend checks the same
// way. Each returns what the backend needs to lay out the work, or an
// error naming the argument that breaks the op's contract; a backend
// panics with it, prefixed with its name and the op's (see [Backend]).

// ConcatShapes checks [Ops.Concat]'s arguments and returns axis made
// non-negative and outer, the product of dst's dimensions before it.
func ConcatShapes(dst *Tensor, axis int, srcs []*Tensor) (ax, outer int, err error) {
	if dst == nil {
		return 0, 0, fmt.Errorf("dst is nil")
	}
	r := dst.Rank()
	if axis < 0 {
		axis += r
	}
	if axis < 0 || axis >= r || len(srcs) == 0 {
		return 0, 0, fmt.Errorf("axis %d of %v with %d sources", axis, dst, len(srcs))
	}
	total := 0
	for _, s := range srcs {
		if s == nil {
			return 0, 0, fmt.Errorf("nil source")
		}
		ok := s.Rank() == r
		for i := 0; ok && i < r; i++ {
			ok = i == axis || s.Dim(i) == dst.Dim(i)
		}
		if !ok {
			return 0, 0, fmt.Errorf("source %v does not fit %v along axis %d", s, dst, axis)
		}
		total += s.Dim(axis)
	}
	if total != dst.Dim(axis) {
		return 0, 0, fmt.Errorf("sources sum to %d along axis %d, dst %v", total, axis, dst)
	}
	outer = 1
	for i := range axis {
		outer *= dst.Dim(i)
	}
	return axis, outer, nil
}

// LinearShapes checks [Ops.Linear]'s arguments and returns the GEMM's
// sizes: m rows of x, n outputs, k inputs.
func LinearShapes(dst, x, w, bias *Tensor) (m, n, k int, err error) {
	switch {
	case x == nil || w == nil:
		return 0, 0, 0, fmt.Errorf("nil input")
	case w.Rank() != 2:
		return 0, 0, 0, fmt.Errorf("w is %v, want rank 2", w)
	}
	n, k = w.Dim(0), w.Dim(1)
	if x.Dim(-1) != k {
		return 0, 0, 0, fmt.Errorf("x %v and w %v disagree on K", x, w)
	}
	shape := x.Shape()
	shape[len(shape)-1] = n
	if err := wantShape("dst", dst, shape...); err != nil {
		return 0, 0, 0, err
	}
	if bias != nil {
		if err := wantShape("bias", bias, n); err != nil {
			return 0, 0, 0, err
		}
	}
	return x.Len() / k, n, k, nil
}

// LayerNormShapes checks [Ops.LayerNorm]'s arguments and returns the
// number of rows and their length d (x's last dimension).
func LayerNormShapes(dst, x, weight, bias *Tensor) (rows, d int, err error) {
	if x == nil || x.Rank() < 1 {
		return 0, 0, fmt.Errorf("x is %v, want rank ≥ 1", x)
	}
	if err := wantShape("dst", dst, x.Shape()...); err != nil {
		return 0, 0, err
	}
	d = x.Dim(-1)
	for _, a := range []struct {
		name string
		t    *Tensor
	}{{"weight", weight}, {"bias", bias}} {
		if a.t != nil {
			if err := wantShape(a.name, a.t, d); err != nil {
				return 0, 0, err
			}
		}
	}
	if d == 0 {
		return 0, 0, nil
	}
	return x.Len() / d, d, nil
}

// wantShape is nil when t has exactly shape.
func wantShape(name string, t *Tensor, shape ...int) error {
	if t == nil {
		return fmt.Errorf("%s is nil", name)
	}
	if !slices.Equal(t.Shape(), shape) {
		return fmt.Errorf("%s is %v, want shape %v", name, t, shape)
	}
	return nil
}
