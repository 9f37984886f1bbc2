package model

import (
	"math"

	"github.com/avatargen/musetalk/kernels"
)

// This file holds the diffusers building blocks the UNet and the VAE share:
// convolutions, linear layers, norms, ResnetBlock2D, attention,
// Transformer2DModel, Downsample2D and Upsample2D. Each block is built by
// walking a paramScope (which records and loads its weights, named as in a
// diffusers state dict) and runs with forward methods that never free their
// inputs and return a tensor the caller owns and frees.

// conv2DLayer is nn.Conv2d with bias.
type conv2DLayer struct {
	w, b *kernels.Tensor
	p    kernels.Conv2DParams
}

// newConv2D declares name.weight [out,in,k,k] and name.bias [out] with
// stride and symmetric padding.
func newConv2D(s paramScope, name string, in, out, k int, p kernels.Conv2DParams) conv2DLayer {
	s = s.sub(name)
	return conv2DLayer{w: s.param("weight", out, in, k, k), b: s.param("bias", out), p: p}
}

// newConvSame declares a stride-1 k×k conv with padding (k−1)/2.
func newConvSame(s paramScope, name string, in, out, k int) conv2DLayer {
	return newConv2D(s, name, in, out, k, kernels.Conv2DPad(1, (k-1)/2))
}

func (c conv2DLayer) forward(be kernels.Backend, x *kernels.Tensor) *kernels.Tensor {
	dst := be.Alloc(c.p.OutShape(x, c.w)...)
	be.Conv2D(dst, x, c.w, c.b, c.p)
	return dst
}

// linearLayer is nn.Linear; b is nil without bias. A 1×1 convolution
// loads as one (its [out,in,1,1] kernel is the same matrix).
type linearLayer struct {
	w, b *kernels.Tensor
	out  int
}

func newLinear(s paramScope, name string, in, out int, bias bool) linearLayer {
	s = s.sub(name)
	l := linearLayer{w: s.param("weight", out, in), out: out}
	if bias {
		l.b = s.param("bias", out)
	}
	return l
}

// newConv1x1AsLinear declares a 1×1 conv (weight [out,in,1,1]) and loads
// it as a linear layer for channels-last data.
func newConv1x1AsLinear(s paramScope, name string, in, out int) linearLayer {
	s = s.sub(name)
	w := s.param("weight", out, in, 1, 1)
	if w != nil {
		w = w.Reshape(out, in)
	}
	return linearLayer{w: w, b: s.param("bias", out), out: out}
}

// forward maps x [..., in] to a new [..., out].
func (l linearLayer) forward(be kernels.Backend, x *kernels.Tensor) *kernels.Tensor {
	shape := x.Shape()
	shape[len(shape)-1] = l.out
	dst := be.Alloc(shape...)
	be.Linear(dst, x, l.w, l.b)
	return dst
}

// groupNormLayer is nn.GroupNorm with affine parameters.
type groupNormLayer struct {
	w, b   *kernels.Tensor
	groups int
	eps    float32
}

func newGroupNorm(s paramScope, name string, ch, groups int, eps float64) groupNormLayer {
	s = s.sub(name)
	return groupNormLayer{w: s.param("weight", ch), b: s.param("bias", ch), groups: groups, eps: float32(eps)}
}

// apply writes GroupNorm(x), followed by SiLU if silu, into dst (which may
// be x).
func (g groupNormLayer) apply(be kernels.Backend, dst, x *kernels.Tensor, silu bool) {
	be.GroupNorm(dst, x, g.w, g.b, kernels.GroupNormParams{Eps: g.eps, Groups: g.groups, SiLU: silu})
}

// layerNormLayer is nn.LayerNorm with affine parameters.
type layerNormLayer struct {
	w, b *kernels.Tensor
	eps  float32
}

func newLayerNorm(s paramScope, name string, dim int, eps float64) layerNormLayer {
	s = s.sub(name)
	return layerNormLayer{w: s.param("weight", dim), b: s.param("bias", dim), eps: float32(eps)}
}

func (l layerNormLayer) forward(be kernels.Backend, x *kernels.Tensor) *kernels.Tensor {
	dst := be.Alloc(x.Shape()...)
	be.LayerNorm(dst, x, l.w, l.b, kernels.LayerNormParams{Eps: l.eps})
	return dst
}

