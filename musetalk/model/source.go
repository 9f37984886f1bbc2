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

// HalfTensors is an optional extension of [Tensors] for sources that can
// hand out tensors stored as IEEE half precision (safetensors F16) as
// they are, so a backend that takes half weights ([kernels.HalfWeighter])
// gets them without a float32 detour on the host.
//
// TensorF16 returns the bit patterns of the tensor called name in
// row-major order, and its shape, with ok true, when the source stores it
// as F16. ok is false, with a nil error and nothing else, when it does
// not: another stored dtype, a name the source does not hold, a file
// format that cannot serve the bits. The caller then reads the tensor with
// Tensor, which converts it or reports the missing name. err is for an F16
// tensor that could not be read.
//
// bits may view the source's file mapping: the caller must not modify it,
// nor keep it past the source's Close.
type HalfTensors interface {
	Tensors
	TensorF16(name string) (bits []uint16, shape []int, ok bool, err error)
}

// tensorF16 is src.TensorF16 for a source that may not implement
// [HalfTensors] (then ok is false).
func tensorF16(src Tensors, name string) (bits []uint16, shape []int, ok bool, err error) {
	h, is := src.(HalfTensors)
	if !is {
		return nil, nil, false, nil
	}
	return h.TensorF16(name)
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

// TensorF16 implements [HalfTensors] when src does (ok is false otherwise).
func (p prefixed) TensorF16(name string) ([]uint16, []int, bool, error) {
	return tensorF16(p.src, p.prefix+name)
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
// err once, with [weightLoader.finish].
//
// F16 tensors go to a backend that takes half weights
// ([kernels.HalfWeighter]) as they are stored, when the source can serve
// them so ([HalfTensors]); every other tensor is read as float32 and
// passed to Weight.
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
	if hw, ok := l.b.(kernels.HalfWeighter); ok {
		bits, got, ok, err := tensorF16(l.src, name)
		if err != nil {
			l.err = fmt.Errorf("%s: weight %s: %w", l.model, name, err)
			return nil
		}
		if ok {
			if !slices.Equal(got, shape) {
				l.err = fmt.Errorf("%s: weight %s has shape %v, want %v", l.model, name, got, shape)
				return nil
			}
			if len(bits) != shapeElems(shape) {
				l.err = fmt.Errorf("%s: weight %s has %d elements for shape %v", l.model, name, len(bits), shape)
				return nil
			}
			t := hw.WeightF16(bits, shape...)
			l.loaded = append(l.loaded, t)
			return t
		}
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

// finish ends loading: it drops the source, so nothing the source holds
// (a file mapping, float32 copies of the weights) stays reachable through
// the model, and returns the first failure, after freeing every weight
// loaded (nil when all loaded). On a backend that copies weights (a
// device) the model then holds no host copy of them; the CPU backend's
// weights are the slices the source returned, which it keeps.
func (l *weightLoader) finish() error {
	l.src = nil
	if l.err != nil {
		l.free()
	}
	return l.err
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
