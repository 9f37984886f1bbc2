package weights

// The configs of the networks MuseTalk ships with, built in so that the
// full-size specs (weights convert, bench) need no download.

// museTalkUNetJSON is MuseTalk's musetalk.json (v1.0 and v1.5 share it).
const museTalkUNetJSON = `{
  "_class_name": "UNet2DConditionModel",
  "_diffusers_version": "0.6.0.dev0",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 384,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 8,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}`

// MuseTalkUNetConfig returns MuseTalk's UNet config (musetalk.json): in 8 /
// out 4, block_out_channels [320,640,1280,1280], 8 heads, cross-attention
// dim 384. The network has 849,947,844 parameters.
func MuseTalkUNetConfig() UNetConfig {
	c, err := ParseUNetConfig([]byte(museTalkUNetJSON))
	if err != nil {
		panic("weights: built-in musetalk.json: " + err.Error())
	}
	return *c
}

// sdVAEJSON is stabilityai/sd-vae-ft-mse's config.json; it has no
// scaling_factor, so diffusers' default 0.18215 applies.
const sdVAEJSON = `{
  "_class_name": "AutoencoderKL",
  "_diffusers_version": "0.4.2",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 256,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}`

// SDVAEConfig returns the config of stabilityai/sd-vae-ft-mse, MuseTalk's
// VAE: block_out_channels [128,256,512,512], 2 layers per block, latent 4,
// scaling factor 0.18215. The network has 83,653,863 parameters.
func SDVAEConfig() VAEConfig {
	c, err := ParseVAEConfig([]byte(sdVAEJSON))
	if err != nil {
		panic("weights: built-in sd-vae-ft-mse config: " + err.Error())
	}
	return *c
}

// MuseTalkUNetJSON returns the text of MuseTalk's musetalk.json, for
// writing weight directories.
func MuseTalkUNetJSON() []byte { return []byte(museTalkUNetJSON) }

// SDVAEJSON returns the text of sd-vae-ft-mse's config.json.
func SDVAEJSON() []byte { return []byte(sdVAEJSON) }
