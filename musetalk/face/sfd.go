package face

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/model"
)

// S3FD post-processing exactly as MuseTalk runs it (face_detection/
// detection/sfd: detect.batch_detect, bbox.batch_decode, bbox.nms,
// SFDDetector.detect_from_batch and FaceAlignment.get_detections_for_batch):
// softmax over the two classes, every anchor with a face probability above
// [CandidateThreshold] decoded against its prior, greedy NMS at
// [NMSThreshold], detections above [ScoreThreshold], and the first
// detection clipped at 0 and truncated to integers. All arithmetic is
// float32 in the order the reference performs it, so the decisions (which
// anchors pass, which boxes NMS keeps, the final integers) are the
// reference's.

// Thresholds of MuseTalk's S3FD path.
const (
	// CandidateThreshold: an anchor is a candidate when its face
	// probability is above it (compared in float32, as torch does).
	CandidateThreshold float32 = 0.05
	// NMSThreshold: NMS suppresses a box whose IoU with a kept one is
	// above it.
	NMSThreshold float32 = 0.3
	// ScoreThreshold: a box NMS keeps is a detection when its score is
	// above it.
	ScoreThreshold float32 = 0.5
)

// S3FD's box decode variances (bbox.batch_decode), as float32.
const (
	variance0 float32 = 0.1
	variance1 float32 = 0.2
)

// Level is one S3FD detection level of one image on the host.
type Level struct {
	// Stride is the anchor stride in pixels (4, 8, …, 128 for levels 1
	// to 6). Anchors sit at (Stride/2 + col·Stride, Stride/2 + row·Stride)
	// with side 4·Stride.
	Stride int
	// H and W are the level's map size.
	H, W int
	// Face holds [H,W] face probabilities (softmax channel 1).
	Face []float32
	// Reg holds [4,H,W] box regressions (dx, dy, dw, dh).
	Reg []float32
}

// Candidate is a decoded anchor box with its face probability: x1, y1 is
// the top-left corner, x2, y2 the bottom-right, in input pixels. Coordinates
// may lie outside the image.
type Candidate struct {
	X1, Y1, X2, Y2, Score float32
}

// LevelsFromHeads applies the softmax to image n of a forward pass's heads
// and returns its six levels.
func LevelsFromHeads(h *model.S3FDHeads, n int) ([]Level, error) {
	if n < 0 || n >= h.N {
		return nil, fmt.Errorf("s3fd heads: image %d of a batch of %d", n, h.N)
	}
	levels := make([]Level, len(h.Levels))
	for i, lv := range h.Levels {
		hw := lv.H * lv.W
		if hw <= 0 || len(lv.Cls) != h.N*2*hw || len(lv.Reg) != h.N*4*hw {
			return nil, fmt.Errorf("s3fd heads: level %d has %d cls and %d reg values for batch %d of %d×%d",
				i+1, len(lv.Cls), len(lv.Reg), h.N, lv.H, lv.W)
		}
		cls := lv.Cls[n*2*hw : (n+1)*2*hw]
		face := make([]float32, hw)
		for j := range face {
			face[j] = FaceProb(cls[j], cls[hw+j])
		}
		levels[i] = Level{Stride: lv.Stride, H: lv.H, W: lv.W, Face: face, Reg: lv.Reg[n*4*hw : (n+1)*4*hw]}
	}
	return levels, nil
}

// FaceProb returns the face probability of a [background, face] logit pair:
// channel 1 of torch's float32 softmax over the two classes (max
// subtracted, exponentials divided by their sum).
func FaceProb(bg, face float32) float32 {
	m := max(bg, face)
	eb, ef := exp32(bg-m), exp32(face-m)
	return ef / (eb + ef)
}

// exp32 is a float32 exponential (correctly rounded except in rare
// cases; torch's vectorised expf is within 1 ulp of it).
func exp32(x float32) float32 { return float32(math.Exp(float64(x))) }

