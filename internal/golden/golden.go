// Package golden opens the numerical reference cases (../shared/golden, or
// $MUSETALK_GOLDEN_DIR) for the tests of every network: one JSON file (the
// config, the call, suggested_tolerance) and one safetensors file (weights,
// input.*, output.*, intermediate.*) per case.
package golden

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/goldendir"
	"github.com/avatargen/musetalk/internal/testenv"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// Case is one golden case.
type Case struct {
	Name string
	// Meta is the JSON file's top level; Python's NaN and Infinity read as null.
	Meta map[string]json.RawMessage
	// Atol is suggested_tolerance: tensor name -> largest allowed |got - want|.
	Atol map[string]float64
	// File holds the tensors.
	File *weights.Safetensors
}

// Load opens case name (e.g. "a_unet2d_condition"). When either of its
// files is missing the test is skipped with a message naming the file; any
// other problem fails it. The file is closed when the test ends.
func Load(t testing.TB, name string) *Case {
	t.Helper()
	dir, err := goldendir.Dir()
	if err != nil {
		t.Fatal(err)
	}
	jsPath, stPath := filepath.Join(dir, name+".json"), filepath.Join(dir, name+".safetensors")
	for _, p := range []string{jsPath, stPath} {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			testenv.Missing(t, "golden file %s missing", p)
		}
	}
	js, err := os.ReadFile(jsPath)
	if err != nil {
		t.Fatal(err)
	}
	c := &Case{Name: name, Atol: map[string]float64{}}
	if err := json.Unmarshal(weights.PythonJSON(js), &c.Meta); err != nil {
		t.Fatalf("%s: %v", jsPath, err)
	}
	var tol map[string]struct {
		Atol float64 `json:"atol"`
	}
	if raw, ok := c.Meta["suggested_tolerance"]; ok {
		if err := json.Unmarshal(raw, &tol); err != nil {
			t.Fatalf("%s: suggested_tolerance: %v", jsPath, err)
		}
	}
	for k, v := range tol {
		c.Atol[k] = v.Atol
	}
	if c.File, err = weights.OpenSafetensors(stPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.File.Close() })
	return c
}

// Tensor64 is a tensor read as float64.
type Tensor64 struct {
	Shape []int
	Data  []float64
}

// Tensor returns tensor name as float32 (F16 and BF16 converted
// exactly) with its shape, so a Case serves a network's weights directly
// (it satisfies model.Tensors).
func (c *Case) Tensor(name string) ([]float32, []int, error) {
	x, err := c.File.ReadFloat32(name)
	if err != nil {
		return nil, nil, err
	}
	return x.Data, x.Shape, nil
}

// Float64 reads tensor name as float64: F64 tensors exactly, the others
// through the float32 conversion, which is exact for F32, F16 and the
// integer types the cases use.
func (c *Case) Float64(name string) (Tensor64, error) {
	info, ok := c.File.Info(name)
	if !ok {
		return Tensor64{}, fmt.Errorf("golden %s: no tensor %s", c.Name, name)
	}
	v := make([]float64, info.NumElements())
	if info.DType == weights.F64 {
		raw, err := c.File.RawBytes(name)
		if err != nil {
			return Tensor64{}, err
		}
		for i := range v {
			v[i] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:]))
		}
	} else {
		x, err := c.File.ReadFloat32(name)
		if err != nil {
			return Tensor64{}, err
		}
		for i, f := range x.Data {
			v[i] = float64(f)
		}
	}
	return Tensor64{Shape: info.Shape, Data: v}, nil
}

// Names lists the case's tensors whose names start with prefix, sorted.
func (c *Case) Names(prefix string) []string {
	var out []string
	for _, info := range c.File.Tensors() {
		if strings.HasPrefix(info.Name, prefix) {
			out = append(out, info.Name)
		}
	}
	slices.Sort(out)
	return out
}

// Set holds a case's tensors read as float64, by name.
type Set map[string]Tensor64

// Set reads every tensor of the case.
func (c *Case) Set(t testing.TB) Set {
	t.Helper()
	s := Set{}
	for _, info := range c.File.Tensors() {
		x, err := c.Float64(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		s[info.Name] = x
	}
	return s
}

// Get returns tensor name, failing the test when it is missing.
func (s Set) Get(t testing.TB, name string) Tensor64 {
	t.Helper()
	x, ok := s[name]
	if !ok {
		t.Fatalf("golden tensor %s missing", name)
	}
	return x
}

// Float32s returns tensor name's elements as float32.
func (s Set) Float32s(t testing.TB, name string) []float32 {
	t.Helper()
	x := s.Get(t, name)
	out := make([]float32, len(x.Data))
	for i, v := range x.Data {
		out[i] = float32(v)
	}
	return out
}

// Compare checks got, of the given shape, against tensor name: the largest
// |got - want| must be at most atol. It logs the error either way.
func (s Set) Compare(t testing.TB, name string, got []float32, shape []int, atol float64) {
	t.Helper()
	want := s.Get(t, name)
	if !slices.Equal(want.Shape, shape) {
		t.Errorf("%s: shape %v, golden %v", name, shape, want.Shape)
		return
	}
	worst, at := 0.0, 0
	for i, v := range want.Data {
		d := math.Abs(float64(got[i]) - v)
		if d > worst || math.IsNaN(d) {
			worst, at = d, i
		}
	}
	t.Logf("%s: max abs err %.3g (atol %.3g)", name, worst, atol)
	if !(worst <= atol) {
		t.Errorf("%s: max abs err %.3g at %d (got %g, want %g) > atol %.3g", name, worst, at, got[at], want.Data[at], atol)
	}
}

// Outputs lists the tensors named output.*, sorted.
func (s Set) Outputs() []string {
	var out []string
	for k := range s {
		if strings.HasPrefix(k, "output.") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
