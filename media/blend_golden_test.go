package media

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
)

// u8 reads a golden uint8 tensor as an image (HW or HWC).
func u8(t *testing.T, s golden.Set, name string) *Image8 {
	t.Helper()
	x := s.Get(t, name)
	m := &Image8{H: x.Shape[0], W: x.Shape[1], C: 1, Pix: make([]uint8, len(x.Data))}
	if len(x.Shape) == 3 {
		m.C = x.Shape[2]
	}
	for i, v := range x.Data {
		m.Pix[i] = uint8(v)
	}
	return m
}

func box(t *testing.T, s golden.Set, name string) Box {
	t.Helper()
	x := s.Get(t, name)
	if len(x.Data) != 4 {
		t.Fatalf("%s: shape %v", name, x.Shape)
	}
	return Box{int(x.Data[0]), int(x.Data[1]), int(x.Data[2]), int(x.Data[3])}
}

// exact checks got against a uint8 golden tensor bit for bit.
func exact(t *testing.T, s golden.Set, name string, got *Image8) {
	t.Helper()
	want := u8(t, s, name)
	if want.W != got.W || want.H != got.H || want.C != got.C {
		t.Errorf("%s: got %dx%dx%d, golden %dx%dx%d", name, got.H, got.W, got.C, want.H, want.W, want.C)
		return
	}
	n, first := 0, -1
	for i := range want.Pix {
		if want.Pix[i] != got.Pix[i] {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	if n > 0 {
		t.Errorf("%s: %d of %d values differ; first at %d: got %d, want %d", name, n, len(want.Pix), first, got.Pix[first], want.Pix[first])
	} else {
		t.Logf("%s: exact", name)
	}
}

func TestGoldenBlending(t *testing.T) {
	c := golden.Load(t, "i_blending")
	s := c.Set(t)
	done := map[string]bool{}
	ex := func(name string, got *Image8) {
		t.Helper()
		done[name] = true
		exact(t, s, name, got)
	}
	var jaw struct {
		Jaw struct {
			Left  int `json:"left_cheek_width"`
			Right int `json:"right_cheek_width"`
		} `json:"jaw"`
	}
	if err := json.Unmarshal(c.Meta["details"], &jaw); err != nil {
		t.Fatal(err)
	}
	var details map[string]struct {
		Mode      string `json:"mode"`
		FaceBox   []int  `json:"face_box_used"`
		KRealtime []int  `json:"blur_ksize_realtime"`
		KOffline  []int  `json:"blur_ksize_offline"`
	}
	if err := json.Unmarshal(c.Meta["details"], &details); err != nil {
		t.Fatal(err)
	}
	frame := u8(t, s, "input.frame_bgr")
	gen := u8(t, s, "input.generated_face_bgr")
	parsing := u8(t, s, "input.parsing_map")
	inBox := box(t, s, "input.face_box")
	crop := u8(t, s, "output.v1.crop256_bgr")
	cropW, cropH := crop.W, crop.H

	// The jaw-mode constants.
	for _, k := range []struct {
		name string
		got  []uint8
	}{{"ref.jaw_kernel", JawKernel()}, {"ref.jaw_cheek_kernel", CheekKernel()}} {
		want := u8(t, s, k.name)
		if len(want.Pix) != len(k.got) {
			t.Fatalf("%s: %d entries, golden %d", k.name, len(k.got), len(want.Pix))
		}
		for i := range want.Pix {
			if (want.Pix[i] != 0) != (k.got[i] != 0) {
				t.Fatalf("%s differs at %d", k.name, i)
			}
		}
	}
	ex("ref.jaw_cheek_mask", CheekMask(parsing.W, parsing.H, jaw.Jaw.Left, jaw.Jaw.Right))
	for k, want := range map[int][]int{9: {4, 13, 30, 51, 60, 51, 30, 13, 4}, 21: {0, 2, 2, 4, 6, 11, 15, 20, 25, 28, 30, 28, 25, 20, 15, 11, 6, 4, 2, 2, 0}} {
		if got := GaussianKernel8(k); !slices.Equal(got, want) {
			t.Errorf("GaussianKernel8(%d) = %v, want %v", k, got, want)
		}
	}

	for _, v := range []string{"v1", "v15"} {
		d := details[v]
		face := inBox
		mode := ParsingRaw
		if d.Mode == "jaw" {
			mode = ParsingJaw
			face[3] = min(face[3]+10, frame.H) // extra_margin
		}
		if got := box(t, s, "ref."+v+".face_box"); got != face || !slices.Equal(d.FaceBox, face[:]) {
			t.Fatalf("%s face box %v, golden %v", v, face, got)
		}
		cb, _ := CropBox(face, 1.5)
		if got := box(t, s, "ref."+v+".crop_box"); got != cb {
			t.Fatalf("%s crop box %v, golden %v", v, cb, got)
		}

		c256 := CropResizeLanczos4(frame, face, cropW, cropH)
		ex("output."+v+".crop256_bgr", c256)
		masked := c256.Clone()
		clear(masked.Pix[masked.H/2*masked.W*masked.C:])
		ex("output."+v+".crop256_masked_bgr", masked)
		shape := []int{1, 3, c256.H, c256.W}
		for name, half := range map[string]bool{"vae_input": false, "vae_input_masked": true} {
			n := "output." + v + "." + name
			done[n] = true
			s.Compare(t, n, VAEInput(c256, half), shape, c.Atol[n])
		}

		large := frame.SwapRB().Crop(cb[0], cb[1], cb[2], cb[3])
		ex("intermediate."+v+".face_large_rgb", large)
		if v == "v1" {
			ex("intermediate.v1.faceparsing_resized512_rgb", ResizePIL(large, parsing.W, parsing.H, PILBilinear))
		}
		pm, st := ParsingMask(parsing, mode, jaw.Jaw.Left, jaw.Jaw.Right)
		if st != nil {
			ex("intermediate."+v+".jaw_face_region", st.FaceRegion)
			ex("intermediate."+v+".jaw_dilated", st.Dilated)
			ex("intermediate."+v+".jaw_eroded", st.Eroded)
		}
		ex("intermediate."+v+".parsing_mode_mask512", pm)
		mu, seg := MaskUnblurred(pm, face, cb, 0.5)
		ex("intermediate."+v+".seg_resized", seg)
		ex("intermediate."+v+".mask_unblurred", mu)
		if k := BlurKSize(mu.W, 0.1); k != d.KRealtime[0] {
			t.Errorf("%s realtime ksize %d, golden %d", v, k, d.KRealtime[0])
		}
		if k := BlurKSize(mu.W, 0.05); k != d.KOffline[0] {
			t.Errorf("%s offline ksize %d, golden %d", v, k, d.KOffline[0])
		}

		fr := ResizeLinear(gen, face[2]-face[0], face[3]-face[1])
		ex("intermediate."+v+".face_resized_bgr", fr)
		for _, p := range []struct {
			name  string
			ratio float64
		}{{"realtime", 0.1}, {"offline", 0.05}} {
			m := BlendMask(pm, face, cb, 0.5, p.ratio)
			ex("output."+v+"."+p.name+".mask", m)
			ex("output."+v+"."+p.name+".blended_bgr", Blend(frame, fr, face, cb, m))
		}
	}
	for _, n := range s.Outputs() {
		if !done[n] {
			t.Errorf("%s: not checked", n)
		}
	}
}
