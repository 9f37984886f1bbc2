package model

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/avatargen/musetalk/kernels"
)

// DWPose is the whole-body pose network MuseTalk finds face landmarks with:
// RTMPose (mmpose's TopdownPoseEstimator) with a CSPNeXt P5 backbone and an
// RTMCC head, as MuseTalk's config
// rtmpose-l_8xb32-270e_coco-ubody-wholebody-384x288.py builds it (the
// checkpoint dw-ll_ucoco_384.pth), in eval mode:
//
//   - Backbone (mmdet's CSPNeXt, arch P5, expand_ratio 0.5,
//     channel_attention, SiLU, out_indices (4,)): a stem of three 3×3
//     ConvModules (the first stride 2), then four stages, each a 3×3
//     stride-2 ConvModule, an SPP bottleneck in the last (1×1 conv, max
//     pools 5, 9 and 13 concatenated, 1×1 conv), and a CSPLayer: 1×1 main
//     and short convs, CSPNeXtBlocks on the main path (3×3 ConvModule, then
//     a depthwise-separable 5×5 one, plus the identity in stages 1-3),
//     the concatenation, channel attention (global average, 1×1 conv,
//     Hardsigmoid, scale) and a 1×1 final conv. Every BatchNorm (eps 1e-5)
//     is folded into the convolution before it when the weights load.
//   - Head (RTMCCHead): a 7×7 conv to 133 keypoint maps, flattened; mlp =
//     ScaleNorm + Linear; one gated attention unit (RTMCCBlock: ScaleNorm,
//     a SiLU-gated projection to u, v and a shared base, q and k as
//     per-channel scalings of the base, relu(q·kᵀ/√s)² as the attention
//     kernel with no softmax, out = o(u ⊙ kernel·v), plus the input scaled
//     per channel); then the SimCC classifiers cls_x (576 bins) and cls_y
//     (768 bins), two per input pixel.
//
// Build it with [NewDWPose]; [DWPose.Forward] runs the network on model
// inputs and [DWPose.Keypoints] runs mmpose's whole top-down pipeline on a
// frame (dwpose_pipeline.go).
//
// A DWPose is safe for concurrent use when its backend is: its methods only
// read the weights.
type DWPose struct {
	be  kernels.Backend
	st  *paramState
	cfg DWPoseConfig

	stem   [3]dwConv
	stages [4]dwStage
	head   dwHead
}

// DWPoseKeypoints is the number of keypoints DWPose predicts: the 133 of
// COCO-WholeBody (17 body, 6 feet, 68 face, 2×21 hands).
const DWPoseKeypoints = 133

// DWPose's input size (mmpose's input_size (w, h)) and SimCC resolution.
const (
	DWPoseInputW = 288
	DWPoseInputH = 384
	// DWPoseSplitRatio is simcc_split_ratio: SimCC bins per input pixel.
	DWPoseSplitRatio = 2
	// DWPoseBinsX and DWPoseBinsY are the lengths of the SimCC vectors.
	DWPoseBinsX = DWPoseInputW * DWPoseSplitRatio
	DWPoseBinsY = DWPoseInputH * DWPoseSplitRatio
)

// dwposeBNEps is the eps of every BatchNorm of DWPose: the config's SyncBN,
// reverted to BatchNorm at load, has PyTorch's default.
const dwposeBNEps = 1e-5

// dwposeScaleNormEps is ScaleNorm's default eps in mmpose's rtmcc_block.
const dwposeScaleNormEps = 1e-5

// DWPoseConfig is the size of an RTMPose whole-body model with DWPose's
// structure; everything else (CSPNeXt P5, expand_ratio 0.5, channel
// attention, SiLU, 288×384 input, 133 keypoints, SimCC split ratio 2, the
// 7×7 final layer, flip test) is fixed. [DWPoseL] is the real
// dw-ll_ucoco_384.pth.
type DWPoseConfig struct {
	// Widen and Deepen are CSPNeXt's widen_factor and deepen_factor:
	// stage widths int(c·Widen) for c in 64 (the stem: half of it, then
	// it), 128, 256, 512, 1024; blocks per stage max(round(n·Deepen), 1)
	// for n in 3, 6, 6, 3.
	Widen, Deepen float64
	// GAUHidden, GAUS and GAUExpansion are the head's gau_cfg
	// hidden_dims, s and expansion_factor.
	GAUHidden, GAUS, GAUExpansion int
}

