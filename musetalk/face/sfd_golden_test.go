package face_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/face"
	"github.com/avatargen/musetalk/musetalk/model"
)

// Golden tests of the detection path (README part 2, cases g and g2):
// preprocessing, post-processing on the stored heads, and the final box of
// the whole detector.

// storedLevels builds image k's levels from the file's softmax outputs
// (output.k.clsI, channel 1) and raw regressions (output.k.regI).
func storedLevels(t *testing.T, s golden.Set, k int) []face.Level {
	t.Helper()
	levels := make([]face.Level, model.S3FDLevels)
	for i := range levels {
		cls := s.Get(t, fmt.Sprintf("output.%d.cls%d", k, i+1))
		h, w := cls.Shape[2], cls.Shape[3]
		levels[i] = face.Level{
			Stride: 4 << i, H: h, W: w,
			Face: s.Float32s(t, fmt.Sprintf("output.%d.cls%d", k, i+1))[h*w:],
			Reg:  s.Float32s(t, fmt.Sprintf("output.%d.reg%d", k, i+1)),
		}
	}
	return levels
}

// checkPostprocess runs the post-processing on levels and compares every
// stage with image k's reference: candidates within atol, the NMS keep list,
// the detections (count exact, values within atol) and the final box exact.
func checkPostprocess(t *testing.T, s golden.Set, k int, levels []face.Level, atol float64) {
	t.Helper()
	cands, err := face.Candidates(levels)
	if err != nil {
		t.Fatal(err)
	}
	compareBoxes(t, s, fmt.Sprintf("output.%d.candidates", k), cands, atol)
	keep := face.NMS(cands, face.NMSThreshold)
	wantKeep := s.Get(t, fmt.Sprintf("output.%d.nms_keep", k)).Data
	if !equalInts(keep, wantKeep) {
		t.Errorf("image %d: nms_keep = %v (%d), want %v (%d)", k, keep, len(keep), wantKeep, len(wantKeep))
	}
	dets := face.Detections(cands, keep)
	compareBoxes(t, s, fmt.Sprintf("output.%d.detections", k), dets, atol)
	box, ok, err := face.FinalBox(dets)
	if err != nil {
		t.Fatal(err)
	}
	checkFinalBox(t, s, k, box, ok)
	t.Logf("image %d: %d candidates, %d kept, %d detections, box %v %v", k, len(cands), len(keep), len(dets), box, ok)
}

// checkFinalBox compares a detector result with output.k.final_box, where
// [-1,-1,-1,-1] stands for no face.
func checkFinalBox(t *testing.T, s golden.Set, k int, box media.Box, ok bool) {
	t.Helper()
	want := s.Get(t, fmt.Sprintf("output.%d.final_box", k)).Data
	if want[0] == -1 {
		if ok {
			t.Errorf("image %d: final box %v, want none", k, box)
		}
		return
	}
	if !ok || !equalInts(box[:], want) {
		t.Errorf("image %d: final box %v (ok %v), want %v", k, box, ok, want)
	}
}

// compareBoxes checks got against the [M,5] reference name: same count,
// every value within atol.
func compareBoxes(t *testing.T, s golden.Set, name string, got []face.Candidate, atol float64) {
	t.Helper()
	want := s.Get(t, name)
	if len(want.Shape) != 2 || want.Shape[1] != 5 || want.Shape[0] != len(got) {
		t.Errorf("%s: %d boxes, want shape %v", name, len(got), want.Shape)
		return
	}
	worst, at := 0.0, 0
	for i, c := range got {
		for j, v := range [5]float32{c.X1, c.Y1, c.X2, c.Y2, c.Score} {
			d := math.Abs(float64(v) - want.Data[5*i+j])
			if !(d <= worst) {
				worst, at = d, 5*i+j
			}
		}
	}
	t.Logf("%s: %d boxes, max abs err %.3g (atol %.3g)", name, len(got), worst, atol)
	if !(worst <= atol) {
		t.Errorf("%s: max abs err %.3g at box %d value %d > atol %.3g", name, worst, at/5, at%5, atol)
	}
}

func equalInts(got []int, want []float64) bool {
	if len(got) != len(want) {
		return false
	}
	for i, g := range got {
		if float64(g) != want[i] {
			return false
		}
	}
	return true
}

// image reads a stored U8 HWC image.
func image(t *testing.T, s golden.Set, name string) *media.Image8 {
	t.Helper()
	x := s.Get(t, name)
	m := media.NewImage8(x.Shape[1], x.Shape[0], x.Shape[2])
	for i, v := range x.Data {
		m.Pix[i] = uint8(v)
	}
	return m
}

// subCases returns the sorted indices k of the tensors named
// prefix.k.suffix: the case's images or sub-cases.
func subCases(s golden.Set, prefix, suffix string) []int {
	var ks []int
	for name := range s {
		if mid, ok := strings.CutPrefix(name, prefix+"."); ok {
			if k, ok := strings.CutSuffix(mid, "."+suffix); ok {
				if n, err := strconv.Atoi(k); err == nil {
					ks = append(ks, n)
				}
			}
		}
	}
	slices.Sort(ks)
	return ks
}

