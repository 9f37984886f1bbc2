package model

import (
	"context"
	"errors"
	"fmt"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/media"
)

// mmpose's top-down pipeline around DWPose, exactly as mmpose 1.1.0's
// inference_topdown runs it on a frame (MuseTalk's get_landmark_and_bbox
// calls it with no person boxes, so the box is the whole frame):
//
//  1. GetBBoxCenterScale: centre = box midpoint, scale = box size · 1.25
//     (float32).
//  2. TopdownAffine: the scale's aspect fixed to 288:384 (the wider side
//     kept), get_warp_matrix's three point pairs (float32) solved by
//     cv2.getAffineTransform, and cv2.warpAffine to 288×384 (INTER_LINEAR,
//     border 0; OpenCV's fixed-point path, media.WarpAffineLinear).
//  3. The data preprocessor: BGR → RGB, (x − mean) / std in float32.
//  4. The network on the input and on its mirror image (flip test); the
//     mirror's SimCC vectors flipped back (flip_vectors: keypoints swapped
//     by coco_wholebody's flip_indices, x bins reversed) and averaged
//     with the original's: (orig + flip)·0.5 in float32.
//  5. SimCC decoding: the first maximum of each vector, score = min of the
//     two maxima, location −1 where the score ≤ 0, divided by the split
//     ratio 2 (float32).
//  6. Back to frame pixels: kp / (288, 384) · scale + centre − scale/2, in
//     float64 (numpy promotes when dividing by the input size tuple).

// DWPoseBox is a person box [x1, y1, x2, y2] in frame pixels, float32 as
// mmpose keeps it.
type DWPoseBox [4]float32

// WholeFrameBox is inference_topdown's box when it is given none: the
// whole w×h frame, [0, 0, w, h].
func WholeFrameBox(w, h int) DWPoseBox { return DWPoseBox{0, 0, float32(w), float32(h)} }

// dwposePadding is GetBBoxCenterScale's padding in the config's pipeline.
const dwposePadding = 1.25

// DWPoseAffine is what TopdownAffine derives from a box: the centre and
// scale mmpose maps keypoints back with (input_center, input_scale: after
// the padding and the aspect fix) and the matrix from frame pixels to the
// 288×384 model input.
type DWPoseAffine struct {
	Center, Scale [2]float32
	Matrix        media.Affine
}

// NewDWPoseAffine computes the affine of box. It fails for a box without
// area.
func NewDWPoseAffine(box DWPoseBox) (DWPoseAffine, error) {
	var a DWPoseAffine
	x1, y1, x2, y2 := box[0], box[1], box[2], box[3]
	if !(x2 > x1 && y2 > y1) {
		return a, fmt.Errorf("dwpose: box %v has no area", box)
	}
	// bbox_xyxy2cs.
	a.Center = [2]float32{(x1 + x2) * 0.5, (y1 + y2) * 0.5}
	w, h := (x2-x1)*dwposePadding, (y2-y1)*dwposePadding
	// _fix_aspect_ratio with aspect 288/384 = 0.75, in float32.
	const aspect float32 = float32(DWPoseInputW) / float32(DWPoseInputH)
	if w > h*aspect {
		a.Scale = [2]float32{w, w / aspect}
	} else {
		a.Scale = [2]float32{h * aspect, h}
	}
	// get_warp_matrix (rotation 0, shift 0): src = centre, centre moved up
	// by half the scale's width, and the third point; dst likewise in the
	// input.
	cx, cy, sw := a.Center[0], a.Center[1], a.Scale[0]
	var src, dst [3][2]float32
	src[0] = [2]float32{cx, cy}
	src[1] = [2]float32{cx, float32(float64(cy) + float64(sw)*-0.5)}
	src[2] = thirdPoint(src[0], src[1])
	dst[0] = [2]float32{DWPoseInputW * 0.5, DWPoseInputH * 0.5}
	dst[1] = [2]float32{DWPoseInputW * 0.5, DWPoseInputH*0.5 - DWPoseInputW*0.5}
	dst[2] = thirdPoint(dst[0], dst[1])
	m, err := media.GetAffineTransform(src, dst)
	if err != nil {
		return a, fmt.Errorf("dwpose: box %v: %w", box, err)
	}
	a.Matrix = m
	return a, nil
}

// thirdPoint is mmpose's _get_3rd_point in float32: b plus a − b rotated a
// quarter turn counterclockwise.
func thirdPoint(a, b [2]float32) [2]float32 {
	dx, dy := a[0]-b[0], a[1]-b[1]
	return [2]float32{b[0] - dy, b[1] + dx}
}