// DWPoseL returns the configuration of DWPose-l, the checkpoint
// dw-ll_ucoco_384.pth MuseTalk runs (33.65 M parameters).
func DWPoseL() DWPoseConfig {
	return DWPoseConfig{Widen: 1, Deepen: 1, GAUHidden: 256, GAUS: 128, GAUExpansion: 2}
}

// Validate reports a configuration no model can have.
func (c DWPoseConfig) Validate() error {
	var bad []string
	if !(c.Widen > 0) || c.Widen > 16 || int(64*c.Widen/2) < 1 {
		bad = append(bad, fmt.Sprintf("widen factor %g", c.Widen))
	}
	if !(c.Deepen > 0) || c.Deepen > 16 {
		bad = append(bad, fmt.Sprintf("deepen factor %g", c.Deepen))
	}
	if c.GAUHidden < 1 || c.GAUS < 1 || c.GAUExpansion < 1 {
		bad = append(bad, fmt.Sprintf("GAU hidden %d, s %d, expansion %d", c.GAUHidden, c.GAUS, c.GAUExpansion))
	}
	if len(bad) > 0 {
		return fmt.Errorf("dwpose: invalid config: %s", strings.Join(bad, "; "))
	}
	return nil
}

// dwposeArch is CSPNeXt's P5 arch setting: in and out channels (before
// widening), blocks (before deepening), add_identity, use_spp.
var dwposeArch = [4]struct {
	in, out, blocks int
	identity, spp   bool
}{
	{64, 128, 3, true, false},
	{128, 256, 6, true, false},
	{256, 512, 6, true, false},
	{512, 1024, 3, false, true},
}

// widths returns the stem's two widths, each stage's output width and
// block count, as mmdet's CSPNeXt computes them.
func (c DWPoseConfig) widths() (stem0, stem2 int, out [4]int, blocks [4]int) {
	stem0 = int(math.Floor(64 * c.Widen / 2))
	stem2 = int(64 * c.Widen)
	for i, a := range dwposeArch {
		out[i] = int(float64(a.out) * c.Widen)
		blocks[i] = max(int(math.RoundToEven(float64(a.blocks)*c.Deepen)), 1)
	}
	return
}

// BackboneChannels returns the channels of the backbone's output (the
// head's in_channels): int(1024·Widen).
func (c DWPoseConfig) BackboneChannels() int { return int(1024 * c.Widen) }

// dwConv is a convolution with its BatchNorm folded into w and b, then SiLU
// (ConvModule), or a plain convolution with its own bias (act false).
type dwConv struct {
	w, b      *kernels.Tensor
	p         kernels.Conv2DParams
	depthwise bool
	act       bool
}

// forward returns a new tensor; x is not freed.
func (c dwConv) forward(be kernels.Backend, x *kernels.Tensor) *kernels.Tensor {
	ho, wo := c.p.OutSize(x.Dim(2), x.Dim(3), c.w.Dim(2), c.w.Dim(3))
	dst := be.Alloc(x.Dim(0), c.w.Dim(0), ho, wo)
	if c.depthwise {
		be.DepthwiseConv2D(dst, x, c.w, c.b, c.p)
	} else {
		be.Conv2D(dst, x, c.w, c.b, c.p)
	}
	if c.act {
		be.SiLU(dst, dst)
	}
	return dst
}

// dwStage is one CSPNeXt stage: the stride-2 conv, the SPP bottleneck
// (stage 4 only) and the CSPLayer.
type dwStage struct {
	down     dwConv
	spp      *dwSPP
	main     dwConv
	short    dwConv
	final    dwConv
	blocks   []dwBlock
	identity bool
	att      dwConv // ChannelAttention's fc: a 1×1 conv with bias
}

// dwBlock is a CSPNeXtBlock: conv1 (3×3 ConvModule), conv2 (depthwise 5×5
// ConvModule, then pointwise 1×1 ConvModule).
type dwBlock struct {
	conv1, dw, pw dwConv
}

// dwSPP is mmdet's SPPBottleneck with kernel sizes 5, 9 and 13.
type dwSPP struct {
	conv1, conv2 dwConv
}