// resnetBlock2D is diffusers' ResnetBlock2D with time_embedding_norm
// "default" and SiLU: norm1 → SiLU → conv1 (+ time_emb_proj(SiLU(temb)))
// → norm2 → SiLU → conv2, plus the input (through a 1×1 conv_shortcut when
// the channel count changes), divided by outScale.
type resnetBlock2D struct {
	norm1, norm2 groupNormLayer
	conv1, conv2 conv2DLayer
	timeProj     *linearLayer // nil without a time embedding (VAE)
	shortcut     *conv2DLayer
	out          int
	outScale     float32
}

// newResnetBlock2D declares a resnet; tembCh 0 means no time embedding.
func newResnetBlock2D(s paramScope, in, out, tembCh, groups int, eps, outScale float64) *resnetBlock2D {
	r := &resnetBlock2D{
		norm1:    newGroupNorm(s, "norm1", in, groups, eps),
		conv1:    newConvSame(s, "conv1", in, out, 3),
		out:      out,
		outScale: float32(outScale),
	}
	if tembCh > 0 {
		tp := newLinear(s, "time_emb_proj", tembCh, out, true)
		r.timeProj = &tp
	}
	r.norm2 = newGroupNorm(s, "norm2", out, groups, eps)
	r.conv2 = newConvSame(s, "conv2", out, out, 3)
	if in != out {
		sc := newConv2D(s, "conv_shortcut", in, out, 1, kernels.Conv2DPad(1, 0))
		r.shortcut = &sc
	}
	return r
}

// forward runs the block on x [N,in,H,W]; tact is SiLU(temb) [N,T], or nil
// for a block without time embedding.
func (r *resnetBlock2D) forward(be kernels.Backend, x, tact *kernels.Tensor) *kernels.Tensor {
	a := be.Alloc(x.Shape()...)
	r.norm1.apply(be, a, x, true)
	h := r.conv1.forward(be, a)
	be.Free(a)
	if r.timeProj != nil {
		tp := r.timeProj.forward(be, tact)
		be.Add(h, h, tp.Reshape(tp.Dim(0), r.out, 1, 1))
		be.Free(tp)
	}
	r.norm2.apply(be, h, h, true)
	out := r.conv2.forward(be, h)
	be.Free(h)
	if r.shortcut != nil {
		sc := r.shortcut.forward(be, x)
		be.Add(out, out, sc)
		be.Free(sc)
	} else {
		be.Add(out, out, x)
	}
	if r.outScale != 1 {
		be.Scale(out, out, 1/r.outScale)
	}
	return out
}

// attentionLayer is diffusers' Attention projections around the backend's
// multi-head attention: to_q, to_k, to_v (biased only in the VAE) and
// to_out.0 (always biased); softmax(q·kᵀ/√head_dim)·v per head.
type attentionLayer struct {
	q, k, v, out linearLayer
	heads        int
	inner        int
}

// newAttention declares an attention layer for queries of qDim channels and
// keys/values of kvDim channels (cross-attention; kvDim = qDim for
// self-attention), with heads·headDim inner channels.
func newAttention(s paramScope, qDim, kvDim, heads, headDim int, qkvBias bool) *attentionLayer {
	inner := heads * headDim
	return &attentionLayer{
		q:     newLinear(s, "to_q", qDim, inner, qkvBias),
		k:     newLinear(s, "to_k", kvDim, inner, qkvBias),
		v:     newLinear(s, "to_v", kvDim, inner, qkvBias),
		out:   newLinear(s, "to_out.0", inner, qDim, true),
		heads: heads,
		inner: inner,
	}
}

// forward attends from x [N,L,qDim] to ctx [N,Lk,kvDim] (x itself when ctx
// is nil) and returns [N,L,qDim].
func (a *attentionLayer) forward(be kernels.Backend, x, ctx *kernels.Tensor) *kernels.Tensor {
	if ctx == nil {
		ctx = x
	}
	q := a.q.forward(be, x)
	k := a.k.forward(be, ctx)
	v := a.v.forward(be, ctx)
	o := be.Alloc(x.Dim(0), x.Dim(1), a.inner)
	be.Attention(o, q, k, v, kernels.AttentionParams{Heads: a.heads})
	be.Free(q)
	be.Free(k)
	be.Free(v)
	out := a.out.forward(be, o)
	be.Free(o)
	return out
}

