package modeldir

import (
	"fmt"
	"math"

	"github.com/avatargen/musetalk/musetalk/model"
)

// The DWPose checkpoint's structure, for the layout's spec checks (weights
// convert) and the random weights (weights tiny, bench): mmpose's
// TopdownPoseEstimator with a CSPNeXt-P5 backbone (expand ratio 0.5,
// channel attention, deepen factor 1) and an RTMCC head, as MuseTalk's
// rtmpose-l_8xb32-270e_coco-ubody-wholebody-384x288.py builds it. Every
// conv of the backbone is a ConvModule (conv without bias, BatchNorm,
// SiLU), so the state dict holds each BatchNorm's weight, bias,
// running_mean, running_var and num_batches_tracked.

// dwposeArch is the shape of a DWPose network.
type dwposeArch struct {
	stem       [3]int // the stem's three ConvModules' outputs
	stages     [4]int // each stage's output channels
	blocks     [4]int // CSPNeXt blocks per stage
	hidden     int    // the head's hidden dim (GAU in/out)
	s          int    // the GAU's query/key dim
	expansion  int    // the GAU's expansion (e = expansion·hidden)
	keypoints  int    // output keypoints (133, COCO-WholeBody)
	inW, inH   int    // input size (288×384)
	split      int    // SimCC split ratio (2)
	featW      int    // the backbone's output width (inW/32)
	featH      int    // and height
	finalKernl int    // the head's final_layer kernel (7)
}

// dwposeL is DWPose-l (dw-ll_ucoco_384.pth): widen factor 1, 33.65 M
// parameters.
func dwposeL() dwposeArch {
	return dwposeArch{
		stem: [3]int{32, 32, 64}, stages: [4]int{128, 256, 512, 1024}, blocks: [4]int{3, 6, 6, 3},
		hidden: 256, s: 128, expansion: 2, keypoints: 133, inW: 288, inH: 384, split: 2, featW: 9, featH: 12, finalKernl: 7,
	}
}

// dwposeTiny is the same structure at widen factor 0.125 with a 32-wide
// head (golden case k1's public model): 1.32 M parameters.
func dwposeTiny() dwposeArch {
	a := dwposeL()
	a.stem, a.stages = [3]int{4, 4, 8}, [4]int{16, 32, 64, 128}
	a.hidden, a.s = 32, 16
	return a
}

// spec lists the state dict's tensors in module order: every floating
// tensor and, with buffers, each BatchNorm's num_batches_tracked (shape
// [], as torch stores it; it is an integer tensor).
func (a dwposeArch) spec(buffers bool) []model.TensorSpec {
	var out []model.TensorSpec
	add := func(name string, shape ...int) { out = append(out, model.TensorSpec{Name: name, Shape: shape}) }
	bn := func(p string, c int) {
		for _, n := range []string{"weight", "bias", "running_mean", "running_var"} {
			add(p+".bn."+n, c)
		}
		if buffers {
			add(p + ".bn.num_batches_tracked")
		}
	}
	conv := func(p string, out, in, k int) { // ConvModule
		add(p+".conv.weight", out, in, k, k)
		bn(p, out)
	}
	in := 3
	for i, c := range a.stem {
		conv(fmt.Sprintf("backbone.stem.%d", i), c, in, 3)
		in = c
	}
	for i, c := range a.stages {
		p := fmt.Sprintf("backbone.stage%d", i+1)
		conv(p+".0", c, in, 3)
		csp := p + ".1"
		if i == len(a.stages)-1 { // SPP bottleneck before the last CSP layer
			conv(p+".1.conv1", c/2, c, 1)
			conv(p+".1.conv2", c, c/2*4, 1)
			csp = p + ".2"
		}
		mid := c / 2
		conv(csp+".main_conv", mid, c, 1)
		conv(csp+".short_conv", mid, c, 1)
		for j := range a.blocks[i] {
			b := fmt.Sprintf("%s.blocks.%d", csp, j)
			conv(b+".conv1", mid, mid, 3)
			add(b+".conv2.depthwise_conv.conv.weight", mid, 1, 5, 5)
			bn(b+".conv2.depthwise_conv", mid)
			conv(b+".conv2.pointwise_conv", mid, mid, 1)
		}
		add(csp+".attention.fc.weight", 2*mid, 2*mid, 1, 1)
		add(csp+".attention.fc.bias", 2*mid)
		conv(csp+".final_conv", c, 2*mid, 1)
		in = c
	}
	e := a.expansion * a.hidden
	add("head.final_layer.weight", a.keypoints, in, a.finalKernl, a.finalKernl)
	add("head.final_layer.bias", a.keypoints)
	add("head.mlp.0.g", 1)
	add("head.mlp.1.weight", a.hidden, a.featW*a.featH)
	add("head.gau.gamma", 2, a.s)
	add("head.gau.beta", 2, a.s)
	add("head.gau.o.weight", a.hidden, e)
	add("head.gau.uv.weight", 2*e+a.s, a.hidden)
	add("head.gau.ln.g", 1)
	add("head.gau.res_scale.scale", a.hidden)
	add("head.cls_x.weight", a.inW*a.split, a.hidden)
	add("head.cls_y.weight", a.inH*a.split, a.hidden)
	return out
}

