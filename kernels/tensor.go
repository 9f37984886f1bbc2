package kernels

import (
	"fmt"
	"slices"
)

// Tensor is a dense, row-major (C order) float32 tensor: NCHW for images,
// [batch, tokens, channels] for sequences. A Tensor is a shape plus a window
// onto storage; views made by [Tensor.Reshape] and [Tensor.Slice] share the
// storage and cost no copy.
//
// Host tensors (the CPU backend, [New], [FromSlice]) hold their elements in
// a []float32 returned by [Tensor.Data]. Device tensors ([NewDevice]) hold
// an opaque handle that only their backend interprets.
//
// A Tensor value is immutable apart from its elements; it is safe to share
// between goroutines as long as nobody writes the elements concurrently.
type Tensor struct {
	shape []int
	data  []float32 // host elements of exactly this view; nil for device tensors
	dev   any       // device storage handle; nil for host tensors
	off   int       // element offset of this view into dev
}

// New returns a zeroed host tensor of the given shape.
// It panics if a dimension is not positive.
func New(shape ...int) *Tensor {
	n := shapeLen(shape)
	return &Tensor{shape: slices.Clone(shape), data: make([]float32, n)}
}

// FromSlice returns a host tensor that uses data as its storage (no copy).
// It panics if len(data) does not equal the product of shape.
func FromSlice(data []float32, shape ...int) *Tensor {
	n := shapeLen(shape)
	if len(data) != n {
		panic(fmt.Sprintf("kernels: FromSlice: %d elements for shape %v", len(data), shape))
	}
	return &Tensor{shape: slices.Clone(shape), data: data[:n:n]}
}

// NewDevice returns a device tensor of the given shape whose elements start
// at element offset off of the storage that handle dev names. Backends other
// than the CPU one use it to wrap their own memory.
func NewDevice(dev any, off int, shape ...int) *Tensor {
	shapeLen(shape)
	if dev == nil {
		panic("kernels: NewDevice: nil handle")
	}
	return &Tensor{shape: slices.Clone(shape), dev: dev, off: off}
}

// shapeLen returns the number of elements of shape and panics if the shape
// is empty or has a non-positive dimension.
func shapeLen(shape []int) int {
	if len(shape) == 0 {
		panic("kernels: empty shape")
	}
	n := 1
	for _, d := range shape {
		if d <= 0 {
			panic(fmt.Sprintf("kernels: bad shape %v", shape))
		}
		n *= d
	}
	return n
}

// Data returns the host elements of t (len == t.Len()), or nil if t is a
// device tensor. Writes through the slice change the tensor.
func (t *Tensor) Data() []float32 { return t.data }

// Device returns the device storage handle and element offset of t; the
// handle is nil for host tensors.
func (t *Tensor) Device() (dev any, off int) { return t.dev, t.off }

// Dim returns the size of dimension i; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.shape)
	}
	return t.shape[i]
}

// IsHost reports whether t's elements live in host memory.
func (t *Tensor) IsHost() bool { return t.dev == nil }

// Len returns the number of elements.
func (t *Tensor) Len() int {
	n := 1
	for _, d := range t.shape {
		n *= d
	}
	return n
}

// Rank returns the number of dimensions.
func (t *Tensor) Rank() int { return len(t.shape) }

// Reshape returns a view of t with a new shape of the same length. One
// dimension may be -1 and is then inferred. It panics if the lengths differ.
func (t *Tensor) Reshape(shape ...int) *Tensor {
	shape = slices.Clone(shape)
	infer, known := -1, 1
	for i, d := range shape {
		switch {
		case d == -1 && infer < 0:
			infer = i
		case d > 0:
			known *= d
		default:
			panic(fmt.Sprintf("kernels: Reshape %v to %v", t.shape, shape))
		}
	}
	n := t.Len()
	if infer >= 0 {
		if known == 0 || n%known != 0 {
			panic(fmt.Sprintf("kernels: Reshape %v to %v", t.shape, shape))
		}
		shape[infer] = n / known
		known = n
	}
	if known != n {
		panic(fmt.Sprintf("kernels: Reshape %v to %v", t.shape, shape))
	}
	return &Tensor{shape: shape, data: t.data, dev: t.dev, off: t.off}
}

// SameShape reports whether t and u have identical shapes.
func (t *Tensor) SameShape(u *Tensor) bool { return slices.Equal(t.shape, u.shape) }

// Shape returns a copy of t's dimensions.
func (t *Tensor) Shape() []int { return slices.Clone(t.shape) }

// Slice returns the view t[start:end] along dimension 0 (a batch range).
// It panics if the range is empty or out of bounds.
func (t *Tensor) Slice(start, end int) *Tensor {
	if start < 0 || end > t.shape[0] || start >= end {
		panic(fmt.Sprintf("kernels: Slice [%d:%d] of %v", start, end, t.shape))
	}
	shape := slices.Clone(t.shape)
	shape[0] = end - start
	inner := t.Len() / t.shape[0]
	v := &Tensor{shape: shape, dev: t.dev, off: t.off + start*inner}
	if t.data != nil {
		v.data = t.data[start*inner : end*inner : end*inner]
	}
	return v
}

// String formats the shape and where the elements live, e.g.
// "Tensor[2 320 32 32]" or "Tensor[2 320 32 32]@device".
func (t *Tensor) String() string {
	if t.dev != nil {
		return fmt.Sprintf("Tensor%v@device", t.shape)
	}
	return fmt.Sprintf("Tensor%v", t.shape)
}
