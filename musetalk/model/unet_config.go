package model

import (
	"errors"
	"fmt"
	"slices"

	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// UNet block type names, as in a diffusers config.
const (
	unetCrossAttnDown = "CrossAttnDownBlock2D"
	unetDown          = "DownBlock2D"
	unetCrossAttnUp   = "CrossAttnUpBlock2D"
	unetUp            = "UpBlock2D"
	unetCrossAttnMid  = "UNetMidBlock2DCrossAttn"
)

// MuseTalkUNetConfig returns MuseTalk's UNet config (musetalk.json): in 8 /
// out 4, block_out_channels [320,640,1280,1280], 8 heads, cross-attention
// dim 384. The network has 849,947,844 parameters.
func MuseTalkUNetConfig() weights.UNetConfig { return weights.MuseTalkUNetConfig() }

// unetPlan is a validated UNet config expanded per down block (up blocks
// mirror it, the mid block uses the last entry).
type unetPlan struct {
	cross    []bool // per down block: CrossAttnDownBlock2D
	crossUp  []bool // per up block: CrossAttnUpBlock2D
	heads    []int
	layers   []int // resnets per down block (up blocks have one more)
	tlayers  []int // BasicTransformerBlocks per Transformer2DModel
	crossDim int
	timeDim  int // time embedding width
}

// ValidateUNetConfig reports why this package cannot build a UNet from
// cfg, or nil. Besides sizes, it rejects the UNet2DConditionModel features
// MuseTalk does not use (class and addition embeddings, other block and
// time-embedding types, …) and, as diffusers 0.30.2 does, a set
// num_attention_heads: attention_head_dim is the number of heads.
func ValidateUNetConfig(cfg weights.UNetConfig) error {
	_, err := planUNet(cfg)
	return err
}

func planUNet(c weights.UNetConfig) (*unetPlan, error) {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	n := len(c.BlockOutChannels)
	if n == 0 {
		add("block_out_channels is empty")
	}
	if len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n {
		add("%d down_block_types and %d up_block_types for %d block_out_channels", len(c.DownBlockTypes), len(c.UpBlockTypes), n)
	}
	if c.InChannels <= 0 || c.OutChannels <= 0 {
		add("in_channels %d / out_channels %d must be > 0", c.InChannels, c.OutChannels)
	}
	if c.NormNumGroups <= 0 {
		add("norm_num_groups %d must be > 0 (a UNet without output norm is not supported)", c.NormNumGroups)
	}
	if c.NormEps <= 0 {
		add("norm_eps %g must be > 0", c.NormEps)
	}
	if c.MidBlockScaleFactor == 0 {
		add("mid_block_scale_factor must not be 0")
	}
	if c.DownsamplePadding < 0 {
		add("downsample_padding %d must be >= 0", c.DownsamplePadding)
	}
	for _, k := range []struct {
		name string
		v    int
	}{{"conv_in_kernel", c.ConvInKernel}, {"conv_out_kernel", c.ConvOutKernel}} {
		if k.v <= 0 || k.v%2 == 0 {
			add("%s %d must be odd and > 0", k.name, k.v)
		}
	}
	if len(c.NumAttentionHeads) > 0 {
		// diffusers 0.30.2 raises the same error: its attention_head_dim is
		// the head count (a naming issue, diffusers#2011).
		add("num_attention_heads must not be set: diffusers 0.30.2 rejects it and reads attention_head_dim as the number of heads")
	}
	// Features MuseTalk's UNet does not have.
	for _, u := range []struct {
		key string
		ok  bool
		val any
	}{
		{"act_fn", c.ActFn == "silu", c.ActFn},
		{"mid_block_type", c.MidBlockType == unetCrossAttnMid, c.MidBlockType},
		{"only_cross_attention", !slices.Contains(c.OnlyCrossAttention, true), c.OnlyCrossAttention},
		{"dual_cross_attention", !c.DualCrossAttention, c.DualCrossAttention},
		{"resnet_time_scale_shift", c.ResnetTimeScaleShift == "default", c.ResnetTimeScaleShift},
		{"resnet_skip_time_act", !c.ResnetSkipTimeAct, c.ResnetSkipTimeAct},
		{"time_embedding_type", c.TimeEmbeddingType == "positional", c.TimeEmbeddingType},
		{"time_embedding_act_fn", c.TimeEmbeddingActFn == nil, deref(c.TimeEmbeddingActFn)},
		{"timestep_post_act", c.TimestepPostAct == nil, deref(c.TimestepPostAct)},
		{"time_cond_proj_dim", c.TimeCondProjDim == nil, deref(c.TimeCondProjDim)},
		{"class_embed_type", c.ClassEmbedType == nil, deref(c.ClassEmbedType)},
		{"num_class_embeds", c.NumClassEmbeds == nil, deref(c.NumClassEmbeds)},
		{"addition_embed_type", c.AdditionEmbedType == nil, deref(c.AdditionEmbedType)},
		{"encoder_hid_dim", c.EncoderHidDim == nil, deref(c.EncoderHidDim)},
		{"attention_type", c.AttentionType == "default", c.AttentionType},
	} {
		if !u.ok {
			add("%s = %v is not supported", u.key, u.val)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("unet config: %w", errors.Join(errs...))
	}

	p := &unetPlan{cross: make([]bool, n), crossUp: make([]bool, n)}
	for i, t := range c.DownBlockTypes {
		switch t {
		case unetCrossAttnDown:
			p.cross[i] = true
		case unetDown:
		default:
			add("down_block_types[%d] %q is not supported (%s or %s)", i, t, unetCrossAttnDown, unetDown)
		}
	}
	for i, t := range c.UpBlockTypes {
		switch t {
		case unetCrossAttnUp:
			p.crossUp[i] = true
		case unetUp:
		default:
			add("up_block_types[%d] %q is not supported (%s or %s)", i, t, unetCrossAttnUp, unetUp)
		}
	}
	perBlock := func(name string, l weights.IntList) []int {
		v, err := l.PerBlock(n)
		if err != nil {
			add("%s %v: %v", name, []int(l), err)
			return nil
		}
		if slices.ContainsFunc(v, func(x int) bool { return x <= 0 }) {
			add("%s %v: entries must be > 0", name, []int(l))
			return nil
		}
		return v
	}
	p.heads = perBlock("attention_head_dim", c.AttentionHeadDim)
	p.layers = perBlock("layers_per_block", c.LayersPerBlock)
	p.tlayers = perBlock("transformer_layers_per_block", c.TransformerLayersPerBlock)
	if xd := perBlock("cross_attention_dim", c.CrossAttentionDim); xd != nil {
		p.crossDim = xd[0]
		if slices.ContainsFunc(xd, func(d int) bool { return d != xd[0] }) {
			add("cross_attention_dim %v: per-block values must be equal (one encoder_hidden_states feeds every block)", xd)
		}
	}
	for i, ch := range c.BlockOutChannels {
		if ch <= 0 || ch%c.NormNumGroups != 0 {
			add("block_out_channels[%d] %d must be > 0 and a multiple of norm_num_groups %d", i, ch, c.NormNumGroups)
		} else if p.heads != nil && ch < p.heads[i] {
			add("block %d: %d channels for %d heads", i, ch, p.heads[i])
		}
	}
	if n > 0 {
		if c.BlockOutChannels[0]%2 != 0 {
			// Timesteps would pad odd widths with a zero column; no known
			// config needs it.
			add("block_out_channels[0] %d must be even (timestep projection width)", c.BlockOutChannels[0])
		}
		p.timeDim = 4 * c.BlockOutChannels[0]
	}
	if c.TimeEmbeddingDim != nil {
		p.timeDim = *c.TimeEmbeddingDim
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("unet config: %w", errors.Join(errs...))
	}
	return p, nil
}

// deref formats an optional config value.
func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
