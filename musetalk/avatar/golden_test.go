package avatar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
	"github.com/avatargen/musetalk/internal/goldendir"
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
	if len(x.Data) != 4 {
		t.Fatalf("%s: shape %v, want a box", name, x.Shape)
	}
	return media.Box{int(x.Data[0]), int(x.Data[1]), int(x.Data[2]), int(x.Data[3])}
}

// goldenVersion is one MuseTalk version the blending case was run for
// (the case JSON's details.<version>).
type goldenVersion struct {
	name string
	mode media.ParsingMode
}

// goldenVersions reads the versions of case c from its JSON's details (the
// entries with a parsing mode, sorted by name) and the jaw mode's cheek
// widths.
func goldenVersions(t *testing.T, c *golden.Case) (vs []goldenVersion, left, right int) {
	t.Helper()
	var details map[string]json.RawMessage
	if err := json.Unmarshal(c.Meta["details"], &details); err != nil {
		t.Fatalf("details: %v", err)
	}
	var jaw struct {
		Left  *int `json:"left_cheek_width"`
		Right *int `json:"right_cheek_width"`
	}
	if raw, ok := details["jaw"]; ok {
		if err := json.Unmarshal(raw, &jaw); err != nil {
			t.Fatalf("details.jaw: %v", err)
		}
	}
	modes := map[string]media.ParsingMode{"raw": media.ParsingRaw, "neck": media.ParsingNeck, "jaw": media.ParsingJaw}
	for name, raw := range details {
		var d struct {
			Mode string `json:"mode"`
		}
		if json.Unmarshal(raw, &d) != nil || d.Mode == "" {
			continue
		}
		m, ok := modes[d.Mode]
		if !ok {
			t.Fatalf("details.%s: unknown parsing mode %q", name, d.Mode)
		}
		if m == media.ParsingJaw && (jaw.Left == nil || jaw.Right == nil) {
			t.Fatalf("details.%s uses the jaw mode, but details.jaw states no cheek widths", name)
		}
		vs = append(vs, goldenVersion{name, m})
	}
	if len(vs) == 0 {
		t.Fatal("the case's details name no version")
	}
	slices.SortFunc(vs, func(a, b goldenVersion) int { return strings.Compare(a.name, b.name) })
	if jaw.Left != nil && jaw.Right != nil {
		left, right = *jaw.Left, *jaw.Right
	}
	return vs, left, right
}

// goldenFrameFile returns an image file whose pixels are the case's
// input.frame_bgr. That is the real photo the JSON names (real_image, in
// the media folder beside the golden folder) when it is there with the
// recorded sha256 and the same pixels, so that the decoder is checked
// against cv2.imread's reading of the real file; otherwise the frame
// itself, written as a lossless PNG.
func goldenFrameFile(t *testing.T, c *golden.Case, frame *media.Image8) string {
	t.Helper()
	if frame.C != 3 {
		t.Fatalf("input.frame_bgr has %d channels", frame.C)
	}
	var real struct {
		Path   string `json:"path"`
		SHA256 string `json:"sha256"`
	}
	if raw, ok := c.Meta["real_image"]; ok && json.Unmarshal(raw, &real) == nil && real.Path != "" {
		if dir, err := goldendir.Dir(); err == nil {
			p := filepath.Join(filepath.Dir(dir), "media", real.Path)
			if b, err := os.ReadFile(p); err == nil {
				sum := sha256.Sum256(b)
				if hex.EncodeToString(sum[:]) == real.SHA256 && sameBGR(b, frame) {
					t.Logf("frame: the real photo %s", p)
					return p
				}
			}
		}
	}
	img := image.NewNRGBA(image.Rect(0, 0, frame.W, frame.H))
	for i := range frame.W * frame.H {
		img.Pix[4*i], img.Pix[4*i+1], img.Pix[4*i+2], img.Pix[4*i+3] = frame.Pix[3*i+2], frame.Pix[3*i+1], frame.Pix[3*i], 255
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "frame.png")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("frame: input.frame_bgr (%dx%d) written as %s", frame.W, frame.H, p)
	return p
}

// sameBGR reports whether the PNG in b, decoded by Go's image/png, has the
// pixels of the BGR frame.
func sameBGR(b []byte, frame *media.Image8) bool {
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil || img.Bounds().Dx() != frame.W || img.Bounds().Dy() != frame.H {
		return false
	}
	r0 := img.Bounds().Min
	for y := range frame.H {
		for x := range frame.W {
			r, g, bl, a := img.At(r0.X+x, r0.Y+y).RGBA()
			p := frame.Pix[3*(y*frame.W+x):]
			if a != 0xffff || uint8(r>>8) != p[2] || uint8(g>>8) != p[1] || uint8(bl>>8) != p[0] {
				return false
			}
		}
	}
	return true
}

// TestGoldenPreparation runs the whole preparation of golden case i's
// frame with its face box and parsing map (standing in for the detector
// and BiSeNet) and requires MuseTalk's realtime boxes, parser input and
// blend masks bit for bit, for every version the case records (v1 and
// v1.5). The frame, the versions, their parsing modes and the cheek
// widths all come from the case.
func TestGoldenPreparation(t *testing.T) {
	c := golden.Load(t, "i_blending")
	fixture(t, "still.png") // skips without ffmpeg
	s := c.Set(t)
	nets := testNets(t)
	gp := &goldenParser{classes: goldenU8(t, s, "input.parsing_map")}
	nets.Parser = gp
	in := goldenBox(t, s, "input.face_box")
	wantFrame := goldenU8(t, s, "input.frame_bgr")
	src := goldenFrameFile(t, c, wantFrame)
	versions, left, right := goldenVersions(t, c)
	for _, v := range versions {
		opt := Options{Version: v.name, ParsingMode: v.mode, FaceBox: &in}
		if v.mode == media.ParsingJaw {
			opt.LeftCheek, opt.RightCheek = left, right
		}
		a, err := Prepare(context.Background(), src, filepath.Join(t.TempDir(), v.name), opt, nets, nil)
		if err != nil {
			t.Fatal(err)
		}
		frame, err := a.FrameBGR(0)
		if err != nil {
			t.Fatal(err)
		}
		if frame.W != wantFrame.W || frame.H != wantFrame.H || !bytes.Equal(frame.Pix, wantFrame.Pix) {
			t.Fatalf("%s: decoded frame (%dx%d) differs from input.frame_bgr (%dx%d)", v.name, frame.W, frame.H, wantFrame.W, wantFrame.H)
		}
		if len(a.Frames) != 1 {
			t.Fatalf("%s: %d frames prepared from one image", v.name, len(a.Frames))
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
			if x.got == nil {
				t.Errorf("%s: not produced", x.name)
			} else if x.got.W != want.W || x.got.H != want.H || !bytes.Equal(x.got.Pix, want.Pix) {
				t.Errorf("%s: differs (%dx%d, golden %dx%d)", x.name, x.got.W, x.got.H, want.W, want.H)
			}
		}
		if d := maxDiff(f.Latent, directLatent(t, nets, frame, f.Face)); d > 1e-5 {
			t.Errorf("%s: latent differs from a direct encode by %g", v.name, d)
		}
		gp.input = nil
		a.Close()
	}
}
