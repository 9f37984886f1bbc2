package face

import (
	"math"
	"slices"
	"testing"

	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/model"
)

func TestFaceProb(t *testing.T) {
	for _, c := range []struct {
		bg, face, want float32
	}{
		{0, 0, 0.5},
		{3, 3, 0.5},
		{0, float32(math.Log(3)), 0.75},
		{1000, -1000, 0},
		{-1000, 1000, 1},
	} {
		if got := FaceProb(c.bg, c.face); math.Abs(float64(got-c.want)) > 1e-7 {
			t.Errorf("FaceProb(%v, %v) = %v, want %v", c.bg, c.face, got, c.want)
		}
	}
	if p := FaceProb(float32(math.NaN()), 0); !math.IsNaN(float64(p)) {
		t.Errorf("FaceProb(NaN, 0) = %v, want NaN", p)
	}
}

// level returns a w×h level of the given stride with every probability 0
// and every regression 0.
func level(stride, h, w int) Level {
	return Level{Stride: stride, H: h, W: w, Face: make([]float32, h*w), Reg: make([]float32, 4*h*w)}
}

func TestCandidatesDecode(t *testing.T) {
	l1, l2 := level(4, 3, 5), level(8, 2, 2)
	l1.Face[1*5+3] = 0.9  // row 1, col 3
	l1.Face[0*5+4] = 0.06 // row 0, col 4: comes first (row order)
	l1.Face[2*5+0] = CandidateThreshold
	l1.Face[2*5+1] = math.Nextafter32(CandidateThreshold, 1)
	l2.Face[1*2+0] = 0.7
	// Row 1, col 3 of level 1: dx = 1, dy = −2, dw = ln(2)/0.2 so w = 2·16,
	// dh = 0 so h = 16.
	j := 1*5 + 3
	l1.Reg[j], l1.Reg[15+j], l1.Reg[30+j], l1.Reg[45+j] = 1, -2, float32(math.Log(2)/0.2), 0
	got, err := Candidates([]Level{l1, l2})
	if err != nil {
		t.Fatal(err)
	}
	// Anchors: level 1 stride 4, side 16, centre (2 + 4col, 2 + 4row).
	near := func(a, b float32) bool { return math.Abs(float64(a-b)) < 1e-4 }
	want := []Candidate{
		{18 - 8, 2 - 8, 18 + 8, 2 + 8, 0.06},
		{14 + 1.6 - 16, 6 - 3.2 - 8, 14 + 1.6 + 16, 6 - 3.2 + 8, 0.9},
		{6 - 8, 10 - 8, 6 + 8, 10 + 8, math.Nextafter32(CandidateThreshold, 1)},
		{4 - 16, 12 - 16, 4 + 16, 12 + 16, 0.7}, // level 2: stride 8, side 32, row 1 col 0
	}
	if len(got) != len(want) {
		t.Fatalf("Candidates = %v, want %v", got, want)
	}
	for i, c := range got {
		w := want[i]
		if !near(c.X1, w.X1) || !near(c.Y1, w.Y1) || !near(c.X2, w.X2) || !near(c.Y2, w.Y2) || c.Score != w.Score {
			t.Errorf("candidate %d = %+v, want %+v", i, c, w)
		}
	}
}

