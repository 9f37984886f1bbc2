package model

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/media"
)

// Golden test of DWPose (case k1, k_dwpose_model; README part 2, case k):
// the tiny RTMPose with DWPose's exact structure and seeded weights, run
// through mmpose's top-down pipeline on a real photo. Every expectation
// comes from the case's own files: the config from its JSON, the box, the
// centre, scale and warp matrix, the warped crop and the model input
// (all exact), the backbone's output, the SimCC logits of the input and of
// its mirror image, their flip-test average and the scores (within the
// JSON's suggested tolerances), and the keypoints: exactly equal where the
// case marks the argmax stable (ref.keypoint_argmax_stable), elsewhere at
// a bin whose reference logit is within the tolerance of the reference
// maximum (the near-tie set).
//
// On an fp16 backend the logits and scores are judged by the fp16 rule
// (F16Bound with F16RelDWPose), and so is the near-tie set: every
// keypoint's bins must be among those whose reference logit is within
// that bound of the maximum, and on the argmax-stable points whose margin
// exceeds twice the bound the keypoints must be exact.

// dwposeCase is case k1 read once per test.
type dwposeCase struct {
	c   *golden.Case
	set golden.Set
	cfg DWPoseConfig
}

func loadDWPoseCase(t *testing.T) *dwposeCase {
	t.Helper()
	c := golden.Load(t, "k_dwpose_model")
	d := &dwposeCase{c: c, set: c.Set(t)}
	var tiny struct {
		Backbone struct {
			Arch         string  `json:"arch"`
			ExpandRatio  float64 `json:"expand_ratio"`
			WidenFactor  float64 `json:"widen_factor"`
			DeepenFactor float64 `json:"deepen_factor"`
			Attention    bool    `json:"channel_attention"`
		} `json:"backbone"`
		Head struct {
			InChannels  int     `json:"in_channels"`
			OutChannels int     `json:"out_channels"`
			InputSize   [2]int  `json:"input_size"`
			Split       float64 `json:"simcc_split_ratio"`
			FinalKernel int     `json:"final_layer_kernel_size"`
			GAU         struct {
				Hidden    int `json:"hidden_dims"`
				S         int `json:"s"`
				Expansion int `json:"expansion_factor"`
			} `json:"gau_cfg"`
		} `json:"head"`
		TestCfg struct {
			FlipTest bool `json:"flip_test"`
		} `json:"test_cfg"`
	}
	if err := json.Unmarshal(c.Meta["config_model_tiny"], &tiny); err != nil {
		t.Fatalf("config_model_tiny: %v", err)
	}
	b, h := tiny.Backbone, tiny.Head
	// The structure this implementation fixes must be the case's.
	if b.Arch != "P5" || b.ExpandRatio != 0.5 || !b.Attention || h.OutChannels != DWPoseKeypoints ||
		h.InputSize != [2]int{DWPoseInputW, DWPoseInputH} || h.Split != DWPoseSplitRatio || h.FinalKernel != 7 ||
		!tiny.TestCfg.FlipTest {
		t.Fatalf("the case's model differs from DWPose's fixed structure: %s", c.Meta["config_model_tiny"])
	}
	d.cfg = DWPoseConfig{Widen: b.WidenFactor, Deepen: b.DeepenFactor,
		GAUHidden: h.GAU.Hidden, GAUS: h.GAU.S, GAUExpansion: h.GAU.Expansion}
	if got := d.cfg.BackboneChannels(); got != h.InChannels {
		t.Fatalf("backbone channels %d, the head's in_channels %d", got, h.InChannels)
	}
	return d
}

func (d *dwposeCase) atol(t *testing.T, name string) float64 {
	t.Helper()
	a, ok := d.c.Atol[name]
	if !ok {
		t.Fatalf("no suggested_tolerance for %s", name)
	}
	return a
}

// image returns a uint8 HWC golden tensor as an image.
func (d *dwposeCase) image(t *testing.T, name string) *media.Image8 {
	t.Helper()
	x := d.set.Get(t, name)
	if len(x.Shape) != 3 {
		t.Fatalf("%s: shape %v, want HWC", name, x.Shape)
	}
	m := media.NewImage8(x.Shape[1], x.Shape[0], x.Shape[2])
	for i, v := range x.Data {
		m.Pix[i] = uint8(v)
	}
	return m
}