// dwposeSPPKernels are the SPP bottleneck's max-pool sizes.
var dwposeSPPKernels = [3]int{5, 9, 13}

func (s *dwStage) forward(be kernels.Backend, x *kernels.Tensor) *kernels.Tensor {
	h := s.down.forward(be, x)
	if s.spp != nil {
		t := s.spp.conv1.forward(be, h)
		be.Free(h)
		n, c, H, W := t.Dim(0), t.Dim(1), t.Dim(2), t.Dim(3)
		cat := be.Alloc(n, 4*c, H, W)
		pools := []*kernels.Tensor{t}
		for _, k := range dwposeSPPKernels {
			p := be.Alloc(n, c, H, W)
			be.MaxPool2D(p, t, kernels.Pool2D(k, 1, k/2))
			pools = append(pools, p)
		}
		be.Concat(cat, 1, pools...)
		for _, p := range pools {
			be.Free(p)
		}
		h = s.spp.conv2.forward(be, cat)
		be.Free(cat)
	}
	short := s.short.forward(be, h)
	main := s.main.forward(be, h)
	be.Free(h)
	for _, b := range s.blocks {
		t := b.conv1.forward(be, main)
		u := b.dw.forward(be, t)
		be.Free(t)
		v := b.pw.forward(be, u)
		be.Free(u)
		if s.identity {
			be.Add(v, v, main)
		}
		be.Free(main)
		main = v
	}
	n, c, H, W := main.Dim(0), main.Dim(1), main.Dim(2), main.Dim(3)
	cat := be.Alloc(n, 2*c, H, W)
	be.Concat(cat, 1, main, short)
	be.Free(main)
	be.Free(short)
	// Channel attention: cat · hardsigmoid(fc(mean over the plane)).
	avg := be.Alloc(n, 2*c, 1, 1)
	be.AvgPool2D(avg, cat, kernels.Pool2DParams{KernelH: H, KernelW: W})
	att := s.att.forward(be, avg)
	be.Free(avg)
	be.HardSigmoid(att, att)
	be.Mul(cat, cat, att)
	be.Free(att)
	out := s.final.forward(be, cat)
	be.Free(cat)
	return out
}

// dwHead is the RTMCC head's weights.
type dwHead struct {
	final    dwConv          // final_layer: 7×7 conv with bias, no activation
	mlpGain  float32         // mlp.0.g: ScaleNorm's gain
	mlp      *kernels.Tensor // mlp.1.weight [hidden, 108]
	lnGain   float32         // gau.ln.g
	u, v, bs *kernels.Tensor // gau.uv.weight split by rows: [e,hidden], [e,hidden], [s,hidden]
	gamma    [2]*kernels.Tensor
	beta     [2]*kernels.Tensor
	o        *kernels.Tensor // gau.o.weight [hidden, e]
	resScale *kernels.Tensor // gau.res_scale.scale [hidden]
	clsX     *kernels.Tensor // [576, hidden]
	clsY     *kernels.Tensor // [768, hidden]
}

// DWPoseSpec lists every floating tensor of the model's state_dict
// (backbone.* and head.*, as in dw-ll_ucoco_384.pth's state_dict), in
// state_dict order: convolution weights, BatchNorm weight, bias,
// running_mean and running_var (the integer num_batches_tracked entries are
// not listed; loaders ignore them), the attention and head parameters. It
// panics on an invalid config.
func DWPoseSpec(cfg DWPoseConfig) []TensorSpec {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	st := &paramState{model: "dwpose"}
	buildDWPose(st, cfg)
	return st.spec
}

// NewDWPose builds DWPose of the given size on b from src (the state_dict's
// names, backbone.* and head.*; a checkpoint's "state_dict" entry as it
// is). It checks every tensor of [DWPoseSpec] and reports all missing or
// misshapen ones, and any BatchNorm whose running_var + eps is not
// positive, in one error. The BatchNorm folds are computed in float64.
func NewDWPose(b kernels.Backend, cfg DWPoseConfig, src Tensors) (*DWPose, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st := &paramState{b: b, src: src, model: "dwpose"}
	n := buildDWPose(st, cfg)
	if err := st.err(); err != nil {
		st.free()
		return nil, err
	}
	return n, nil
}

