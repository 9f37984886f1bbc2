package model_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/musetalk/model"
)

// TestGoldenBiSeNet runs case h's BiSeNet (full size, seeded fp16 weights
// with non-trivial BatchNorm statistics) on its input.x and compares the
// main head's logits and every intermediate with the JSON's suggested
// tolerances. The pixel path around it (resize, normalisation, argmax,
// masks) is tested in package face. On an fp16 backend only the logits
// are compared, by the fp16 rule (see model.F16Bound).
func TestGoldenBiSeNet(t *testing.T) {
	t.Parallel()
	for _, nb := range model.GoldenBackends {
		t.Run(nb.Name, func(t *testing.T) { testGoldenBiSeNet(t, nb) })
	}
}

func testGoldenBiSeNet(t *testing.T, nb model.NamedBackend) {
	c := golden.Load(t, "h_bisenet_face_parsing")
	be := nb.New(t)
	f16 := nb.Precision == kernels.F16

	// The spec is exactly the file's floating weights.
	spec := model.BiSeNetSpec()
	inSpec := map[string]bool{}
	for _, s := range spec {
		inSpec[s.Name] = true
		info, ok := c.File.Info(s.Name)
		if !ok {
			t.Errorf("spec tensor %s not in the golden file", s.Name)
		} else if !slices.Equal(info.Shape, s.Shape) {
			t.Errorf("%s: spec shape %v, file %v", s.Name, s.Shape, info.Shape)
		}
	}
	weightsInFile, fileParams, floatParams := 0, int64(0), int64(0)
	for _, info := range c.File.Tensors() {
		if prefix, _, _ := strings.Cut(info.Name, "."); prefix == "input" || prefix == "output" || prefix == "output_f64" || prefix == "intermediate" || prefix == "ref" {
			continue
		}
		weightsInFile++
		fileParams += int64(info.NumElements())
		if !strings.HasSuffix(info.Name, ".num_batches_tracked") {
			floatParams += int64(info.NumElements())
		}
		if !inSpec[info.Name] && !strings.HasSuffix(info.Name, ".num_batches_tracked") {
			t.Errorf("file weight %s is not in the spec", info.Name)
		}
	}
	var n int
	if raw, ok := c.Meta["num_weight_tensors"]; !ok || json.Unmarshal(raw, &n) != nil || n != weightsInFile {
		t.Errorf("num_weight_tensors %s, file holds %d", raw, weightsInFile)
	}
	var params int64
	if raw, ok := c.Meta["num_weight_params"]; !ok || json.Unmarshal(raw, &params) != nil || params != fileParams {
		t.Errorf("num_weight_params %s, file holds %d", raw, fileParams)
	}
	if got := model.SpecParams(spec); got != floatParams {
		t.Errorf("spec has %d parameters, the file's floating weights %d", got, floatParams)
	}

	net, err := model.NewBiSeNet(be, c)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()

	ref := golden.Set{}
	for _, name := range append(c.Names("intermediate."), "input.x", "output.logits") {
		if x, err := c.Float64(name); err != nil {
			t.Fatal(err)
		} else {
			ref[name] = x
		}
	}
	x := kernels.Upload(be, ref.Float32s(t, "input.x"), ref.Get(t, "input.x").Shape...)
	seen := map[string]bool{}
	out, err := model.BiSeNetForwardTrace(net, x, func(name string, a *kernels.Tensor) {
		name = "intermediate." + name
		seen[name] = true
		if _, ok := ref[name]; !ok || f16 {
			return
		}
		ref.Compare(t, name, bsDownload(t, be, a), a.Shape(), bsAtol(t, c, name))
	})
	if err != nil {
		t.Fatal(err)
	}
	if f16 {
		want := ref.Get(t, "output.logits")
		model.CompareF16(t, "output.logits", bsDownload(t, be, out), out.Shape(), want.Data, want.Shape,
			bsAtol(t, c, "output.logits"), model.F16RelBiSeNet)
	} else {
		ref.Compare(t, "output.logits", bsDownload(t, be, out), out.Shape(), bsAtol(t, c, "output.logits"))
	}
	for _, name := range c.Names("intermediate.") {
		if !seen[name] && name != "intermediate.resized_rgb" {
			t.Errorf("the forward pass did not produce %s", name)
		}
	}
}

func bsAtol(t *testing.T, c *golden.Case, name string) float64 {
	t.Helper()
	atol, ok := c.Atol[name]
	if !ok {
		t.Fatalf("no suggested_tolerance for %s", name)
	}
	return atol
}

func bsDownload(t *testing.T, be kernels.Backend, x *kernels.Tensor) []float32 {
	t.Helper()
	out := make([]float32, x.Len())
	if err := be.Download(out, x); err != nil {
		t.Fatal(err)
	}
	return out
}
