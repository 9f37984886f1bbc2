package weights

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
)

// IntList is a config value that may be one int (meaning: the same for
// every block) or a list with one int per block. A JSON null leaves it nil.
type IntList []int

// UnmarshalJSON accepts an int, a list of ints or null.
func (l *IntList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*l = nil
		return nil
	}
	if len(b) > 0 && b[0] == '[' {
		var v []int
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("want an int or a list of ints: %w", err)
		}
		*l = v
		return nil
	}
	var v int
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("want an int or a list of ints: %w", err)
	}
	*l = IntList{v}
	return nil
}

// PerBlock expands the value to n blocks: a single int is repeated; a list
// must have exactly n entries.
func (l IntList) PerBlock(n int) ([]int, error) {
	switch len(l) {
	case 0:
		return nil, fmt.Errorf("value is not set")
	case 1:
		out := make([]int, n)
		for i := range out {
			out[i] = l[0]
		}
		return out, nil
	case n:
		return slices.Clone([]int(l)), nil
	}
	return nil, fmt.Errorf("%d values for %d blocks", len(l), n)
}

// BoolList is a config value that may be one bool or one bool per block.
type BoolList []bool

// UnmarshalJSON accepts a bool, a list of bools or null.
func (l *BoolList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*l = nil
		return nil
	}
	if len(b) > 0 && b[0] == '[' {
		var v []bool
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("want a bool or a list of bools: %w", err)
		}
		*l = v
		return nil
	}
	var v bool
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("want a bool or a list of bools: %w", err)
	}
	*l = BoolList{v}
	return nil
}

// UNetConfig is a diffusers UNet2DConditionModel config (MuseTalk's
// musetalk.json). Fields absent from the JSON keep diffusers 0.30.2's
// defaults; fields this port has no use for are not kept.
type UNetConfig struct {
	SampleSize                IntList  `json:"sample_size"`
	InChannels                int      `json:"in_channels"`
	OutChannels               int      `json:"out_channels"`
	CenterInputSample         bool     `json:"center_input_sample"`
	FlipSinToCos              bool     `json:"flip_sin_to_cos"`
	FreqShift                 float64  `json:"freq_shift"`
	DownBlockTypes            []string `json:"down_block_types"`
	MidBlockType              string   `json:"mid_block_type"`
	UpBlockTypes              []string `json:"up_block_types"`
	OnlyCrossAttention        BoolList `json:"only_cross_attention"`
	BlockOutChannels          []int    `json:"block_out_channels"`
	LayersPerBlock            IntList  `json:"layers_per_block"`
	DownsamplePadding         int      `json:"downsample_padding"`
	MidBlockScaleFactor       float64  `json:"mid_block_scale_factor"`
	Dropout                   float64  `json:"dropout"`
	ActFn                     string   `json:"act_fn"`
	NormNumGroups             int      `json:"norm_num_groups"`
	NormEps                   float64  `json:"norm_eps"`
	CrossAttentionDim         IntList  `json:"cross_attention_dim"`
	TransformerLayersPerBlock IntList  `json:"transformer_layers_per_block"`
	// AttentionHeadDim is, despite its name, the number of heads when
	// NumAttentionHeads is unset (a diffusers legacy); see [UNetConfig.Heads].
	AttentionHeadDim     IntList `json:"attention_head_dim"`
	NumAttentionHeads    IntList `json:"num_attention_heads"`
	DualCrossAttention   bool    `json:"dual_cross_attention"`
	UseLinearProjection  bool    `json:"use_linear_projection"`
	UpcastAttention      bool    `json:"upcast_attention"`
	ResnetTimeScaleShift string  `json:"resnet_time_scale_shift"`
	ResnetSkipTimeAct    bool    `json:"resnet_skip_time_act"`
	ResnetOutScaleFactor float64 `json:"resnet_out_scale_factor"`
	TimeEmbeddingType    string  `json:"time_embedding_type"`
	TimeEmbeddingDim     *int    `json:"time_embedding_dim"`
	TimeEmbeddingActFn   *string `json:"time_embedding_act_fn"`
	TimestepPostAct      *string `json:"timestep_post_act"`
	TimeCondProjDim      *int    `json:"time_cond_proj_dim"`
	ClassEmbedType       *string `json:"class_embed_type"`
	AdditionEmbedType    *string `json:"addition_embed_type"`
	NumClassEmbeds       *int    `json:"num_class_embeds"`
	EncoderHidDim        *int    `json:"encoder_hid_dim"`
	ConvInKernel         int     `json:"conv_in_kernel"`
	ConvOutKernel        int     `json:"conv_out_kernel"`
	AttentionType        string  `json:"attention_type"`
}

