package weights

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"github.com/avatargen/musetalk/internal/half"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// checkpointCase is a state dict exercising every storage type, a
// transposed tensor, a column slice, two tensors sharing a storage at
// different offsets and a 0-d tensor, with the values a reader must return.
type checkpointCase struct {
	sd   *pyDict
	want map[string]Tensor
	ints map[string][]int64
}

func seq(n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i)*scale - 1
	}
	return v
}

func newCheckpointCase() checkpointCase {
	c := checkpointCase{sd: stateDict(), want: map[string]Tensor{}, ints: map[string][]int64{}}

	conv := seq(24, 0.25)
	st0 := f32Storage("0", conv)
	c.sd.set("conv.weight", contiguous(st0, 2, 3, 2, 2))
	c.want["conv.weight"] = Tensor{DType: F32, Shape: []int{2, 3, 2, 2}, Data: conv}

	// Half values that are exact in fp16: normal, max, subnormal, negative.
	half := []float32{0.5, -1.25, 65504, 5.9604645e-08}
	c.sd.set("conv.bias", contiguous(f16Storage("1", half), 4))
	c.want["conv.bias"] = Tensor{DType: F16, Shape: []int{4}, Data: half}

	// A transposed [3,4] matrix: shape [4,3], stride (1,4).
	lin := seq(12, 1)
	c.sd.set("lin.weight", &pyTensor{st: f32Storage("2", lin), shape: []int{4, 3}, stride: []int{1, 4}})
	var linT []float32
	for i := range 4 {
		for j := range 3 {
			linT = append(linT, lin[j*4+i])
		}
	}
	c.want["lin.weight"] = Tensor{DType: F32, Shape: []int{4, 3}, Data: linT}

	// Two views of one storage, the second at an offset.
	shared := seq(10, 0.5)
	st3 := f32Storage("3", shared)
	c.sd.set("view.a", contiguous(st3, 2, 3))
	c.sd.set("view.b", &pyTensor{st: st3, offset: 6, shape: []int{4}, stride: []int{1}})
	c.want["view.a"] = Tensor{DType: F32, Shape: []int{2, 3}, Data: shared[:6]}
	c.want["view.b"] = Tensor{DType: F32, Shape: []int{4}, Data: shared[6:]}

	// Column 1 of conv's storage seen as [6,4]: offset 1, stride 4.
	c.sd.set("slice.col", &pyTensor{st: st0, offset: 1, shape: []int{6}, stride: []int{4}})
	c.want["slice.col"] = Tensor{DType: F32, Shape: []int{6}, Data: []float32{conv[1], conv[5], conv[9], conv[13], conv[17], conv[21]}}

	bf := []float32{1, -2.5, 3.140625}
	c.sd.set("bf.weight", contiguous(bf16Storage("4", bf), 3))
	c.want["bf.weight"] = Tensor{DType: BF16, Shape: []int{3}, Data: bf}

	c.sd.set("bn.num_batches_tracked", &pyTensor{st: i64Storage("5", []int64{7}), shape: []int{}, stride: []int{}})
	c.want["bn.num_batches_tracked"] = Tensor{DType: I64, Shape: []int{}, Data: []float32{7}}
	c.ints["bn.num_batches_tracked"] = []int64{7}

	c.sd.set("d.weight", contiguous(f64Storage("6", []float64{0.1, -0.2}), 2))
	c.want["d.weight"] = Tensor{DType: F64, Shape: []int{2}, Data: []float32{0.1, -0.2}}
	return c
}

// nested wraps a state dict the way training scripts save checkpoints.
func nested(sd *pyDict) *pyDict {
	return (&pyDict{}).
		set("epoch", pyInt(3)).
		set("state_dict", sd).
		set("optimizer", (&pyDict{}).set("lr", pyInt(1)))
}

