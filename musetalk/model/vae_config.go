package model

import (
	"errors"
	"fmt"

	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// VAE block type names, as in a diffusers config.
const (
	vaeDownBlock = "DownEncoderBlock2D"
	vaeUpBlock   = "UpDecoderBlock2D"
)

// SDVAEConfig returns the config of stabilityai/sd-vae-ft-mse, MuseTalk's
// VAE: block_out_channels [128,256,512,512], 2 layers per block, latent 4,
// scaling factor 0.18215. The network has 83,653,863 parameters.
func SDVAEConfig() weights.VAEConfig { return weights.SDVAEConfig() }

// ValidateVAEConfig reports why this package cannot build a VAE from cfg,
// or nil.
func ValidateVAEConfig(c weights.VAEConfig) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	n := len(c.BlockOutChannels)
	if n == 0 {
		add("block_out_channels is empty")
	}
	if len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n {
		add("%d down_block_types and %d up_block_types for %d block_out_channels", len(c.DownBlockTypes), len(c.UpBlockTypes), n)
	}
	for i, t := range c.DownBlockTypes {
		if t != vaeDownBlock {
			add("down_block_types[%d] %q is not supported (only %s)", i, t, vaeDownBlock)
		}
	}
	for i, t := range c.UpBlockTypes {
		if t != vaeUpBlock {
			add("up_block_types[%d] %q is not supported (only %s)", i, t, vaeUpBlock)
		}
	}
	if c.ActFn != "silu" {
		add("act_fn %q is not supported (only silu)", c.ActFn)
	}
	if c.InChannels <= 0 || c.OutChannels <= 0 || c.LatentChannels <= 0 {
		add("in_channels %d, out_channels %d and latent_channels %d must be > 0", c.InChannels, c.OutChannels, c.LatentChannels)
	}
	if c.LayersPerBlock <= 0 {
		add("layers_per_block %d must be > 0", c.LayersPerBlock)
	}
	if c.NormNumGroups <= 0 {
		add("norm_num_groups %d must be > 0", c.NormNumGroups)
	} else {
		for i, ch := range c.BlockOutChannels {
			if ch <= 0 || ch%c.NormNumGroups != 0 {
				add("block_out_channels[%d] %d must be > 0 and a multiple of norm_num_groups %d", i, ch, c.NormNumGroups)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("vae config: %w", errors.Join(errs...))
	}
	return nil
}