// ToFrame maps a keypoint from the 288×384 input to frame pixels as
// mmpose's TopdownPoseEstimator does, in float64: p / (288, 384) · scale +
// centre − 0.5·scale.
func (a DWPoseAffine) ToFrame(p [2]float32) [2]float64 {
	size := [2]float64{DWPoseInputW, DWPoseInputH}
	var out [2]float64
	for i := range 2 {
		half := float64(a.Scale[i] * 0.5)
		out[i] = float64(float64(float64(p[i])/size[i])*float64(a.Scale[i])) + float64(a.Center[i]) - half
	}
	return out
}

// mmpose's data preprocessor: mean and std in RGB order, as float32.
var (
	dwposeMean = [3]float32{123.675, 116.28, 103.53}
	dwposeStd  = [3]float32{58.395, 57.12, 57.375}
)

// DWPoseInput warps a 3-channel BGR frame by the affine (cv2.warpAffine,
// bit-exact) and returns the warped 288×384 BGR crop and the network's
// input, [3,384,288] RGB, (x − mean) / std in float32 as mmengine computes
// it.
func DWPoseInput(frameBGR *media.Image8, a DWPoseAffine) (warped *media.Image8, input []float32) {
	warped = media.WarpAffineLinear(frameBGR, a.Matrix, DWPoseInputW, DWPoseInputH)
	const plane = DWPoseInputW * DWPoseInputH
	input = make([]float32, 3*plane)
	for i := range plane {
		for c := range 3 {
			v := float32(warped.Pix[3*i+2-c])
			input[c*plane+i] = (v - dwposeMean[c]) / dwposeStd[c]
		}
	}
	return warped, input
}

// dwposeFlipIndices is coco_wholebody's flip_indices: the keypoint each
// keypoint becomes in the mirror image.
var dwposeFlipIndices = [DWPoseKeypoints]int{
	// Body: nose, then left/right eyes, ears, shoulders, elbows, wrists,
	// hips, knees, ankles.
	0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15,
	// Feet.
	20, 21, 22, 17, 18, 19,
	// Face (68, iBUG order): jaw, brows, nose bridge, nostrils, eyes,
	// mouth.
	39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23,
	49, 48, 47, 46, 45, 44, 43, 42, 41, 40,
	50, 51, 52, 53,
	58, 57, 56, 55, 54,
	68, 67, 66, 65, 70, 69, 62, 61, 60, 59, 64, 63,
	77, 76, 75, 74, 73, 72, 71, 82, 81, 80, 79, 78,
	87, 86, 85, 84, 83, 90, 89, 88,
	// Hands: left (91-111) and right (112-132) swap.
	112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132,
	91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
}

// DWPoseFlipIndices returns coco_wholebody's flip_indices.
func DWPoseFlipIndices() [DWPoseKeypoints]int { return dwposeFlipIndices }

// DWPoseFlipAverage is the flip test's merge for one sample: orig and flip
// are [133, bins] SimCC logits of the input and of its mirror image;
// flip's rows are taken in flip_indices order (and reversed when mirror,
// the x axis) and averaged with orig's, (orig + flip')·0.5 in float32.
func DWPoseFlipAverage(orig, flip []float32, bins int, mirror bool) []float32 {
	out := make([]float32, DWPoseKeypoints*bins)
	for k := range DWPoseKeypoints {
		o := orig[k*bins : (k+1)*bins]
		f := flip[dwposeFlipIndices[k]*bins : (dwposeFlipIndices[k]+1)*bins]
		d := out[k*bins : (k+1)*bins]
		for i := range bins {
			j := i
			if mirror {
				j = bins - 1 - i
			}
			d[i] = (o[i] + f[j]) * 0.5
		}
	}
	return out
}

// DecodeSimCC is SimCCLabel.decode for k keypoints: x [k, bx] and y [k, by]
// logits give each keypoint's location, the first maximum of each vector
// divided by the split ratio (−0.5, i.e. −1/2, where the score is ≤ 0),
// and its score, the smaller of the two maxima. A NaN in a vector wins its
// argmax and is its maximum, as in numpy.
func DecodeSimCC(x, y []float32, k, bx, by int) (locs [][2]float32, scores []float32) {
	locs, scores = make([][2]float32, k), make([]float32, k)
	for i := range k {
		ix, mx := argmaxFirst(x[i*bx : (i+1)*bx])
		iy, my := argmaxFirst(y[i*by : (i+1)*by])
		s := mx
		if mx > my {
			s = my
		}
		scores[i] = s
		lx, ly := float32(ix), float32(iy)
		if s <= 0 {
			lx, ly = -1, -1
		}
		locs[i] = [2]float32{lx / DWPoseSplitRatio, ly / DWPoseSplitRatio}
	}
	return locs, scores
}

// argmaxFirst is numpy's argmax and amax of v: the first maximum, or the
// first NaN.
func argmaxFirst(v []float32) (int, float32) {
	best := 0
	for i, x := range v {
		if x != x {
			return i, x
		}
		if x > v[best] {
			best = i
		}
	}
	return best, v[best]
}

