package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/media"
)

// dwposeTiny is case k1's size: the real structure at widen 0.125.
func dwposeTiny() DWPoseConfig {
	return DWPoseConfig{Widen: 0.125, Deepen: 1, GAUHidden: 32, GAUS: 16, GAUExpansion: 2}
}

// TestDWPoseSpecSizes checks the specs against the sizes golden case k
// publishes: 470 state_dict tensors at every size, 75 of them BatchNorms'
// num_batches_tracked (one parameter each); 33.65 M parameters with those
// for DWPose-l, 0.96 M for the holdout set's tiny model, and exactly
// 1,316,427 floating ones for the public set's (its structure check).
func TestDWPoseSpecSizes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		cfg     DWPoseConfig
		million float64 // with num_batches_tracked, to two decimals
		exact   int64
	}{
		{"full", DWPoseL(), 33.65, 0},
		{"holdout", DWPoseConfig{Widen: 0.09375, Deepen: 1, GAUHidden: 48, GAUS: 24, GAUExpansion: 2}, 0.96, 0},
		{"tiny", dwposeTiny(), 1.32, 1_316_427},
	} {
		spec := DWPoseSpec(c.cfg)
		if len(spec) != 470-75 {
			t.Errorf("%s: %d tensors, want 395", c.name, len(spec))
		}
		got := SpecParams(spec)
		if m := math.Round(float64(got+75)/1e4) / 100; m != c.million || (c.exact != 0 && got != c.exact) {
			t.Errorf("%s: %d parameters (%.2f M with num_batches_tracked), want %.2f M, exactly %d", c.name, got, m, c.million, c.exact)
		}
		seen := map[string]bool{}
		for _, s := range spec {
			if seen[s.Name] {
				t.Errorf("%s: %s listed twice", c.name, s.Name)
			}
			seen[s.Name] = true
		}
	}
	if got := DWPoseL().BackboneChannels(); got != 1024 {
		t.Errorf("DWPose-l backbone channels %d, want 1024", got)
	}
}

func TestDWPoseConfigValidate(t *testing.T) {
	t.Parallel()
	be := testBackend(t)
	for _, c := range []DWPoseConfig{
		{},
		{Widen: -1, Deepen: 1, GAUHidden: 8, GAUS: 8, GAUExpansion: 2},
		{Widen: 0.01, Deepen: 1, GAUHidden: 8, GAUS: 8, GAUExpansion: 2}, // no stem channel
		{Widen: 1, Deepen: math.NaN(), GAUHidden: 8, GAUS: 8, GAUExpansion: 2},
		{Widen: 1, Deepen: 1, GAUHidden: 0, GAUS: 8, GAUExpansion: 2},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
		if _, err := NewDWPose(be, c, RandomTensors(nil, 1)); err == nil {
			t.Errorf("NewDWPose(%+v): no error", c)
		}
	}
	if err := DWPoseL().Validate(); err != nil {
		t.Error(err)
	}
}

// dwposeEdited serves src with some tensors removed or reshaped.
type dwposeEdited struct {
	src     Tensors
	missing map[string]bool
	shape   map[string][]int
}

func (e dwposeEdited) Tensor(name string) ([]float32, []int, error) {
	if e.missing[name] {
		return nil, nil, fmt.Errorf("tensor %q not found", name)
	}
	d, s, err := e.src.Tensor(name)
	if sh, ok := e.shape[name]; ok && err == nil {
		s = sh
	}
	return d, s, err
}

// TestNewDWPoseReportsEveryProblem loads random weights with two tensors
// missing, one misshapen and a BatchNorm variance below −eps, and expects
// one error naming all four; with the weights intact it loads, infers its
// config and runs.
func TestNewDWPoseReportsEveryProblem(t *testing.T) {
	t.Parallel()
	cfg := dwposeTiny()
	spec := DWPoseSpec(cfg)
	src := RandomTensors(spec, 7)
	be := testBackend(t)
	bad := dwposeEdited{src: negVar{src, "backbone.stage2.1.blocks.1.conv1.bn.running_var"},
		missing: map[string]bool{"head.gau.gamma": true, "backbone.stage3.1.attention.fc.bias": true},
		shape:   map[string][]int{"backbone.stem.1.conv.weight": {4, 4, 3, 1}}}
	_, err := NewDWPose(be, cfg, bad)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"head.gau.gamma", "backbone.stage3.1.attention.fc.bias", "backbone.stem.1.conv.weight",
		"backbone.stage2.1.blocks.1.conv1.bn"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}

	got, err := InferDWPoseConfig(src)
	if err != nil || got != cfg {
		t.Fatalf("InferDWPoseConfig = %+v, %v; want %+v", got, err, cfg)
	}
	net, err := NewDWPose(be, cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	if net.Config() != cfg {
		t.Errorf("Config() = %+v", net.Config())
	}
	x := be.Alloc(1, 3, 100, 100)
	if _, _, err := net.Forward(x); err == nil {
		t.Error("Forward accepted a 100×100 input")
	}
	be.Free(x)
}

// negVar serves src with one tensor negated beyond −1 (an impossible
// BatchNorm variance).
type negVar struct {
	src  Tensors
	name string
}

func (n negVar) Tensor(name string) ([]float32, []int, error) {
	d, s, err := n.src.Tensor(name)
	if name == n.name && err == nil {
		d = append([]float32(nil), d...)
		d[0] = -2
	}
	return d, s, err
}

