package weights

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// whisperTinyJSON is the encoder-relevant part of openai/whisper-tiny's
// config.json, with fields of other kinds that the parser must ignore.
const whisperTinyJSON = `{
  "_name_or_path": "openai/whisper-tiny",
  "architectures": ["WhisperForConditionalGeneration"],
  "activation_function": "gelu",
  "begin_suppress_tokens": [220, 50257],
  "d_model": 384,
  "decoder_attention_heads": 6,
  "decoder_ffn_dim": 1536,
  "decoder_layers": 4,
  "encoder_attention_heads": 6,
  "encoder_ffn_dim": 1536,
  "encoder_layers": 4,
  "forced_decoder_ids": [[1, 50259], [2, 50359], [3, 50363]],
  "max_source_positions": 1500,
  "max_target_positions": 448,
  "model_type": "whisper",
  "num_mel_bins": 80,
  "scale_embedding": false,
  "torch_dtype": "float32",
  "vocab_size": 51865
}`

func TestUNetConfig(t *testing.T) {
	t.Parallel()
	c, err := ParseUNetConfig([]byte(museTalkUNetJSON))
	if err != nil {
		t.Fatal(err)
	}
	if c.InChannels != 8 || c.OutChannels != 4 || !slices.Equal(c.BlockOutChannels, []int{320, 640, 1280, 1280}) ||
		!slices.Equal([]int(c.CrossAttentionDim), []int{384}) || c.NormNumGroups != 32 || c.NormEps != 1e-5 ||
		!c.FlipSinToCos || c.FreqShift != 0 || c.DownsamplePadding != 1 || c.ActFn != "silu" ||
		c.DownBlockTypes[3] != "DownBlock2D" || c.UpBlockTypes[0] != "UpBlock2D" {
		t.Errorf("musetalk.json parsed as %+v", c)
	}
	// Defaults of diffusers for fields the file leaves out.
	if c.MidBlockType != "UNetMidBlock2DCrossAttn" || c.UseLinearProjection || c.ResnetTimeScaleShift != "default" ||
		c.TimeEmbeddingType != "positional" || c.ConvInKernel != 3 || !slices.Equal([]int(c.TransformerLayersPerBlock), []int{1}) {
		t.Errorf("defaults not applied: %+v", c)
	}
	heads, err := c.Heads()
	if err != nil || !slices.Equal(heads, []int{8, 8, 8, 8}) {
		t.Errorf("Heads() = %v, %v; want 8 per block (attention_head_dim is the head count)", heads, err)
	}
	layers, err := c.LayersPerBlock.PerBlock(4)
	if err != nil || !slices.Equal(layers, []int{2, 2, 2, 2}) {
		t.Errorf("LayersPerBlock.PerBlock(4) = %v, %v", layers, err)
	}

	// num_attention_heads, when set, wins; lists are per block.
	c2, err := ParseUNetConfig([]byte(strings.Replace(museTalkUNetJSON, `"attention_head_dim": 8`,
		`"attention_head_dim": [5, 10, 20, 20], "num_attention_heads": [4, 8, 8, 8]`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if heads, _ := c2.Heads(); !slices.Equal(heads, []int{4, 8, 8, 8}) {
		t.Errorf("Heads() with num_attention_heads = %v", heads)
	}

	for name, bad := range map[string]string{
		"class":    strings.Replace(museTalkUNetJSON, "UNet2DConditionModel", "AutoencoderKL", 1),
		"blocks":   strings.Replace(museTalkUNetJSON, `["UpBlock2D", "CrossAttnUpBlock2D",`, `["CrossAttnUpBlock2D",`, 1),
		"heads":    strings.Replace(museTalkUNetJSON, `"attention_head_dim": 8`, `"attention_head_dim": 7`, 1),
		"headlist": strings.Replace(museTalkUNetJSON, `"attention_head_dim": 8`, `"attention_head_dim": [8, 8]`, 1),
		"type":     strings.Replace(museTalkUNetJSON, `"in_channels": 8`, `"in_channels": "8"`, 1),
		"json":     museTalkUNetJSON[:100],
	} {
		if _, err := ParseUNetConfig([]byte(bad)); err == nil {
			t.Errorf("%s: bad config accepted", name)
		}
	}
}

func TestVAEAndWhisperConfig(t *testing.T) {
	t.Parallel()
	v, err := ParseVAEConfig([]byte(sdVAEJSON))
	if err != nil {
		t.Fatal(err)
	}
	if v.ScalingFactor != 0.18215 || v.LatentChannels != 4 || v.LayersPerBlock != 2 || v.NormNumGroups != 32 ||
		!slices.Equal(v.BlockOutChannels, []int{128, 256, 512, 512}) || !v.UseQuantConv || !v.MidBlockAddAttention {
		t.Errorf("sd-vae-ft-mse config parsed as %+v", v)
	}
	if _, err := ParseVAEConfig([]byte(strings.Replace(sdVAEJSON, `"norm_num_groups": 32`, `"norm_num_groups": 48`, 1))); err == nil {
		t.Error("VAE config with channels not divisible by groups accepted")
	}
	w, err := ParseWhisperConfig([]byte(whisperTinyJSON))
	if err != nil {
		t.Fatal(err)
	}
	if w.DModel != 384 || w.EncoderLayers != 4 || w.EncoderAttentionHeads != 6 || w.EncoderFFNDim != 1536 ||
		w.NumMelBins != 80 || w.MaxSourcePositions != 1500 || w.HeadDim() != 64 || w.ActivationFunction != "gelu" {
		t.Errorf("whisper-tiny config parsed as %+v", w)
	}
	if _, err := ParseWhisperConfig([]byte(`{"model_type": "bert"}`)); err == nil {
		t.Error("non-Whisper config accepted")
	}
	if _, err := ParseWhisperConfig([]byte(`{"d_model": 384, "encoder_attention_heads": 5}`)); err == nil {
		t.Error("Whisper config with d_model not divisible by heads accepted")
	}
}

// TestGoldenConfigs parses the config_full of the golden JSON files and,
// with the same parsers, their reference_full_size_config, which has the
// shape of the official config files.
func TestGoldenConfigs(t *testing.T) {
	t.Parallel()
	dir := goldenDir(t)
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	reference := func(b []byte) []byte {
		var top map[string]json.RawMessage
		if err := json.Unmarshal(PythonJSON(b), &top); err != nil {
			t.Fatal(err)
		}
		return top["reference_full_size_config"]
	}

	a := read("a_unet2d_condition.json")
	u, err := ParseUNetConfig(a)
	if err != nil {
		t.Fatal(err)
	}
	heads, _ := u.Heads()
	if !slices.Equal(u.BlockOutChannels, []int{12, 24, 32, 32}) || u.NormNumGroups != 4 || !slices.Equal(heads, []int{4, 4, 4, 4}) ||
		!slices.Equal([]int(u.CrossAttentionDim), []int{24}) || u.InChannels != 8 || !slices.Equal([]int(u.SampleSize), []int{16}) {
		t.Errorf("golden UNet config_full parsed as %+v", u)
	}
	if lu, err := LoadUNetConfig(filepath.Join(dir, "a_unet2d_condition.json")); err != nil || lu.NormNumGroups != 4 {
		t.Errorf("LoadUNetConfig = %+v, %v", lu, err)
	}
	uf, err := ParseUNetConfig(reference(a))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(uf.BlockOutChannels, []int{320, 640, 1280, 1280}) || !slices.Equal([]int(uf.CrossAttentionDim), []int{384}) {
		t.Errorf("full-size UNet config parsed as %+v", uf)
	}

	b := read("b_autoencoder_kl.json")
	v, err := ParseVAEConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(v.BlockOutChannels, []int{16, 24, 32, 32}) || v.NormNumGroups != 8 || v.ScalingFactor != 0.18215 || v.ShiftFactor != nil {
		t.Errorf("golden VAE config_full parsed as %+v", v)
	}
	vf, err := ParseVAEConfig(reference(b))
	if err != nil || vf.ScalingFactor != 0.18215 || vf.BlockOutChannels[3] != 512 {
		t.Errorf("full-size VAE config: %+v, %v", vf, err)
	}

	for _, tc := range []struct {
		file                       string
		dModel, layers, heads, ffn int
		maxSource                  int
	}{
		{"c_whisper_encoder.json", 32, 2, 2, 64, 50},
		{"j_musetalk_audio_real.json", 16, 2, 2, 32, 1500},
	} {
		c := read(tc.file)
		w, err := ParseWhisperConfig(c)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if w.DModel != tc.dModel || w.EncoderLayers != tc.layers || w.EncoderAttentionHeads != tc.heads ||
			w.EncoderFFNDim != tc.ffn || w.MaxSourcePositions != tc.maxSource || w.NumMelBins != 80 {
			t.Errorf("%s: config_full parsed as %+v", tc.file, w)
		}
	}
	wf, err := ParseWhisperConfig(reference(read("c_whisper_encoder.json")))
	if err != nil || wf.DModel != 384 || wf.EncoderLayers != 4 || wf.MaxSourcePositions != 1500 {
		t.Errorf("whisper-tiny reference config: %+v, %v", wf, err)
	}
}

func TestPythonJSON(t *testing.T) {
	t.Parallel()
	in := `{"a": NaN, "b": [Infinity, -Infinity], "s": "NaN \" Infinity", "c": 1}`
	want := `{"a": null, "b": [null, null], "s": "NaN \" Infinity", "c": 1}`
	if got := string(PythonJSON([]byte(in))); got != want {
		t.Errorf("PythonJSON = %s\nwant %s", got, want)
	}
	if !json.Valid(PythonJSON([]byte(in))) {
		t.Error("result is not valid JSON")
	}
}