// The random DWPose's keypoints land anywhere, mostly outside the face
// and often outside the frame (the model sees the frame padded by 25 %),
// so MuseTalk's box logic would fall back to S3FD on every frame and a
// tiny render would never take the landmark path. biasTinyDWPose makes
// the head put every keypoint somewhere in a fixed region of a square
// portrait, the middle third of its width and 20–64 % of its height,
// where a centred face is; within it each keypoint's place still comes
// from the random network (and the picture), so the 68 face landmarks
// spread over the region and MuseTalk's rules make a box of them:
//
//   - the backbone's last BatchNorm gives channel 0 the constant 1, so
//     its output channel 0 is SiLU(1) everywhere;
//   - the head's 7×7 final_layer reads that channel through its centre
//     tap only, with weight tinyDWPoseConst, for every keypoint: each
//     keypoint's 108 features get the same large positive offset;
//   - mlp's linear layer sums the features into hidden unit 0 (a positive
//     value for every keypoint and picture) and keeps that sum out of the
//     other units (their rows have zero mean), which carry the random,
//     keypoint-dependent part;
//   - the GAU's output projection is zero (the block passes its input
//     on, scaled; unit 0 by 1), so unit 0 reaches the classifiers;
//   - the SimCC classifiers weigh unit 0 by −tinyDWPosePenalty for the
//     bins outside the region and +tinyDWPoseLift inside: every argmax
//     lies inside, and its logit is positive, so the score is too. The x
//     region is symmetric, so the flip test's mirrored logits keep it.
const (
	tinyDWPoseConst   = 10
	tinyDWPosePenalty = 100
	tinyDWPoseLift    = 0.1
)

// The region, as fractions of a square frame's width and height.
var (
	tinyDWPoseX = [2]float64{1.0 / 3, 2.0 / 3}
	tinyDWPoseY = [2]float64{0.2, 0.64}
)

// tinyDWPoseBins returns the first and last SimCC bin of n whose keypoint
// lies in frac of a square frame's side along an axis the model sees with
// scale times the side (mmpose's box padding 1.25 and aspect fix: 1.25
// across, 1.25/0.75 down), centred.
func tinyDWPoseBins(n int, scale float64, frac [2]float64) (lo, hi int) {
	// keypoint/side = bin/n·scale − (scale−1)/2
	at := func(f float64) float64 { return (f + (scale-1)/2) / scale * float64(n) }
	return int(math.Ceil(at(frac[0]))), int(math.Floor(at(frac[1])))
}

// biasTinyDWPose applies the changes above to one freshly drawn tensor.
func biasTinyDWPose(name string, shape []int, out []float32) {
	const lastBN = "backbone.stage4.2.final_conv.bn."
	switch name {
	case lastBN + "weight":
		out[0] = 0
	case lastBN + "bias":
		out[0] = 1
	case "head.final_layer.weight": // [K, C, k, k]
		k, c := shape[2], shape[1]
		for kp := range shape[0] {
			taps := out[kp*c*k*k : kp*c*k*k+k*k] // input channel 0
			clear(taps)
			taps[k/2*k+k/2] = tinyDWPoseConst
		}
	case "head.mlp.0.g":
		out[0] = 1
	case "head.mlp.1.weight": // [hidden, features]
		f := shape[1]
		for j := range shape[0] {
			row := out[j*f : (j+1)*f]
			if j == 0 {
				for i := range row {
					row[i] = float32(1 / math.Sqrt(float64(f)))
				}
				continue
			}
			var mean float64
			for _, v := range row {
				mean += float64(v)
			}
			mean /= float64(f)
			for i := range row {
				row[i] -= float32(mean)
			}
		}
	case "head.gau.o.weight":
		clear(out)
	case "head.gau.res_scale.scale":
		out[0] = 1
	case "head.cls_x.weight", "head.cls_y.weight": // [bins, hidden]
		n, h := shape[0], shape[1]
		lo, hi := tinyDWPoseBins(n, 1.25, tinyDWPoseX)
		if name == "head.cls_y.weight" {
			lo, hi = tinyDWPoseBins(n, 1.25/0.75, tinyDWPoseY)
		} else {
			hi = n - 1 - lo // exactly symmetric, for the flip test
		}
		for b := range n {
			w := float32(-tinyDWPosePenalty)
			if b >= lo && b <= hi {
				w = tinyDWPoseLift
			}
			out[b*h] = w
		}
	}
}

// DWPoseSpec lists the tensors of the official DWPose checkpoint's state
// dict (dw-ll_ucoco_384.pth, DWPose-l, 33.65 M parameters) with their
// shapes, BatchNorm buffers included (num_batches_tracked is a 0-d int64
// tensor), for checking a checkpoint before converting it.
func DWPoseSpec() []model.TensorSpec { return dwposeL().spec(true) }