func TestCandidatesRejectsBadLevels(t *testing.T) {
	good := level(4, 2, 2)
	for name, lv := range map[string]Level{
		"short face": {Stride: 4, H: 2, W: 2, Face: make([]float32, 3), Reg: make([]float32, 16)},
		"short reg":  {Stride: 4, H: 2, W: 2, Face: make([]float32, 4), Reg: make([]float32, 15)},
		"stride 0":   {Stride: 0, H: 2, W: 2, Face: make([]float32, 4), Reg: make([]float32, 16)},
		"empty map":  {Stride: 4},
	} {
		if _, err := Candidates([]Level{good, lv}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if c, err := Candidates(nil); err != nil || len(c) != 0 {
		t.Errorf("Candidates(nil) = %v, %v", c, err)
	}
}

func TestNMS(t *testing.T) {
	if keep := NMS(nil, NMSThreshold); len(keep) != 0 {
		t.Errorf("NMS(nil) = %v", keep)
	}
	// a is [0,9]² (area 100 with +1). b3 covers rows 0..2 of a: IoU
	// exactly 30/100 = 0.3, kept (≤ threshold); b4 covers rows 0..3:
	// 0.4, suppressed. touch starts at x = 10: no overlap with +1
	// either. edge shares column 0 with a: IoU 10/190, kept.
	a := Candidate{0, 0, 9, 9, 0.9}
	b3 := Candidate{0, 0, 9, 2, 0.8}
	b4 := Candidate{0, 0, 9, 3, 0.85}
	touch := Candidate{10, 0, 19, 9, 0.7}
	edge := Candidate{-9, 0, 0, 9, 0.6}
	nan := Candidate{float32(math.NaN()), 0, 9, 9, 0.5}
	c := []Candidate{b3, touch, a, edge, b4, nan}
	if got, want := NMS(c, NMSThreshold), []int{2, 0, 1, 3}; !slices.Equal(got, want) {
		t.Errorf("NMS = %v, want %v", got, want)
	}
	// A NaN box that comes first is kept and, as in NumPy, suppresses
	// every other box (each IoU with it is NaN).
	nan.Score = 1
	if got, want := NMS([]Candidate{a, nan, touch}, NMSThreshold), []int{1}; !slices.Equal(got, want) {
		t.Errorf("NMS with a leading NaN box = %v, want %v", got, want)
	}
	// Equal scores: the later index first; identical boxes suppress each
	// other.
	d := Candidate{0, 0, 9, 9, 0.5}
	if got, want := NMS([]Candidate{d, d, d}, NMSThreshold), []int{2}; !slices.Equal(got, want) {
		t.Errorf("NMS of equal boxes = %v, want %v", got, want)
	}
}

func TestDetectionsAndFinalBox(t *testing.T) {
	c := []Candidate{
		{-3.5, 2.99, 40.7, 50.2, 0.8},
		{1, 1, 5, 5, ScoreThreshold},
		{2, 2, 6, 6, 0.95},
	}
	dets := Detections(c, []int{2, 1, 0})
	if len(dets) != 2 || dets[0] != c[2] || dets[1] != c[0] {
		t.Fatalf("Detections = %v", dets)
	}
	box, ok, err := FinalBox(dets[1:])
	if err != nil || !ok || box != (media.Box{0, 2, 40, 50}) {
		t.Errorf("FinalBox = %v, %v, %v; want [0 2 40 50]", box, ok, err)
	}
	if box, ok, err := FinalBox(nil); ok || err != nil || box != (media.Box{}) {
		t.Errorf("FinalBox(nil) = %v, %v, %v", box, ok, err)
	}
	for _, bad := range []Candidate{
		{float32(math.NaN()), 0, 1, 1, 0.9},
		{0, 0, float32(math.Inf(1)), 1, 0.9},
		{0, 0, 1e20, 1, 0.9},
	} {
		if _, ok, err := FinalBox([]Candidate{bad}); err == nil || ok {
			t.Errorf("FinalBox(%v): ok %v, err %v; want an error", bad, ok, err)
		}
	}
	// Negative infinity clips to 0 like any negative value.
	if box, ok, err := FinalBox([]Candidate{{float32(math.Inf(-1)), 1, 2, 3, 0.9}}); err != nil || !ok || box != (media.Box{0, 1, 2, 3}) {
		t.Errorf("FinalBox(-Inf) = %v, %v, %v", box, ok, err)
	}
}

func TestLevelsFromHeads(t *testing.T) {
	heads := &model.S3FDHeads{N: 2}
	for i := range heads.Levels {
		lv := &heads.Levels[i]
		lv.Stride, lv.H, lv.W = 4<<i, 1, 2
		// Image 0: logits equal (p = 0.5). Image 1: face ≫ background.
		lv.Cls = []float32{0, 0, 0, 0, -50, -50, 50, 50}
		lv.Reg = make([]float32, 2*4*2)
		lv.Reg[8] = float32(i + 1) // image 1, dx of position 0
	}
	for n, want := range []float32{0.5, 1} {
		levels, err := LevelsFromHeads(heads, n)
		if err != nil {
			t.Fatal(err)
		}
		for i, lv := range levels {
			if lv.Stride != 4<<i || lv.H != 1 || lv.W != 2 || !slices.Equal(lv.Face, []float32{want, want}) {
				t.Errorf("image %d level %d: %+v", n, i+1, lv)
			}
			if wantDx := float32(n * (i + 1)); lv.Reg[0] != wantDx || len(lv.Reg) != 8 {
				t.Errorf("image %d level %d: reg %v", n, i+1, lv.Reg)
			}
		}
	}
	if _, err := LevelsFromHeads(heads, 2); err == nil {
		t.Error("image 2 of a batch of 2 accepted")
	}
	heads.Levels[3].Reg = heads.Levels[3].Reg[:5]
	if _, err := LevelsFromHeads(heads, 0); err == nil {
		t.Error("inconsistent level accepted")
	}
}

func TestPostprocess(t *testing.T) {
	// One confident anchor on level 2 (stride 8, side 32) at row 2, col 1
	// with zero regression: the box is its prior, centre (12, 20).
	levels := []Level{level(4, 8, 8), level(8, 4, 4)}
	levels[1].Face[2*4+1] = 0.9
	levels[0].Face[0] = 0.2 // a candidate, but below the score threshold
	box, ok, err := Postprocess(levels)
	if err != nil || !ok || box != (media.Box{0, 4, 28, 36}) {
		t.Errorf("Postprocess = %v, %v, %v; want [0 4 28 36]", box, ok, err)
	}
	levels[1].Face[2*4+1] = 0.4
	if box, ok, err := Postprocess(levels); ok || err != nil {
		t.Errorf("Postprocess without a face = %v, %v, %v", box, ok, err)
	}
}
