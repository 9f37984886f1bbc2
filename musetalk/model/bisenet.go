package model

import (
	"fmt"
	"math"
	"strings"

	"github.com/avatargen/musetalk/kernels"
)

// BiSeNetClasses is the number of face-parsing classes BiSeNet predicts
// (CelebAMask-HQ: 0 background, 1 skin, 2/3 brows, 4/5 eyes, 6 glasses,
// 7/8 ears, 9 earring, 10 nose, 11 mouth, 12/13 lips, 14 neck, 15 necklace,
// 16 cloth, 17 hair, 18 hat).
const BiSeNetClasses = 19

// bisenetBNEps is the eps of every BatchNorm2d of BiSeNet (PyTorch's
// default).
const bisenetBNEps = 1e-5

// BiSeNet is the face-parsing network MuseTalk runs
// (musetalk/utils/face_parsing/model.py, zllrunning/face-parsing.PyTorch's
// 79999_iter.pth) in eval mode: a ResNet-18 context path with attention
// refinement modules and a global-context branch, a feature fusion module
// and the main output head. Every BatchNorm is folded into the convolution
// before it when the weights load, so inference is convolution, ReLU,
// pooling, sigmoid attention and upsampling only. The two auxiliary heads
// (conv_out16, conv_out32), which MuseTalk computes and discards, are
// checked on load but neither kept nor run. Build it with [NewBiSeNet].
//
// A BiSeNet is safe for concurrent use when its backend is: Forward only
// reads the weights.
type BiSeNet struct {
	be kernels.Backend
	st *paramState

	// ResNet-18 (cp.resnet).
	stem   bisenetConv // conv1 + bn1 + ReLU
	layers [4][2]bisenetBlock

	// Context path (cp).
	arm16, arm32           bisenetARM
	convHead32, convHead16 bisenetConv
	convAvg                bisenetConv

	// Feature fusion (ffm).
	ffmBlock   bisenetConv // convblk
	ffm1, ffm2 bisenetConv // conv1 (+ReLU), conv2: the attention's 1×1 convs

	// Main head (conv_out).
	head, classifier bisenetConv
}

// bisenetConv is a convolution whose bias (if any) carries a folded
// BatchNorm, optionally followed by ReLU.
type bisenetConv struct {
	w, b *kernels.Tensor // b is nil for a conv without bias or BatchNorm
	p    kernels.Conv2DParams
	relu bool
}

// forward returns a new tensor; x is not freed.
func (c bisenetConv) forward(be kernels.Backend, x *kernels.Tensor) *kernels.Tensor {
	dst := be.Alloc(c.p.OutShape(x, c.w)...)
	be.Conv2D(dst, x, c.w, c.b, c.p)
	if c.relu {
		be.ReLU(dst, dst)
	}
	return dst
}

// bisenetBlock is the backbone's BasicBlock: relu(bn1(conv1)) → bn2(conv2),
// plus the input (through a 1×1 conv + BN when the shape changes), then
// ReLU.
type bisenetBlock struct {
	conv1, conv2 bisenetConv
	down         *bisenetConv
}

func (k bisenetBlock) forward(be kernels.Backend, x *kernels.Tensor) *kernels.Tensor {
	h := k.conv1.forward(be, x)
	r := k.conv2.forward(be, h)
	be.Free(h)
	if k.down != nil {
		sc := k.down.forward(be, x)
		be.Add(r, r, sc)
		be.Free(sc)
	} else {
		be.Add(r, r, x)
	}
	be.ReLU(r, r)
	return r
}

// bisenetARM is the AttentionRefinementModule: feat = ConvBNReLU3×3(x),
// feat · sigmoid(BN(conv1×1(global average of feat))).
type bisenetARM struct {
	conv, atten bisenetConv
}

func (a bisenetARM) forward(be kernels.Backend, x *kernels.Tensor) *kernels.Tensor {
	feat := a.conv.forward(be, x)
	att := bisenetGlobalAvg(be, feat)
	w := a.atten.forward(be, att)
	be.Free(att)
	be.Sigmoid(w, w)
	be.Mul(feat, feat, w)
	be.Free(w)
	return feat
}

// bisenetGlobalAvg returns a new [N,C,1,1] holding the mean of each channel
// of x [N,C,H,W] (F.avg_pool2d(x, x.size()[2:])).
func bisenetGlobalAvg(be kernels.Backend, x *kernels.Tensor) *kernels.Tensor {
	dst := be.Alloc(x.Dim(0), x.Dim(1), 1, 1)
	be.AvgPool2D(dst, x, kernels.Pool2DParams{KernelH: x.Dim(2), KernelW: x.Dim(3)})
	return dst
}

