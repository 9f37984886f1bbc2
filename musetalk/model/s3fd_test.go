package model

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
)

func TestS3FDSpec(t *testing.T) {
	spec := S3FDSpec()
	if len(spec) != 65 {
		t.Errorf("%d tensors, want 65", len(spec))
	}
	if got := SpecParams(spec); got != 22459110 {
		t.Errorf("%d parameters, want 22459110", got)
	}
	byName := map[string][]int{}
	for _, s := range spec {
		if _, dup := byName[s.Name]; dup {
			t.Errorf("%s listed twice", s.Name)
		}
		byName[s.Name] = s.Shape
	}
	for name, want := range map[string][]int{
		"conv1_1.weight":                {64, 3, 3, 3},
		"conv1_1.bias":                  {64},
		"fc6.weight":                    {1024, 512, 3, 3},
		"fc7.weight":                    {1024, 1024, 1, 1},
		"conv6_2.weight":                {512, 256, 3, 3},
		"conv7_1.weight":                {128, 512, 1, 1},
		"conv3_3_norm.weight":           {256},
		"conv5_3_norm.weight":           {512},
		"conv3_3_norm_mbox_conf.weight": {4, 256, 3, 3},
		"conv4_3_norm_mbox_conf.weight": {2, 512, 3, 3},
		"fc7_mbox_loc.weight":           {4, 1024, 3, 3},
		"fc7_mbox_loc.bias":             {4},
		"conv7_2_mbox_conf.bias":        {2},
	} {
		if got, ok := byName[name]; !ok || !slices.Equal(got, want) {
			t.Errorf("%s: shape %v (listed %v), want %v", name, got, ok, want)
		}
	}
	// state_dict order: trunk first, L2Norm scales, then the heads.
	if spec[0].Name != "conv1_1.weight" || spec[38].Name != "conv3_3_norm.weight" || spec[64].Name != "conv7_2_mbox_loc.bias" {
		t.Errorf("order: %s, %s, %s", spec[0].Name, spec[38].Name, spec[64].Name)
	}
}

// s3fdBrokenSource serves random weights but drops or reshapes some.
type s3fdBrokenSource struct {
	Tensors
	missing, reshaped string
}

func (s s3fdBrokenSource) Tensor(name string) ([]float32, []int, error) {
	if name == s.missing {
		return nil, nil, errMissing(name)
	}
	data, shape, err := s.Tensors.Tensor(name)
	if name == s.reshaped && err == nil {
		shape = []int{len(data)}
	}
	return data, shape, err
}

type errMissing string

func (e errMissing) Error() string { return "tensor " + string(e) + " not found" }

func TestNewS3FDReportsBadWeights(t *testing.T) {
	b := testBackend(t)
	src := s3fdBrokenSource{Tensors: RandomTensors(S3FDSpec(), 1), missing: "fc7_mbox_loc.bias", reshaped: "conv2_1.weight"}
	m, err := NewS3FD(b, src)
	if err == nil {
		m.Close()
		t.Fatal("NewS3FD accepted a checkpoint with a missing and a misshapen tensor")
	}
	for _, want := range []string{"s3fd", "fc7_mbox_loc.bias", "conv2_1.weight", "2 problem"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestS3FDForward(t *testing.T) {
	b := testBackend(t)
	m, err := NewS3FD(b, RandomTensors(S3FDSpec(), 7))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	for _, shape := range [][]int{{1, 3, 31, 64}, {1, 3, 64, 31}, {1, 4, 64, 64}, {3, 64, 64}} {
		x := b.Alloc(shape...)
		if _, err := m.Forward(x); err == nil {
			t.Errorf("Forward accepted input %v", shape)
		}
		b.Free(x)
	}

	// A batch of two different odd-sized images: every map floors, fc7's
	// map is 4 larger than the pooled conv5_3, and each batch entry
	// equals a forward pass on its own.
	const h, w = 37, 70
	img := make([]float32, 2*3*h*w)
	for i := range img {
		img[i] = float32((i*7919)%255) - 120
	}
	x := kernels.Upload(b, img, 2, 3, h, w)
	defer b.Free(x)
	heads, err := m.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	wantHW := [S3FDLevels][2]int{{9, 17}, {4, 8}, {2, 4}, {5, 6}, {3, 3}, {2, 2}}
	if heads.N != 2 {
		t.Fatalf("N = %d", heads.N)
	}
	for i, lv := range heads.Levels {
		if lv.Stride != 4<<i || lv.H != wantHW[i][0] || lv.W != wantHW[i][1] {
			t.Errorf("level %d: stride %d, %d×%d; want %d, %v", i+1, lv.Stride, lv.H, lv.W, 4<<i, wantHW[i])
		}
		if len(lv.Cls) != 2*2*lv.H*lv.W || len(lv.Reg) != 2*4*lv.H*lv.W {
			t.Errorf("level %d: %d cls, %d reg values", i+1, len(lv.Cls), len(lv.Reg))
		}
		for _, v := range append(slices.Clone(lv.Cls), lv.Reg...) {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("level %d: non-finite output", i+1)
			}
		}
	}
	for n := range 2 {
		xi := kernels.Upload(b, img[n*3*h*w:(n+1)*3*h*w], 1, 3, h, w)
		single, err := m.Forward(xi)
		b.Free(xi)
		if err != nil {
			t.Fatal(err)
		}
		for i, lv := range single.Levels {
			hw := lv.H * lv.W
			batched := heads.Levels[i]
			if d := maxAbsDiff(lv.Cls, batched.Cls[n*2*hw:(n+1)*2*hw]); d > 1e-4 {
				t.Errorf("image %d level %d: cls differs from the batched pass by %g", n, i+1, d)
			}
			if d := maxAbsDiff(lv.Reg, batched.Reg[n*4*hw:(n+1)*4*hw]); d > 1e-4 {
				t.Errorf("image %d level %d: reg differs from the batched pass by %g", n, i+1, d)
			}
		}
	}
}

func maxAbsDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

func TestMaxOutBackground(t *testing.T) {
	nan := float32(math.NaN())
	// Two images, two positions: channels c0..c3 per image.
	in := []float32{
		1, 5, // c0
		3, nan, // c1
		2, 4, // c2
		-1, -2, // c3 (face)
		0, 0,
		0, 0,
		9, 0,
		7, 8,
	}
	got := maxOutBackground(in, 2, 2)
	want := []float32{3, nan, -1, -2, 9, 0, 7, 8}
	for i := range want {
		if got[i] != want[i] && !(math.IsNaN(float64(got[i])) && math.IsNaN(float64(want[i]))) {
			t.Errorf("maxOutBackground = %v, want %v", got, want)
			break
		}
	}
}

// BenchmarkS3FDForward times one 256×256 frame (≈ 41 GFLOP) on the CPU
// backend; frames cost in proportion to their area.
func BenchmarkS3FDForward(bm *testing.B) {
	b, err := cpu.New(cpu.Options{})
	if err != nil {
		bm.Fatal(err)
	}
	defer b.Close()
	m, err := NewS3FD(b, RandomTensors(S3FDSpec(), 1))
	if err != nil {
		bm.Fatal(err)
	}
	defer m.Close()
	x := kernels.Upload(b, make([]float32, 3*256*256), 1, 3, 256, 256)
	defer b.Free(x)
	for bm.Loop() {
		if _, err := m.Forward(x); err != nil {
			bm.Fatal(err)
		}
	}
}