// isPlaceholder reports whether stored candidates are the single all-zero
// row MuseTalk's batch_detect returns when no anchor passes the threshold.
func isPlaceholder(c golden.Tensor64) bool {
	if len(c.Data) != 5 {
		return false
	}
	for _, v := range c.Data {
		if v != 0 {
			return false
		}
	}
	return true
}

func TestGoldenS3FDDetect(t *testing.T) {
	c := golden.Load(t, "g_s3fd")
	s := c.Set(t)
	b, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	net, err := model.NewS3FD(b, c)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	det := face.NewDetector(net, b)

	inputs := subCases(s, "input", "image_bgr")
	if len(inputs) == 0 {
		t.Fatal("no input.k.image_bgr tensors")
	}
	for _, k := range inputs {
		t.Run(fmt.Sprint("input", k), func(t *testing.T) {
			img := image(t, s, fmt.Sprintf("input.%d.image_bgr", k))
			x, err := face.Preprocess(img)
			if err != nil {
				t.Fatal(err)
			}
			s.Compare(t, fmt.Sprintf("input.%d.x", k), x, []int{1, 3, img.H, img.W}, 0)

			// Post-processing on the stored heads: candidates within
			// 1e-4 (torch's float32 exp is within 1–2 ulp of ours),
			// decisions exact.
			checkPostprocess(t, s, k, storedLevels(t, s, k), 1e-4)

			// Our network's heads give the same decisions (the reference
			// made the same ones from its float64 heads); candidates
			// move with the heads' error, scaled by up to 0.1·4·128.
			xt := kernels.Upload(b, x, 1, 3, img.H, img.W)
			heads, err := net.Forward(xt)
			b.Free(xt)
			if err != nil {
				t.Fatal(err)
			}
			levels, err := face.LevelsFromHeads(heads, 0)
			if err != nil {
				t.Fatal(err)
			}
			checkPostprocess(t, s, k, levels, 2e-3)

			// End to end: the detector on the uint8 frame.
			box, ok, err := det.Detect(context.Background(), img)
			if err != nil {
				t.Fatal(err)
			}
			checkFinalBox(t, s, k, box, ok)
		})
	}
}

func TestGoldenSFDPostprocess(t *testing.T) {
	c := golden.Load(t, "g_sfd_postprocess")
	s := c.Set(t)
	cases := subCases(s, "output", "final_box")
	if len(cases) == 0 {
		t.Fatal("no output.k.final_box tensors")
	}
	for _, k := range cases {
		t.Run(fmt.Sprint("case", k), func(t *testing.T) {
			// The planted logits go through the same path as a forward
			// pass's heads: softmax, then the post-processing.
			heads := &model.S3FDHeads{N: 1}
			for i := range heads.Levels {
				cls := s.Get(t, fmt.Sprintf("input.%d.cls%d_logits", k, i+1))
				heads.Levels[i] = model.S3FDLevel{
					Stride: 4 << i, H: cls.Shape[2], W: cls.Shape[3],
					Cls: s.Float32s(t, fmt.Sprintf("input.%d.cls%d_logits", k, i+1)),
					Reg: s.Float32s(t, fmt.Sprintf("input.%d.reg%d", k, i+1)),
				}
			}
			levels, err := face.LevelsFromHeads(heads, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i, lv := range levels {
				name := fmt.Sprintf("output.%d.cls%d", k, i+1)
				want := s.Float32s(t, name)[lv.H*lv.W:]
				worst := 0.0
				for j, p := range lv.Face {
					worst = max(worst, math.Abs(float64(p)-float64(want[j])))
				}
				if worst > 1e-6 {
					t.Errorf("%s: face probability max abs err %.3g > 1e-6", name, worst)
				}
			}

			name := fmt.Sprintf("output.%d.candidates", k)
			if isPlaceholder(s.Get(t, name)) {
				// No face: MuseTalk's batch_detect returns one all-zero
				// placeholder row (score 0, removed by the score filter);
				// our Candidates returns none. Both end with no box.
				cands, err := face.Candidates(levels)
				if err != nil {
					t.Fatal(err)
				}
				if len(cands) != 0 {
					t.Errorf("%d candidates, want none", len(cands))
				}
				if n := s.Get(t, fmt.Sprintf("output.%d.detections", k)).Shape[0]; n != 0 {
					t.Fatalf("golden has %d detections, want 0", n)
				}
				box, ok, err := face.Postprocess(levels)
				if err != nil {
					t.Fatal(err)
				}
				checkFinalBox(t, s, k, box, ok)
				return
			}
			atol, ok := c.Atol[name]
			if !ok {
				t.Fatalf("%s: no suggested_tolerance", name)
			}
			checkPostprocess(t, s, k, levels, atol)
		})
	}
}
