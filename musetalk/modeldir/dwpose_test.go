package modeldir

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/face"
	"github.com/avatargen/musetalk/musetalk/model"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// TestDWPoseCheckpointSpecGolden checks the checkpoint spec (the network's
// tensors and the BatchNorm buffers) against the state dict of golden
// case k1 (the real mmpose modules at tiny widths): the same names, the
// same shapes at the case's size, num_batches_tracked aside (the file
// stores it as [1], torch as a 0-d tensor). The size is read from the
// file, so the check holds for either set.
func TestDWPoseCheckpointSpecGolden(t *testing.T) {
	c := golden.Load(t, "k_dwpose_model")
	cfg, err := model.InferDWPoseConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string][]int{}
	for _, info := range c.File.Tensors() {
		if strings.HasPrefix(info.Name, "backbone.") || strings.HasPrefix(info.Name, "head.") {
			have[info.Name] = info.Shape
		}
	}
	spec := dwposeCheckpointSpec(cfg)
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

// TestDWPoseSpecSizes checks the sizes the golden README gives: 470
// state-dict tensors each, 1.32 M parameters for the tiny DWPose, 33.65 M
// for DWPose-l.
func TestDWPoseSpecSizes(t *testing.T) {
	for _, c := range []struct {
		name   string
		spec   []model.TensorSpec
		params float64
	}{{"tiny", dwposeCheckpointSpec(dwposeTiny()), 1.32e6}, {"l", DWPoseSpec(), 33.65e6}} {
		n := 0
		for _, s := range c.spec {
			if strings.HasSuffix(s.Name, ".num_batches_tracked") {
				continue
			}
			k := 1
			for _, d := range s.Shape {
				k *= d
			}
			n += k
		}
		if len(c.spec) != 470 || math.Abs(float64(n)-c.params) > 0.005e6 {
			t.Errorf("%s: %d tensors, %d parameters; want 470, %.2f M", c.name, len(c.spec), n, c.params/1e6)
		}
	}
}

// TestTinyDWPoseLandmarks: the tiny DWPose (seeds 1 and 7) draws its face
// template on the test photo and on a drawn picture: every face landmark
// within a pixel of where the template puts it in a square frame, positive
// scores, and MuseTalk's rules make a landmark box of them (not the S3FD
// fallback), so tiny renders take the landmark path.
func TestTinyDWPoseLandmarks(t *testing.T) {
	pics := map[string]*media.Image8{"drawn": drawnFace()}
	if rgb := astronautRGB(t); rgb != nil {
		pics["astronaut"] = rgb
	}
	targets := tinyDWPoseTargets(model.DWPoseBinsX, model.DWPoseBinsY)
	// Where a target lands in a square frame of side w.
	at := func(u float64, n int, scale float64, w int) float64 {
		bin := u*tinyDWPoseS + float64(n-1)/2
		return (bin/float64(n)*scale - (scale-1)/2) * float64(w)
	}
	b := newBackend(t)
	for _, seed := range []uint64{1, 7} {
		d := sharedTiny(t)
		if seed != 7 {
			d = Dir(t.TempDir())
			if err := WriteTiny(string(d), seed); err != nil {
				t.Fatal(err)
			}
		}
		src, err := d.Open(weights.KindDWPose, V15)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := model.InferDWPoseConfig(src)
		if err != nil {
			t.Fatal(err)
		}
		if cfg != dwposeTiny() {
			t.Errorf("tiny config read back as %+v", cfg)
		}
		net, err := model.NewDWPose(b, cfg, src)
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer net.Close()
		for name, rgb := range pics {
			bgr := rgb.SwapRB()
			r, err := net.Keypoints(context.Background(), bgr, model.WholeFrameBox(bgr.W, bgr.H))
			if err != nil {
				t.Fatal(err)
			}
			for i := range face.FaceLandmarkCount {
				k := face.FaceLandmarkStart + i
				p := r.Keypoints[k]
				wx := at(targets[k][0], model.DWPoseBinsX, 1.25, bgr.W)
				wy := at(targets[k][1], model.DWPoseBinsY, 1.25/0.75, bgr.H)
				if r.Scores[k] <= 0 || math.Abs(p[0]-wx) > 1 || math.Abs(p[1]-wy) > 1 {
					t.Errorf("seed %d, %s: face landmark %d at %v (score %g), want (%.1f, %.1f)", seed, name, i, p, r.Scores[k], wx, wy)
				}
			}
			lm, err := face.TruncLandmarks(r.Keypoints[:])
			if err != nil {
				t.Fatal(err)
			}
			got := face.MuseTalkBox(lm, media.Box{0, 0, bgr.W, bgr.H}, true, 0)
			// The template's box: x ±0.95, y −1.2..1 around (0.5, 0.42).
			want := media.Box{183, 92, 328, 317} // 0.3575, 0.18, 0.6425 and 0.62 of 512
			t.Logf("seed %d, %s: landmark box %v (%s), about %v", seed, name, got.Box, got.Source, want)
			if got.Source != face.SourceLandmarks {
				t.Errorf("seed %d, %s: box from %s", seed, name, got.Source)
			}
			for i := range got.Box {
				if bgr.W == 512 && bgr.H == 512 && abs(got.Box[i]-want[i]) > 2 {
					t.Errorf("seed %d, %s: box %v, want about %v", seed, name, got.Box, want)
					break
				}
			}
		}
	}
}

func abs(x int) int { return max(x, -x) }