// BiSeNetSpec lists every floating tensor of BiSeNet(n_classes=19)'s
// state_dict, as in 79999_iter.pth, in state_dict order: convolution
// weights and BatchNorm weight, bias, running_mean and running_var (the
// integer num_batches_tracked entries are not listed; loaders ignore them).
// It includes the auxiliary heads conv_out16 and conv_out32.
func BiSeNetSpec() []TensorSpec {
	st := &paramState{model: "bisenet"}
	buildBiSeNet(st)
	return st.spec
}

// NewBiSeNet builds BiSeNet on b from src (state_dict names, no prefix). It
// checks every tensor of [BiSeNetSpec] and reports all missing or misshapen
// ones, and any BatchNorm whose running_var + eps is not positive, in one
// error. The BatchNorm folds are computed in float64.
func NewBiSeNet(b kernels.Backend, src Tensors) (*BiSeNet, error) {
	st := &paramState{b: b, src: src, model: "bisenet"}
	n := buildBiSeNet(st)
	if err := st.err(); err != nil {
		st.free()
		return nil, err
	}
	return n, nil
}

// Close releases the network's weights on its backend.
func (n *BiSeNet) Close() { n.st.free() }

// Forward runs x [N,3,H,W] (RGB, ImageNet-normalised; see the face
// package) and returns the main head's class logits [N,19,H,W], which the
// caller frees: the 1/8-resolution logits upsampled bilinearly with
// align_corners=True to the input size, as net(x)[0] in PyTorch.
func (n *BiSeNet) Forward(x *kernels.Tensor) (*kernels.Tensor, error) {
	return n.forward(x, nil)
}

// bisenetTrace, when not nil, sees named activations (the golden files'
// intermediate.* names without the prefix); it must not keep or free them.
type bisenetTrace func(name string, t *kernels.Tensor)

func (n *BiSeNet) forward(x *kernels.Tensor, trace bisenetTrace) (*kernels.Tensor, error) {
	if x.Rank() != 4 || x.Dim(1) != 3 {
		return nil, fmt.Errorf("bisenet: input is %v, want [N,3,H,W]", x)
	}
	if trace == nil {
		trace = func(string, *kernels.Tensor) {}
	}
	be := n.be
	H, W := x.Dim(2), x.Dim(3)

	// Backbone: feat8, feat16, feat32 are the outputs of layer2, 3 and 4.
	stem := n.stem.forward(be, x)
	mp := kernels.Pool2D(3, 2, 1)
	ph, pw := mp.OutSize(stem.Dim(2), stem.Dim(3))
	pooled := be.Alloc(stem.Dim(0), stem.Dim(1), ph, pw)
	be.MaxPool2D(pooled, stem, mp)
	be.Free(stem)
	l1 := n.layer(0, pooled)
	be.Free(pooled)
	feat8 := n.layer(1, l1)
	be.Free(l1)
	feat16 := n.layer(2, feat8)
	feat32 := n.layer(3, feat16)
	trace("cp.resnet.0", feat8)
	trace("cp.resnet.1", feat16)
	trace("cp.resnet.2", feat32)

	// Context path. The global-context branch is 1×1, so its nearest
	// upsampling to feat32's size is a broadcast in the Add.
	avg := bisenetGlobalAvg(be, feat32)
	global := n.convAvg.forward(be, avg)
	be.Free(avg)
	sum32 := n.arm32.forward(be, feat32)
	be.Free(feat32)
	be.Add(sum32, sum32, global)
	be.Free(global)
	up32 := bisenetNearest(be, sum32, feat16.Dim(2), feat16.Dim(3))
	be.Free(sum32)
	feat32Up := n.convHead32.forward(be, up32)
	be.Free(up32)
	trace("cp.2", feat32Up)

	sum16 := n.arm16.forward(be, feat16)
	be.Free(feat16)
	be.Add(sum16, sum16, feat32Up)
	be.Free(feat32Up)
	up16 := bisenetNearest(be, sum16, feat8.Dim(2), feat8.Dim(3))
	be.Free(sum16)
	feat16Up := n.convHead16.forward(be, up16)
	be.Free(up16)
	trace("cp.1", feat16Up)

	// Feature fusion: f = ConvBNReLU1×1(cat[feat8, feat16Up]);
	// f·sigmoid(conv2(relu(conv1(avg(f))))) + f.
	cat := be.Alloc(feat8.Dim(0), feat8.Dim(1)+feat16Up.Dim(1), feat8.Dim(2), feat8.Dim(3))
	be.Concat(cat, 1, feat8, feat16Up)
	be.Free(feat8)
	be.Free(feat16Up)
	f := n.ffmBlock.forward(be, cat)
	be.Free(cat)
	avg = bisenetGlobalAvg(be, f)
	a1 := n.ffm1.forward(be, avg)
	be.Free(avg)
	att := n.ffm2.forward(be, a1)
	be.Free(a1)
	be.Sigmoid(att, att)
	fused := be.Alloc(f.Shape()...)
	be.Mul(fused, f, att)
	be.Free(att)
	be.Add(fused, fused, f)
	be.Free(f)
	trace("ffm", fused)

	// Main head, then bilinear (align_corners) to the input size.
	hd := n.head.forward(be, fused)
	be.Free(fused)
	logits := n.classifier.forward(be, hd)
	be.Free(hd)
	trace("conv_out.conv_out", logits)
	out := be.Alloc(logits.Dim(0), logits.Dim(1), H, W)
	be.UpsampleBilinear(out, logits, true)
	be.Free(logits)
	return out, nil
}

