package modeldir

import (
	"math"
	"strings"

	"github.com/avatargen/musetalk/musetalk/model"
)

// dwposeTiny is the tiny DWPose of `weights tiny`: DWPose's structure at
// widen factor 0.125 with a 32-wide head (golden case k1's public model),
// 1.32 M parameters.
func dwposeTiny() model.DWPoseConfig {
	return model.DWPoseConfig{Widen: 0.125, Deepen: 1, GAUHidden: 32, GAUS: 16, GAUExpansion: 2}
}

// dwposeCheckpointSpec is a DWPose checkpoint's state dict: the network's
// tensors ([model.DWPoseSpec]) and each BatchNorm's num_batches_tracked
// (an int64 0-d tensor), which the network does not read.
func dwposeCheckpointSpec(cfg model.DWPoseConfig) []model.TensorSpec {
	var out []model.TensorSpec
	for _, s := range model.DWPoseSpec(cfg) {
		out = append(out, s)
		if p, ok := strings.CutSuffix(s.Name, ".running_var"); ok {
			out = append(out, model.TensorSpec{Name: p + ".num_batches_tracked", Shape: []int{}})
		}
	}
	return out
}

// DWPoseSpec lists the tensors of the official DWPose checkpoint's state
// dict (dw-ll_ucoco_384.pth, DWPose-l, 33.65 M parameters) with their
// shapes, BatchNorm buffers included (num_batches_tracked is a 0-d int64
// tensor), for checking a checkpoint before converting it.
func DWPoseSpec() []model.TensorSpec { return dwposeCheckpointSpec(model.DWPoseL()) }

// The random DWPose's keypoints land anywhere, mostly outside the face
// and often outside the frame (the model sees the frame padded by 25 %),
// so MuseTalk's box logic would fall back to S3FD on every frame and a
// tiny render would never take the landmark path. biasTinyDWPose makes
// the tiny DWPose draw a fixed face instead: its 68 face landmarks
// ([tinyFaceTemplate]) where a centred face sits in a square portrait,
// the other keypoints at the input's centre, whatever the picture (the
// network still runs in full; its output just does not depend on the
// picture). How, with the head's own operations:
//
//   - the backbone's last BatchNorm makes its output channel 0 the
//     constant SiLU(1);
//   - the head's 7×7 final_layer reads only that channel, through three
//     taps: the centre (weight 1, every position), the top-left corner
//     (weight u_k: only positions with 3 rows above and 3 columns to the
//     left) and the top-right corner (weight w_k); so keypoint k's 108
//     features are 1 + u_k·M2 + w_k·M3 for two fixed masks M2, M3, times
//     SiLU(1);
//   - after the ScaleNorm (a positive factor κ_k), mlp's linear layer
//     takes the dual basis of (1, M2, M3) as its first three rows, so
//     hidden units 0, 1, 2 are κ_k·(1, u_k, w_k);
//   - the GAU's output projection is zero, so they reach the classifiers
//     as they are (res_scale 1);
//   - cls_x's logit of bin b is κ_k·(−β(t/S)² + L + u_k·2β(t/S)) with
//     t = b − centre: a parabola whose top is at t = S·u_k, lifted by L so
//     the score is positive; cls_y likewise with w_k. The other units are
//     not read.
//
// u_k and w_k are the template's bins relative to the centre, over S. The
// template is left-right symmetric under the flip test's keypoint pairs,
// so the mirrored pass peaks at the same bins.
const (
	tinyDWPoseS    = 100  // bins per unit of u_k and w_k
	tinyDWPoseBeta = 1e4  // the parabola's curvature, in (bins/S)⁻²: about one logit per bin at the top
	tinyDWPoseLift = 10   // L: keeps the top's logit (the score) positive
	tinyFaceCX     = 0.5  // the face's centre, as a fraction of a square frame's width
	tinyFaceCY     = 0.42 // and height
	tinyFaceHX     = 0.15 // the template's unit, as a fraction of the width
	tinyFaceHY     = 0.2  // and of the height
	tinyDWPoseA    = 1.0  // final_layer's centre tap
)

// tinyFaceTemplate returns the 68 face landmarks (iBUG 300-W order) of a
// schematic frontal face in units where x runs −1 (left in the picture)
// to 1 and y −1 (up) to 1 (the chin): jaw, brows, nose bridge (27-30,
// landmark 29 at y −0.1), nostrils, eyes and lips. MuseTalk's rules make
// it the box x −0.95..0.95, y −1.2..1.
func tinyFaceTemplate() [68][2]float64 {
	var t [68][2]float64
	for i := range 17 { // jaw, from the picture's left over the chin
		a := math.Pi - float64(i)*math.Pi/16
		t[i] = [2]float64{0.95 * math.Cos(a), -0.25 + 1.25*math.Sin(a)}
	}
	for i := range 5 { // brows
		x := -0.8 + float64(i)*0.16
		t[17+i] = [2]float64{x, -0.55}
		t[26-i] = [2]float64{-x, -0.55}
	}
	for i := range 4 { // nose bridge
		t[27+i] = [2]float64{0, -0.4 + float64(i)*0.15}
	}
	for i := range 5 { // nostrils
		t[31+i] = [2]float64{-0.2 + float64(i)*0.1, 0.15}
	}
	eye := func(first int, cx float64) {
		for i := range 6 {
			a := math.Pi - float64(i)*math.Pi/3
			t[first+i] = [2]float64{cx + 0.15*math.Cos(a), -0.35 - 0.06*math.Sin(a)}
		}
	}
	eye(36, -0.45)
	eye(42, 0.45)
	for i := range 12 { // outer lip, from the left corner over the top
		a := math.Pi - float64(i)*math.Pi/6
		t[48+i] = [2]float64{0.4 * math.Cos(a), 0.5 - 0.15*math.Sin(a)}
	}
	for i := range 8 { // inner lip
		a := math.Pi - float64(i)*math.Pi/4
		t[60+i] = [2]float64{0.25 * math.Cos(a), 0.5 - 0.07*math.Sin(a)}
	}
	return t
}

