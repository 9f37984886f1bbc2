package model

import (
	"fmt"
	"math"

	"github.com/avatargen/musetalk/kernels"
)

// S3FD is the S3FD face detector MuseTalk runs before landmarks
// (face_detection/detection/sfd/net_s3fd.py: s3fd, the checkpoint
// s3fd-619a316812.pth): a VGG-16 trunk (conv1_1…conv5_3 with 2×2 max
// pools), fc6 (3×3, padding 3) and fc7 (1×1) as convolutions, the extra
// layers conv6 and conv7 (1×1, then 3×3 stride 2), L2Norm on conv3_3,
// conv4_3 and conv5_3 (eps added after the square root), and six pairs of
// 3×3 heads. Every trunk convolution is followed by a ReLU; the L2Norms and
// heads read the ReLU outputs.
//
// Cost: the network runs at the input's full size, about 0.63 GFLOP per
// 1000 pixels (313 k multiply-adds per pixel, most of it in conv1_2 to
// conv4_3): ≈ 0.58 TFLOP for a 1280×720 frame and ≈ 1.3 TFLOP for
// 1920×1080. The largest activations are conv1's, 64 channels at full
// size (256 bytes per pixel, two of them alive at once).
//
// An S3FD is safe for concurrent Forward calls if its backend is.
type S3FD struct {
	b  kernels.Backend
	st *paramState

	trunk []s3fdConv              // conv1_1 … conv7_2, in order
	norm  [3]*kernels.Tensor      // conv3_3_norm, conv4_3_norm, conv5_3_norm weights
	heads [S3FDLevels][2]s3fdConv // per level: conf, loc
}

// S3FDLevels is the number of detection levels (pairs of heads) of S3FD.
const S3FDLevels = 6

// S3FDMinSide is the smallest input height or width S3FD accepts: five
// 2×2 max pools (flooring) must leave at least one cell.
const S3FDMinSide = 32

// s3fdL2NormEps is net_s3fd.L2Norm's eps, added after the square root.
const s3fdL2NormEps = 1e-10

// s3fdConv is one convolution: its weights and its geometry.
type s3fdConv struct {
	name   string
	w, b   *kernels.Tensor
	p      kernels.Conv2DParams
	pooled bool // a 2×2 max pool follows (its ReLU output is pooled)
	level  int  // the detection level whose heads read its ReLU output, or −1
}

// s3fdLayer describes one convolution of the network.
type s3fdLayer struct {
	name                   string
	in, out, k, stride, pd int
	pooled                 bool
}

// s3fdTrunk lists the trunk's convolutions in forward (and state_dict)
// order.
func s3fdTrunk() []s3fdLayer {
	return []s3fdLayer{
		{"conv1_1", 3, 64, 3, 1, 1, false},
		{"conv1_2", 64, 64, 3, 1, 1, true},
		{"conv2_1", 64, 128, 3, 1, 1, false},
		{"conv2_2", 128, 128, 3, 1, 1, true},
		{"conv3_1", 128, 256, 3, 1, 1, false},
		{"conv3_2", 256, 256, 3, 1, 1, false},
		{"conv3_3", 256, 256, 3, 1, 1, true},
		{"conv4_1", 256, 512, 3, 1, 1, false},
		{"conv4_2", 512, 512, 3, 1, 1, false},
		{"conv4_3", 512, 512, 3, 1, 1, true},
		{"conv5_1", 512, 512, 3, 1, 1, false},
		{"conv5_2", 512, 512, 3, 1, 1, false},
		{"conv5_3", 512, 512, 3, 1, 1, true},
		{"fc6", 512, 1024, 3, 1, 3, false},
		{"fc7", 1024, 1024, 1, 1, 0, false},
		{"conv6_1", 1024, 256, 1, 1, 0, false},
		{"conv6_2", 256, 512, 3, 2, 1, false},
		{"conv7_1", 512, 128, 1, 1, 0, false},
		{"conv7_2", 128, 256, 3, 2, 1, false},
	}
}

// s3fdSource describes one detection level: the trunk layer its heads
// read, the L2Norm applied first ("" for none), the heads' name prefix, the
// source's channels and the number of cls channels (level 1 has four:
// three background, one face).
type s3fdSource struct {
	layer, norm, head string
	ch, cls           int
}