// layer runs backbone stage i (two BasicBlocks) on x and returns a new
// tensor; x is not freed.
func (n *BiSeNet) layer(i int, x *kernels.Tensor) *kernels.Tensor {
	h := n.layers[i][0].forward(n.be, x)
	o := n.layers[i][1].forward(n.be, h)
	n.be.Free(h)
	return o
}

// bisenetNearest returns a new x resized to h×w with PyTorch's legacy
// nearest (F.interpolate(mode="nearest")).
func bisenetNearest(be kernels.Backend, x *kernels.Tensor, h, w int) *kernels.Tensor {
	dst := be.Alloc(x.Dim(0), x.Dim(1), h, w)
	be.UpsampleNearest(dst, x)
	return dst
}

// buildBiSeNet walks BiSeNet's structure in state_dict order, recording
// every tensor in st.spec and, when st.b is set, loading it (folding each
// BatchNorm into its convolution). Problems are recorded in st.
func buildBiSeNet(st *paramState) *BiSeNet {
	s := newParamScope(st)
	n := &BiSeNet{be: st.b, st: st}

	cp := s.sub("cp")
	rn := cp.sub("resnet")
	n.stem = bisenetConvBN(rn, "conv1", "bn1", 3, 64, 7, 2, 3, true, true)
	in := 64
	for i, out := range [4]int{64, 128, 256, 512} {
		ls := rn.sub(fmt.Sprintf("layer%d", i+1))
		for j := range 2 {
			bs := ls.sub(j)
			cin, stride := out, 1
			if j == 0 {
				cin = in
				if i > 0 {
					stride = 2
				}
			}
			blk := &n.layers[i][j]
			blk.conv1 = bisenetConvBN(bs, "conv1", "bn1", cin, out, 3, stride, 1, true, true)
			blk.conv2 = bisenetConvBN(bs, "conv2", "bn2", out, out, 3, 1, 1, false, true)
			if cin != out || stride != 1 {
				d := bisenetConvBN(bs.sub("downsample"), "0", "1", cin, out, 1, stride, 0, false, true)
				blk.down = &d
			}
		}
		in = out
	}
	n.arm16 = newBiSeNetARM(cp.sub("arm16"), 256, 128)
	n.arm32 = newBiSeNetARM(cp.sub("arm32"), 512, 128)
	n.convHead32 = bisenetConvBNReLU(cp.sub("conv_head32"), 128, 128, 3, true)
	n.convHead16 = bisenetConvBNReLU(cp.sub("conv_head16"), 128, 128, 3, true)
	n.convAvg = bisenetConvBNReLU(cp.sub("conv_avg"), 512, 128, 1, true)

	f := s.sub("ffm")
	n.ffmBlock = bisenetConvBNReLU(f.sub("convblk"), 256, 256, 1, true)
	n.ffm1 = bisenetPlainConv(f, "conv1", 256, 64, true, true)
	n.ffm2 = bisenetPlainConv(f, "conv2", 64, 256, false, true)

	n.head, n.classifier = bisenetOutput(s.sub("conv_out"), 256, 256, true)
	// The auxiliary heads: checked, not kept.
	bisenetOutput(s.sub("conv_out16"), 128, 64, false)
	bisenetOutput(s.sub("conv_out32"), 128, 64, false)
	return n
}

// newBiSeNetARM declares an AttentionRefinementModule: conv (ConvBNReLU
// 3×3), conv_atten (1×1, no bias) and bn_atten.
func newBiSeNetARM(s paramScope, in, out int) bisenetARM {
	return bisenetARM{
		conv:  bisenetConvBNReLU(s.sub("conv"), in, out, 3, true),
		atten: bisenetConvBN(s, "conv_atten", "bn_atten", out, out, 1, 1, 0, false, true),
	}
}