// tinyDWPoseTargets returns each keypoint's (u_k, w_k): its SimCC bins
// (nx, ny of them) relative to the centre bin, over tinyDWPoseS. Face
// landmarks come from the template placed in a square frame (mmpose shows
// the model the frame padded by 25 % across and, for the 3:4 input,
// 1.25/0.75 down), the rest sit at the centre; pairs the flip test swaps
// are made exact mirror images.
func tinyDWPoseTargets(nx, ny int) [model.DWPoseKeypoints][2]float64 {
	var out [model.DWPoseKeypoints][2]float64
	toBin := func(frac, scale float64, n int) float64 { // frame fraction → bin − centre
		return (frac+(scale-1)/2)/scale*float64(n) - float64(n-1)/2
	}
	for i, p := range tinyFaceTemplate() {
		fx, fy := tinyFaceCX+tinyFaceHX*p[0], tinyFaceCY+tinyFaceHY*p[1]
		out[model.DWPoseFaceFirst+i] = [2]float64{toBin(fx, 1.25, nx) / tinyDWPoseS, toBin(fy, 1.25/0.75, ny) / tinyDWPoseS}
	}
	flip := model.DWPoseFlipIndices()
	for k, f := range flip {
		if f > k {
			x := (out[k][0] - out[f][0]) / 2
			y := (out[k][1] + out[f][1]) / 2
			out[k], out[f] = [2]float64{x, y}, [2]float64{-x, y}
		} else if f == k {
			out[k][0] = 0
		}
	}
	return out
}

// dualBasis returns d0, d1, d2 in the span of the 12×9 feature map's masks
// (1, M2, M3) with d_i·v_j = δ_ij: M2 marks the positions final_layer's
// top-left tap reaches inside the map (row ≥ 3, column ≥ 3), M3 those of
// its top-right tap (row ≥ 3, column ≤ cols−4).
func dualBasis(rows, cols, k int) [3][]float64 {
	n := rows * cols
	var v [3][]float64
	for i := range v {
		v[i] = make([]float64, n)
	}
	h := k / 2
	for r := range rows {
		for c := range cols {
			p := r*cols + c
			v[0][p] = 1
			if r >= h && c >= h {
				v[1][p] = 1
			}
			if r >= h && c+h < cols {
				v[2][p] = 1
			}
		}
	}
	var g [3][3]float64
	for i := range 3 {
		for j := range 3 {
			for p := range n {
				g[i][j] += v[i][p] * v[j][p]
			}
		}
	}
	inv := invert3(g)
	var d [3][]float64
	for i := range 3 {
		d[i] = make([]float64, n)
		for j := range 3 {
			for p := range n {
				d[i][p] += inv[i][j] * v[j][p]
			}
		}
	}
	return d
}

// invert3 inverts a 3×3 matrix by its adjugate.
func invert3(m [3][3]float64) [3][3]float64 {
	var c [3][3]float64
	for i := range 3 {
		for j := range 3 {
			a, b := (i+1)%3, (i+2)%3
			x, y := (j+1)%3, (j+2)%3
			c[j][i] = m[a][x]*m[b][y] - m[a][y]*m[b][x] // cofactor (i, j), transposed
		}
	}
	det := m[0][0]*c[0][0] + m[0][1]*c[1][0] + m[0][2]*c[2][0]
	for i := range 3 {
		for j := range 3 {
			c[i][j] /= det
		}
	}
	return c
}

// biasTinyDWPose applies the changes above to one freshly drawn tensor of
// the given shape.
func biasTinyDWPose(name string, shape []int, out []float32) {
	const lastBN = "backbone.stage4.2.final_conv.bn."
	switch name {
	case lastBN + "weight":
		out[0] = 0
	case lastBN + "bias":
		out[0] = 1
	case "head.final_layer.weight": // [K, C, k, k]
		kk := shape[2]
		per := shape[1] * kk * kk
		targets := tinyDWPoseTargets(model.DWPoseBinsX, model.DWPoseBinsY)
		clear(out)
		for kp := range shape[0] {
			taps := out[kp*per : kp*per+kk*kk] // input channel 0
			taps[kk/2*kk+kk/2] = tinyDWPoseA
			taps[0] = float32(targets[kp][0])
			taps[kk-1] = float32(targets[kp][1])
		}
	case "head.final_layer.bias", "head.gau.o.weight":
		clear(out)
	case "head.mlp.0.g":
		out[0] = 1
	case "head.mlp.1.weight": // [hidden, rows·cols]
		d := dualBasis(model.DWPoseInputH/32, model.DWPoseInputW/32, 7)
		f := shape[1]
		for j := range 3 {
			for p := range f {
				out[j*f+p] = float32(d[j][p])
			}
		}
	case "head.gau.res_scale.scale":
		out[0], out[1], out[2] = 1, 1, 1
	case "head.cls_x.weight", "head.cls_y.weight": // [bins, hidden]
		n, h := shape[0], shape[1]
		unit := 1
		if name == "head.cls_y.weight" {
			unit = 2
		}
		clear(out)
		for b := range n {
			t := (float64(b) - float64(n-1)/2) / tinyDWPoseS
			out[b*h] = float32((-tinyDWPoseBeta*t*t + tinyDWPoseLift) / tinyDWPoseA)
			out[b*h+unit] = float32(2 * tinyDWPoseBeta * t)
		}
	}
}
