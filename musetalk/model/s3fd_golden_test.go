package model

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// Golden test of S3FD (case g_s3fd, README part 2, case g): the full-size
// network with seeded F16 weights on the case's real crops (input.k.x).
// The post-processing of the same case is tested in package face.

// s3fdInputs returns the sorted indices k of the case's input.k.x tensors.
func s3fdInputs(set golden.Set) []int {
	var ks []int
	for name := range set {
		if mid, ok := strings.CutPrefix(name, "input."); ok {
			if k, ok := strings.CutSuffix(mid, ".x"); ok {
				if n, err := strconv.Atoi(k); err == nil {
					ks = append(ks, n)
				}
			}
		}
	}
	slices.Sort(ks)
	return ks
}

// TestGoldenS3FD is the slowest golden test on the emulator (on 2 cores
// about 40 s with fp32 storage and 80 s with fp16), so it and its backends
// run in parallel with the other golden tests.
func TestGoldenS3FD(t *testing.T) {
	t.Parallel()
	for _, nb := range GoldenBackends {
		t.Run(nb.Name, func(t *testing.T) {
			t.Parallel()
			testGoldenS3FD(t, nb)
		})
	}
}

func testGoldenS3FD(t *testing.T, nb NamedBackend) {
	c := golden.Load(t, "g_s3fd")
	set := c.Set(t)
	b := nb.New(t)
	f16 := nb.Precision == kernels.F16
	// compare judges an output by the backend's precision (see F16Bound).
	compare := func(t *testing.T, name string, got []float32, shape []int, atol float64) {
		t.Helper()
		if f16 {
			ref := set.Get(t, name)
			CompareF16(t, name, got, shape, ref.Data, ref.Shape, atol, F16RelS3FD)
			return
		}
		set.Compare(t, name, got, shape, atol)
	}

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
	var stated int64
	if err := json.Unmarshal(c.Meta["num_weight_params"], &stated); err != nil {
		t.Fatalf("num_weight_params: %v", err)
	}
	if got := m.Params(); got != stated {
		t.Errorf("Params = %d, the JSON's num_weight_params %d", got, stated)
	}

	atol := func(name string) float64 {
		t.Helper()
		a, ok := c.Atol[name]
		if !ok {
			t.Fatalf("%s: no suggested_tolerance in the JSON", name)
		}
		return a
	}
	inputs := s3fdInputs(set)
	if len(inputs) == 0 {
		t.Fatal("no input.k.x tensors")
	}
	for _, k := range inputs {
		t.Run(fmt.Sprint("input", k), func(t *testing.T) {
			xin := set.Get(t, fmt.Sprintf("input.%d.x", k))
			x := kernels.Upload(b, set.Float32s(t, fmt.Sprintf("input.%d.x", k)), xin.Shape...)
			defer b.Free(x)
			seen := map[string][]float32{}
			dims := map[string][]int{}
			// The layer activations stored for this input (the case
			// keeps them for some inputs only); the heads' logits are
			// compared below. An fp16 backend is judged on the heads
			// only (see F16Bound).
			var stored []string
			for name := range set {
				if rest, ok := strings.CutPrefix(name, fmt.Sprintf("intermediate.%d.", k)); ok && !strings.HasSuffix(rest, "_logits") && !f16 {
					stored = append(stored, name)
				}
			}
			slices.Sort(stored)
			var trace s3fdTrace
			if len(stored) > 0 {
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
			for _, full := range stored {
				name := strings.TrimPrefix(full, fmt.Sprintf("intermediate.%d.", k))
				got, ok := seen[name]
				if !ok {
					t.Errorf("the forward pass did not produce %s", full)
					continue
				}
				set.Compare(t, full, got, dims[name], atol(full))
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
				compare(t, logits, lv.Cls, clsShape, 4*atol(fmt.Sprintf("output.%d.cls%d", k, i+1)))
				name := fmt.Sprintf("output.%d.cls%d", k, i+1)
				compare(t, name, softmax2(lv.Cls, lv.H*lv.W), clsShape, atol(name))
				name = fmt.Sprintf("output.%d.reg%d", k, i+1)
				compare(t, name, lv.Reg, []int{1, 4, lv.H, lv.W}, atol(name))
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
