package model

import (
	"fmt"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// UNet is diffusers' UNet2DConditionModel (0.30.2) with MuseTalk's block
// layout: CrossAttnDownBlock2D/DownBlock2D down blocks,
// UNetMidBlock2DCrossAttn, UpBlock2D/CrossAttnUpBlock2D up blocks, a
// positional timestep embedding, and cross-attention on MuseTalk's audio
// features. Build it with [NewUNet]; sizes come from the diffusers config
// ([weights.ParseUNetConfig], [MuseTalkUNetConfig]).
//
// Forward is safe for concurrent use if the backend is.
type UNet struct {
	be   kernels.Backend
	cfg  weights.UNetConfig
	plan *unetPlan
	st   *paramState

	convIn     conv2DLayer
	timeLin1   linearLayer
	timeLin2   linearLayer
	down       []unetBlock
	midResnets []*resnetBlock2D
	midAttns   []*transformer2D
	up         []unetBlock
	normOut    groupNormLayer
	convOut    conv2DLayer
	minusOne   *kernels.Tensor // for center_input_sample
}

// unetBlock is a down or up block: resnets, each followed by a transformer
// when the block has cross-attention, then an optional resampler.
type unetBlock struct {
	resnets    []*resnetBlock2D
	attns      []*transformer2D // nil for DownBlock2D / UpBlock2D
	downsample *downsample2D
	upsample   *upsample2D
}

// UNetSpec lists every weight a UNet of this config has, with its
// diffusers state-dict name and shape, in construction order (686 tensors,
// 849,947,844 parameters for [MuseTalkUNetConfig]).
func UNetSpec(cfg weights.UNetConfig) ([]TensorSpec, error) {
	st := &paramState{model: "unet"}
	if _, err := buildUNet(st, cfg); err != nil {
		return nil, err
	}
	return st.spec, nil
}

// NewUNet builds a UNet on b from the weights in src (diffusers names, no
// prefix). It checks that every weight exists with the expected shape and
// reports all that do not in one error.
func NewUNet(b kernels.Backend, cfg weights.UNetConfig, src Tensors) (*UNet, error) {
	st := &paramState{b: b, src: src, model: "unet"}
	u, err := buildUNet(st, cfg)
	if err == nil {
		err = st.err()
	}
	if err != nil {
		st.free()
		return nil, err
	}
	if cfg.CenterInputSample {
		u.minusOne = kernels.Upload(b, []float32{-1}, 1)
	}
	return u, nil
}

func buildUNet(st *paramState, cfg weights.UNetConfig) (*UNet, error) {
	p, err := planUNet(cfg)
	if err != nil {
		return nil, err
	}
	s := newParamScope(st)
	boc := cfg.BlockOutChannels
	nb := len(boc)
	groups, eps := cfg.NormNumGroups, cfg.NormEps
	u := &UNet{be: st.b, cfg: cfg, plan: p, st: st}

	u.convIn = newConvSame(s, "conv_in", cfg.InChannels, boc[0], cfg.ConvInKernel)
	u.timeLin1 = newLinear(s, "time_embedding.linear_1", boc[0], p.timeDim, true)
	u.timeLin2 = newLinear(s, "time_embedding.linear_2", p.timeDim, p.timeDim, true)

	out := boc[0]
	for i := range nb {
		in := out
		out = boc[i]
		bs := s.sub("down_blocks", i)
		var blk unetBlock
		for j := range p.layers[i] {
			rin := out
			if j == 0 {
				rin = in
			}
			blk.resnets = append(blk.resnets, newResnetBlock2D(bs.sub("resnets", j), rin, out, p.timeDim, groups, eps, 1))
			if p.cross[i] {
				blk.attns = append(blk.attns, newTransformer2D(bs.sub("attentions", j), out, p.heads[i], p.tlayers[i], p.crossDim, groups, cfg.UseLinearProjection))
			}
		}
		if i < nb-1 {
			blk.downsample = newDownsample2D(bs, out, cfg.DownsamplePadding)
		}
		u.down = append(u.down, blk)
	}

	ms := s.sub("mid_block")
	top := boc[nb-1]
	u.midResnets = append(u.midResnets, newResnetBlock2D(ms.sub("resnets", 0), top, top, p.timeDim, groups, eps, cfg.MidBlockScaleFactor))
	u.midAttns = append(u.midAttns, newTransformer2D(ms.sub("attentions", 0), top, p.heads[nb-1], p.tlayers[nb-1], p.crossDim, groups, cfg.UseLinearProjection))
	u.midResnets = append(u.midResnets, newResnetBlock2D(ms.sub("resnets", 1), top, top, p.timeDim, groups, eps, cfg.MidBlockScaleFactor))

	out = boc[nb-1]
	for i := range nb {
		r := nb - 1 - i // the down block this up block mirrors
		prevOut := out
		out = boc[r]
		in := boc[max(r-1, 0)]
		bs := s.sub("up_blocks", i)
		var blk unetBlock
		layers := p.layers[r] + 1
		for j := range layers {
			skip := out
			if j == layers-1 {
				skip = in
			}
			rin := out
			if j == 0 {
				rin = prevOut
			}
			blk.resnets = append(blk.resnets, newResnetBlock2D(bs.sub("resnets", j), rin+skip, out, p.timeDim, groups, eps, 1))
			if p.crossUp[i] {
				blk.attns = append(blk.attns, newTransformer2D(bs.sub("attentions", j), out, p.heads[r], p.tlayers[r], p.crossDim, groups, cfg.UseLinearProjection))
			}
		}
		if i < nb-1 {
			blk.upsample = newUpsample2D(bs, out)
		}
		u.up = append(u.up, blk)
	}

	u.normOut = newGroupNorm(s, "conv_norm_out", boc[0], groups, eps)
	u.convOut = newConvSame(s, "conv_out", boc[0], cfg.OutChannels, cfg.ConvOutKernel)
	return u, nil
}

// Config returns the config the UNet was built from.
func (u *UNet) Config() weights.UNetConfig { return u.cfg }

// Params returns the number of parameters (weight elements).
func (u *UNet) Params() int64 { return SpecParams(u.st.spec) }

// Close releases the UNet's weights on its backend.
func (u *UNet) Close() {
	u.st.free()
	if u.minusOne != nil {
		u.be.Free(u.minusOne)
		u.minusOne = nil
	}
}

// Forward runs the UNet: sample [N,in_channels,H,W], one timestep for the
// whole batch or one per item (MuseTalk passes 0), encoderHiddenStates
// [N,L,cross_attention_dim] (the audio features). It returns a new
// [N,out_channels,H,W] tensor the caller frees; the inputs are not
// modified. Errors are argument errors; device failures surface at the
// backend's Download or Sync.
func (u *UNet) Forward(sample *kernels.Tensor, timesteps []float32, encoderHiddenStates *kernels.Tensor) (*kernels.Tensor, error) {
	return u.forward(sample, timesteps, encoderHiddenStates, nil)
}

// unetTrace, when not nil, sees named activations during a forward pass
// (the golden files' intermediate.* names); it must not keep or free them.
type unetTrace func(name string, t *kernels.Tensor)

func (u *UNet) forward(sample *kernels.Tensor, timesteps []float32, cond *kernels.Tensor, trace unetTrace) (*kernels.Tensor, error) {
	be, cfg, p := u.be, u.cfg, u.plan
	if sample.Rank() != 4 || sample.Dim(1) != cfg.InChannels {
		return nil, fmt.Errorf("unet: sample is %v, want [N,%d,H,W]", sample, cfg.InChannels)
	}
	n := sample.Dim(0)
	if cond.Rank() != 3 || cond.Dim(0) != n || cond.Dim(2) != p.crossDim {
		return nil, fmt.Errorf("unet: encoder hidden states are %v, want [%d,L,%d]", cond, n, p.crossDim)
	}
	ts := timesteps
	switch len(timesteps) {
	case n:
	case 1:
		ts = make([]float32, n)
		for i := range ts {
			ts[i] = timesteps[0]
		}
	default:
		return nil, fmt.Errorf("unet: %d timesteps for batch %d (want 1 or %d)", len(timesteps), n, n)
	}
	tracing := trace != nil
	if !tracing {
		trace = func(string, *kernels.Tensor) {}
	}

	// Time embedding: Timesteps on the host, then linear_1 → SiLU →
	// linear_2. Every resnet projects SiLU(temb).
	c0 := cfg.BlockOutChannels[0]
	tproj := kernels.Upload(be, timestepProjection(ts, c0, cfg.FlipSinToCos, cfg.FreqShift), n, c0)
	trace("time_proj", tproj)
	t1 := u.timeLin1.forward(be, tproj)
	be.Free(tproj)
	be.SiLU(t1, t1)
	temb := u.timeLin2.forward(be, t1)
	be.Free(t1)
	trace("time_embedding", temb)
	be.SiLU(temb, temb)
	tact := temb
	defer be.Free(tact)

	x := sample
	if cfg.CenterInputSample {
		x = be.Alloc(sample.Shape()...)
		be.Scale(x, sample, 2)
		be.Add(x, x, u.minusOne)
	}
	h := u.convIn.forward(be, x)
	if x != sample {
		be.Free(x)
	}
	trace("conv_in", h)

	// Skip connections, owned by the stack; h is always the top entry
	// during the down pass.
	skips := []*kernels.Tensor{h}
	for i, blk := range u.down {
		for j, r := range blk.resnets {
			h = r.forward(be, h, tact)
			if blk.attns != nil {
				a := blk.attns[j].forward(be, h, cond)
				be.Free(h)
				h = a
			}
			skips = append(skips, h)
		}
		if blk.downsample != nil {
			h = blk.downsample.forward(be, h)
			skips = append(skips, h)
		}
		trace(fmt.Sprintf("down_blocks.%d", i), h)
	}

	// Mid block: resnet, then (transformer, resnet) pairs. h is on the
	// stack; from here on h is owned.
	h = u.midResnets[0].forward(be, h, tact)
	for k, a := range u.midAttns {
		t := a.forward(be, h, cond)
		be.Free(h)
		h = u.midResnets[k+1].forward(be, t, tact)
		be.Free(t)
	}
	trace("mid_block", h)

	for i, blk := range u.up {
		for j, r := range blk.resnets {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			cat := be.Alloc(n, h.Dim(1)+skip.Dim(1), h.Dim(2), h.Dim(3))
			be.Concat(cat, 1, h, skip)
			be.Free(h)
			be.Free(skip)
			h = r.forward(be, cat, tact)
			be.Free(cat)
			if blk.attns != nil {
				a := blk.attns[j].forward(be, h, cond)
				be.Free(h)
				h = a
			}
		}
		if blk.upsample != nil {
			// diffusers upsamples to the next skip's size when the input is
			// not a multiple of the total downsampling; ×2 otherwise, which
			// is the same size.
			oh, ow := 2*h.Dim(2), 2*h.Dim(3)
			if len(skips) > 0 {
				top := skips[len(skips)-1]
				oh, ow = top.Dim(2), top.Dim(3)
			}
			up := blk.upsample.forward(be, h, oh, ow)
			be.Free(h)
			h = up
		}
		trace(fmt.Sprintf("up_blocks.%d", i), h)
	}

	// conv_norm_out → SiLU → conv_out; the trace wants the norm before
	// the activation.
	if tracing {
		u.normOut.apply(be, h, h, false)
		trace("conv_norm_out", h)
		be.SiLU(h, h)
	} else {
		u.normOut.apply(be, h, h, true)
	}
	out := u.convOut.forward(be, h)
	be.Free(h)
	trace("conv_out", out)
	return out, nil
}
