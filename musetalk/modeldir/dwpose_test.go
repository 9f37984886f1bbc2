package modeldir

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
)

// TestDWPoseSpecGolden checks the DWPose spec against the state dict of
// golden case k1 (the real mmpose modules at tiny widths): the same names,
// and the same shapes at the case's widths, num_batches_tracked aside (the
// file stores it as [1], torch as a 0-d tensor). The widths are read from
// the file, so the check holds for either set.
func TestDWPoseSpecGolden(t *testing.T) {
	c := golden.Load(t, "k_dwpose_model")
	have := map[string][]int{}
	for _, info := range c.File.Tensors() {
		if strings.HasPrefix(info.Name, "backbone.") || strings.HasPrefix(info.Name, "head.") {
			have[info.Name] = info.Shape
		}
	}
	arch := dwposeL()
	shape := func(name string, dim int) int {
		s, ok := have[name]
		if !ok || len(s) <= dim {
			t.Fatalf("golden tensor %s: %v", name, s)
		}
		return s[dim]
	}
	for i := range arch.stem {
		arch.stem[i] = shape("backbone.stem."+string(rune('0'+i))+".conv.weight", 0)
	}
	for i := range arch.stages {
		arch.stages[i] = shape("backbone.stage"+string(rune('1'+i))+".0.conv.weight", 0)
	}
	arch.hidden = shape("head.mlp.1.weight", 0)
	arch.s = shape("head.gau.gamma", 1)
	spec := arch.spec(true)
	if len(spec) != len(have) {
		t.Errorf("spec has %d tensors, the golden state dict %d", len(spec), len(have))
	}
	var missing []string
	for _, s := range spec {
		got, ok := have[s.Name]
		switch {
		case !ok:
			missing = append(missing, s.Name)
		case strings.HasSuffix(s.Name, ".num_batches_tracked"):
			if len(s.Shape) != 0 || !slices.Equal(got, []int{1}) && len(got) != 0 {
				t.Errorf("%s: spec %v, golden %v", s.Name, s.Shape, got)
			}
		case !slices.Equal(got, s.Shape):
			t.Errorf("%s: spec %v, golden %v", s.Name, s.Shape, got)
		}
		delete(have, s.Name)
	}
	if len(missing) > 0 || len(have) > 0 {
		t.Errorf("spec names %d tensors the golden file lacks (%v), the file has %d more (%v)", len(missing), missing, len(have), have)
	}
}

// TestDWPoseSpecSizes checks the parameter counts the golden README gives:
// 470 tensors each, 1.32 M parameters at the public tiny widths, 33.65 M
// for DWPose-l.
func TestDWPoseSpecSizes(t *testing.T) {
	for _, c := range []struct {
		name   string
		arch   dwposeArch
		params float64
	}{{"tiny", dwposeTiny(), 1.32e6}, {"l", dwposeL(), 33.65e6}} {
		spec := c.arch.spec(true)
		n := 0
		for _, s := range spec {
			if strings.HasSuffix(s.Name, ".num_batches_tracked") {
				continue
			}
			k := 1
			for _, d := range s.Shape {
				k *= d
			}
			n += k
		}
		if len(spec) != 470 || math.Abs(float64(n)-c.params) > 0.005e6 {
			t.Errorf("%s: %d tensors, %d parameters; want 470, %.2f M", c.name, len(spec), n, c.params/1e6)
		}
	}
}