// bisenetOutput declares a BiSeNetOutput head: conv (ConvBNReLU 3×3
// in→mid) and conv_out (1×1 mid→19, no bias). keep false checks the
// weights without uploading them.
func bisenetOutput(s paramScope, in, mid int, keep bool) (conv, classifier bisenetConv) {
	conv = bisenetConvBNReLU(s.sub("conv"), in, mid, 3, keep)
	classifier = bisenetPlainConv(s, "conv_out", mid, BiSeNetClasses, false, keep)
	return conv, classifier
}

// bisenetConvBNReLU declares a ConvBNReLU module (conv.weight, no bias;
// bn.*) with a k×k kernel, stride 1 and "same" padding.
func bisenetConvBNReLU(s paramScope, in, out, k int, keep bool) bisenetConv {
	return bisenetConvBN(s, "conv", "bn", in, out, k, 1, (k-1)/2, true, keep)
}

// bisenetConvBN declares conv.weight [out,in,k,k] (no bias) and the
// BatchNorm bn.{weight,bias,running_mean,running_var} [out] after it, and
// returns the folded convolution with the given stride and padding,
// followed by ReLU if relu. keep false checks the weights (and the fold)
// without uploading them.
func bisenetConvBN(s paramScope, conv, bn string, in, out, k, stride, pad int, relu, keep bool) bisenetConv {
	c := bisenetConv{p: kernels.Conv2DPad(stride, pad), relu: relu}
	w := s.sub(conv).read("weight", out, in, k, k)
	bs := s.sub(bn)
	gamma := bs.read("weight", out)
	beta := bs.read("bias", out)
	mean := bs.read("running_mean", out)
	variance := bs.read("running_var", out)
	if w == nil || gamma == nil || beta == nil || mean == nil || variance == nil {
		return c
	}
	fw, fb, err := foldBatchNorm(w, gamma, beta, mean, variance, bisenetBNEps)
	if err != nil {
		s.st.errs = append(s.st.errs, fmt.Sprintf("%s: %v", strings.TrimSuffix(bs.prefix, "."), err))
		return c
	}
	if keep {
		c.w = s.st.upload(fw, out, in, k, k)
		c.b = s.st.upload(fb, out)
	}
	return c
}

// bisenetPlainConv declares a 1×1 convolution without bias or BatchNorm
// (name.weight [out,in,1,1]).
func bisenetPlainConv(s paramScope, name string, in, out int, relu, keep bool) bisenetConv {
	c := bisenetConv{p: kernels.Conv2DPad(1, 0), relu: relu}
	if w := s.sub(name).read("weight", out, in, 1, 1); w != nil && keep {
		c.w = s.st.upload(w, out, in, 1, 1)
	}
	return c
}

// foldBatchNorm folds an eval-mode BatchNorm (per output channel o:
// (y − mean)/sqrt(var + eps)·gamma + beta) into the bias-free convolution
// weight w [out,...] before it, returning new slices: w'[o] = w[o]·s and
// b'[o] = beta − mean·s with s = gamma/sqrt(var + eps), computed in float64
// and rounded once to float32. It fails when the lengths disagree or a
// channel's var + eps is not a positive finite number (or the result is not
// finite).
func foldBatchNorm(w, gamma, beta, mean, variance []float32, eps float64) (fw, fb []float32, err error) {
	c := len(gamma)
	if c == 0 || len(beta) != c || len(mean) != c || len(variance) != c || len(w)%c != 0 {
		return nil, nil, fmt.Errorf("batch norm of %d/%d/%d/%d channels for a weight of %d elements",
			len(gamma), len(beta), len(mean), len(variance), len(w))
	}
	per := len(w) / c
	fw, fb = make([]float32, len(w)), make([]float32, c)
	for o := range c {
		v := float64(variance[o]) + eps
		if !(v > 0) || math.IsInf(v, 0) {
			return nil, nil, fmt.Errorf("channel %d: running_var %g + eps is not positive and finite", o, variance[o])
		}
		sc := float64(gamma[o]) / math.Sqrt(v)
		b := float64(beta[o]) - float64(mean[o])*sc
		if math.IsNaN(sc) || math.IsInf(sc, 0) || math.IsNaN(b) || math.IsInf(b, 0) {
			return nil, nil, fmt.Errorf("channel %d: batch norm parameters are not finite", o)
		}
		fb[o] = float32(b)
		for i := o * per; i < (o+1)*per; i++ {
			fw[i] = float32(float64(w[i]) * sc)
		}
	}
	return fw, fb, nil
}
