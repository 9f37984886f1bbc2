package kernels

import (
	"fmt"
	"math"
)

// Op names one entry of the op table ([Ops]); [Backend.Supports] takes it.
type Op uint8

// The ops, one per [Ops] method.
const (
	OpAdd Op = iota
	OpAttention
	OpAvgPool2D
	OpConcat
	OpConv1D
	OpConv2D
	OpCopy
	OpDepthwiseConv2D
	OpGEGLU
	OpGELU
	OpGroupNorm
	OpHardSigmoid
	OpLayerNorm
	OpL2Norm
	OpLinear
	OpMatMul
	OpMaxPool2D
	OpMul
	OpPermute
	OpReLU
	OpScale
	OpScaleNorm
	OpSigmoid
	OpSiLU
	OpSoftmax
	OpUpsampleBilinear
	OpUpsampleNearest
	opCount
)

// opNames has one entry per Op; a test fails if any is empty.
var opNames = [opCount]string{
	OpAdd:              "add",
	OpAttention:        "attention",
	OpAvgPool2D:        "avg_pool2d",
	OpConcat:           "concat",
	OpConv1D:           "conv1d",
	OpConv2D:           "conv2d",
	OpCopy:             "copy",
	OpDepthwiseConv2D:  "depthwise_conv2d",
	OpGEGLU:            "geglu",
	OpGELU:             "gelu",
	OpGroupNorm:        "group_norm",
	OpHardSigmoid:      "hard_sigmoid",
	OpLayerNorm:        "layer_norm",
	OpL2Norm:           "l2_norm",
	OpLinear:           "linear",
	OpMatMul:           "matmul",
	OpMaxPool2D:        "max_pool2d",
	OpMul:              "mul",
	OpPermute:          "permute",
	OpReLU:             "relu",
	OpScale:            "scale",
	OpScaleNorm:        "scale_norm",
	OpSigmoid:          "sigmoid",
	OpSiLU:             "silu",
	OpSoftmax:          "softmax",
	OpUpsampleBilinear: "upsample_bilinear",
	OpUpsampleNearest:  "upsample_nearest",
}

// AllOps returns every op in the table, in order.
func AllOps() []Op {
	ops := make([]Op, opCount)
	for i := range ops {
		ops[i] = Op(i)
	}
	return ops
}

// String returns the op's snake_case name.
func (o Op) String() string {
	if o < opCount {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// AttentionParams configures [Ops.Attention].
type AttentionParams struct {
	// Heads is the number of heads; it must divide the q and v channels.
	Heads int
	// Scale multiplies q·kᵀ; 0 means 1/sqrt(head dimension).
	Scale float32
}

// HeadScale returns the effective scale for q channels cq.
func (p AttentionParams) HeadScale(cq int) float32 {
	if p.Scale != 0 {
		return p.Scale
	}
	return float32(1 / math.Sqrt(float64(cq/p.Heads)))
}

// Conv1DParams configures [Ops.Conv1D]. A zero Stride means 1.
type Conv1DParams struct {
	PadLeft, PadRight int
	Stride            int
}

// OutLen returns the output length for input length l and kernel size k.
func (p Conv1DParams) OutLen(l, k int) int {
	return (l+p.PadLeft+p.PadRight-k)/max(p.Stride, 1) + 1
}

// Conv2D returns the equivalent 2-D parameters (a 1×K kernel on a 1×L
// image).
func (p Conv1DParams) Conv2D() Conv2DParams {
	return Conv2DParams{PadLeft: p.PadLeft, PadRight: p.PadRight, StrideH: 1, StrideW: p.Stride}
}

// Conv2DParams configures [Ops.Conv2D]: strides and per-side zero padding
// (asymmetric padding such as the VAE downsampler's (0,1,0,1) is allowed).
// A zero stride means 1.
type Conv2DParams struct {
	PadBottom, PadLeft, PadRight, PadTop int
	StrideH, StrideW                     int
}

// Conv2DPad returns parameters with the same stride and padding on every
// side, the common PyTorch Conv2d(stride=s, padding=pad).
func Conv2DPad(stride, pad int) Conv2DParams {
	return Conv2DParams{PadBottom: pad, PadLeft: pad, PadRight: pad, PadTop: pad, StrideH: stride, StrideW: stride}
}

// OutSize returns the output height and width for an h×w input and a kh×kw
// kernel.
func (p Conv2DParams) OutSize(h, w, kh, kw int) (int, int) {
	return (h+p.PadTop+p.PadBottom-kh)/max(p.StrideH, 1) + 1,
		(w+p.PadLeft+p.PadRight-kw)/max(p.StrideW, 1) + 1
}

// OutShape returns dst's shape for input x [N,C,H,W] and weight w
// [Cout,C,KH,KW].
func (p Conv2DParams) OutShape(x, w *Tensor) []int {
	ho, wo := p.OutSize(x.Dim(2), x.Dim(3), w.Dim(2), w.Dim(3))
	return []int{x.Dim(0), w.Dim(0), ho, wo}
}

// GroupNormParams configures [Ops.GroupNorm].
type GroupNormParams struct {
	Eps    float32
	Groups int
	// SiLU applies SiLU to the result: GroupNorm followed by SiLU (as in
	// every ResNet block) in one pass over memory.
	SiLU bool
}

// LayerNormParams configures [Ops.LayerNorm].
type LayerNormParams struct {
	Eps float32
}

// MatMulParams configures [Ops.MatMul]. A zero Alpha means 1.
type MatMulParams struct {
	Alpha          float32
	TransA, TransB bool
}

// Pool2DParams configures [Ops.MaxPool2D] and [Ops.AvgPool2D]: a
// KernelH×KernelW window moved by the strides over the input padded on each
// side. Output sizes floor, as PyTorch's default (ceil_mode=False). A zero
// stride means 1.
type Pool2DParams struct {
	KernelH, KernelW                     int
	StrideH, StrideW                     int
	PadTop, PadLeft, PadBottom, PadRight int
}

// Pool2D returns square parameters: a k×k window, stride s, padding pad on
// every side (PyTorch's MaxPool2d(k, s, pad)).
func Pool2D(k, s, pad int) Pool2DParams {
	return Pool2DParams{KernelH: k, KernelW: k, StrideH: s, StrideW: s, PadTop: pad, PadLeft: pad, PadBottom: pad, PadRight: pad}
}

// OutSize returns the output height and width for an h×w input.
func (p Pool2DParams) OutSize(h, w int) (int, int) {
	return (h+p.PadTop+p.PadBottom-p.KernelH)/max(p.StrideH, 1) + 1,
		(w+p.PadLeft+p.PadRight-p.KernelW)/max(p.StrideW, 1) + 1
}

// ScaleNormParams configures [Ops.ScaleNorm]. A zero Scale means
// 1/sqrt(D) for rows of D elements (RTMPose's ScaleNorm); a zero Gain
// means 1.
type ScaleNormParams struct {
	Eps   float32
	Gain  float32
	Scale float32
}

// RowScale returns the effective Scale for rows of d elements.
func (p ScaleNormParams) RowScale(d int) float32 {
	if p.Scale != 0 {
		return p.Scale
	}
	return float32(1 / math.Sqrt(float64(d)))
}

// RowGain returns the effective Gain.
func (p ScaleNormParams) RowGain() float32 {
	if p.Gain != 0 {
		return p.Gain
	}
	return 1
}