// basicTransformerBlock is diffusers' BasicTransformerBlock (layer_norm
// type): self-attention, cross-attention and a GEGLU feed-forward, each
// pre-LayerNorm and residual.
type basicTransformerBlock struct {
	norm1, norm2, norm3 layerNormLayer
	attn1, attn2        *attentionLayer
	ffIn, ffOut         linearLayer
	ffInner             int
}

// transformerLNEps is the eps of BasicTransformerBlock's LayerNorms.
const transformerLNEps = 1e-5

func newBasicTransformerBlock(s paramScope, dim, crossDim, heads, headDim int) *basicTransformerBlock {
	ffInner := 4 * dim
	return &basicTransformerBlock{
		norm1:   newLayerNorm(s, "norm1", dim, transformerLNEps),
		attn1:   newAttention(s.sub("attn1"), dim, dim, heads, headDim, false),
		norm2:   newLayerNorm(s, "norm2", dim, transformerLNEps),
		attn2:   newAttention(s.sub("attn2"), dim, crossDim, heads, headDim, false),
		norm3:   newLayerNorm(s, "norm3", dim, transformerLNEps),
		ffIn:    newLinear(s, "ff.net.0.proj", dim, 2*ffInner, true),
		ffOut:   newLinear(s, "ff.net.2", ffInner, dim, true),
		ffInner: ffInner,
	}
}

// forward updates h [N,L,dim] in place; cond is [N,Lc,crossDim].
func (b *basicTransformerBlock) forward(be kernels.Backend, h, cond *kernels.Tensor) {
	n := b.norm1.forward(be, h)
	a := b.attn1.forward(be, n, nil)
	be.Add(h, h, a)
	be.Free(a)

	be.LayerNorm(n, h, b.norm2.w, b.norm2.b, kernels.LayerNormParams{Eps: b.norm2.eps})
	a = b.attn2.forward(be, n, cond)
	be.Add(h, h, a)
	be.Free(a)

	be.LayerNorm(n, h, b.norm3.w, b.norm3.b, kernels.LayerNormParams{Eps: b.norm3.eps})
	p := b.ffIn.forward(be, n)
	g := be.Alloc(h.Dim(0), h.Dim(1), b.ffInner)
	be.GEGLU(g, p)
	be.Free(p)
	be.Linear(n, g, b.ffOut.w, b.ffOut.b)
	be.Free(g)
	be.Add(h, h, n)
	be.Free(n)
}

// transformer2D is diffusers' Transformer2DModel for image inputs:
// GroupNorm (eps 1e-6) → proj_in → BasicTransformerBlocks on the H·W tokens
// → proj_out → + input. proj_in/proj_out are 1×1 convs, or linear layers
// with use_linear_projection; both run as linear layers on channels-last
// tokens.
type transformer2D struct {
	norm            groupNormLayer
	projIn, projOut linearLayer
	blocks          []*basicTransformerBlock
}

const transformerGNEps = 1e-6

func newTransformer2D(s paramScope, ch, heads, layers, crossDim, groups int, linearProj bool) *transformer2D {
	headDim := ch / heads
	inner := heads * headDim
	t := &transformer2D{norm: newGroupNorm(s, "norm", ch, groups, transformerGNEps)}
	proj := newConv1x1AsLinear
	if linearProj {
		proj = func(s paramScope, name string, in, out int) linearLayer { return newLinear(s, name, in, out, true) }
	}
	t.projIn = proj(s, "proj_in", ch, inner)
	for i := range layers {
		t.blocks = append(t.blocks, newBasicTransformerBlock(s.sub("transformer_blocks", i), inner, crossDim, heads, headDim))
	}
	t.projOut = proj(s, "proj_out", inner, ch)
	return t
}

// forward runs x [N,C,H,W] with cond [N,Lc,crossDim] and returns a new
// [N,C,H,W].
func (t *transformer2D) forward(be kernels.Backend, x, cond *kernels.Tensor) *kernels.Tensor {
	n, c, hh, ww := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	l := hh * ww
	g := be.Alloc(n, c, hh, ww)
	t.norm.apply(be, g, x, false)
	tok := be.Alloc(n, l, c)
	be.Permute(tok, g.Reshape(n, c, l), 0, 2, 1)
	be.Free(g)
	h := t.projIn.forward(be, tok)
	be.Free(tok)
	for _, b := range t.blocks {
		b.forward(be, h, cond)
	}
	o := t.projOut.forward(be, h)
	be.Free(h)
	out := be.Alloc(n, c, hh, ww)
	be.Permute(out.Reshape(n, c, l), o, 0, 2, 1)
	be.Free(o)
	be.Add(out, out, x)
	return out
}