// Candidates decodes every anchor whose face probability is above
// [CandidateThreshold], ordered by level, then row, then column. Each box
// is decoded from the prior [axc, ayc, 4s, 4s] with variances 0.1 and 0.2:
// cx = axc + (dx·0.1)·4s, w = 4s·exp(dw·0.2) (y likewise), x1 = cx − w/2
// and x2 = w + x1, all in float32. It returns an error if a level's slices
// do not match its size or its stride is not positive.
func Candidates(levels []Level) ([]Candidate, error) {
	var out []Candidate
	for i, lv := range levels {
		hw := lv.H * lv.W
		if lv.H <= 0 || lv.W <= 0 || lv.Stride <= 0 || len(lv.Face) != hw || len(lv.Reg) != 4*hw {
			return nil, fmt.Errorf("s3fd level %d: stride %d, %d×%d map with %d face and %d reg values",
				i+1, lv.Stride, lv.H, lv.W, len(lv.Face), len(lv.Reg))
		}
		s := float32(lv.Stride)
		side := float32(4 * lv.Stride)
		for r := range lv.H {
			for c := range lv.W {
				j := r*lv.W + c
				p := lv.Face[j]
				if !(p > CandidateThreshold) {
					continue
				}
				axc := s/2 + float32(c)*s
				ayc := s/2 + float32(r)*s
				cx := axc + float32(float32(lv.Reg[j]*variance0)*side)
				cy := ayc + float32(float32(lv.Reg[hw+j]*variance0)*side)
				w := float32(side * exp32(float32(lv.Reg[2*hw+j]*variance1)))
				h := float32(side * exp32(float32(lv.Reg[3*hw+j]*variance1)))
				x1, y1 := cx-w/2, cy-h/2
				out = append(out, Candidate{X1: x1, Y1: y1, X2: w + x1, Y2: h + y1, Score: p})
			}
		}
	}
	return out, nil
}

// NMS is bbox.nms: greedy non-maximum suppression in float32. Boxes are
// visited by descending score (ties: the later index first, as reversing a
// stable ascending sort gives); each visited box is kept and suppresses the
// remaining boxes whose IoU with it is above thresh. Areas and
// intersections use the +1 pixel convention: area = (x2−x1+1)·(y2−y1+1).
// An IoU involving a NaN coordinate is NaN and suppresses, as in NumPy.
// It returns the kept indices into c, in keep order.
func NMS(c []Candidate, thresh float32) []int {
	order := make([]int, len(c))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(c[a].Score, c[b].Score) })
	slices.Reverse(order)
	areas := make([]float32, len(c))
	for i, b := range c {
		areas[i] = float32(float32(b.X2-b.X1+1) * float32(b.Y2-b.Y1+1))
	}
	var keep []int
	for len(order) > 0 {
		i := order[0]
		keep = append(keep, i)
		bi := c[i]
		rest := order[:0]
		for _, j := range order[1:] {
			bj := c[j]
			w := max(0, float32(min(bi.X2, bj.X2)-max(bi.X1, bj.X1)+1))
			h := max(0, float32(min(bi.Y2, bj.Y2)-max(bi.Y1, bj.Y1)+1))
			inter := float32(w * h)
			ovr := inter / float32(float32(areas[i]+areas[j])-inter)
			if ovr <= thresh {
				rest = append(rest, j)
			}
		}
		order = rest
	}
	return keep
}

// Detections returns the boxes keep selects from c whose score is above
// [ScoreThreshold], in keep order.
func Detections(c []Candidate, keep []int) []Candidate {
	var out []Candidate
	for _, i := range keep {
		if c[i].Score > ScoreThreshold {
			out = append(out, c[i])
		}
	}
	return out
}

// maxBoxCoord bounds the coordinates FinalBox converts to int.
const maxBoxCoord = 1 << 30

// errBadBox reports a detection whose coordinates cannot be pixels.
var errBadBox = errors.New("s3fd: detection has a non-finite or out-of-range coordinate")

// FinalBox is get_detections_for_batch's choice: the first detection,
// clipped below at 0 and truncated to integers. ok is false when dets is
// empty (MuseTalk's None). A NaN, infinite or absurdly large coordinate is
// an error.
func FinalBox(dets []Candidate) (box media.Box, ok bool, err error) {
	if len(dets) == 0 {
		return media.Box{}, false, nil
	}
	d := dets[0]
	for i, v := range [4]float32{d.X1, d.Y1, d.X2, d.Y2} {
		v = max(v, 0)
		if !(v < maxBoxCoord) {
			return media.Box{}, false, fmt.Errorf("%w: %v", errBadBox, d)
		}
		box[i] = int(v)
	}
	return box, true, nil
}

// Postprocess runs the whole post-processing on one image's levels:
// candidates, NMS at [NMSThreshold], the score filter and [FinalBox].
func Postprocess(levels []Level) (box media.Box, ok bool, err error) {
	c, err := Candidates(levels)
	if err != nil {
		return media.Box{}, false, err
	}
	return FinalBox(Detections(c, NMS(c, NMSThreshold)))
}
