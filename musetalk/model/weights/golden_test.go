package weights

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/goldendir"
)

// goldenDir returns the golden data's directory, skipping the test when
// the data is absent.
func goldenDir(t *testing.T) string {
	t.Helper()
	d, err := goldendir.Dir()
	if err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat(d); err != nil {
		t.Skipf("golden data not found at %s; set MUSETALK_GOLDEN_DIR", d)
	}
	return d
}

type goldenTensor struct {
	DType DType `json:"dtype"`
	Shape []int `json:"shape"`
}

// goldenJSON reads a golden case's JSON file.
type goldenJSON struct {
	Tensors map[string]map[string]goldenTensor `json:"tensors"`
	raw     []byte
}

func readGoldenJSON(t *testing.T, path string) goldenJSON {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var g goldenJSON
	if err := json.Unmarshal(PythonJSON(b), &g); err != nil { // a_unet2d_condition.json holds a NaN
		t.Fatalf("%s: %v", path, err)
	}
	g.raw = b
	return g
}

// weightSpec turns the "weights" group of a golden JSON into a spec.
func (g goldenJSON) weightSpec() []TensorSpec {
	var spec []TensorSpec
	for name, gt := range g.Tensors["weights"] {
		spec = append(spec, TensorSpec{Name: name, Shape: gt.Shape})
	}
	sort.Slice(spec, func(i, j int) bool { return spec[i].Name < spec[j].Name })
	return spec
}

// TestGoldenFiles opens every golden safetensors file, checks its header
// against the tensor list of the JSON beside it and reads every tensor.
func TestGoldenFiles(t *testing.T) {
	t.Parallel()
	dir := goldenDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden safetensors files in %s (%v)", dir, err)
	}
	for _, path := range files {
		base := strings.TrimSuffix(filepath.Base(path), ".safetensors")
		t.Run(base, func(t *testing.T) {
			t.Parallel()
			g := readGoldenJSON(t, filepath.Join(dir, base+".json"))
			s, err := OpenSafetensors(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			meta := s.Metadata()
			if meta["config_json"] != base+".json" || meta["case"] == "" {
				t.Errorf("__metadata__ = %v, want config_json %q and a case", meta, base+".json")
			}
			want := map[string]goldenTensor{}
			for _, group := range g.Tensors {
				for name, gt := range group {
					want[name] = gt
				}
			}
			infos := s.Tensors()
			if len(infos) != len(want) {
				t.Errorf("%d tensors in the file, %d in the JSON", len(infos), len(want))
			}
			for _, ti := range infos {
				gt, ok := want[ti.Name]
				if !ok {
					t.Errorf("tensor %q not listed in the JSON", ti.Name)
					continue
				}
				if ti.DType != gt.DType || !slices.Equal(ti.Shape, gt.Shape) {
					t.Errorf("%s: %s %v, JSON says %s %v", ti.Name, ti.DType, ti.Shape, gt.DType, gt.Shape)
				}
				v, err := s.ReadFloat32(ti.Name)
				if err != nil {
					t.Fatalf("ReadFloat32(%q): %v", ti.Name, err)
				}
				if len(v.Data) != ti.NumElements() {
					t.Fatalf("%s: %d elements, want %d", ti.Name, len(v.Data), ti.NumElements())
				}
				for i, x := range v.Data {
					if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
						t.Fatalf("%s[%d] = %v", ti.Name, i, x)
					}
				}
				if !ti.DType.IsFloat() {
					if _, err := s.ReadInt64(ti.Name); err != nil {
						t.Fatalf("ReadInt64(%q): %v", ti.Name, err)
					}
				}
			}
		})
	}
}

// TestGoldenValues spot-checks values decoded from the golden files against
// numbers read independently with Python's struct module.
func TestGoldenValues(t *testing.T) {
	t.Parallel()
	dir := goldenDir(t)
	open := func(name string) *Safetensors {
		s, err := OpenSafetensors(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	ints := func(s *Safetensors, name string, want []int64) {
		t.Helper()
		got, err := s.ReadInt64(name)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s = %v, %v; want %v", name, got, err, want)
		}
	}
	a := open("a_unet2d_condition.safetensors")
	ints(a, "input.timestep", []int64{0})
	ints(a, "input.timestep_alt", []int64{500})

	g2 := open("g_sfd_postprocess.safetensors")
	ints(g2, "output.0.nms_keep", []int64{5, 7, 3, 9, 4, 0})
	ints(g2, "output.1.final_box", []int64{-1, -1, -1, -1})
	if info, ok := g2.Info("output.1.detections"); !ok || !slices.Equal(info.Shape, []int{0, 5}) {
		t.Errorf("output.1.detections: %+v, want shape [0 5]", info)
	}

	g := open("g_s3fd.safetensors")
	bias, err := g.ReadFloat32("conv1_1.bias")
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{0.0262603759765625, -0.06591796875, -0.1658935546875, -0.057830810546875}; bias.DType != F16 || !slices.Equal(bias.Data[:4], want) {
		t.Errorf("conv1_1.bias = %s %v, want F16 %v", bias.DType, bias.Data[:4], want)
	}
	var sum float64
	for _, x := range bias.Data {
		sum += float64(x)
	}
	if math.Abs(sum-(-0.6245536804199219)) > 1e-12 {
		t.Errorf("sum of conv1_1.bias = %v, want -0.6245536804199219", sum)
	}

	h := open("h_bisenet_face_parsing.safetensors")
	if info, ok := h.Info("conv_out.conv.bn.num_batches_tracked"); !ok || info.DType != I64 || len(info.Shape) != 0 {
		t.Errorf("num_batches_tracked: %+v, want a 0-d I64", info)
	}
	rv, err := h.ReadFloat32("cp.arm16.bn_atten.running_var")
	if err != nil || !slices.Equal(rv.Data[:3], []float32{0.295166015625, 0.30126953125, 0.30126953125}) {
		t.Errorf("running_var = %v, %v", rv, err)
	}
}