// downsample2D is diffusers' Downsample2D with a conv: 3×3 stride 2 with
// symmetric padding, or, for padding 0, zero padding on the right and
// bottom only (the VAE encoder's).
type downsample2D struct{ conv conv2DLayer }

func newDownsample2D(s paramScope, ch, padding int) *downsample2D {
	p := kernels.Conv2DPad(2, padding)
	if padding == 0 {
		p = kernels.Conv2DParams{PadRight: 1, PadBottom: 1, StrideH: 2, StrideW: 2}
	}
	return &downsample2D{conv: newConv2D(s, "downsamplers.0.conv", ch, ch, 3, p)}
}

func (d *downsample2D) forward(be kernels.Backend, x *kernels.Tensor) *kernels.Tensor {
	return d.conv.forward(be, x)
}

// upsample2D is diffusers' Upsample2D with a conv: nearest-neighbour
// resize (×2, or to the size of the skip connection it meets) then 3×3
// conv.
type upsample2D struct{ conv conv2DLayer }

func newUpsample2D(s paramScope, ch int) *upsample2D {
	return &upsample2D{conv: newConvSame(s, "upsamplers.0.conv", ch, ch, 3)}
}

// forward resizes x to oh×ow and convolves.
func (u *upsample2D) forward(be kernels.Backend, x *kernels.Tensor, oh, ow int) *kernels.Tensor {
	up := be.Alloc(x.Dim(0), x.Dim(1), oh, ow)
	be.UpsampleNearest(up, x)
	out := u.conv.forward(be, up)
	be.Free(up)
	return out
}

// vaeAttention is the VAE mid block's self-attention (diffusers Attention
// with GroupNorm, biased projections, a residual connection and one head per
// attention_head_dim channels).
type vaeAttention struct {
	norm groupNormLayer
	attn *attentionLayer
}

func newVAEAttention(s paramScope, ch, groups int, eps float64) *vaeAttention {
	// UNetMidBlock2D passes attention_head_dim = channels: one head.
	return &vaeAttention{
		norm: newGroupNorm(s, "group_norm", ch, groups, eps),
		attn: newAttention(s, ch, ch, 1, ch, true),
	}
}

func (a *vaeAttention) forward(be kernels.Backend, x *kernels.Tensor) *kernels.Tensor {
	n, c, hh, ww := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	l := hh * ww
	g := be.Alloc(n, c, hh, ww)
	a.norm.apply(be, g, x, false)
	tok := be.Alloc(n, l, c)
	be.Permute(tok, g.Reshape(n, c, l), 0, 2, 1)
	be.Free(g)
	o := a.attn.forward(be, tok, nil)
	be.Free(tok)
	out := be.Alloc(n, c, hh, ww)
	be.Permute(out.Reshape(n, c, l), o, 0, 2, 1)
	be.Free(o)
	be.Add(out, out, x)
	return out
}

// timestepProjection computes diffusers' Timesteps embedding on the host:
// for each t, [sin(t·f_i), cos(t·f_i)] (or [cos, sin] with flipSinToCos)
// with f_i = exp(−ln(10000)·i/(half−shift)), i < half = dim/2, in float32
// as PyTorch computes it. It returns len(ts)×dim values.
func timestepProjection(ts []float32, dim int, flipSinToCos bool, shift float64) []float32 {
	half := dim / 2
	freqs := make([]float32, half)
	negLog := float32(-math.Log(10000))
	div := float32(float64(half) - shift)
	for i := range freqs {
		e := float32(negLog*float32(i)) / div
		freqs[i] = float32(math.Exp(float64(e)))
	}
	out := make([]float32, len(ts)*dim)
	for n, t := range ts {
		row := out[n*dim : (n+1)*dim]
		for i, f := range freqs {
			arg := float64(t * f)
			s, c := float32(math.Sin(arg)), float32(math.Cos(arg))
			if flipSinToCos {
				row[i], row[half+i] = c, s
			} else {
				row[i], row[half+i] = s, c
			}
		}
	}
	return out
}