// InferDWPoseConfig reads a DWPose checkpoint's size from its tensors: the
// widen factor from the widest convolution (the last stage's, int(1024 ·
// widen) channels), the deepen factor from the first stage's block count,
// and the GAU's dimensions from its weights. The result is a guess for
// [NewDWPose], which checks every tensor against it.
func InferDWPoseConfig(src Tensors) (DWPoseConfig, error) {
	shape := func(name string) ([]int, error) {
		_, s, err := src.Tensor(name)
		return s, err
	}
	var c DWPoseConfig
	s, err := shape("backbone.stage4.0.conv.weight")
	if err != nil {
		return c, fmt.Errorf("dwpose: %w", err)
	}
	if len(s) != 4 || s[0] < 1 {
		return c, fmt.Errorf("dwpose: backbone.stage4.0.conv.weight has shape %v", s)
	}
	c.Widen = float64(s[0]) / 1024
	blocks := 0
	for ; blocks < 64; blocks++ {
		if _, err := shape(fmt.Sprintf("backbone.stage1.1.blocks.%d.conv1.conv.weight", blocks)); err != nil {
			break
		}
	}
	if blocks == 0 {
		return c, errors.New("dwpose: backbone.stage1.1.blocks.0 missing")
	}
	c.Deepen = float64(blocks) / 3
	g, err := shape("head.gau.gamma")
	if err != nil {
		return c, fmt.Errorf("dwpose: %w", err)
	}
	uv, err := shape("head.gau.uv.weight")
	if err != nil {
		return c, fmt.Errorf("dwpose: %w", err)
	}
	if len(g) != 2 || len(uv) != 2 || uv[1] < 1 || (uv[0]-g[1])%(2*uv[1]) != 0 {
		return c, fmt.Errorf("dwpose: head.gau.gamma %v and head.gau.uv.weight %v do not fit a GAU", g, uv)
	}
	c.GAUS, c.GAUHidden = g[1], uv[1]
	c.GAUExpansion = (uv[0] - g[1]) / (2 * uv[1])
	return c, c.Validate()
}

// Config returns the model's size.
func (n *DWPose) Config() DWPoseConfig { return n.cfg }

// Close releases the network's weights on its backend.
func (n *DWPose) Close() { n.st.free() }