func checkCheckpoint(t *testing.T, r Reader, c checkpointCase) {
	t.Helper()
	got := r.Tensors()
	var names []string
	for _, ti := range got {
		names = append(names, ti.Name)
	}
	if want := c.sd.keys; !slices.Equal(names, want) {
		t.Fatalf("tensor names = %v, want %v (state-dict order)", names, want)
	}
	for _, ti := range got {
		want := c.want[ti.Name]
		if ti.DType != want.DType || !slices.Equal(ti.Shape, want.Shape) {
			t.Errorf("%s: dtype %s shape %v, want %s %v", ti.Name, ti.DType, ti.Shape, want.DType, want.Shape)
		}
		tensor, err := r.ReadFloat32(ti.Name)
		if err != nil {
			t.Fatalf("ReadFloat32(%q): %v", ti.Name, err)
		}
		if !slices.Equal(tensor.Data, want.Data) || !slices.Equal(tensor.Shape, want.Shape) {
			t.Errorf("ReadFloat32(%q) = %v %v, want %v %v", ti.Name, tensor.Shape, tensor.Data, want.Shape, want.Data)
		}
		if ints, ok := c.ints[ti.Name]; ok {
			v, err := r.ReadInt64(ti.Name)
			if err != nil || !slices.Equal(v, ints) {
				t.Errorf("ReadInt64(%q) = %v, %v; want %v", ti.Name, v, err, ints)
			}
		}
	}
	if _, err := r.ReadInt64("conv.weight"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("ReadInt64 of a float tensor: %v, want ErrUnsupported", err)
	}
	if _, err := r.ReadFloat32("nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("ReadFloat32 of a missing tensor: %v, want ErrNotFound naming it", err)
	}
	if err := r.ReadFloat32Into("conv.bias", make([]float32, 3)); err == nil || !strings.Contains(err.Error(), "conv.bias") {
		t.Errorf("ReadFloat32Into with a short slice: %v, want an error naming the tensor", err)
	}
}

func TestPyTorchRoundTrip(t *testing.T) {
	t.Parallel()
	c := newCheckpointCase()
	write := map[string]func(t *testing.T, path string, obj pyValue){
		"zip": func(t *testing.T, path string, obj pyValue) {
			writeTorchZip(t, path, "archive", obj, zipOptions{byteorder: true})
		},
		"zip-deflated": func(t *testing.T, path string, obj pyValue) {
			writeTorchZip(t, path, "unet", obj, zipOptions{deflate: true})
		},
		"legacy": writeTorchLegacy,
	}
	for name, w := range write {
		for _, mmap := range []bool{true, false} {
			for _, nest := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/mmap=%v/nested=%v", name, mmap, nest), func(t *testing.T) {
					t.Parallel()
					path := filepath.Join(t.TempDir(), "model.pth")
					var obj pyValue = c.sd
					if nest {
						obj = nested(c.sd)
					}
					w(t, path, obj)
					r, err := OpenPyTorch(path, PyTorchOptions{noMmap: !mmap})
					if err != nil {
						t.Fatal(err)
					}
					defer r.Close()
					wantFormat := FormatPyTorchZip
					if name == "legacy" {
						wantFormat = FormatPyTorchLegacy
					}
					if r.Format() != wantFormat {
						t.Errorf("Format() = %s, want %s", r.Format(), wantFormat)
					}
					checkCheckpoint(t, r, c)
				})
			}
		}
	}
}