// DWPoseResult is one person's pose: what mmpose's inference_topdown
// returns as results[0].pred_instances.
type DWPoseResult struct {
	// Keypoints are the 133 COCO-WholeBody keypoints (x, y) in frame
	// pixels, float64 as mmpose returns them. A keypoint whose score is
	// ≤ 0 sits at input position (−0.5, −0.5) mapped to the frame.
	Keypoints [DWPoseKeypoints][2]float64
	// Scores are the SimCC confidences (float32).
	Scores [DWPoseKeypoints]float32
}

// DWPoseFaceFirst is the index of the first of the 68 face landmarks
// (iBUG 300-W order) among the keypoints: MuseTalk takes keypoints
// 23..90.
const DWPoseFaceFirst = 23

// FaceLandmarks returns the 68 face landmarks, keypoints 23..90, in frame
// pixels (MuseTalk then truncates them toward zero with astype(int32)).
func (r *DWPoseResult) FaceLandmarks() [68][2]float64 {
	var f [68][2]float64
	copy(f[:], r.Keypoints[DWPoseFaceFirst:DWPoseFaceFirst+68])
	return f
}

// dwposeRun is everything one pass of the pipeline computes, for the
// golden test.
type dwposeRun struct {
	affine         DWPoseAffine
	warped         *media.Image8
	input          []float32    // [3,384,288]
	simccX, simccY [2][]float32 // raw logits of the input and of its mirror image
	avgX, avgY     []float32    // the flip-test average
	inputSpace     [][2]float32 // decoded locations in the 288×384 input
	result         DWPoseResult
}

// Keypoints runs mmpose's top-down pipeline with flip test on a 3-channel
// BGR frame (cv2.imread's order) for the person in box
// ([WholeFrameBox] for MuseTalk's call, which passes no box) and returns
// the pose in frame pixels. The network runs once, on the input and its
// mirror image as a batch of two.
func (n *DWPose) Keypoints(ctx context.Context, frameBGR *media.Image8, box DWPoseBox) (DWPoseResult, error) {
	r, err := n.run(ctx, frameBGR, box, nil)
	if err != nil {
		return DWPoseResult{}, err
	}
	return r.result, nil
}

func (n *DWPose) run(ctx context.Context, frameBGR *media.Image8, box DWPoseBox, trace dwposeTrace) (*dwposeRun, error) {
	if frameBGR == nil || frameBGR.C != 3 || frameBGR.W < 1 || frameBGR.H < 1 || len(frameBGR.Pix) != frameBGR.W*frameBGR.H*3 {
		return nil, errors.New("dwpose: the frame must be a non-empty 3-channel BGR image")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a, err := NewDWPoseAffine(box)
	if err != nil {
		return nil, err
	}
	r := &dwposeRun{affine: a}
	r.warped, r.input = DWPoseInput(frameBGR, a)

	// The batch: the input, then its mirror image (x.flip(-1)).
	const plane = DWPoseInputW * DWPoseInputH
	batch := make([]float32, 2*3*plane)
	copy(batch, r.input)
	for c := range 3 {
		for y := range DWPoseInputH {
			src := r.input[c*plane+y*DWPoseInputW : c*plane+(y+1)*DWPoseInputW]
			dst := batch[(3+c)*plane+y*DWPoseInputW : (3+c)*plane+(y+1)*DWPoseInputW]
			for x, v := range src {
				dst[DWPoseInputW-1-x] = v
			}
		}
	}
	be := n.be
	x := kernels.Upload(be, batch, 2, 3, DWPoseInputH, DWPoseInputW)
	sx, sy, err := n.forward(x, trace)
	be.Free(x)
	if err != nil {
		return nil, err
	}
	hx := make([]float32, sx.Len())
	hy := make([]float32, sy.Len())
	errX := be.Download(hx, sx)
	errY := be.Download(hy, sy)
	be.Free(sx)
	be.Free(sy)
	if err := errors.Join(errX, errY); err != nil {
		return nil, fmt.Errorf("dwpose: %w", err)
	}
	kx, ky := DWPoseKeypoints*DWPoseBinsX, DWPoseKeypoints*DWPoseBinsY
	r.simccX = [2][]float32{hx[:kx], hx[kx:]}
	r.simccY = [2][]float32{hy[:ky], hy[ky:]}
	r.avgX = DWPoseFlipAverage(r.simccX[0], r.simccX[1], DWPoseBinsX, true)
	r.avgY = DWPoseFlipAverage(r.simccY[0], r.simccY[1], DWPoseBinsY, false)
	var scores []float32
	r.inputSpace, scores = DecodeSimCC(r.avgX, r.avgY, DWPoseKeypoints, DWPoseBinsX, DWPoseBinsY)
	for i, p := range r.inputSpace {
		r.result.Keypoints[i] = a.ToFrame(p)
		r.result.Scores[i] = scores[i]
	}
	return r, nil
}
