package face

import (
	"fmt"
	"math"

	"github.com/avatargen/musetalk/media"
)

// MuseTalk's face box from DWPose landmarks: get_landmark_and_bbox
// (musetalk/utils/preprocessing.py, MuseTalk 0a89dec, lines 84-137) for one
// frame, with every quirk of the reference kept, because the crop decides
// what the UNet sees:
//
//   - the 68 face landmarks (whole-body keypoints 23..90) are cast with
//     astype(np.int32), which truncates toward zero (x = −0.7 becomes 0);
//   - half = lm[29] is a view, so adding bbox_shift to half[1] moves
//     landmark 29 itself, and the max over the landmarks' y that follows
//     sees the moved point (a large shift puts it below the chin: the
//     box's height becomes 0 and the S3FD box is used);
//   - the upper edge is max(0, half.y − (max y − half.y));
//   - the box (min x, upper, max x, max y) is replaced by the S3FD box
//     when y2−y1 ≤ 0, x2−x1 ≤ 0 or x1 < 0; the S3FD box is
//     int(clip(d, 0)) per coordinate ([FinalBox]);
//   - a frame where S3FD finds no face gets the placeholder (0,0,0,0)
//     whatever the landmarks say.
//
// The arithmetic is NumPy's int32 arithmetic (wrapping), so extreme inputs
// give the reference's results too.

// Whole-body keypoints (COCO-WholeBody, DWPose's output) and the range
// MuseTalk reads its face landmarks from.
const (
	// WholeBodyKeypoints is the number of keypoints DWPose returns.
	WholeBodyKeypoints = 133
	// FaceLandmarkStart is the index of the first of the 68 face
	// landmarks among them (keypoints[0][23:91]).
	FaceLandmarkStart = 23
	// FaceLandmarkCount is the number of face landmarks.
	FaceLandmarkCount = 68
)

// FaceLandmarks are the 68 face landmarks as MuseTalk holds them: (x, y)
// pixel coordinates truncated to int32.
type FaceLandmarks [FaceLandmarkCount][2]int32

// TruncLandmarks takes the face landmarks out of a whole-body keypoint set
// (at least FaceLandmarkStart+FaceLandmarkCount points of (x, y) in image
// pixels, as DWPose's keypoints call returns them) and truncates them
// toward zero as NumPy's astype(np.int32) does on x86: NaN and values
// outside the int32 range become math.MinInt32.
func TruncLandmarks(keypoints [][2]float64) (FaceLandmarks, error) {
	var lm FaceLandmarks
	if len(keypoints) < FaceLandmarkStart+FaceLandmarkCount {
		return lm, fmt.Errorf("face landmarks: %d keypoints, want at least %d (whole-body)",
			len(keypoints), FaceLandmarkStart+FaceLandmarkCount)
	}
	for i := range lm {
		p := keypoints[FaceLandmarkStart+i]
		lm[i] = [2]int32{truncInt32(p[0]), truncInt32(p[1])}
	}
	return lm, nil
}

// truncInt32 is a float64 → int32 conversion with x86's cvttsd2si result
// for values it cannot represent (the "integer indefinite" MinInt32).
func truncInt32(v float64) int32 {
	if !(v > math.MinInt32-1 && v < math.MaxInt32+1) { // also NaN
		return math.MinInt32
	}
	return int32(v)
}

// BoxSource says which rule of MuseTalk's box logic gave a frame's box.
type BoxSource string

// The box sources.
const (
	// SourceLandmarks: the box built from the face landmarks.
	SourceLandmarks BoxSource = "landmarks"
	// SourceS3FD: the landmark box was degenerate and the S3FD box is
	// used instead (MuseTalk prints "error bbox" for it).
	SourceS3FD BoxSource = "s3fd"
	// SourceNone: S3FD found no face; MuseTalk's placeholder
	// (0.0, 0.0, 0.0, 0.0), a frame without a face.
	SourceNone BoxSource = "none"
)

// LandmarkBox is the result of [MuseTalkBox] for one frame.
type LandmarkBox struct {
	// Box is the face box (the zero box for SourceNone). It is not
	// clipped to the frame: x2 and y2 may lie beyond it.
	Box media.Box
	// Source says which rule gave Box.
	Source BoxSource
	// RangeMinus and RangePlus are the frame's terms of MuseTalk's
	// "Manually adjust range" report (lm[30].y − lm[29].y and
	// lm[29].y − lm[28].y, before the shift); see [ShiftRange]. Zero for
	// SourceNone, which MuseTalk leaves out of the report.
	RangeMinus, RangePlus int32
}

// MuseTalkBox is get_landmark_and_bbox's box for one frame: lm are the
// frame's truncated face landmarks ([TruncLandmarks]), s3fd and found the
// S3FD detector's box as [Detector.Detect] returns it (already clipped at
// 0 and truncated), bboxShift MuseTalk's upperbondrange (the v1
// bbox_shift; MuseTalk's v1.5 scripts pass 0).
func MuseTalkBox(lm FaceLandmarks, s3fd media.Box, found bool, bboxShift int) LandmarkBox {
	if !found {
		return LandmarkBox{Source: SourceNone}
	}
	r := LandmarkBox{
		RangeMinus: lm[30][1] - lm[29][1],
		RangePlus:  lm[29][1] - lm[28][1],
	}
	if bboxShift != 0 {
		// half_face_coord = lm[29] is a view: the shift moves landmark
		// 29, which the max below then sees. int32 + Python int, stored
		// back into the int32 array: wraps.
		lm[29][1] = int32(int64(bboxShift) + int64(lm[29][1]))
	}
	half := lm[29][1]
	minX, maxX, maxY := lm[0][0], lm[0][0], lm[0][1]
	for _, p := range lm[1:] {
		minX, maxX, maxY = min(minX, p[0]), max(maxX, p[0]), max(maxY, p[1])
	}
	dist := maxY - half        // np.int32 − np.int32
	upper := max(0, half-dist) // max(0, np.int32), then int()
	x1, y1, x2, y2 := minX, upper, maxX, maxY
	if y2-y1 <= 0 || x2-x1 <= 0 || x1 < 0 { // int32 arithmetic, as NumPy's
		r.Box, r.Source = s3fd, SourceS3FD
		return r
	}
	r.Box, r.Source = media.Box{int(x1), int(y1), int(x2), int(y2)}, SourceLandmarks
	return r
}

// ShiftRange accumulates MuseTalk's bbox_shift report over an avatar's
// frames: "Manually adjust range : [ -{minus}~{plus} ]", the average of
// each frame's RangeMinus and RangePlus over the frames with a face,
// each truncated toward zero. It tells a v1 user which shifts keep the
// box's upper edge between landmarks 28 and 30. The zero value is empty.
type ShiftRange struct {
	minus, plus int64
	n           int
}

// Add counts one frame's box; SourceNone frames are left out, as
// MuseTalk leaves them out.
func (s *ShiftRange) Add(b LandmarkBox) {
	if b.Source == SourceNone {
		return
	}
	s.minus += int64(b.RangeMinus)
	s.plus += int64(b.RangePlus)
	s.n++
}

// Range returns the report's two numbers, int(sum / len) each; ok is
// false when no frame had a face (MuseTalk then divides by zero).
func (s ShiftRange) Range() (minus, plus int, ok bool) {
	if s.n == 0 {
		return 0, 0, false
	}
	avg := func(sum int64) int { return int(math.Trunc(float64(sum) / float64(s.n))) }
	return avg(s.minus), avg(s.plus), true
}
