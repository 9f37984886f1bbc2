package model

import (
	"fmt"
	"math"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// vaeNormEps is the eps of every GroupNorm of AutoencoderKL.
const vaeNormEps = 1e-6

// VAE is diffusers' AutoencoderKL (0.30.2), MuseTalk's sd-vae-ft-mse:
// an encoder from images to the moments (mean, log-variance) of a diagonal
// Gaussian over latents, and a decoder from latents to images. Images are
// in [−1,1]. Neither direction applies the scaling factor: MuseTalk
// multiplies encoded latents by [VAE.ScalingFactor] and divides by it
// before decoding. Build it with [NewVAE].
type VAE struct {
	be  kernels.Backend
	cfg weights.VAEConfig
	st  *paramState

	enc       vaeEncoder
	quant     *conv2DLayer // nil without quant_conv
	quantMean *conv2DLayer // quant_conv's mean rows (or nil)
	postQuant *conv2DLayer
	dec       vaeDecoder
}

type vaeMid struct {
	resnets []*resnetBlock2D
	attn    *vaeAttention // nil without mid_block_add_attention
}

func newVAEMid(s paramScope, ch, groups int, attn bool) vaeMid {
	m := vaeMid{resnets: []*resnetBlock2D{newResnetBlock2D(s.sub("resnets", 0), ch, ch, 0, groups, vaeNormEps, 1)}}
	if attn {
		m.attn = newVAEAttention(s.sub("attentions", 0), ch, groups, vaeNormEps)
	}
	m.resnets = append(m.resnets, newResnetBlock2D(s.sub("resnets", 1), ch, ch, 0, groups, vaeNormEps, 1))
	return m
}

// forward returns a new tensor; x is not freed.
func (m vaeMid) forward(be kernels.Backend, x *kernels.Tensor) *kernels.Tensor {
	h := m.resnets[0].forward(be, x, nil)
	if m.attn != nil {
		a := m.attn.forward(be, h)
		be.Free(h)
		h = a
	}
	out := m.resnets[1].forward(be, h, nil)
	be.Free(h)
	return out
}

type vaeEncoder struct {
	convIn  conv2DLayer
	blocks  []unetBlock // resnets and downsample only
	mid     vaeMid
	normOut groupNormLayer
	convOut conv2DLayer
}

type vaeDecoder struct {
	convIn  conv2DLayer
	mid     vaeMid
	blocks  []unetBlock // resnets and upsample only
	normOut groupNormLayer
	convOut conv2DLayer
}

// VAESpec lists every weight of an AutoencoderKL of this config with its
// diffusers 0.30 state-dict name and shape (248 tensors, 83,653,863
// parameters for [SDVAEConfig]). The original sd-vae-ft-mse checkpoint
// calls the mid-block attention's to_q/to_k/to_v/to_out.0 query/key/value/
// proj_attn; [weights.MapNames] renames them.
func VAESpec(cfg weights.VAEConfig) ([]TensorSpec, error) {
	st := &paramState{model: "vae"}
	if _, err := buildVAE(st, cfg); err != nil {
		return nil, err
	}
	return st.spec, nil
}

// NewVAE builds the VAE on b from the weights in src (diffusers names, no
// prefix; the legacy query/key/value/proj_attn attention names are accepted
// too). It checks every weight's presence and shape and reports all
// problems in one error.
func NewVAE(b kernels.Backend, cfg weights.VAEConfig, src Tensors) (*VAE, error) {
	st := &paramState{b: b, src: vaeLegacySource{src}, model: "vae"}
	v, err := buildVAE(st, cfg)
	if err == nil {
		err = st.err()
	}
	if err != nil {
		st.free()
		return nil, err
	}
	if v.quant != nil {
		// The posterior mean alone is quant_conv's first latent_channels
		// output channels: keep them as a separate (copied) weight.
		l := cfg.LatentChannels
		w := make([]float32, l*2*l)
		copy(w, v.quant.w.Data())
		if v.quant.w.Data() == nil {
			if err := b.Download(w, v.quant.w.Reshape(2, l*2*l).Slice(0, 1)); err != nil {
				st.free()
				return nil, fmt.Errorf("vae: quant_conv: %w", err)
			}
		}
		bias := make([]float32, l)
		if d := v.quant.b.Data(); d != nil {
			copy(bias, d)
		} else if err := b.Download(bias, v.quant.b.Reshape(2, l).Slice(0, 1)); err != nil {
			st.free()
			return nil, fmt.Errorf("vae: quant_conv: %w", err)
		}
		mw, mb := b.Weight(w, l, 2*l, 1, 1), b.Weight(bias, l)
		st.loaded = append(st.loaded, mw, mb)
		v.quantMean = &conv2DLayer{w: mw, b: mb, p: v.quant.p}
	}
	return v, nil
}

func buildVAE(st *paramState, cfg weights.VAEConfig) (*VAE, error) {
	if err := ValidateVAEConfig(cfg); err != nil {
		return nil, err
	}
	s := newParamScope(st)
	boc := cfg.BlockOutChannels
	nb := len(boc)
	groups := cfg.NormNumGroups
	v := &VAE{be: st.b, cfg: cfg, st: st}
	l := cfg.LatentChannels

	es := s.sub("encoder")
	e := &v.enc
	e.convIn = newConvSame(es, "conv_in", cfg.InChannels, boc[0], 3)
	out := boc[0]
	for i := range nb {
		in := out
		out = boc[i]
		bs := es.sub("down_blocks", i)
		var blk unetBlock
		for j := range cfg.LayersPerBlock {
			rin := out
			if j == 0 {
				rin = in
			}
			blk.resnets = append(blk.resnets, newResnetBlock2D(bs.sub("resnets", j), rin, out, 0, groups, vaeNormEps, 1))
		}
		if i < nb-1 {
			blk.downsample = newDownsample2D(bs, out, 0)
		}
		e.blocks = append(e.blocks, blk)
	}
	top := boc[nb-1]
	e.mid = newVAEMid(es.sub("mid_block"), top, groups, cfg.MidBlockAddAttention)
	e.normOut = newGroupNorm(es, "conv_norm_out", top, groups, vaeNormEps)
	e.convOut = newConvSame(es, "conv_out", top, 2*l, 3)

	if cfg.UseQuantConv {
		q := newConvSame(s, "quant_conv", 2*l, 2*l, 1)
		v.quant = &q
	}
	if cfg.UsePostQuantConv {
		q := newConvSame(s, "post_quant_conv", l, l, 1)
		v.postQuant = &q
	}

	ds := s.sub("decoder")
	d := &v.dec
	d.convIn = newConvSame(ds, "conv_in", l, top, 3)
	d.mid = newVAEMid(ds.sub("mid_block"), top, groups, cfg.MidBlockAddAttention)
	out = top
	for i := range nb {
		prev := out
		out = boc[nb-1-i]
		bs := ds.sub("up_blocks", i)
		var blk unetBlock
		for j := range cfg.LayersPerBlock + 1 {
			rin := out
			if j == 0 {
				rin = prev
			}
			blk.resnets = append(blk.resnets, newResnetBlock2D(bs.sub("resnets", j), rin, out, 0, groups, vaeNormEps, 1))
		}
		if i < nb-1 {
			blk.upsample = newUpsample2D(bs, out)
		}
		d.blocks = append(d.blocks, blk)
	}
	d.normOut = newGroupNorm(ds, "conv_norm_out", boc[0], groups, vaeNormEps)
	d.convOut = newConvSame(ds, "conv_out", boc[0], cfg.OutChannels, 3)
	return v, nil
}

// Config returns the config the VAE was built from.
func (v *VAE) Config() weights.VAEConfig { return v.cfg }

// Params returns the number of parameters (weight elements).
func (v *VAE) Params() int64 { return SpecParams(v.st.spec) }

// ScalingFactor returns the config's latent scaling factor (0.18215 for
// sd-vae-ft-mse).
func (v *VAE) ScalingFactor() float32 { return float32(v.cfg.ScalingFactor) }

// Close releases the VAE's weights on its backend.
func (v *VAE) Close() { v.st.free() }

// vaeTrace, when not nil, sees named activations (the golden files'
// intermediate.* names); it must not keep or free them.
type vaeTrace func(name string, t *kernels.Tensor)

func (v *VAE) checkImage(x *kernels.Tensor) error {
	if x.Rank() != 4 || x.Dim(1) != v.cfg.InChannels {
		return fmt.Errorf("vae: image is %v, want [N,%d,H,W]", x, v.cfg.InChannels)
	}
	return nil
}

// encode runs the encoder (before quant_conv) and returns a new
// [N,2·latent,h,w].
func (v *VAE) encode(x *kernels.Tensor, trace vaeTrace) *kernels.Tensor {
	be, e := v.be, &v.enc
	if trace == nil {
		trace = func(string, *kernels.Tensor) {}
	}
	h := e.convIn.forward(be, x)
	trace("encoder.conv_in", h)
	for i, blk := range e.blocks {
		for _, r := range blk.resnets {
			o := r.forward(be, h, nil)
			be.Free(h)
			h = o
		}
		if blk.downsample != nil {
			o := blk.downsample.forward(be, h)
			be.Free(h)
			h = o
		}
		trace(fmt.Sprintf("encoder.down_blocks.%d", i), h)
	}
	o := e.mid.forward(be, h)
	be.Free(h)
	h = o
	trace("encoder.mid_block", h)
	e.normOut.apply(be, h, h, true)
	o = e.convOut.forward(be, h)
	be.Free(h)
	trace("encoder", o)
	return o
}

// EncodeMoments encodes images x [N,in_channels,H,W] in [−1,1] to the
// posterior moments [N,2·latent_channels,H/f,W/f] (f = 2^(blocks−1)): the
// mean in the first latent_channels channels, the unclamped log-variance
// in the rest. [NewLatentDist] splits them on the host. The caller frees
// the result.
func (v *VAE) EncodeMoments(x *kernels.Tensor) (*kernels.Tensor, error) {
	return v.encodeMoments(x, nil)
}

func (v *VAE) encodeMoments(x *kernels.Tensor, trace vaeTrace) (*kernels.Tensor, error) {
	if err := v.checkImage(x); err != nil {
		return nil, err
	}
	h := v.encode(x, trace)
	if v.quant == nil {
		return h, nil
	}
	m := v.quant.forward(v.be, h)
	v.be.Free(h)
	if trace != nil {
		trace("quant_conv", m)
	}
	return m, nil
}

// Encode encodes images x [N,in_channels,H,W] in [−1,1] to the posterior
// mean [N,latent_channels,H/f,W/f], unscaled. MuseTalk's Python samples
// mean + std·ε; the mean is the deterministic choice (and what MuseTalk
// trained with). The caller frees the result.
func (v *VAE) Encode(x *kernels.Tensor) (*kernels.Tensor, error) {
	if err := v.checkImage(x); err != nil {
		return nil, err
	}
	h := v.encode(x, nil)
	defer v.be.Free(h)
	l := v.cfg.LatentChannels
	if v.quantMean != nil {
		return v.quantMean.forward(v.be, h), nil
	}
	// No quant_conv: the mean is the first half of the encoder's channels.
	n, hh, ww := h.Dim(0), h.Dim(2), h.Dim(3)
	t := v.be.Alloc(2, n, l*hh*ww)
	v.be.Permute(t, h.Reshape(n, 2, l*hh*ww), 1, 0, 2)
	mean := v.be.Alloc(n, l, hh, ww)
	v.be.Copy(mean, t.Slice(0, 1))
	v.be.Free(t)
	return mean, nil
}

// Decode decodes latents z [N,latent_channels,h,w] (unscaled: divide
// MuseTalk's UNet output by [VAE.ScalingFactor] first) to images
// [N,out_channels,8h,8w] (for four blocks), roughly in [−1,1]. The caller
// frees the result.
func (v *VAE) Decode(z *kernels.Tensor) (*kernels.Tensor, error) {
	return v.decode(z, nil)
}

func (v *VAE) decode(z *kernels.Tensor, trace vaeTrace) (*kernels.Tensor, error) {
	be, d := v.be, &v.dec
	if z.Rank() != 4 || z.Dim(1) != v.cfg.LatentChannels {
		return nil, fmt.Errorf("vae: latents are %v, want [N,%d,h,w]", z, v.cfg.LatentChannels)
	}
	if trace == nil {
		trace = func(string, *kernels.Tensor) {}
	}
	x := z
	if v.postQuant != nil {
		x = v.postQuant.forward(be, z)
		trace("post_quant_conv", x)
	}
	h := d.convIn.forward(be, x)
	if x != z {
		be.Free(x)
	}
	trace("decoder.conv_in", h)
	o := d.mid.forward(be, h)
	be.Free(h)
	h = o
	trace("decoder.mid_block", h)
	for i, blk := range d.blocks {
		for _, r := range blk.resnets {
			o := r.forward(be, h, nil)
			be.Free(h)
			h = o
		}
		if blk.upsample != nil {
			o := blk.upsample.forward(be, h, 2*h.Dim(2), 2*h.Dim(3))
			be.Free(h)
			h = o
		}
		trace(fmt.Sprintf("decoder.up_blocks.%d", i), h)
	}
	d.normOut.apply(be, h, h, true)
	out := d.convOut.forward(be, h)
	be.Free(h)
	return out, nil
}

// LatentDist is diffusers' DiagonalGaussianDistribution on the host: the
// encoder's posterior over latents.
type LatentDist struct {
	// Mean and LogVar have Shape; LogVar is clamped to [−30, 20].
	Mean, LogVar []float32
	// Shape is [N,latent_channels,h,w].
	Shape []int
}

// NewLatentDist splits moments [N,2L,h,w] (from [VAE.EncodeMoments], as
// downloaded) into mean and clamped log-variance.
func NewLatentDist(moments []float32, shape []int) (*LatentDist, error) {
	if len(shape) != 4 || shape[1]%2 != 0 || len(moments) != shapeElems(shape) {
		return nil, fmt.Errorf("vae: moments of shape %v (%d values), want [N,2L,h,w]", shape, len(moments))
	}
	n, l, hw := shape[0], shape[1]/2, shape[2]*shape[3]
	d := &LatentDist{
		Mean:   make([]float32, n*l*hw),
		LogVar: make([]float32, n*l*hw),
		Shape:  []int{n, l, shape[2], shape[3]},
	}
	for i := range n {
		src := moments[i*2*l*hw : (i+1)*2*l*hw]
		copy(d.Mean[i*l*hw:], src[:l*hw])
		lv := d.LogVar[i*l*hw : (i+1)*l*hw]
		for j, x := range src[l*hw:] {
			lv[j] = min(max(x, -30), 20)
		}
	}
	return d, nil
}

// Std returns exp(LogVar/2).
func (d *LatentDist) Std() []float32 {
	s := make([]float32, len(d.LogVar))
	for i, lv := range d.LogVar {
		s[i] = float32(math.Exp(float64(0.5 * lv)))
	}
	return s
}

// Sample returns Mean + Std·noise (noise has Mean's length), which is
// what MuseTalk's Python takes with ε ~ N(0,1).
func (d *LatentDist) Sample(noise []float32) ([]float32, error) {
	if len(noise) != len(d.Mean) {
		return nil, fmt.Errorf("vae: %d noise values for %d latents", len(noise), len(d.Mean))
	}
	std := d.Std()
	out := make([]float32, len(d.Mean))
	for i, m := range d.Mean {
		out[i] = m + float32(std[i]*noise[i])
	}
	return out, nil
}