// defaultUNetConfig returns diffusers 0.30.2's UNet2DConditionModel defaults.
func defaultUNetConfig() UNetConfig {
	return UNetConfig{
		InChannels: 4, OutChannels: 4, FlipSinToCos: true,
		DownBlockTypes:            []string{"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"},
		MidBlockType:              "UNetMidBlock2DCrossAttn",
		UpBlockTypes:              []string{"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"},
		OnlyCrossAttention:        BoolList{false},
		BlockOutChannels:          []int{320, 640, 1280, 1280},
		LayersPerBlock:            IntList{2},
		DownsamplePadding:         1,
		MidBlockScaleFactor:       1,
		ActFn:                     "silu",
		NormNumGroups:             32,
		NormEps:                   1e-5,
		CrossAttentionDim:         IntList{1280},
		TransformerLayersPerBlock: IntList{1},
		AttentionHeadDim:          IntList{8},
		ResnetTimeScaleShift:      "default",
		ResnetOutScaleFactor:      1,
		TimeEmbeddingType:         "positional",
		ConvInKernel:              3,
		ConvOutKernel:             3,
		AttentionType:             "default",
	}
}

// Heads returns the number of attention heads of each down block, as
// diffusers computes it: num_attention_heads if set, else
// attention_head_dim. Up blocks use the reverse order.
func (c *UNetConfig) Heads() ([]int, error) {
	h := c.NumAttentionHeads
	if len(h) == 0 {
		h = c.AttentionHeadDim
	}
	out, err := h.PerBlock(len(c.DownBlockTypes))
	if err != nil {
		return nil, fmt.Errorf("attention heads: %w", err)
	}
	return out, nil
}

