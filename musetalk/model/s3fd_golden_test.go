package model

import (
	"fmt"
	"math"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// Golden test of S3FD (case g_s3fd, README part 2, case g): the full-size
// network with seeded F16 weights on two real crops (128×128 and 96×160).
// The post-processing of the same case is tested in package face.

func TestGoldenS3FD(t *testing.T) {
	c := golden.Load(t, "g_s3fd")
	set := c.Set(t)
	b, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	// The file holds exactly the spec's weights.
	spec := S3FDSpec()
	inSpec := map[string]bool{}
	for _, s := range spec {
		inSpec[s.Name] = true
	}
	for _, info := range c.File.Tensors() {
		if info.DType == weights.F16 && !inSpec[info.Name] {
			t.Errorf("weight %s is in the file but not in S3FDSpec", info.Name)
		}
	}

	m, err := NewS3FD(b, c)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got, want := m.Params(), int64(22459110); got != want {
		t.Errorf("Params = %d, want %d", got, want)
	}

	atol := func(name string) float64 {
		t.Helper()
		a, ok := c.Atol[name]
		if !ok {
			t.Fatalf("%s: no suggested_tolerance in the JSON", name)
		}
		return a
	}
	for k := range 2 {
		t.Run(fmt.Sprint("input", k), func(t *testing.T) {
			xin := set.Get(t, fmt.Sprintf("input.%d.x", k))
			x := kernels.Upload(b, set.Float32s(t, fmt.Sprintf("input.%d.x", k)), xin.Shape...)
			defer b.Free(x)
			seen := map[string][]float32{}
			dims := map[string][]int{}
			var trace s3fdTrace
			if k == 0 { // intermediates are stored for input 0 only
				trace = func(name string, y *kernels.Tensor) {
					d := make([]float32, y.Len())
					if err := b.Download(d, y); err != nil {
						t.Fatal(err)
					}
					seen[name], dims[name] = d, y.Shape()
				}
			}
			heads, err := m.forward(x, trace)
			if err != nil {
				t.Fatal(err)
			}
			if heads.N != 1 {
				t.Fatalf("N = %d, want 1", heads.N)
			}
			for name, got := range seen {
				full := "intermediate.0." + name
				set.Compare(t, full, got, dims[name], atol(full))
			}
			if k == 0 && len(seen) != 6 {
				t.Errorf("traced %d intermediates, want 6", len(seen))
			}
			for i, lv := range heads.Levels {
				if want := 4 << i; lv.Stride != want {
					t.Errorf("level %d stride %d, want %d", i+1, lv.Stride, want)
				}
				clsShape := []int{1, 2, lv.H, lv.W}
				logits := fmt.Sprintf("intermediate.%d.cls%d_logits", k, i+1)
				// The JSON has no atol for the logits. The two-class
				// softmax has slope ≤ 1/4, so a probability atol a
				// corresponds to a logit error of 4a.
				set.Compare(t, logits, lv.Cls, clsShape, 4*atol(fmt.Sprintf("output.%d.cls%d", k, i+1)))
				name := fmt.Sprintf("output.%d.cls%d", k, i+1)
				set.Compare(t, name, softmax2(lv.Cls, lv.H*lv.W), clsShape, atol(name))
				name = fmt.Sprintf("output.%d.reg%d", k, i+1)
				set.Compare(t, name, lv.Reg, []int{1, 4, lv.H, lv.W}, atol(name))
			}
		})
	}
}

// softmax2 is the softmax over the two channels of [1,2,HW] logits, in
// float64 (only compared within a tolerance).
func softmax2(cls []float32, hw int) []float32 {
	out := make([]float32, len(cls))
	for j := range hw {
		a, b := float64(cls[j]), float64(cls[hw+j])
		m := max(a, b)
		ea, eb := math.Exp(a-m), math.Exp(b-m)
		out[j], out[hw+j] = float32(ea/(ea+eb)), float32(eb/(ea+eb))
	}
	return out
}