// buildDWPose walks the model in state_dict order, recording every tensor
// in st.spec and, when st.b is set, loading it (folding each BatchNorm into
// its convolution). Problems are recorded in st.
func buildDWPose(st *paramState, cfg DWPoseConfig) *DWPose {
	n := &DWPose{be: st.b, st: st, cfg: cfg}
	root := newParamScope(st)
	bb := root.sub("backbone")
	stem0, stem2, outs, blocks := cfg.widths()
	n.stem[0] = dwposeConvModule(bb.sub("stem", 0), 3, stem0, 3, 2, false)
	n.stem[1] = dwposeConvModule(bb.sub("stem", 1), stem0, stem0, 3, 1, false)
	n.stem[2] = dwposeConvModule(bb.sub("stem", 2), stem0, stem2, 3, 1, false)
	in := stem2
	for i, a := range dwposeArch {
		s := bb.sub(fmt.Sprintf("stage%d", i+1))
		out := outs[i]
		stg := &n.stages[i]
		stg.down = dwposeConvModule(s.sub(0), in, out, 3, 2, false)
		csp := s.sub(1)
		if a.spp {
			sp := s.sub(1)
			mid := out / 2
			stg.spp = &dwSPP{
				conv1: dwposeConvModule(sp.sub("conv1"), out, mid, 1, 1, false),
				conv2: dwposeConvModule(sp.sub("conv2"), mid*(len(dwposeSPPKernels)+1), out, 1, 1, false),
			}
			csp = s.sub(2)
		}
		mid := int(float64(out) * 0.5)
		stg.main = dwposeConvModule(csp.sub("main_conv"), out, mid, 1, 1, false)
		stg.short = dwposeConvModule(csp.sub("short_conv"), out, mid, 1, 1, false)
		stg.final = dwposeConvModule(csp.sub("final_conv"), 2*mid, out, 1, 1, false)
		stg.identity = a.identity
		for j := range blocks[i] {
			bs := csp.sub("blocks", j)
			stg.blocks = append(stg.blocks, dwBlock{
				conv1: dwposeConvModule(bs.sub("conv1"), mid, mid, 3, 1, false),
				dw:    dwposeConvModule(bs.sub("conv2", "depthwise_conv"), mid, mid, 5, 1, true),
				pw:    dwposeConvModule(bs.sub("conv2", "pointwise_conv"), mid, mid, 1, 1, false),
			})
		}
		fc := csp.sub("attention", "fc")
		stg.att = dwConv{
			w: fc.param("weight", 2*mid, 2*mid, 1, 1),
			b: fc.param("bias", 2*mid),
			p: kernels.Conv2DPad(1, 0),
		}
		in = out
	}

	hs := root.sub("head")
	h := &n.head
	k := DWPoseKeypoints
	fk := 7
	fl := hs.sub("final_layer")
	h.final = dwConv{
		w: fl.param("weight", k, in, fk, fk),
		b: fl.param("bias", k),
		p: kernels.Conv2DPad(1, fk/2),
	}
	flat := (DWPoseInputW / 32) * (DWPoseInputH / 32)
	hid, s, e := cfg.GAUHidden, cfg.GAUS, cfg.GAUHidden*cfg.GAUExpansion
	h.mlpGain = dwposeScalar(hs.sub("mlp", 0), "g")
	h.mlp = hs.sub("mlp", 1).param("weight", hid, flat)
	gau := hs.sub("gau")
	gamma := gau.read("gamma", 2, s)
	beta := gau.read("beta", 2, s)
	if gamma != nil && beta != nil {
		for i := range 2 {
			h.gamma[i] = st.upload(gamma[i*s:(i+1)*s], s)
			h.beta[i] = st.upload(beta[i*s:(i+1)*s], s)
		}
	}
	h.o = gau.sub("o").param("weight", hid, e)
	if uv := gau.sub("uv").read("weight", 2*e+s, hid); uv != nil {
		h.u = st.upload(uv[:e*hid], e, hid)
		h.v = st.upload(uv[e*hid:2*e*hid], e, hid)
		h.bs = st.upload(uv[2*e*hid:], s, hid)
	}
	h.lnGain = dwposeScalar(gau.sub("ln"), "g")
	h.resScale = gau.sub("res_scale").param("scale", hid)
	h.clsX = hs.sub("cls_x").param("weight", DWPoseBinsX, hid)
	h.clsY = hs.sub("cls_y").param("weight", DWPoseBinsY, hid)
	return n
}

// dwposeScalar reads the one-element parameter prefix+name (a ScaleNorm
// gain), 0 when only recording or when it is missing.
func dwposeScalar(s paramScope, name string) float32 {
	if v := s.read(name, 1); v != nil {
		return v[0]
	}
	return 0
}

// dwposeConvModule declares mmcv's ConvModule: conv.weight (no bias) and
// the BatchNorm bn.* after it, folded, followed by SiLU; a k×k kernel with
// "same" padding, the given stride, depthwise (weight [out,1,k,k], out =
// in) or not.
func dwposeConvModule(s paramScope, in, out, k, stride int, depthwise bool) dwConv {
	c := dwConv{p: kernels.Conv2DPad(stride, k/2), depthwise: depthwise, act: true}
	wIn := in
	if depthwise {
		wIn = 1
	}
	w := s.sub("conv").read("weight", out, wIn, k, k)
	bs := s.sub("bn")
	gamma := bs.read("weight", out)
	beta := bs.read("bias", out)
	mean := bs.read("running_mean", out)
	variance := bs.read("running_var", out)
	if w == nil || gamma == nil || beta == nil || mean == nil || variance == nil {
		return c
	}
	fw, fb, err := foldBatchNorm(w, gamma, beta, mean, variance, dwposeBNEps)
	if err != nil {
		s.st.errs = append(s.st.errs, fmt.Sprintf("%s: %v", strings.TrimSuffix(bs.prefix, "."), err))
		return c
	}
	c.w = s.st.upload(fw, out, wIn, k, k)
	c.b = s.st.upload(fb, out)
	return c
}

// Forward runs the network on x [N,3,384,288] (RGB, normalised with
// mmpose's mean and std; see [DWPoseInput]) and returns the SimCC logits
// simccX [N,133,576] and simccY [N,133,768], which the caller frees. Flip
// test is the caller's: run the mirrored input in the same batch
// ([DWPose.Keypoints] does).
func (n *DWPose) Forward(x *kernels.Tensor) (simccX, simccY *kernels.Tensor, err error) {
	return n.forward(x, nil)
}

