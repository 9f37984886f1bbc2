package model

import (
	"fmt"
	"slices"

	"github.com/avatargen/musetalk/kernels"
)

// Tensors is a source of named float32 weights: a safetensors file, a
// converted checkpoint, a map in a test. Models are built from one and never
// open files themselves.
//
// Tensor returns the elements of the tensor called name in row-major order
// and its shape. A source converts other stored dtypes (F16, BF16, F64) to
// float32. A missing name is an error that names it.
type Tensors interface {
	Tensor(name string) (data []float32, shape []int, err error)
}

// TensorSpec is one weight a model expects: its name and shape. A model's
// spec (e.g. [WhisperEncoderSpec]) lists every tensor its constructor reads,
// in a stable order; `musetalk weights convert` checks checkpoints against it.
type TensorSpec struct {
	Name  string
	Shape []int
}

// WithPrefix returns a source that reads name as prefix+name from src, e.g.
// WithPrefix(src, "model.") for a Hugging Face WhisperForConditionalGeneration
// checkpoint, whose encoder tensors are "model.encoder.*".
func WithPrefix(src Tensors, prefix string) Tensors {
	return prefixed{src: src, prefix: prefix}
}

type prefixed struct {
	src    Tensors
	prefix string
}

func (p prefixed) Tensor(name string) ([]float32, []int, error) {
	return p.src.Tensor(p.prefix + name)
}

// SpecParams returns the number of parameters (elements) a spec lists.
func SpecParams(spec []TensorSpec) int64 {
	var n int64
	for _, s := range spec {
		e := int64(1)
		for _, d := range s.Shape {
			e *= int64(d)
		}
		n += e
	}
	return n
}

// weightLoader reads weights from a source into a backend, checking each
// shape against the spec the model declares. The first failure is kept and
// later calls return nil, so a constructor can read every weight and check
// err once.
type weightLoader struct {
	b      kernels.Backend
	src    Tensors
	model  string // for messages: "whisper encoder"
	err    error
	loaded []*kernels.Tensor
}

// load reads name, checks its shape and returns it as a backend weight.
func (l *weightLoader) load(name string, shape ...int) *kernels.Tensor {
	if l.err != nil {
		return nil
	}
	data, got, err := l.src.Tensor(name)
	if err != nil {
		l.err = fmt.Errorf("%s: weight %s: %w", l.model, name, err)
		return nil
	}
	if !slices.Equal(got, shape) {
		l.err = fmt.Errorf("%s: weight %s has shape %v, want %v", l.model, name, got, shape)
		return nil
	}
	if len(data) != shapeElems(shape) {
		l.err = fmt.Errorf("%s: weight %s has %d elements for shape %v", l.model, name, len(data), shape)
		return nil
	}
	t := l.b.Weight(data, shape...)
	l.loaded = append(l.loaded, t)
	return t
}

// free releases every weight loaded so far (after a failed construction, or
// from a model's Close).
func (l *weightLoader) free() {
	for _, t := range l.loaded {
		l.b.Free(t)
	}
	l.loaded = nil
}

func shapeElems(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
