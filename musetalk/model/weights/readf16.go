package weights

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

// HalfReader is implemented by readers that can hand out the stored bits
// of F16 tensors without converting them to float32 ([Safetensors],
// [MappedReader] over one), for loaders that upload half-precision
// weights as they are.
type HalfReader interface {
	// ReadF16 returns the IEEE 754 half-precision bit patterns of the
	// named tensor in row-major order. A tensor stored as another dtype is
	// an error wrapping [ErrUnsupported] (nothing is converted); a missing
	// name wraps [ErrNotFound]. The slice may view the reader's file
	// mapping: the caller must not modify it, nor use it after Close.
	ReadF16(name string) ([]uint16, error)
}

var (
	_ HalfReader = (*Safetensors)(nil)
	_ HalfReader = (*MappedReader)(nil)
)

// hostLittleEndian: the file's little-endian F16 bytes are the host's
// uint16s, so they can be viewed in place.
var hostLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// ReadF16 implements [HalfReader]. Where the file is memory-mapped, the
// host little-endian and the tensor's data 2-byte aligned in memory, the
// result views the mapping (no copy, valid until Close); otherwise it is
// read into a new slice.
func (s *Safetensors) ReadF16(name string) ([]uint16, error) {
	t, i, err := s.find(name)
	if err != nil {
		return nil, err
	}
	if t.DType != F16 {
		return nil, fmt.Errorf("%s: tensor %q is %s, not F16: %w", s.path, name, t.DType, ErrUnsupported)
	}
	off := s.offsets[i]
	n := off[1] - off[0]
	if n == 0 {
		return []uint16{}, nil
	}
	b, err := s.data.bytes(s.base+off[0], n) // the mapping, or a new copy
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", s.path, name, err)
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	if hostLittleEndian && uintptr(p)%2 == 0 {
		return unsafe.Slice((*uint16)(p), n/2), nil
	}
	out := make([]uint16, n/2)
	for j := range out {
		out[j] = binary.LittleEndian.Uint16(b[2*j:])
	}
	return out, nil
}

// ReadF16 implements [HalfReader] when the underlying reader does; with
// one that does not (a PyTorch checkpoint) it is an error wrapping
// [ErrUnsupported].
func (m *MappedReader) ReadF16(name string) ([]uint16, error) {
	_, src, err := m.source(name)
	if err != nil {
		return nil, err
	}
	h, ok := m.r.(HalfReader)
	if !ok {
		return nil, fmt.Errorf("tensor %q: reading F16 bits from this file format: %w", name, ErrUnsupported)
	}
	return h.ReadF16(src)
}