// dwposeTrace, when not nil, sees the backbone's output
// ("backbone_out"); it must not keep or free it.
type dwposeTrace func(name string, t *kernels.Tensor)

func (n *DWPose) forward(x *kernels.Tensor, trace dwposeTrace) (simccX, simccY *kernels.Tensor, err error) {
	if x.Rank() != 4 || x.Dim(1) != 3 || x.Dim(2) != DWPoseInputH || x.Dim(3) != DWPoseInputW {
		return nil, nil, fmt.Errorf("dwpose: input is %v, want [N,3,%d,%d]", x, DWPoseInputH, DWPoseInputW)
	}
	be := n.be
	h := n.stem[0].forward(be, x)
	for _, c := range n.stem[1:] {
		t := c.forward(be, h)
		be.Free(h)
		h = t
	}
	for i := range n.stages {
		t := n.stages[i].forward(be, h)
		be.Free(h)
		h = t
	}
	if trace != nil {
		trace("backbone_out", h)
	}
	simccX, simccY = n.headForward(h)
	be.Free(h)
	return simccX, simccY, nil
}

// headForward runs the RTMCC head on the backbone's output feat [N,C,12,9]
// and returns new simcc_x and simcc_y logits.
func (n *DWPose) headForward(feat *kernels.Tensor) (simccX, simccY *kernels.Tensor) {
	be, h, cfg := n.be, &n.head, n.cfg
	N, k := feat.Dim(0), DWPoseKeypoints
	maps := h.final.forward(be, feat) // [N,133,12,9]
	flat := maps.Dim(2) * maps.Dim(3)
	x := maps.Reshape(N, k, flat)
	be.ScaleNorm(x, x, kernels.ScaleNormParams{Eps: dwposeScaleNormEps, Gain: h.mlpGain})
	hid, s, e := cfg.GAUHidden, cfg.GAUS, cfg.GAUHidden*cfg.GAUExpansion
	tok := be.Alloc(N, k, hid)
	be.Linear(tok, x, h.mlp, nil)
	be.Free(maps)

	// The gated attention unit (self-attention, no relative bias, no
	// rotary encoding).
	xn := be.Alloc(N, k, hid)
	be.ScaleNorm(xn, tok, kernels.ScaleNormParams{Eps: dwposeScaleNormEps, Gain: h.lnGain})
	proj := func(w *kernels.Tensor, d int) *kernels.Tensor {
		t := be.Alloc(N, k, d)
		be.Linear(t, xn, w, nil)
		be.SiLU(t, t)
		return t
	}
	u, v, base := proj(h.u, e), proj(h.v, e), proj(h.bs, s)
	be.Free(xn)
	q, kk := be.Alloc(N, k, s), be.Alloc(N, k, s)
	be.Mul(q, base, h.gamma[0])
	be.Add(q, q, h.beta[0])
	be.Mul(kk, base, h.gamma[1])
	be.Add(kk, kk, h.beta[1])
	be.Free(base)
	kern := be.Alloc(N, k, k)
	be.MatMul(kern, q, kk, kernels.MatMulParams{TransB: true, Alpha: float32(1 / math.Sqrt(float64(s)))})
	be.Free(q)
	be.Free(kk)
	be.ReLU(kern, kern)
	be.Mul(kern, kern, kern)
	kv := be.Alloc(N, k, e)
	be.MatMul(kv, kern, v, kernels.MatMulParams{})
	be.Free(kern)
	be.Free(v)
	be.Mul(u, u, kv)
	be.Free(kv)
	out := be.Alloc(N, k, hid)
	be.Linear(out, u, h.o, nil)
	be.Free(u)
	be.Mul(tok, tok, h.resScale)
	be.Add(out, out, tok)
	be.Free(tok)

	simccX = be.Alloc(N, k, DWPoseBinsX)
	simccY = be.Alloc(N, k, DWPoseBinsY)
	be.Linear(simccX, out, h.clsX, nil)
	be.Linear(simccY, out, h.clsY, nil)
	be.Free(out)
	return simccX, simccY
}