func TestPyTorchStateDictKey(t *testing.T) {
	t.Parallel()
	c := newCheckpointCase()
	dir := t.TempDir()
	path := filepath.Join(dir, "ckpt.pth")
	root := (&pyDict{}).set("epoch", pyInt(1)).set("ema", c.sd).set("opt", (&pyDict{}).set("x", pyInt(2)))
	writeTorchZip(t, path, "ckpt", root, zipOptions{})

	_, err := OpenPyTorch(path, PyTorchOptions{})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"ema"`) || !strings.Contains(err.Error(), path) {
		t.Fatalf("OpenPyTorch without a known key: %v, want ErrNotFound listing the top-level keys", err)
	}
	r, err := OpenPyTorch(path, PyTorchOptions{StateDictKey: "ema"})
	if err != nil {
		t.Fatal(err)
	}
	checkCheckpoint(t, r, c)
	r.Close()
	if _, err := OpenPyTorch(path, PyTorchOptions{StateDictKey: "opt"}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `"x"`) {
		t.Fatalf("StateDictKey naming a dict of ints: %v, want an error naming entry \"x\"", err)
	}
	if _, err := OpenPyTorch(path, PyTorchOptions{StateDictKey: "missing"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("StateDictKey naming a missing key: %v, want ErrNotFound", err)
	}

	// Open (format sniffing) gives the same reader for a plain state dict.
	plain := filepath.Join(dir, "plain.bin")
	writeTorchLegacy(t, plain, c.sd)
	r2, err := Open(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	checkCheckpoint(t, r2, c)
}

// TestPyTorchLegacyStorageView reads a PyTorch < 1.0 legacy file whose
// tensor refers to a view of its storage: elements [3, 9) of 10.
func TestPyTorchLegacyStorageView(t *testing.T) {
	t.Parallel()
	st := f32Storage("140", seq(10, 1))
	view := pyTuple{pyStr("141"), pyInt(3), pyInt(6)}
	sd := stateDict().set("w", &pyTensor{st: st, view: view, offset: 1, shape: []int{2, 2}, stride: []int{2, 1}})
	path := filepath.Join(t.TempDir(), "old.pth")
	writeTorchLegacy(t, path, sd)
	r, err := OpenPyTorch(path, PyTorchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v, err := r.ReadFloat32("w")
	all := seq(10, 1)
	if err != nil || !slices.Equal(v.Data, all[4:8]) {
		t.Fatalf("w = %v, %v; want %v", v, err, all[4:8])
	}

	// A tensor reaching past the end of its view is rejected.
	bad := stateDict().set("w", &pyTensor{st: st, view: view, offset: 3, shape: []int{4}, stride: []int{1}})
	writeTorchLegacy(t, path, bad)
	if _, err := OpenPyTorch(path, PyTorchOptions{}); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), `tensor "w"`) {
		t.Fatalf("tensor past its storage view: %v", err)
	}
}

// realTorchFiles are files PyTorch 1.13.1 wrote with torch.save, one tensor
// each ([1.2, -3.4, 5.6, -7.8] for floating types, [1, -2, 3, -4] signed,
// [1, 10, 100, 255] uint8, alternating booleans), with the pickle protocol
// in the name, legacy or zip format. They ship in the testdata of the
// gopickle module this package depends on, and are read from the module
// cache rather than copied into the project.
var realTorchFiles = []string{
	"tensor_bfloat16_proto2",
	"tensor_bfloat16_proto2_zip",
	"tensor_bfloat16_proto5",
	"tensor_bool_proto2",
	"tensor_bool_proto3_zip",
	"tensor_float16_proto1",
	"tensor_float16_proto2",
	"tensor_float16_proto2_zip",
	"tensor_float16_proto5_zip",
	"tensor_float32_proto1",
	"tensor_float32_proto2",
	"tensor_float32_proto2_zip",
	"tensor_float32_proto5",
	"tensor_float32_proto5_zip",
	"tensor_float64_proto2",
	"tensor_float64_proto4_zip",
	"tensor_int16_proto3",
	"tensor_int32_proto4_zip",
	"tensor_int64_proto2",
	"tensor_int64_proto4_zip",
	"tensor_int8_proto5_zip",
	"tensor_uint8_proto2",
	"tensor_uint8_proto5_zip",
}

// realTorchFile returns the path of one of realTorchFiles.
func realTorchFile(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/nlpodyssey/gopickle").Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		t.Fatalf("locating the gopickle module (a dependency, so in the module cache): %v", err)
	}
	return filepath.Join(dir, "pytorch", "testdata", name+".pt")
}

// TestTorchSaveWriterMatchesPyTorch checks the test writer against files
// PyTorch 1.13.1 wrote: the legacy file must be identical byte for byte, the
// zip file must have the same data.pkl, storage bytes and entry layout.
func TestTorchSaveWriterMatchesPyTorch(t *testing.T) {
	t.Parallel()
	values := []float32{1.2, -3.4, 5.6, -7.8}

	t.Run("legacy", func(t *testing.T) {
		t.Parallel()
		real, err := os.ReadFile(realTorchFile(t, "tensor_float32_proto2"))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "x.pt")
		writeTorchLegacy(t, path, contiguous(f32Storage("94282293536288", values), 4))
		mine, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(mine, real) {
			t.Fatalf("legacy writer output differs from torch.save:\n got %q\nwant %q", mine, real)
		}
	})

	t.Run("zip", func(t *testing.T) {
		t.Parallel()
		const archive = "tensor_float32_proto2_zip"
		path := filepath.Join(t.TempDir(), archive+".pt")
		writeTorchZip(t, path, archive, contiguous(f32Storage("0", values), 4), zipOptions{})
		real, err := zip.OpenReader(realTorchFile(t, archive))
		if err != nil {
			t.Fatal(err)
		}
		defer real.Close()
		mine, err := zip.OpenReader(path)
		if err != nil {
			t.Fatal(err)
		}
		defer mine.Close()
		if len(mine.File) != len(real.File) {
			t.Fatalf("%d entries, torch.save wrote %d", len(mine.File), len(real.File))
		}
		for i, rf := range real.File {
			mf := mine.File[i]
			ro, _ := rf.DataOffset()
			mo, _ := mf.DataOffset()
			rb, _ := readZipFile(rf, 1<<20)
			mb, _ := readZipFile(mf, 1<<20)
			if mf.Name != rf.Name || mo != ro || mf.Method != rf.Method || mf.Flags != rf.Flags || !bytes.Equal(mb, rb) {
				t.Errorf("entry %d: %s at %d method %d flags %#x %q; torch.save: %s at %d method %d flags %#x %q",
					i, mf.Name, mo, mf.Method, mf.Flags, mb, rf.Name, ro, rf.Method, rf.Flags, rb)
			}
		}
	})
}

// TestPyTorchRealFiles reads tensors that PyTorch 1.13.1 saved with pickle
// protocols 1 to 5, in both formats. Their root is a bare tensor, which
// OpenPyTorch rejects; the loader underneath must still read them.
func TestPyTorchRealFiles(t *testing.T) {
	t.Parallel()
	var files []string
	for _, name := range realTorchFiles {
		files = append(files, realTorchFile(t, name))
	}
	round := map[DType]func(float64) float32{
		F32:  func(v float64) float32 { return float32(v) },
		F64:  func(v float64) float32 { return float32(v) },
		F16:  func(v float64) float32 { return half.ToFloat32(half.FromFloat32(float32(v))) },
		BF16: func(v float64) float32 { return math.Float32frombits(uint32(f32ToBF16(float32(v))) << 16) },
	}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".pt")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := OpenPyTorch(path, PyTorchOptions{}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "single tensor") {
				t.Fatalf("OpenPyTorch of a bare tensor: %v, want ErrUnsupported", err)
			}
			d, err := openFileData(path, true)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			p := &PyTorch{path: path, data: d}
			var root any
			if strings.HasSuffix(name, "_zip") {
				root, err = p.loadZip()
			} else {
				root, err = p.loadLegacy()
			}
			if err != nil {
				t.Fatal(err)
			}
			ref, ok := root.(*tensorRef)
			if !ok || !slices.Equal(ref.shape, []int{4}) {
				t.Fatalf("root = %s, want a tensor of shape [4]", describe(root))
			}
			dtype := ref.view.root.dtype
			var got []byte
			if err := p.readElements(ref, 4, func(b []byte) error { got = append(got, b...); return nil }); err != nil {
				t.Fatal(err)
			}
			if dtype.IsFloat() {
				v := make([]float32, 4)
				if err := decodeFloat32(v, got, dtype); err != nil {
					t.Fatal(err)
				}
				var want []float32
				for _, x := range []float64{1.2, -3.4, 5.6, -7.8} {
					want = append(want, round[dtype](x))
				}
				if !slices.Equal(v, want) {
					t.Fatalf("%s values %v, want %v", dtype, v, want)
				}
				return
			}
			v := make([]int64, 4)
			if err := decodeInt64(v, got, dtype); err != nil {
				t.Fatal(err)
			}
			want := map[DType][]int64{U8: {1, 10, 100, 255}, BOOL: {1, 0, 1, 0}}[dtype]
			if want == nil {
				want = []int64{1, -2, 3, -4}
			}
			if !slices.Equal(v, want) {
				t.Fatalf("%s values %v, want %v", dtype, v, want)
			}
		})
	}
}

func TestPyTorchMalformed(t *testing.T) {
	t.Parallel()
	c := newCheckpointCase()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.pth")
	writeTorchLegacy(t, good, c.sd)
	goodBytes, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	goodZip := filepath.Join(dir, "good.zip")
	writeTorchZip(t, goodZip, "archive", c.sd, zipOptions{})

	cases := []struct {
		name    string
		build   func(t *testing.T, path string)
		want    error
		mention string
	}{
		{"truncated legacy storages", func(t *testing.T, path string) {
			os.WriteFile(path, goodBytes[:len(goodBytes)-5], 0o644)
		}, ErrFormat, "past the end"},
		{"truncated legacy pickle", func(t *testing.T, path string) {
			os.WriteFile(path, goodBytes[:200], 0o644)
		}, ErrFormat, "unpickling"},
		{"garbage", func(t *testing.T, path string) {
			os.WriteFile(path, []byte("\x80\x02\xff\xff\xff\xff\xff\xff\xff"), 0o644)
		}, ErrFormat, "magic number"},
		{"out-of-bounds view", func(t *testing.T, path string) {
			sd := stateDict().set("w", &pyTensor{st: f32Storage("0", seq(4, 1)), offset: 2, shape: []int{3}, stride: []int{1}})
			writeTorchZip(t, path, "archive", sd, zipOptions{})
		}, ErrFormat, `tensor "w"`},
		{"storage entry size mismatch", func(t *testing.T, path string) {
			st := f32Storage("0", seq(4, 1))
			st.numel = 5 // the pickle claims more elements than the entry holds
			writeTorchZip(t, path, "archive", stateDict().set("w", contiguous(st, 4)), zipOptions{})
		}, ErrFormat, `storage "0"`},
		{"torchscript", func(t *testing.T, path string) {
			f, _ := os.Create(path)
			zw := zip.NewWriter(f)
			for _, n := range []string{"m/data.pkl", "m/constants.pkl"} {
				w, _ := zw.Create(n)
				w.Write([]byte("\x80\x02N."))
			}
			zw.Close()
			f.Close()
		}, ErrUnsupported, "TorchScript"},
		{"invalid opcode in data.pkl", func(t *testing.T, path string) {
			f, _ := os.Create(path)
			zw := zip.NewWriter(f)
			w, _ := zw.Create("m/data.pkl")
			w.Write([]byte("\x80\x02\xff."))
			zw.Close()
			f.Close()
		}, ErrFormat, "m/data.pkl"},
		{"not a state dict", func(t *testing.T, path string) {
			writeTorchZip(t, path, "archive", (&pyDict{}).set("a", pyInt(1)), zipOptions{})
		}, ErrNotFound, `"a"`},
		{"unknown storage type", func(t *testing.T, path string) {
			st := f32Storage("0", seq(4, 1))
			st.typ = "ComplexFloatStorage"
			writeTorchZip(t, path, "archive", stateDict().set("w", contiguous(st, 4)), zipOptions{})
		}, ErrUnsupported, "ComplexFloatStorage"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "bad.pth")
			tc.build(t, path)
			_, err := OpenPyTorch(path, PyTorchOptions{})
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.mention) || !strings.Contains(err.Error(), path) {
				t.Fatalf("OpenPyTorch: %v\nwant %v mentioning %q and the path", err, tc.want, tc.mention)
			}
		})
	}
}