// TestDWPoseKeypointsArguments checks what Keypoints refuses, and that on
// a valid frame with random weights every keypoint maps from its decoded
// input position through the box's affine.
func TestDWPoseKeypointsArguments(t *testing.T) {
	t.Parallel()
	cfg := dwposeTiny()
	be := testBackend(t)
	net, err := NewDWPose(be, cfg, RandomTensors(DWPoseSpec(cfg), 3))
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	ctx := context.Background()
	frame := media.NewImage8(64, 48, 3)
	for i := range frame.Pix {
		frame.Pix[i] = uint8(i * 7)
	}
	for name, f := range map[string]*media.Image8{
		"nil": nil, "gray": media.NewImage8(64, 48, 1), "empty": {W: 0, H: 0, C: 3},
		"short": {W: 4, H: 4, C: 3, Pix: make([]uint8, 5)},
	} {
		if _, err := net.Keypoints(ctx, f, WholeFrameBox(64, 48)); err == nil {
			t.Errorf("%s frame: no error", name)
		}
	}
	if _, err := net.Keypoints(ctx, frame, DWPoseBox{10, 10, 10, 20}); err == nil {
		t.Error("a box without area: no error")
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := net.Keypoints(done, frame, WholeFrameBox(64, 48)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	r, err := net.run(ctx, frame, WholeFrameBox(64, 48), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range r.inputSpace {
		if got, want := r.result.Keypoints[i], r.affine.ToFrame(p); got != want {
			t.Errorf("keypoint %d: %v, want %v", i, got, want)
		}
	}
	lm := r.result.FaceLandmarks()
	if lm[0] != r.result.Keypoints[DWPoseFaceFirst] || lm[67] != r.result.Keypoints[DWPoseFaceFirst+67] {
		t.Error("FaceLandmarks is not keypoints 23..90")
	}
}

// TestNewDWPoseAffine checks both branches of the aspect fix and the map
// back to the frame (the input's centre is the box's centre; its corners
// are the padded box's).
func TestNewDWPoseAffine(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		box   DWPoseBox
		scale [2]float32
	}{
		{DWPoseBox{0, 0, 512, 512}, [2]float32{640, 640 / float32(0.75)}}, // wide: keep the width
		{DWPoseBox{0, 0, 300, 440}, [2]float32{550 * 0.75, 550}},          // tall: keep the height
	} {
		a, err := NewDWPoseAffine(c.box)
		if err != nil {
			t.Fatal(err)
		}
		if a.Scale != c.scale {
			t.Errorf("%v: scale %v, want %v", c.box, a.Scale, c.scale)
		}
		if got := a.ToFrame([2]float32{144, 192}); math.Abs(got[0]-float64(a.Center[0])) > 1e-9 || math.Abs(got[1]-float64(a.Center[1])) > 1e-9 {
			t.Errorf("%v: the input's centre maps to %v, want %v", c.box, got, a.Center)
		}
		// The matrix maps the frame to the input: the centre to (144, 192),
		// the scale to the input's size.
		m := a.Matrix
		cx := m[0][0]*float64(a.Center[0]) + m[0][1]*float64(a.Center[1]) + m[0][2]
		cy := m[1][0]*float64(a.Center[0]) + m[1][1]*float64(a.Center[1]) + m[1][2]
		if math.Abs(cx-144) > 1e-3 || math.Abs(cy-192) > 1e-3 || math.Abs(m[0][0]*float64(a.Scale[0])-288) > 1e-3 {
			t.Errorf("%v: matrix %v maps the centre to (%g, %g)", c.box, m, cx, cy)
		}
	}
}

// TestDecodeSimCC covers the decoder's rules beyond the golden rows: a
// NaN wins its argmax and keeps its location (numpy's NaN ≤ 0 is false),
// the score is the smaller maximum, and a negative score gives −0.5.
func TestDecodeSimCC(t *testing.T) {
	t.Parallel()
	nan := float32(math.NaN())
	x := []float32{1, 3, 3, 2 /**/, 0, nan, 5, 5 /**/, -1, -2, -3, -4}
	y := []float32{0, 2, 1 /**/, 9, 9, 1 /**/, 1, 2, 3}
	locs, scores := DecodeSimCC(x, y, 3, 4, 3)
	if locs[0] != [2]float32{0.5, 0.5} || scores[0] != 2 {
		t.Errorf("keypoint 0: %v score %g, want [0.5 0.5] score 2", locs[0], scores[0])
	}
	if locs[1] != [2]float32{0.5, 0} || scores[1] == scores[1] {
		t.Errorf("keypoint 1: %v score %g, want [0.5 0] score NaN", locs[1], scores[1])
	}
	if locs[2] != [2]float32{-0.5, -0.5} || scores[2] != -1 {
		t.Errorf("keypoint 2: %v score %g, want [-0.5 -0.5] score -1", locs[2], scores[2])
	}
}

// BenchmarkDWPoseKeypoints times the whole pipeline (warp, both network
// passes as one batch, decoding) for one 1280×720 frame with DWPose-l's
// random weights on the CPU backend.
func BenchmarkDWPoseKeypoints(b *testing.B) {
	be := testBackend(b)
	cfg := DWPoseL()
	net, err := NewDWPose(be, cfg, RandomTensors(DWPoseSpec(cfg), 1))
	if err != nil {
		b.Fatal(err)
	}
	defer net.Close()
	frame := media.NewImage8(1280, 720, 3)
	for i := range frame.Pix {
		frame.Pix[i] = uint8(i * 13)
	}
	box := WholeFrameBox(frame.W, frame.H)
	ctx := context.Background()
	for b.Loop() {
		if _, err := net.Keypoints(ctx, frame, box); err != nil {
			b.Fatal(err)
		}
	}
}
