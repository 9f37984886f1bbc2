package modeldir

import (
	"fmt"

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