// TestGoldenDWPoseSpec checks DWPoseSpec against the case's weights (the
// same 470 state_dict keys as the real checkpoint) and InferDWPoseConfig
// against its config.
func TestGoldenDWPoseSpec(t *testing.T) {
	t.Parallel()
	d := loadDWPoseCase(t)
	c := d.c
	spec := DWPoseSpec(d.cfg)
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
		if prefix, _, _ := strings.Cut(info.Name, "."); prefix != "backbone" && prefix != "head" {
			continue
		}
		weightsInFile++
		fileParams += int64(info.NumElements())
		if strings.HasSuffix(info.Name, ".num_batches_tracked") {
			continue
		}
		floatParams += int64(info.NumElements())
		if !inSpec[info.Name] {
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
	if got := SpecParams(spec); got != floatParams {
		t.Errorf("spec has %d parameters, the file's floating weights %d", got, floatParams)
	}
	if got, err := InferDWPoseConfig(c); err != nil || got != d.cfg {
		t.Errorf("InferDWPoseConfig = %+v, %v; the case's config is %+v", got, err, d.cfg)
	}
}

// TestGoldenDWPosePipeline checks the pre- and post-processing around the
// network, which need no backend: the box's centre, scale and warp matrix,
// the warped crop and the model input bit for bit, the flip indices, the
// flip-test average, the SimCC decoding (on the case's averaged logits
// and on its synthetic rows: negative maxima, an exact tie, all zeros) and
// the mapping back to the frame, all exactly.
func TestGoldenDWPosePipeline(t *testing.T) {
	t.Parallel()
	d := loadDWPoseCase(t)
	s := d.set
	img := d.image(t, "input.image_bgr_u8")
	bb := s.Get(t, "input.bbox_xyxy").Data
	box := DWPoseBox{float32(bb[0]), float32(bb[1]), float32(bb[2]), float32(bb[3])}
	if box != WholeFrameBox(img.W, img.H) {
		t.Errorf("input.bbox_xyxy %v, WholeFrameBox %v", box, WholeFrameBox(img.W, img.H))
	}
	a, err := NewDWPoseAffine(box)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range s.Get(t, "ref.bbox_center").Data {
		if float64(a.Center[i]) != v {
			t.Errorf("centre[%d] = %g, want %g", i, a.Center[i], v)
		}
	}
	for i, v := range s.Get(t, "ref.bbox_scale").Data {
		if float64(a.Scale[i]) != v {
			t.Errorf("scale[%d] = %g, want %g", i, a.Scale[i], v)
		}
	}
	for i, v := range s.Get(t, "ref.warp_matrix").Data {
		if got := a.Matrix[i/3][i%3]; got != v {
			t.Errorf("warp matrix[%d][%d] = %.17g, want %.17g", i/3, i%3, got, v)
		}
	}
	warped, input := DWPoseInput(img, a)
	want := d.image(t, "intermediate.warped_bgr_u8")
	if diff := countDiff(warped.Pix, want.Pix); diff != 0 || warped.W != want.W || warped.H != want.H {
		t.Errorf("warped crop: %dx%d, %d of %d values differ from cv2.warpAffine's", warped.W, warped.H, diff, len(want.Pix))
	}
	mi := s.Get(t, "input.model_input")
	if !slices.Equal(mi.Shape, []int{1, 3, DWPoseInputH, DWPoseInputW}) {
		t.Fatalf("input.model_input shape %v", mi.Shape)
	}
	if diff := countDiff(input, s.Float32s(t, "input.model_input")); diff != 0 {
		t.Errorf("model input: %d values differ from mmengine's", diff)
	}
	for i, v := range s.Get(t, "ref.data_preprocessor_mean").Data {
		if float64(dwposeMean[i]) != v || float64(dwposeStd[i]) != s.Get(t, "ref.data_preprocessor_std").Data[i] {
			t.Errorf("mean/std[%d] = %g/%g, golden %g/%g", i, dwposeMean[i], dwposeStd[i], v, s.Get(t, "ref.data_preprocessor_std").Data[i])
		}
	}
	for i, v := range s.Get(t, "ref.flip_indices").Data {
		if float64(dwposeFlipIndices[i]) != v {
			t.Errorf("flip index %d = %d, want %g", i, dwposeFlipIndices[i], v)
		}
	}

	// The flip-test average and the decoding of the reference's own logits.
	avgX := DWPoseFlipAverage(s.Float32s(t, "output.simcc_x"), s.Float32s(t, "output.simcc_x_flip"), DWPoseBinsX, true)
	avgY := DWPoseFlipAverage(s.Float32s(t, "output.simcc_y"), s.Float32s(t, "output.simcc_y_flip"), DWPoseBinsY, false)
	if diff := countDiff(avgX, s.Float32s(t, "output.simcc_x_avg")); diff != 0 {
		t.Errorf("flip average x: %d values differ", diff)
	}
	if diff := countDiff(avgY, s.Float32s(t, "output.simcc_y_avg")); diff != 0 {
		t.Errorf("flip average y: %d values differ", diff)
	}
	locs, scores := DecodeSimCC(s.Float32s(t, "output.simcc_x_avg"), s.Float32s(t, "output.simcc_y_avg"),
		DWPoseKeypoints, DWPoseBinsX, DWPoseBinsY)
	checkDecode(t, "output", locs, scores, s.Float32s(t, "output.keypoints_input_space"), s.Float32s(t, "output.keypoint_scores_decode"))
	synX, synY := s.Get(t, "ref.decode_synth.simcc_x"), s.Get(t, "ref.decode_synth.simcc_y")
	k := synX.Shape[1]
	locs2, scores2 := DecodeSimCC(s.Float32s(t, "ref.decode_synth.simcc_x"), s.Float32s(t, "ref.decode_synth.simcc_y"),
		k, synX.Shape[2], synY.Shape[2])
	checkDecode(t, "decode_synth", locs2, scores2, s.Float32s(t, "ref.decode_synth.keypoints"), s.Float32s(t, "ref.decode_synth.scores"))
	kp := s.Get(t, "output.keypoints").Data
	for i, p := range locs {
		got := a.ToFrame(p)
		if got[0] != kp[2*i] || got[1] != kp[2*i+1] {
			t.Errorf("keypoint %d: ToFrame(%v) = %v, want [%g %g]", i, p, got, kp[2*i], kp[2*i+1])
		}
	}
}

func checkDecode(t *testing.T, what string, locs [][2]float32, scores []float32, wantLocs, wantScores []float32) {
	t.Helper()
	for i := range locs {
		if locs[i][0] != wantLocs[2*i] || locs[i][1] != wantLocs[2*i+1] || scores[i] != wantScores[i] {
			t.Errorf("%s: keypoint %d decodes to %v score %g, want [%g %g] score %g",
				what, i, locs[i], scores[i], wantLocs[2*i], wantLocs[2*i+1], wantScores[i])
		}
	}
}

func countDiff[T comparable](got, want []T) int {
	if len(got) != len(want) {
		return max(len(got), len(want))
	}
	n := 0
	for i := range got {
		if got[i] != want[i] {
			n++
		}
	}
	return n
}

// TestGoldenDWPose runs the whole pipeline, network included, on every
// golden backend.
func TestGoldenDWPose(t *testing.T) {
	t.Parallel()
	for _, nb := range GoldenBackends {
		t.Run(nb.Name, func(t *testing.T) {
			t.Parallel()
			testGoldenDWPose(t, nb)
		})
	}
}

func testGoldenDWPose(t *testing.T, nb NamedBackend) {
	d := loadDWPoseCase(t)
	s := d.set
	be := nb.New(t)
	f16 := nb.Precision == kernels.F16
	net, err := NewDWPose(be, d.cfg, d.c)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	img := d.image(t, "input.image_bgr_u8")
	var backbone []float32
	var bshape []int
	r, err := net.run(context.Background(), img, WholeFrameBox(img.W, img.H), func(name string, x *kernels.Tensor) {
		if name == "backbone_out" {
			backbone, bshape = make([]float32, x.Len()), x.Shape()
			if err := be.Download(backbone, x); err != nil {
				t.Fatal(err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// What the network computed, by the backend's rule.
	compare := func(name string, got []float32, shape ...int) {
		t.Helper()
		atol := d.atol(t, name)
		if f16 {
			ref := s.Get(t, name)
			CompareF16(t, name, got, shape, ref.Data, ref.Shape, atol, F16RelDWPose)
			return
		}
		s.Compare(t, name, got, shape, atol)
	}
	if !f16 {
		// Intermediates are judged on fp32 backends only (see F16Bound).
		half := len(backbone) / 2
		one := append([]int{1}, bshape[1:]...)
		s.Compare(t, "intermediate.backbone_out", backbone[:half], one, d.atol(t, "intermediate.backbone_out"))
		s.Compare(t, "intermediate.backbone_out_flip", backbone[half:], one, d.atol(t, "intermediate.backbone_out_flip"))
	}
	kx, ky := []int{1, DWPoseKeypoints, DWPoseBinsX}, []int{1, DWPoseKeypoints, DWPoseBinsY}
	compare("output.simcc_x", r.simccX[0], kx...)
	compare("output.simcc_y", r.simccY[0], ky...)
	compare("output.simcc_x_flip", r.simccX[1], kx...)
	compare("output.simcc_y_flip", r.simccY[1], ky...)
	compare("output.simcc_x_avg", r.avgX, kx...)
	compare("output.simcc_y_avg", r.avgY, ky...)
	compare("output.keypoint_scores", r.result.Scores[:], 1, DWPoseKeypoints)

	// The pipeline around the network is exact (TestGoldenDWPosePipeline);
	// here it must have run on this frame.
	if countDiff(r.warped.Pix, d.image(t, "intermediate.warped_bgr_u8").Pix) != 0 {
		t.Error("the warped crop differs from cv2.warpAffine's")
	}
	if countDiff(r.input, s.Float32s(t, "input.model_input")) != 0 {
		t.Error("the model input differs from mmengine's")
	}

	// Keypoints.
	tolX, tolY := d.atol(t, "output.simcc_x_avg"), d.atol(t, "output.simcc_y_avg")
	refX, refY := s.Get(t, "output.simcc_x_avg").Data, s.Get(t, "output.simcc_y_avg").Data
	if f16 {
		tolX = F16Bound(tolX, F16RelDWPose, maxAbs(refX))
		tolY = F16Bound(tolY, F16RelDWPose, maxAbs(refY))
	}
	stable := s.Get(t, "ref.keypoint_argmax_stable").Data
	marginX, marginY := s.Get(t, "ref.simcc_x_avg_top2_margin").Data, s.Get(t, "ref.simcc_y_avg_top2_margin").Data
	wantIn := s.Get(t, "output.keypoints_input_space").Data
	wantKp := s.Get(t, "output.keypoints").Data
	lm := s.Get(t, "output.face_landmarks_68_int32").Data
	exact, nearTie, moved := 0, 0, 0
	for i, p := range r.inputSpace {
		got := r.result.Keypoints[i]
		// Stable: the reference's top two bins are further apart than
		// twice what this backend may be off by, so the argmax cannot
		// move (on fp32 that is the case's own flag).
		isStable := stable[i] == 1
		if f16 {
			isStable = isStable && marginX[i] > 2*tolX && marginY[i] > 2*tolY
		}
		if isStable {
			exact++
			if float64(p[0]) != wantIn[2*i] || float64(p[1]) != wantIn[2*i+1] || got[0] != wantKp[2*i] || got[1] != wantKp[2*i+1] {
				t.Errorf("argmax-stable keypoint %d: input space %v, frame %v; want [%g %g], [%g %g]",
					i, p, got, wantIn[2*i], wantIn[2*i+1], wantKp[2*i], wantKp[2*i+1])
			}
			if j := i - DWPoseFaceFirst; j >= 0 && j < 68 && (float64(int32(got[0])) != lm[2*j] || float64(int32(got[1])) != lm[2*j+1]) {
				t.Errorf("face landmark %d: %v truncates to (%d, %d), want (%g, %g)", j, got, int32(got[0]), int32(got[1]), lm[2*j], lm[2*j+1])
			}
			continue
		}
		// Elsewhere each axis's bin must be in the near-tie set: a
		// reference logit within the tolerance of the reference maximum.
		nearTie++
		if float64(p[0]) != wantIn[2*i] || float64(p[1]) != wantIn[2*i+1] {
			moved++
		}
		for axis, v := range []struct {
			ref  []float64
			bins int
			tol  float64
		}{{refX, DWPoseBinsX, tolX}, {refY, DWPoseBinsY, tolY}} {
			row := v.ref[i*v.bins : (i+1)*v.bins]
			bin := int(p[axis] * DWPoseSplitRatio)
			top := slices.Max(row)
			if p[axis] < 0 || bin >= v.bins || row[bin] < top-v.tol {
				t.Errorf("keypoint %d axis %d: bin %d (ref logit %g) is not within %g of the reference maximum %g",
					i, axis, bin, row[min(max(bin, 0), v.bins-1)], v.tol, top)
			}
		}
		if want := r.affine.ToFrame(p); got != want {
			t.Errorf("keypoint %d: frame %v, ToFrame gives %v", i, got, want)
		}
	}
	t.Logf("keypoints: %d exact (argmax-stable), %d in the near-tie set (%d at another bin than the reference's)", exact, nearTie, moved)
}

func maxAbs(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, math.Abs(x))
	}
	return m
}