func (c *UNetConfig) validate() error {
	n := len(c.BlockOutChannels)
	switch {
	case n == 0:
		return fmt.Errorf("block_out_channels is empty")
	case len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n:
		return fmt.Errorf("%d down_block_types and %d up_block_types for %d block_out_channels", len(c.DownBlockTypes), len(c.UpBlockTypes), n)
	case c.InChannels <= 0 || c.OutChannels <= 0:
		return fmt.Errorf("in_channels %d, out_channels %d must be positive", c.InChannels, c.OutChannels)
	case c.NormNumGroups > 0 && slices.ContainsFunc(c.BlockOutChannels, func(ch int) bool { return ch <= 0 || ch%c.NormNumGroups != 0 }):
		return fmt.Errorf("block_out_channels %v are not all positive multiples of norm_num_groups %d", c.BlockOutChannels, c.NormNumGroups)
	}
	for name, l := range map[string]IntList{
		"layers_per_block": c.LayersPerBlock, "cross_attention_dim": c.CrossAttentionDim,
		"transformer_layers_per_block": c.TransformerLayersPerBlock,
	} {
		if _, err := l.PerBlock(n); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	heads, err := c.Heads()
	if err != nil {
		return err
	}
	for i, h := range heads {
		if h <= 0 || c.BlockOutChannels[i]%h != 0 {
			return fmt.Errorf("block %d: %d channels cannot be split into %d attention heads", i, c.BlockOutChannels[i], h)
		}
	}
	return nil
}

// VAEConfig is a diffusers AutoencoderKL config (sd-vae-ft-mse's
// config.json). Absent fields keep diffusers 0.30.2's defaults, notably
// ScalingFactor 0.18215, which sd-vae-ft-mse's file does not state.
type VAEConfig struct {
	InChannels           int       `json:"in_channels"`
	OutChannels          int       `json:"out_channels"`
	DownBlockTypes       []string  `json:"down_block_types"`
	UpBlockTypes         []string  `json:"up_block_types"`
	BlockOutChannels     []int     `json:"block_out_channels"`
	LayersPerBlock       int       `json:"layers_per_block"`
	ActFn                string    `json:"act_fn"`
	LatentChannels       int       `json:"latent_channels"`
	NormNumGroups        int       `json:"norm_num_groups"`
	SampleSize           int       `json:"sample_size"`
	ScalingFactor        float64   `json:"scaling_factor"`
	ShiftFactor          *float64  `json:"shift_factor"`
	LatentsMean          []float64 `json:"latents_mean"`
	LatentsStd           []float64 `json:"latents_std"`
	ForceUpcast          bool      `json:"force_upcast"`
	UseQuantConv         bool      `json:"use_quant_conv"`
	UsePostQuantConv     bool      `json:"use_post_quant_conv"`
	MidBlockAddAttention bool      `json:"mid_block_add_attention"`
}

func defaultVAEConfig() VAEConfig {
	return VAEConfig{
		InChannels: 3, OutChannels: 3,
		DownBlockTypes:   []string{"DownEncoderBlock2D"},
		UpBlockTypes:     []string{"UpDecoderBlock2D"},
		BlockOutChannels: []int{64},
		LayersPerBlock:   1, ActFn: "silu", LatentChannels: 4, NormNumGroups: 32, SampleSize: 32,
		ScalingFactor: 0.18215, ForceUpcast: true, UseQuantConv: true, UsePostQuantConv: true,
		MidBlockAddAttention: true,
	}
}

func (c *VAEConfig) validate() error {
	n := len(c.BlockOutChannels)
	switch {
	case n == 0:
		return fmt.Errorf("block_out_channels is empty")
	case len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n:
		return fmt.Errorf("%d down_block_types and %d up_block_types for %d block_out_channels", len(c.DownBlockTypes), len(c.UpBlockTypes), n)
	case c.LayersPerBlock <= 0 || c.LatentChannels <= 0 || c.InChannels <= 0 || c.OutChannels <= 0:
		return fmt.Errorf("layers_per_block, latent_channels, in_channels and out_channels must be positive")
	case c.NormNumGroups <= 0 || slices.ContainsFunc(c.BlockOutChannels, func(ch int) bool { return ch <= 0 || ch%c.NormNumGroups != 0 }):
		return fmt.Errorf("block_out_channels %v are not all positive multiples of norm_num_groups %d", c.BlockOutChannels, c.NormNumGroups)
	case c.ScalingFactor <= 0:
		return fmt.Errorf("scaling_factor %g must be positive", c.ScalingFactor)
	}
	return nil
}

// WhisperConfig is a transformers WhisperConfig (whisper-tiny's
// config.json); the encoder fields are what MuseTalk uses. Absent fields
// keep transformers 4.39.2's defaults, which are whisper-tiny's sizes.
type WhisperConfig struct {
	ModelType             string `json:"model_type"`
	DModel                int    `json:"d_model"`
	EncoderLayers         int    `json:"encoder_layers"`
	EncoderAttentionHeads int    `json:"encoder_attention_heads"`
	EncoderFFNDim         int    `json:"encoder_ffn_dim"`
	DecoderLayers         int    `json:"decoder_layers"`
	DecoderAttentionHeads int    `json:"decoder_attention_heads"`
	DecoderFFNDim         int    `json:"decoder_ffn_dim"`
	NumMelBins            int    `json:"num_mel_bins"`
	MaxSourcePositions    int    `json:"max_source_positions"`
	MaxTargetPositions    int    `json:"max_target_positions"`
	VocabSize             int    `json:"vocab_size"`
	ActivationFunction    string `json:"activation_function"`
	ScaleEmbedding        bool   `json:"scale_embedding"`
}

// DefaultWhisperConfig returns the library defaults, which are
// whisper-tiny's: d_model 384, 4 encoder layers, 6 heads, FFN 1536, 80 mel
// bins, 1500 positions, erf GELU.
func DefaultWhisperConfig() WhisperConfig {
	return WhisperConfig{
		ModelType: "whisper", DModel: 384, EncoderLayers: 4, EncoderAttentionHeads: 6, EncoderFFNDim: 1536,
		DecoderLayers: 4, DecoderAttentionHeads: 6, DecoderFFNDim: 1536,
		NumMelBins: 80, MaxSourcePositions: 1500, MaxTargetPositions: 448, VocabSize: 51865,
		ActivationFunction: "gelu",
	}
}

// HeadDim returns d_model / encoder_attention_heads.
func (c WhisperConfig) HeadDim() int { return c.DModel / c.EncoderAttentionHeads }

// MelFrames returns the number of mel frames the encoder takes:
// 2·max_source_positions (3000 for whisper-tiny, 30 s).
func (c WhisperConfig) MelFrames() int { return 2 * c.MaxSourcePositions }

// HiddenStates returns how many hidden states the encoder returns: the
// embedding output plus one per layer (5 for whisper-tiny).
func (c WhisperConfig) HiddenStates() int { return c.EncoderLayers + 1 }

func (c *WhisperConfig) validate() error {
	switch {
	case c.ModelType != "" && c.ModelType != "whisper":
		return fmt.Errorf("model_type %q is not whisper", c.ModelType)
	case c.DModel <= 0 || c.EncoderLayers <= 0 || c.EncoderFFNDim <= 0 || c.NumMelBins <= 0 || c.MaxSourcePositions <= 0:
		return fmt.Errorf("d_model, encoder_layers, encoder_ffn_dim, num_mel_bins and max_source_positions must be positive")
	case c.EncoderAttentionHeads <= 0 || c.DModel%c.EncoderAttentionHeads != 0:
		return fmt.Errorf("d_model %d cannot be split into %d encoder attention heads", c.DModel, c.EncoderAttentionHeads)
	}
	return nil
}

// configObject returns the config object inside data: data itself, or its
// "config_full" member when data is a golden-data JSON file. It checks
// _class_name (diffusers) when present.
func configObject(data []byte, className string) ([]byte, error) {
	data = PythonJSON(data)
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if full, ok := top["config_full"]; ok {
		data = full
		top = nil
		if err := json.Unmarshal(data, &top); err != nil {
			return nil, fmt.Errorf("config_full is not a JSON object: %w", err)
		}
	}
	if raw, ok := top["_class_name"]; ok && className != "" {
		var name string
		if err := json.Unmarshal(raw, &name); err != nil || name != className {
			return nil, fmt.Errorf("_class_name is %s, want %q", raw, className)
		}
	}
	return data, nil
}

// parseConfig decodes the config in data over the defaults in cfg.
func parseConfig[T any](data []byte, className string, cfg *T, validate func() error) error {
	obj, err := configObject(data, className)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(obj, cfg); err != nil {
		return err
	}
	return validate()
}

// ParseUNetConfig parses a UNet2DConditionModel config: a diffusers
// config.json (musetalk.json) or a golden-data JSON file, whose
// "config_full" it reads.
func ParseUNetConfig(data []byte) (*UNetConfig, error) {
	c := defaultUNetConfig()
	if err := parseConfig(data, "UNet2DConditionModel", &c, c.validate); err != nil {
		return nil, fmt.Errorf("parsing UNet config: %w", err)
	}
	return &c, nil
}

// ParseVAEConfig parses an AutoencoderKL config: a diffusers config.json
// or a golden-data JSON file, whose "config_full" it reads.
func ParseVAEConfig(data []byte) (*VAEConfig, error) {
	c := defaultVAEConfig()
	if err := parseConfig(data, "AutoencoderKL", &c, c.validate); err != nil {
		return nil, fmt.Errorf("parsing VAE config: %w", err)
	}
	return &c, nil
}

// ParseWhisperConfig parses a WhisperConfig: a transformers config.json or
// a golden-data JSON file, whose "config_full" it reads.
func ParseWhisperConfig(data []byte) (*WhisperConfig, error) {
	c := DefaultWhisperConfig()
	if err := parseConfig(data, "", &c, c.validate); err != nil {
		return nil, fmt.Errorf("parsing Whisper config: %w", err)
	}
	return &c, nil
}

// LoadUNetConfig reads and parses the UNet config file at path.
func LoadUNetConfig(path string) (*UNetConfig, error) { return loadConfig(path, ParseUNetConfig) }

// LoadVAEConfig reads and parses the VAE config file at path.
func LoadVAEConfig(path string) (*VAEConfig, error) { return loadConfig(path, ParseVAEConfig) }

// LoadWhisperConfig reads and parses the Whisper config file at path.
func LoadWhisperConfig(path string) (*WhisperConfig, error) {
	return loadConfig(path, ParseWhisperConfig)
}

func loadConfig[T any](path string, parse func([]byte) (*T, error)) (*T, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// PythonJSON replaces the NaN, Infinity and -Infinity literals that Python's
// json module writes (and Go's rejects) by null, leaving strings alone.
func PythonJSON(data []byte) []byte {
	var out []byte // allocated on the first replacement
	inString, escaped := false, false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			if out != nil {
				out = append(out, c)
			}
			continue
		}
		if c == '"' {
			inString = true
		}
		n := 0
		for _, lit := range []string{"NaN", "Infinity", "-Infinity"} {
			if bytes.HasPrefix(data[i:], []byte(lit)) {
				n = len(lit)
			}
		}
		if n == 0 {
			if out != nil {
				out = append(out, c)
			}
			continue
		}
		if out == nil {
			out = append(make([]byte, 0, len(data)), data[:i]...)
		}
		out = append(out, "null"...)
		i += n - 1
	}
	if out == nil {
		return data
	}
	return out
}