// s3fdSources lists the six levels, finest first.
func s3fdSources() [S3FDLevels]s3fdSource {
	return [S3FDLevels]s3fdSource{
		{"conv3_3", "conv3_3_norm", "conv3_3_norm", 256, 4},
		{"conv4_3", "conv4_3_norm", "conv4_3_norm", 512, 2},
		{"conv5_3", "conv5_3_norm", "conv5_3_norm", 512, 2},
		{"fc7", "", "fc7", 1024, 2},
		{"conv6_2", "", "conv6_2", 512, 2},
		{"conv7_2", "", "conv7_2", 256, 2},
	}
}

// S3FDSpec lists S3FD's 65 weights with the names and shapes of
// s3fd().state_dict() (and of s3fd-619a316812.pth), in that order: the
// trunk convolutions, the three L2Norm scales, then each level's conf and
// loc heads.
func S3FDSpec() []TensorSpec {
	st := &paramState{model: "s3fd"}
	buildS3FD(st)
	return st.spec
}

// NewS3FD builds S3FD on b from the weights in src (state_dict names, no
// prefix; any stored dtype the source converts to float32). It checks that
// every weight exists with the expected shape and reports all that do not
// in one error.
func NewS3FD(b kernels.Backend, src Tensors) (*S3FD, error) {
	st := &paramState{b: b, src: src, model: "s3fd"}
	m := buildS3FD(st)
	if err := st.err(); err != nil {
		st.free()
		return nil, err
	}
	return m, nil
}

// buildS3FD walks the network in state_dict order, recording the spec and,
// when st has a backend, loading the weights.
func buildS3FD(st *paramState) *S3FD {
	s := newParamScope(st)
	m := &S3FD{b: st.b, st: st}
	conv := func(name string, in, out, k, stride, pad int, pooled bool) s3fdConv {
		c := s.sub(name)
		return s3fdConv{
			name:   name,
			w:      c.param("weight", out, in, k, k),
			b:      c.param("bias", out),
			p:      kernels.Conv2DPad(stride, pad),
			pooled: pooled,
			level:  -1,
		}
	}
	srcs := s3fdSources()
	for _, l := range s3fdTrunk() {
		c := conv(l.name, l.in, l.out, l.k, l.stride, l.pd, l.pooled)
		for i, src := range srcs {
			if src.layer == l.name {
				c.level = i
			}
		}
		m.trunk = append(m.trunk, c)
	}
	for i := range 3 {
		m.norm[i] = s.sub(srcs[i].norm).param("weight", srcs[i].ch)
	}
	for i, src := range srcs {
		m.heads[i][0] = conv(src.head+"_mbox_conf", src.ch, src.cls, 3, 1, 1, false)
		m.heads[i][1] = conv(src.head+"_mbox_loc", src.ch, 4, 3, 1, 1, false)
	}
	return m
}

// Close releases the network's weights; it must not be used afterwards.
func (m *S3FD) Close() { m.st.free() }

// Params returns the number of parameters (22,459,110).
func (m *S3FD) Params() int64 { return SpecParams(m.st.spec) }

// S3FDHeads is the output of one forward pass, downloaded to the host.
type S3FDHeads struct {
	// N is the batch size.
	N int
	// Levels holds the six detection levels, finest first.
	Levels [S3FDLevels]S3FDLevel
}

// S3FDLevel is one detection level's pair of heads for the whole batch.
type S3FDLevel struct {
	// Stride is the level's anchor stride in input pixels: 4 << i for
	// level i (4, 8, …, 128), as MuseTalk's decode uses it.
	Stride int
	// H and W are the level's map size. For level 3 (fc7) it is the input
	// size / 32 + 4 because of fc6's padding of 3.
	H, W int
	// Cls holds [N,2,H,W] class logits before the softmax: channel 0 is
	// background, channel 1 face. Level 0's background is already the
	// max-out of its three background channels.
	Cls []float32
	// Reg holds [N,4,H,W] box regressions (dx, dy, dw, dh).
	Reg []float32
}

// Forward runs the network on x [N,3,H,W], the preprocessed image (RGB
// order, minus the means MuseTalk subtracts; see package face), with H and
// W at least [S3FDMinSide]. x is not modified. Argument errors and device
// failures are returned as errors.
func (m *S3FD) Forward(x *kernels.Tensor) (*S3FDHeads, error) {
	return m.forward(x, nil)
}

