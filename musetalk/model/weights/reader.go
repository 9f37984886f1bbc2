package weights

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// Errors that the functions of this package wrap; test with [errors.Is].
var (
	// ErrFormat marks a file that is not what it claims to be: a corrupt or
	// truncated header, offsets out of range, a malformed pickle.
	ErrFormat = errors.New("malformed weights file")
	// ErrNotFound marks a tensor name that the file does not hold.
	ErrNotFound = errors.New("tensor not found")
	// ErrUnsupported marks a valid file using a feature this package does not
	// handle, such as a TorchScript archive or a float8 tensor.
	ErrUnsupported = errors.New("unsupported")
)

// TensorInfo describes one stored tensor. A 0-d tensor has an empty Shape.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int
}

// NumElements returns the product of the shape (1 for a 0-d tensor).
func (t TensorInfo) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Tensor is one tensor read as float32, in row-major (C) order.
type Tensor struct {
	Name string
	// DType is the type the tensor is stored as, before conversion.
	DType DType
	Shape []int
	Data  []float32
}

// Reader is a read-only set of named tensors, read on demand.
//
// Implementations are safe for concurrent use by multiple goroutines, except
// that Close must not run concurrently with anything else. Errors for a
// missing name wrap [ErrNotFound]; other read errors name the file and the
// tensor.
type Reader interface {
	// Tensors lists every tensor in a stable order: file order for
	// safetensors, state-dict order for PyTorch checkpoints.
	Tensors() []TensorInfo
	// Info returns the description of the named tensor.
	Info(name string) (TensorInfo, bool)
	// ReadFloat32 reads the named tensor into a new slice, converting any
	// floating or integer type to float32.
	ReadFloat32(name string) (*Tensor, error)
	// ReadFloat32Into is ReadFloat32 into dst, whose length must equal the
	// number of elements.
	ReadFloat32Into(name string, dst []float32) error
	// ReadInt64 reads a tensor of an integer type (or BOOL) into a new slice.
	ReadInt64(name string) ([]int64, error)
	// Close releases the file. Tensors read earlier stay valid.
	Close() error
}

// Format is the container format of a weights file.
type Format string

// The file formats [Open] recognises.
const (
	FormatSafetensors   Format = "safetensors"
	FormatPyTorchZip    Format = "pytorch-zip"
	FormatPyTorchLegacy Format = "pytorch-legacy"
)

// DetectFormat sniffs the first bytes of the file at path. It does not
// validate the whole file; opening it does.
func DetectFormat(path string) (Format, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("opening weights file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("opening weights file: %w", err)
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("%s: reading header: %w", path, err)
	}
	return sniffFormat(path, head[:n], st.Size())
}

func sniffFormat(path string, head []byte, size int64) (Format, error) {
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		return FormatPyTorchZip, nil
	case len(head) >= 262 && bytes.Equal(head[257:262], []byte("ustar")):
		return "", fmt.Errorf("%s: tar-based PyTorch checkpoint (PyTorch < 0.4): %w; re-save it with a newer PyTorch", path, ErrUnsupported)
	case len(head) >= 9 && head[8] == '{' && binary.LittleEndian.Uint64(head) <= uint64(size-8):
		return FormatSafetensors, nil
	case len(head) >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5,
		len(head) >= 1 && head[0] == 'L': // protocol 0/1 pickle of the magic number as a LONG
		return FormatPyTorchLegacy, nil
	}
	return "", fmt.Errorf("%s: not a safetensors file, PyTorch zip checkpoint or legacy PyTorch checkpoint: %w", path, ErrFormat)
}

// Open opens a weights file of any supported [Format]: safetensors, or a
// PyTorch checkpoint holding a state dict (see [OpenPyTorch], whose default
// options it uses).
func Open(path string) (Reader, error) {
	format, err := DetectFormat(path)
	if err != nil {
		return nil, err
	}
	if format == FormatSafetensors {
		return OpenSafetensors(path)
	}
	return OpenPyTorch(path, PyTorchOptions{})
}

// infoIndex keeps tensor descriptions in order with a name index.
type infoIndex struct {
	infos []TensorInfo
	index map[string]int
}

func (x *infoIndex) add(info TensorInfo) {
	if x.index == nil {
		x.index = make(map[string]int)
	}
	x.index[info.Name] = len(x.infos)
	x.infos = append(x.infos, info)
}

// list returns copies, so callers cannot change the index.
func (x *infoIndex) list() []TensorInfo {
	out := make([]TensorInfo, len(x.infos))
	for i, t := range x.infos {
		out[i] = TensorInfo{Name: t.Name, DType: t.DType, Shape: slices.Clone(t.Shape)}
	}
	return out
}

func (x *infoIndex) lookup(name string) (TensorInfo, int, bool) {
	i, ok := x.index[name]
	if !ok {
		return TensorInfo{}, -1, false
	}
	t := x.infos[i]
	return TensorInfo{Name: t.Name, DType: t.DType, Shape: slices.Clone(t.Shape)}, i, true
}

// readFloat32 implements ReadFloat32 on top of ReadFloat32Into.
func readFloat32(r Reader, name string) (*Tensor, error) {
	info, ok := r.Info(name)
	if !ok {
		// Let ReadFloat32Into produce the implementation's error.
		return nil, r.ReadFloat32Into(name, nil)
	}
	t := &Tensor{Name: name, DType: info.DType, Shape: info.Shape, Data: make([]float32, info.NumElements())}
	if err := r.ReadFloat32Into(name, t.Data); err != nil {
		return nil, err
	}
	return t, nil
}

// shapeElements multiplies the dimensions of shape, failing on a negative
// dimension or when the product (times elemSize bytes) overflows int64.
func shapeElements(shape []int64, elemSize int) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d in shape %v", d, shape)
		}
		if d != 0 && n > (1<<62)/d {
			return 0, fmt.Errorf("shape %v is too large", shape)
		}
		n *= d
	}
	if elemSize > 0 && n > (1<<62)/int64(elemSize) {
		return 0, fmt.Errorf("shape %v is too large", shape)
	}
	return n, nil
}
