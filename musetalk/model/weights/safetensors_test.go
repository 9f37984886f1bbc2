package weights

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/avatargen/musetalk/internal/half"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeSafetensors(t *testing.T, path string, meta map[string]string, tensors []TensorInfo, data map[string][]float32, ints map[string][]int64) {
	t.Helper()
	w, err := CreateSafetensors(path, tensors, meta)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range tensors {
		if ti.DType == I64 {
			err = w.WriteInt64(ti.Name, ints[ti.Name])
		} else {
			err = w.WriteFloat32(ti.Name, data[ti.Name])
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSafetensorsRoundTrip(t *testing.T) {
	t.Parallel()
	// Values exact in every output type, plus ones that F16/BF16 round.
	exact := []float32{0, -0, 1, -2.5, 0.125, 65504, 5.9604645e-08, float32(math.Inf(-1))}
	rounded := []float32{0.1, 1.0 / 3, -1e-3, 3000.7, 1e-9}
	tensors := []TensorInfo{
		{Name: "z.f32", DType: F32, Shape: []int{2, 4}},
		{Name: "a.f16", DType: F16, Shape: []int{8}},
		{Name: "a.f16.rounded", DType: F16, Shape: []int{5}},
		{Name: "m.bf16", DType: BF16, Shape: []int{5}},
		{Name: "d.f64", DType: F64, Shape: []int{5, 1}},
		{Name: "n.i64", DType: I64, Shape: []int{}},
		{Name: "empty", DType: F32, Shape: []int{0, 5}},
		{Name: "big", DType: F16, Shape: []int{3, 100000}}, // several write chunks
	}
	big := make([]float32, 300000)
	for i := range big {
		big[i] = float32(i%2048) - 1024
	}
	data := map[string][]float32{
		"z.f32": exact, "a.f16": exact, "a.f16.rounded": rounded, "m.bf16": rounded, "d.f64": rounded,
		"empty": {}, "big": big,
	}
	ints := map[string][]int64{"n.i64": {-(1 << 40)}}
	want := map[string][]float32{
		"z.f32": exact, "a.f16": exact, "d.f64": rounded, "empty": {}, "big": big, "n.i64": {-(1 << 40)},
	}
	for _, v := range rounded {
		want["a.f16.rounded"] = append(want["a.f16.rounded"], half.ToFloat32(half.FromFloat32(v)))
		want["m.bf16"] = append(want["m.bf16"], math.Float32frombits(uint32(f32ToBF16(v))<<16))
	}
	path := filepath.Join(t.TempDir(), "w.safetensors")
	meta := map[string]string{"format": "pt", "note": "quote \" and \\ and é"}
	writeSafetensors(t, path, meta, tensors, data, ints)

	for _, mmap := range []bool{true, false} {
		t.Run(fmt.Sprintf("mmap=%v", mmap), func(t *testing.T) {
			t.Parallel()
			s, err := openSafetensors(path, mmap)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if mmap != (s.data.data != nil) {
				t.Errorf("mapped = %v, want %v", s.data.data != nil, mmap)
			}
			if got := s.Metadata(); got["note"] != meta["note"] || len(got) != 2 {
				t.Errorf("Metadata() = %v, want %v", got, meta)
			}
			got := s.Tensors()
			if len(got) != len(tensors) {
				t.Fatalf("%d tensors, want %d", len(got), len(tensors))
			}
			for i, ti := range got {
				if ti.Name != tensors[i].Name || ti.DType != tensors[i].DType || !slices.Equal(ti.Shape, tensors[i].Shape) {
					t.Errorf("tensor %d = %+v, want %+v (write order)", i, ti, tensors[i])
				}
				v, err := s.ReadFloat32(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				if !equalBits(v.Data, want[ti.Name]) {
					t.Errorf("%s = %v, want %v", ti.Name, v.Data[:min(len(v.Data), 10)], want[ti.Name][:min(len(want[ti.Name]), 10)])
				}
			}
			n, err := s.ReadInt64("n.i64")
			if err != nil || !slices.Equal(n, ints["n.i64"]) {
				t.Errorf("ReadInt64 = %v, %v", n, err)
			}
			raw, err := s.RawBytes("a.f16")
			if err != nil || len(raw) != 16 || binary.LittleEndian.Uint16(raw[10:]) != 0x7bff {
				t.Errorf("RawBytes(a.f16) = %x, %v; want 16 bytes with 65504 = 0x7bff at element 5", raw, err)
			}
		})
	}
}

// equalBits compares float slices bit for bit (so -0 and NaN count).
func equalBits(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

func TestSafetensorsWriterMisuse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tensors := []TensorInfo{{Name: "a", DType: F16, Shape: []int{2}}, {Name: "b", DType: I64, Shape: []int{1}}}

	if _, err := CreateSafetensors(filepath.Join(dir, "x"), []TensorInfo{{Name: "a", DType: U8, Shape: []int{1}}}, nil); err == nil {
		t.Error("CreateSafetensors accepted dtype U8")
	}
	if _, err := CreateSafetensors(filepath.Join(dir, "x"), []TensorInfo{tensors[0], tensors[0]}, nil); err == nil || !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("duplicate tensor: %v", err)
	}

	path := filepath.Join(dir, "out.safetensors")
	w, err := CreateSafetensors(path, tensors, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteInt64("b", []int64{1}); err == nil || !strings.Contains(err.Error(), "out of order") {
		t.Errorf("writing out of order: %v", err)
	}
	if err := w.WriteFloat32("a", []float32{1}); err == nil || !strings.Contains(err.Error(), "2") {
		t.Errorf("writing too few elements: %v", err)
	}
	if err := w.WriteFloat32("a", []float32{1, 70000}); err == nil || !strings.Contains(err.Error(), "overflows float16") {
		t.Errorf("writing 70000 as F16: %v", err)
	}
	if err := w.WriteFloat32("a", []float32{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("Close with tensor b unwritten: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files left after a failed Close: %v", entries)
	}

	w, err = CreateSafetensors(path, tensors, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files left after Abort: %v", entries)
	}
}

// validFile returns a small valid safetensors file and its header layout.
func validFile(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v.safetensors")
	writeSafetensors(t, path, map[string]string{"k": "v"},
		[]TensorInfo{{Name: "a", DType: F32, Shape: []int{2}}, {Name: "b", DType: F32, Shape: []int{1}}},
		map[string][]float32{"a": {1, 2}, "b": {3}}, nil)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withHeader builds a file from a header and a data section.
func withHeader(header string, data []byte) []byte {
	for len(header)%8 != 0 {
		header += " "
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(out, header...), data...)
}

func TestSafetensorsCorrupt(t *testing.T) {
	t.Parallel()
	valid := validFile(t)
	data12 := make([]byte, 12)
	cases := []struct {
		name    string
		file    []byte
		mention string
	}{
		{"empty file", nil, "shorter than the 8-byte header length"},
		{"truncated data", valid[:len(valid)-2], "out of range"},
		{"truncated header", valid[:20], "exceeds the 12 bytes"},
		{"header length zero", withHeader("", nil)[:8], "header length is 0"},
		{"header length huge", binary.LittleEndian.AppendUint64(nil, 1<<40), "exceeds the limit"},
		{"not JSON", withHeader(`{"a":`, data12), "header JSON"},
		{"not an object", withHeader(`[1,2]`, data12), "not a JSON object"},
		{"trailing data", withHeader(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}} x`, data12), "after the header"},
		{"duplicate tensor", withHeader(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}`, data12), `duplicate tensor "a"`},
		{"unknown field", withHeader(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12],"x":1}}`, data12), `tensor "a": invalid entry`},
		{"unknown dtype", withHeader(`{"a":{"dtype":"F12","shape":[3],"data_offsets":[0,12]}}`, data12), `tensor "a": unknown dtype "F12"`},
		{"missing shape", withHeader(`{"a":{"dtype":"F32","data_offsets":[0,12]}}`, data12), `tensor "a": missing shape`},
		{"negative dim", withHeader(`{"a":{"dtype":"F32","shape":[-3],"data_offsets":[0,12]}}`, data12), "negative dimension"},
		{"size mismatch", withHeader(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}}`, data12), "needs 8"},
		{"out of range", withHeader(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, data12), `tensor "a": data_offsets [0, 16] out of range`},
		{"reversed offsets", withHeader(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}`, data12), "invalid data_offsets"},
		{"overlap", withHeader(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, data12), `tensor "b": data_offsets [4, 12] overlap tensor "a"`},
		{"hole", withHeader(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`, data12), "hole before tensor \"b\""},
		{"trailing bytes", withHeader(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, data12), "trailing bytes"},
		{"metadata not strings", withHeader(`{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}`, data12), "__metadata__"},
		{"overflowing shape", withHeader(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,12]}}`, data12), "too large"},
	}
	dir := t.TempDir()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(dir, fmt.Sprintf("bad%d.safetensors", i))
			if err := os.WriteFile(path, tc.file, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := OpenSafetensors(path)
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.mention) || !strings.Contains(err.Error(), path) {
				t.Fatalf("OpenSafetensors: %v\nwant ErrFormat mentioning %q and the path", err, tc.mention)
			}
		})
	}
	// The unmodified file still opens: the cases above fail for their own
	// reason, not because the base is wrong.
	path := filepath.Join(dir, "valid.safetensors")
	os.WriteFile(path, valid, 0o644)
	s, err := OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestDetectFormat(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st := filepath.Join(dir, "a.safetensors")
	os.WriteFile(st, validFile(t), 0o644)
	legacy := filepath.Join(dir, "b.pth")
	writeTorchLegacy(t, legacy, newCheckpointCase().sd)
	zipped := filepath.Join(dir, "c.pth")
	writeTorchZip(t, zipped, "c", newCheckpointCase().sd, zipOptions{})
	junk := filepath.Join(dir, "d.bin")
	os.WriteFile(junk, []byte("hello, world"), 0o644)
	tarred := filepath.Join(dir, "e.tar")
	tarBytes := make([]byte, 1024)
	copy(tarBytes[257:], "ustar")
	os.WriteFile(tarred, tarBytes, 0o644)

	for path, want := range map[string]Format{st: FormatSafetensors, legacy: FormatPyTorchLegacy, zipped: FormatPyTorchZip} {
		if got, err := DetectFormat(path); got != want || err != nil {
			t.Errorf("DetectFormat(%s) = %q, %v; want %q", filepath.Base(path), got, err, want)
		}
	}
	if _, err := DetectFormat(junk); !errors.Is(err, ErrFormat) {
		t.Errorf("DetectFormat(junk) = %v, want ErrFormat", err)
	}
	if _, err := Open(tarred); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Open(tar) = %v, want ErrUnsupported", err)
	}
	if _, err := Open(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(missing) = %v, want os.ErrNotExist", err)
	}
}
