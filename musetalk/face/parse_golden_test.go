package face

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/model"
)

// parseGoldenTensor reads one tensor of the case as float64.
func parseGoldenTensor(t *testing.T, c *golden.Case, name string) golden.Tensor64 {
	t.Helper()
	x, err := c.Float64(name)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// parseGoldenImage reads a U8 [H,W] or [H,W,C] tensor as an image.
func parseGoldenImage(t *testing.T, c *golden.Case, name string) *media.Image8 {
	t.Helper()
	x := parseGoldenTensor(t, c, name)
	ch := 1
	if len(x.Shape) == 3 {
		ch = x.Shape[2]
	} else if len(x.Shape) != 2 {
		t.Fatalf("%s: shape %v, want [H,W] or [H,W,C]", name, x.Shape)
	}
	m := media.NewImage8(x.Shape[1], x.Shape[0], ch)
	for i, v := range x.Data {
		m.Pix[i] = uint8(v)
	}
	return m
}

// TestGoldenFaceParsing runs case h's FaceParsing.__call__ path (the whole
// photo, size 240): the Pillow resize must be exact, the normalised input
// within 1e-6, and the class map and the raw and neck masks equal to the
// reference except at pixels whose stored top1−top2 logit gap is below
// 2·atol (where float32 rounding may legitimately flip the argmax). The
// network's logits themselves are checked by model's TestGoldenBiSeNet.
func TestGoldenFaceParsing(t *testing.T) {
	t.Parallel()
	c := golden.Load(t, "h_bisenet_face_parsing")
	img := parseGoldenImage(t, c, "input.image_rgb")
	wantParsing := parseGoldenImage(t, c, "output.parsing")
	size := wantParsing.W
	if wantParsing.H != size {
		t.Fatalf("output.parsing is %d×%d, want a square", wantParsing.W, wantParsing.H)
	}

	resized, x := parseInput(img, size)
	wantResized := parseGoldenImage(t, c, "intermediate.resized_rgb")
	if resized.W != wantResized.W || resized.H != wantResized.H || resized.C != wantResized.C {
		t.Fatalf("resized image %d×%d×%d, golden %d×%d×%d", resized.W, resized.H, resized.C, wantResized.W, wantResized.H, wantResized.C)
	}
	if diff := parseCountDiff(resized.Pix, wantResized.Pix, nil); diff > 0 {
		t.Errorf("intermediate.resized_rgb: %d of %d bytes differ (Pillow BILINEAR must be exact)", diff, len(resized.Pix))
	}
	wantX := parseGoldenTensor(t, c, "input.x")
	if !slices.Equal(wantX.Shape, []int{1, 3, size, size}) {
		t.Fatalf("input.x shape %v", wantX.Shape)
	}
	worst := 0.0
	for i, v := range wantX.Data {
		worst = max(worst, math.Abs(float64(x[i])-v))
	}
	t.Logf("input.x: max abs err %.3g", worst)
	if worst > 1e-6 {
		t.Errorf("input.x: max abs err %.3g > 1e-6", worst)
	}

	// Pixels whose stored logits are too close to call.
	atol, ok := c.Atol["output.logits"]
	if !ok {
		t.Fatal("no suggested_tolerance for output.logits")
	}
	logits := parseGoldenTensor(t, c, "output.logits")
	n := size * size
	if len(logits.Data) != model.BiSeNetClasses*n {
		t.Fatalf("output.logits shape %v", logits.Shape)
	}
	unsure := make([]bool, n)
	nClose := 0
	for i := range n {
		top1, top2 := math.Inf(-1), math.Inf(-1)
		for k := range model.BiSeNetClasses {
			v := logits.Data[k*n+i]
			if v > top1 {
				top1, top2 = v, top1
			} else if v > top2 {
				top2 = v
			}
		}
		if top1-top2 < 2*atol {
			unsure[i] = true
			nClose++
		}
	}

	be, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	net, err := model.NewBiSeNet(be, c)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	got, err := NewParser(net, be).Parse(context.Background(), img, size)
	if err != nil {
		t.Fatal(err)
	}
	if got.W != size || got.H != size || got.C != 1 {
		t.Fatalf("parsing map %d×%d×%d, want %d×%d×1", got.W, got.H, got.C, size, size)
	}
	flipped := 0
	for i := range n {
		if got.Pix[i] != wantParsing.Pix[i] {
			flipped++
		}
	}
	bad := parseCountDiff(got.Pix, wantParsing.Pix, unsure)
	t.Logf("output.parsing: %d pixels differ, all among the %d with a logit gap < %.3g", flipped, nClose, 2*atol)
	if bad > 0 {
		t.Errorf("output.parsing: %d pixels with a clear logit gap differ", bad)
	}

	for _, m := range []struct {
		name string
		mode media.ParsingMode
	}{{"output.mask_raw", media.ParsingRaw}, {"output.mask_neck", media.ParsingNeck}} {
		want := parseGoldenImage(t, c, m.name)
		// The reference map gives the reference mask exactly.
		ref, _ := media.ParsingMask(wantParsing, m.mode, 0, 0)
		if d := parseCountDiff(ref.Pix, want.Pix, nil); d > 0 {
			t.Errorf("%s: the mask of output.parsing differs in %d pixels", m.name, d)
		}
		mask, _ := media.ParsingMask(got, m.mode, 0, 0)
		if d := parseCountDiff(mask.Pix, want.Pix, unsure); d > 0 {
			t.Errorf("%s: %d pixels with a clear logit gap differ", m.name, d)
		}
	}
}

// parseCountDiff counts the positions where a and b differ, skipping those
// marked in skip (which may be nil). Different lengths count as all
// different.
func parseCountDiff(a, b []uint8, skip []bool) int {
	if len(a) != len(b) {
		return max(len(a), len(b))
	}
	d := 0
	for i := range a {
		if a[i] != b[i] && (skip == nil || !skip[i]) {
			d++
		}
	}
	return d
}
