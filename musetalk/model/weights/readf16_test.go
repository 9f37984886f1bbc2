package weights

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/avatargen/musetalk/internal/half"
)

func TestReadF16(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "h.safetensors")
	vals := []float32{0, 1, -2.5, 65504, 0x1p-24, 0.1, 1.0 / 3, -1e-3}
	tensors := []TensorInfo{
		{Name: "w.f32", DType: F32, Shape: []int{2, 4}},
		{Name: "w.f16", DType: F16, Shape: []int{2, 4}},
		{Name: "empty", DType: F16, Shape: []int{0, 3}},
	}
	writeSafetensors(t, path, nil, tensors, map[string][]float32{"w.f32": vals, "w.f16": vals, "empty": {}}, nil)
	want := make([]uint16, len(vals))
	half.FromFloat32s(want, vals)
	for _, mmap := range []bool{true, false} {
		s, err := openSafetensors(path, mmap)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.ReadF16("w.f16")
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("mmap %v: ReadF16 = %#04x, %v; want %#04x", mmap, got, err, want)
		}
		if got, err := s.ReadF16("empty"); err != nil || len(got) != 0 {
			t.Errorf("mmap %v: ReadF16 of an empty tensor = %v, %v", mmap, got, err)
		}
		if _, err := s.ReadF16("w.f32"); !errors.Is(err, ErrUnsupported) {
			t.Errorf("mmap %v: ReadF16 of an F32 tensor: %v, want ErrUnsupported", mmap, err)
		}
		if _, err := s.ReadF16("nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("mmap %v: ReadF16 of a missing tensor: %v, want ErrNotFound", mmap, err)
		}
		s.Close()
	}
}

// TestReadF16Unaligned: an F16 tensor at an odd address (after a 1-byte U8
// tensor) is read correctly, as is one at an even address: both parities
// of the header length are tried, mapped and not.
func TestReadF16Unaligned(t *testing.T) {
	t.Parallel()
	bits := []uint16{0x3c00, 0xc000, 0x7bff}
	for pad := range 2 {
		header := `{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"h":{"dtype":"F16","shape":[3],"data_offsets":[1,7]}}`
		if len(header)%2 != pad {
			header += " "
		}
		file := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
		file = append(file, header...)
		file = append(file, 0x7f)
		for _, b := range bits {
			file = binary.LittleEndian.AppendUint16(file, b)
		}
		path := filepath.Join(t.TempDir(), fmt.Sprintf("odd%d.safetensors", pad))
		if err := os.WriteFile(path, file, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, mmap := range []bool{true, false} {
			s, err := openSafetensors(path, mmap)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.ReadF16("h")
			if err != nil || !slices.Equal(got, bits) {
				t.Errorf("header %d bytes, mmap %v: ReadF16 = %#04x, %v; want %#04x", len(header), mmap, got, err, bits)
			}
			s.Close()
		}
	}
}

// TestMappedReadF16: the renamed view reads F16 bits under the mapped name
// from a safetensors file.
func TestMappedReadF16(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s3fd.safetensors")
	vals := []float32{0.5, -0.25, 3}
	writeSafetensors(t, path, nil, []TensorInfo{{Name: "module.conv1_1.bias", DType: F16, Shape: []int{3}}},
		map[string][]float32{"module.conv1_1.bias": vals}, nil)
	m, err := OpenMapped(path, KindS3FD)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := make([]uint16, 3)
	half.FromFloat32s(want, vals)
	if got, err := m.ReadF16("conv1_1.bias"); err != nil || !slices.Equal(got, want) {
		t.Errorf("ReadF16 = %#04x, %v; want %#04x", got, err, want)
	}
	if _, err := m.ReadF16("module.conv1_1.bias"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadF16 under the file's name: %v, want ErrNotFound", err)
	}
}
