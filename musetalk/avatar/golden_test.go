package avatar

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
	"github.com/avatargen/musetalk/media"
)

// goldenParser returns golden case i's parsing map whatever the input and
// keeps the input it was given.
type goldenParser struct {
	classes *media.Image8
	input   *media.Image8
}

func (p *goldenParser) Parse(ctx context.Context, rgb *media.Image8, size int) (*media.Image8, error) {
	p.input = rgb.Clone()
	return p.classes, nil
}

func goldenU8(t *testing.T, s golden.Set, name string) *media.Image8 {
	t.Helper()
	x := s.Get(t, name)
	m := &media.Image8{H: x.Shape[0], W: x.Shape[1], C: 1, Pix: make([]uint8, len(x.Data))}
	if len(x.Shape) == 3 {
		m.C = x.Shape[2]
	}
	for i, v := range x.Data {
		m.Pix[i] = uint8(v)
	}
	return m
}

func goldenBox(t *testing.T, s golden.Set, name string) media.Box {
	t.Helper()
	x := s.Get(t, name)
	return media.Box{int(x.Data[0]), int(x.Data[1]), int(x.Data[2]), int(x.Data[3])}
}

// TestGoldenPreparation runs the whole preparation of the real photo with
// golden case i's face box and parsing map (standing in for the detector
// and BiSeNet) and requires MuseTalk's realtime boxes, parser input and
// blend masks bit for bit, for v1 and v1.5.
func TestGoldenPreparation(t *testing.T) {
	c := golden.Load(t, "i_blending")
	if _, err := os.Stat(astronaut); err != nil {
		t.Skip(err)
	}
	fixture(t, "still.png") // skips without ffmpeg
	s := c.Set(t)
	nets := testNets(t)
	gp := &goldenParser{classes: goldenU8(t, s, "input.parsing_map")}
	nets.Parser = gp
	in := goldenBox(t, s, "input.face_box")
	for _, v := range []struct {
		name string
		opt  Options
	}{
		{"v1", Options{Version: "v1", FaceBox: &in}},
		{"v15", Options{Version: "v15", ParsingMode: media.ParsingJaw, FaceBox: &in}},
	} {
		a, err := Prepare(context.Background(), astronaut, filepath.Join(t.TempDir(), v.name), v.opt, nets, nil)
		if err != nil {
			t.Fatal(err)
		}
		frame, err := a.FrameBGR(0)
		if err != nil {
			t.Fatal(err)
		}
		if want := goldenU8(t, s, "input.frame_bgr"); !bytes.Equal(frame.Pix, want.Pix) {
			t.Fatalf("%s: decoded frame differs from cv2.imread's", v.name)
		}
		f := a.Frames[0]
		if want := goldenBox(t, s, "ref."+v.name+".face_box"); f.Face != want {
			t.Errorf("%s: face box %v, golden %v", v.name, f.Face, want)
		}
		if want := goldenBox(t, s, "ref."+v.name+".crop_box"); f.Crop != want {
			t.Errorf("%s: crop box %v, golden %v", v.name, f.Crop, want)
		}
		for _, x := range []struct {
			name string
			got  *media.Image8
		}{
			{"intermediate." + v.name + ".face_large_rgb", gp.input},
			{"output." + v.name + ".realtime.mask", f.Mask},
		} {
			want := goldenU8(t, s, x.name)
			if x.got.W != want.W || x.got.H != want.H || !bytes.Equal(x.got.Pix, want.Pix) {
				t.Errorf("%s: differs (%dx%d, golden %dx%d)", x.name, x.got.W, x.got.H, want.W, want.H)
			}
		}
		if d := maxDiff(f.Latent, directLatent(t, nets, frame, f.Face)); d > 1e-5 {
			t.Errorf("%s: latent differs from a direct encode by %g", v.name, d)
		}
		a.Close()
	}
}
