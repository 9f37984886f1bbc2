package face

import (
	"math"
	"testing"

	"github.com/avatargen/musetalk/media"
)

// wholeBody returns 133 keypoints whose face landmarks form an oval in
// the box (100, 60)–(200, 200), landmark 29 (the nose) at y 130.
func wholeBody() [][2]float64 {
	kp := make([][2]float64, WholeBodyKeypoints)
	for i := range FaceLandmarkCount {
		t := float64(i) / FaceLandmarkCount * 2 * math.Pi
		kp[FaceLandmarkStart+i] = [2]float64{150 + 50*math.Cos(t), 130 + 70*math.Sin(t)}
	}
	kp[FaceLandmarkStart+28] = [2]float64{150.9, 120.9}
	kp[FaceLandmarkStart+29] = [2]float64{150.9, 130.9}
	kp[FaceLandmarkStart+30] = [2]float64{150.9, 139.9}
	return kp
}

func TestMuseTalkBox(t *testing.T) {
	s3fd := media.Box{90, 50, 210, 220}
	lm, err := TruncLandmarks(wholeBody())
	if err != nil {
		t.Fatal(err)
	}
	if lm[29] != [2]int32{150, 130} {
		t.Fatalf("landmark 29 = %v, want truncated (150, 130)", lm[29])
	}
	got := MuseTalkBox(lm, s3fd, true, 0)
	// max y 200, half 130: dist 70, upper 60.
	if want := (media.Box{100, 60, 200, 200}); got.Box != want || got.Source != SourceLandmarks {
		t.Errorf("box %v from %s, want %v from landmarks", got.Box, got.Source, want)
	}
	if got.RangeMinus != 9 || got.RangePlus != 10 {
		t.Errorf("range terms %d, %d, want 9, 10", got.RangeMinus, got.RangePlus)
	}
	// A shift of +5 moves the centre line down: upper = 135 − 65 = 70.
	if got := MuseTalkBox(lm, s3fd, true, 5); got.Box != (media.Box{100, 70, 200, 200}) {
		t.Errorf("shift 5: box %v", got.Box)
	}
	if lm[29][1] != 130 {
		t.Errorf("MuseTalkBox changed the caller's landmarks: %v", lm[29])
	}
	// A shift past the chin: height 0, the S3FD box.
	if got := MuseTalkBox(lm, s3fd, true, 80); got.Box != s3fd || got.Source != SourceS3FD {
		t.Errorf("shift 80: box %v from %s, want the S3FD box", got.Box, got.Source)
	}
	if got := MuseTalkBox(lm, s3fd, false, 0); got != (LandmarkBox{Source: SourceNone}) {
		t.Errorf("no S3FD face: %+v, want the placeholder", got)
	}
	// NaN keypoints truncate to MinInt32 (x86), so x1 < 0: the S3FD box.
	kp := wholeBody()
	kp[FaceLandmarkStart+3][0] = math.NaN()
	lm, _ = TruncLandmarks(kp)
	if lm[3][0] != math.MinInt32 {
		t.Errorf("NaN truncated to %d", lm[3][0])
	}
	if got := MuseTalkBox(lm, s3fd, true, 0); got.Source != SourceS3FD {
		t.Errorf("NaN landmark: source %s, want s3fd", got.Source)
	}
	if _, err := TruncLandmarks(make([][2]float64, 90)); err == nil {
		t.Error("90 keypoints: no error")
	}
}

func TestShiftRange(t *testing.T) {
	var s ShiftRange
	if _, _, ok := s.Range(); ok {
		t.Error("empty range is ok")
	}
	s.Add(LandmarkBox{Source: SourceNone, RangeMinus: 100})
	s.Add(LandmarkBox{Source: SourceLandmarks, RangeMinus: 5, RangePlus: -3})
	s.Add(LandmarkBox{Source: SourceS3FD, RangeMinus: 6, RangePlus: -4})
	// 11/2 = 5.5 → 5; −7/2 = −3.5 → −3 (toward zero).
	if m, p, ok := s.Range(); !ok || m != 5 || p != -3 {
		t.Errorf("range %d, %d (%v), want 5, -3", m, p, ok)
	}
}