// s3fdTrace, when not nil, sees named activations during a forward pass
// (the golden file's intermediate.* names without the prefix); it must not
// keep or free them.
type s3fdTrace func(name string, t *kernels.Tensor)

func (m *S3FD) forward(x *kernels.Tensor, trace s3fdTrace) (*S3FDHeads, error) {
	if x.Rank() != 4 || x.Dim(1) != 3 || x.Dim(2) < S3FDMinSide || x.Dim(3) < S3FDMinSide {
		return nil, fmt.Errorf("s3fd: input %v, want [N,3,H,W] with H, W ≥ %d", x, S3FDMinSide)
	}
	if trace == nil {
		trace = func(string, *kernels.Tensor) {}
	}
	b := m.b
	srcs := s3fdSources()
	var outs [S3FDLevels][2]*kernels.Tensor
	freeOuts := func() {
		for _, o := range outs {
			for _, t := range o {
				if t != nil {
					b.Free(t)
				}
			}
		}
	}

	h := x
	for _, c := range m.trunk {
		y := b.Alloc(c.p.OutShape(h, c.w)...)
		b.Conv2D(y, h, c.w, c.b, c.p)
		if h != x {
			b.Free(h)
		}
		li := c.level
		if li >= 3 {
			trace(c.name, y) // fc7, conv6_2, conv7_2: the golden file stores them before their ReLU
		}
		b.ReLU(y, y)
		h = y
		if li < 0 {
			if c.pooled {
				h = m.pool(y)
				b.Free(y)
			}
			continue
		}
		// y is a head source. Pool it first (the trunk reads it before
		// the L2Norm), then normalise it in place and run the heads.
		if c.pooled {
			h = m.pool(y)
		}
		if li < 3 {
			b.L2Norm(y, y, m.norm[li], s3fdL2NormEps)
			trace(srcs[li].norm, y)
		}
		for k, hc := range m.heads[li] {
			o := b.Alloc(hc.p.OutShape(y, hc.w)...)
			b.Conv2D(o, y, hc.w, hc.b, hc.p)
			outs[li][k] = o
		}
		if h != y {
			b.Free(y)
		}
	}
	b.Free(h) // relu(conv7_2), the last level's source

	heads := &S3FDHeads{N: x.Dim(0)}
	for i, o := range outs {
		lv := &heads.Levels[i]
		lv.Stride = 4 << i
		lv.H, lv.W = o[0].Dim(2), o[0].Dim(3)
		cls := make([]float32, o[0].Len())
		lv.Reg = make([]float32, o[1].Len())
		if err := b.Download(cls, o[0]); err != nil {
			freeOuts()
			return nil, fmt.Errorf("s3fd: downloading level %d: %w", i+1, err)
		}
		if err := b.Download(lv.Reg, o[1]); err != nil {
			freeOuts()
			return nil, fmt.Errorf("s3fd: downloading level %d: %w", i+1, err)
		}
		if o[0].Dim(1) == 4 {
			cls = maxOutBackground(cls, heads.N, lv.H*lv.W)
		}
		lv.Cls = cls
	}
	freeOuts()
	return heads, nil
}

// pool applies S3FD's 2×2 stride-2 max pool (flooring) to x into a new
// tensor.
func (m *S3FD) pool(x *kernels.Tensor) *kernels.Tensor {
	p := kernels.Pool2D(2, 2, 0)
	ho, wo := p.OutSize(x.Dim(2), x.Dim(3))
	y := m.b.Alloc(x.Dim(0), x.Dim(1), ho, wo)
	m.b.MaxPool2D(y, x, p)
	return y
}

// maxOutBackground turns level 1's [N,4,HW] logits into [N,2,HW]:
// background = max(c0, c1, c2) (NaN propagates, as torch.max does), face =
// c3.
func maxOutBackground(cls []float32, n, hw int) []float32 {
	out := make([]float32, n*2*hw)
	for b := range n {
		in := cls[b*4*hw:]
		o := out[b*2*hw:]
		for j := range hw {
			o[j] = nanMax(nanMax(in[j], in[hw+j]), in[2*hw+j])
			o[hw+j] = in[3*hw+j]
		}
	}
	return out
}

// nanMax returns the larger of a and b, or NaN if either is NaN.
func nanMax(a, b float32) float32 {
	if a != a || b != b {
		return float32(math.NaN())
	}
	return max(a, b)
}
