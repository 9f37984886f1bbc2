package weights

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
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

// TestGoldenConfigs parses the config_full of every golden case of a
// UNet, a VAE or a Whisper encoder and, with the same parser, its
// reference_full_size_config, which has the layout of the official config
// files. Expectations come from each case's own JSON: every key that
// config_passed, config_full or the reference states and the parser keeps
// must come out unchanged, the heads must be the ones the JSON lists, and
// the sizes must agree with the shapes of the weights listed under
// "tensors". Known values are checked on this package's own fixtures
// (TestGoldenStyleFixtureConfigs).
func TestGoldenConfigs(t *testing.T) {
	t.Parallel()
	dir := goldenDir(t)
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]int{}
	for _, path := range paths {
		top := readGoldenJSON(t, path).top
		if _, ok := top["config_full"]; !ok {
			continue
		}
		var class string
		_ = json.Unmarshal(top["model_class"], &class)
		kind := configKind(class)
		if kind == "" {
			continue // the feature extractor, PositionalEncoding, DWPose: other parsers
		}
		found[kind]++
		t.Run(strings.TrimSuffix(filepath.Base(path), ".json"), func(t *testing.T) {
			t.Parallel()
			checkGoldenConfig(t, kind, path)
		})
	}
	for _, kind := range []string{"unet", "vae", "whisper"} {
		if found[kind] == 0 {
			t.Errorf("no golden case with a %s config_full in %s", kind, dir)
		}
	}
}

// configKind says which parser reads a case's config, from its model_class.
func configKind(modelClass string) string {
	switch {
	case strings.Contains(modelClass, "UNet2DConditionModel"):
		return "unet"
	case strings.Contains(modelClass, "AutoencoderKL"):
		return "vae"
	case strings.Contains(modelClass, "WhisperModel"):
		return "whisper"
	}
	return ""
}

// checkGoldenConfig checks the parser of kind on the case JSON at path
// against the JSON itself.
func checkGoldenConfig(t *testing.T, kind, path string) {
	t.Helper()
	g := readGoldenJSON(t, path)
	top := g.top
	shapes := map[string][]int{}
	for name, gt := range g.Tensors["weights"] {
		shapes[name] = gt.Shape
	}

	parse := map[string]func([]byte) (any, error){
		"unet":    func(b []byte) (any, error) { return ParseUNetConfig(b) },
		"vae":     func(b []byte) (any, error) { return ParseVAEConfig(b) },
		"whisper": func(b []byte) (any, error) { return ParseWhisperConfig(b) },
	}[kind]
	load := map[string]func(string) (any, error){
		"unet":    func(p string) (any, error) { return LoadUNetConfig(p) },
		"vae":     func(p string) (any, error) { return LoadVAEConfig(p) },
		"whisper": func(p string) (any, error) { return LoadWhisperConfig(p) },
	}[kind]
	cfg, err := parse(g.raw)
	if err != nil {
		t.Fatal(err)
	}
	if loaded, err := load(path); err != nil || !reflect.DeepEqual(loaded, cfg) {
		t.Errorf("Load = %+v, %v; Parse gave %+v", loaded, err, cfg)
	}
	for _, key := range []string{"config_passed", "config_full"} {
		if raw, ok := top[key]; ok {
			compareConfigKeys(t, key, cfg, raw)
		}
	}
	if n := checkConfigShapes(t, cfg, shapes); n == 0 {
		t.Errorf("no weight listed under tensors.weights to check the config's sizes against")
	}
	if u, ok := cfg.(*UNetConfig); ok {
		checkGoldenHeads(t, u, top)
	}
	if raw, ok := top["reference_full_size_config"]; ok {
		ref, err := parse(raw)
		if err != nil {
			t.Fatalf("reference_full_size_config: %v", err)
		}
		compareConfigKeys(t, "reference_full_size_config", ref, raw)
	}
}

// compareConfigKeys requires every non-null key of the JSON object raw that
// the parsed config keeps (under the same JSON name) to have the JSON's
// value. A scalar stands for a one-element per-block list.
func compareConfigKeys(t *testing.T, label string, parsed any, raw json.RawMessage) {
	t.Helper()
	enc, err := json.Marshal(parsed)
	if err != nil {
		t.Fatal(err)
	}
	var got, want map[string]any
	if err := json.Unmarshal(enc, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(PythonJSON(raw), &want); err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	n := 0
	for k, w := range want {
		g, kept := got[k]
		if w == nil || !kept {
			continue
		}
		n++
		if l, ok := g.([]any); ok && len(l) == 1 {
			if _, list := w.([]any); !list {
				g = l[0]
			}
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: %s parsed as %v, the JSON says %v", label, k, g, w)
		}
	}
	if n == 0 {
		t.Errorf("%s: no key the parser keeps", label)
	}
}

// checkConfigShapes checks a config's sizes against the shapes of the
// weights that the JSON lists, and returns how many weights it looked at.
func checkConfigShapes(t *testing.T, cfg any, shapes map[string][]int) int {
	t.Helper()
	n := 0
	expect := func(name string, want ...int) {
		t.Helper()
		got, ok := shapes[name]
		if !ok {
			return
		}
		n++
		if !slices.Equal(got, want) {
			t.Errorf("%s: listed %v, the config implies %v", name, got, want)
		}
	}
	// count returns how many distinct indices i the listed names
	// prefix.i.* have, or -1 when none is listed.
	count := func(prefix string) int {
		seen := map[string]bool{}
		for name := range shapes {
			if rest, ok := strings.CutPrefix(name, prefix+"."); ok {
				i, _, _ := strings.Cut(rest, ".")
				seen[i] = true
			}
		}
		if len(seen) == 0 {
			return -1
		}
		n++
		return len(seen)
	}
	switch c := cfg.(type) {
	case *UNetConfig:
		boc := c.BlockOutChannels
		expect("conv_in.weight", boc[0], c.InChannels, c.ConvInKernel, c.ConvInKernel)
		expect("conv_out.weight", c.OutChannels, boc[0], c.ConvOutKernel, c.ConvOutKernel)
		layers, _ := c.LayersPerBlock.PerBlock(len(boc))
		cross, _ := c.CrossAttentionDim.PerBlock(len(boc))
		for i, ch := range boc {
			expect(fmt.Sprintf("down_blocks.%d.resnets.0.conv2.weight", i), ch, ch, 3, 3)
			if m := count(fmt.Sprintf("down_blocks.%d.resnets", i)); m >= 0 && m != layers[i] {
				t.Errorf("down block %d lists %d resnets, layers_per_block %d", i, m, layers[i])
			}
			if strings.HasPrefix(c.DownBlockTypes[i], "CrossAttn") {
				expect(fmt.Sprintf("down_blocks.%d.attentions.0.transformer_blocks.0.attn2.to_k.weight", i), ch, cross[i])
			}
		}
	case *VAEConfig:
		boc := c.BlockOutChannels
		expect("encoder.conv_in.weight", boc[0], c.InChannels, 3, 3)
		expect("decoder.conv_out.weight", c.OutChannels, boc[0], 3, 3)
		expect("quant_conv.weight", 2*c.LatentChannels, 2*c.LatentChannels, 1, 1)
		expect("post_quant_conv.weight", c.LatentChannels, c.LatentChannels, 1, 1)
		for i, ch := range boc {
			expect(fmt.Sprintf("encoder.down_blocks.%d.resnets.0.conv2.weight", i), ch, ch, 3, 3)
			if m := count(fmt.Sprintf("encoder.down_blocks.%d.resnets", i)); m >= 0 && m != c.LayersPerBlock {
				t.Errorf("encoder block %d lists %d resnets, layers_per_block %d", i, m, c.LayersPerBlock)
			}
			if m := count(fmt.Sprintf("decoder.up_blocks.%d.resnets", i)); m >= 0 && m != c.LayersPerBlock+1 {
				t.Errorf("decoder block %d lists %d resnets, layers_per_block+1 = %d", i, m, c.LayersPerBlock+1)
			}
		}
	case *WhisperConfig:
		expect("encoder.conv1.weight", c.DModel, c.NumMelBins, 3)
		expect("encoder.conv2.weight", c.DModel, c.DModel, 3)
		expect("encoder.embed_positions.weight", c.MaxSourcePositions, c.DModel)
		expect("encoder.layers.0.fc1.weight", c.EncoderFFNDim, c.DModel)
		if m := count("encoder.layers"); m >= 0 && m != c.EncoderLayers {
			t.Errorf("%d encoder layers listed, encoder_layers %d", m, c.EncoderLayers)
		}
	default:
		t.Fatalf("config of type %T", cfg)
	}
	return n
}

// checkGoldenHeads requires Heads() to be num_attention_heads, or else
// attention_head_dim (a scalar for every block, or a list), as config_passed
// states them, and to match the heads and head sizes the JSON lists per down
// block when it does.
func checkGoldenHeads(t *testing.T, u *UNetConfig, top map[string]json.RawMessage) {
	t.Helper()
	heads, err := u.Heads()
	if err != nil {
		t.Fatal(err)
	}
	raw, ok := top["config_passed"]
	if !ok {
		raw = top["config_full"]
	}
	var passed map[string]any
	if err := json.Unmarshal(PythonJSON(raw), &passed); err != nil {
		t.Fatal(err)
	}
	h := passed["num_attention_heads"]
	if h == nil {
		h = passed["attention_head_dim"]
	}
	var want []int
	switch v := h.(type) {
	case float64:
		for range u.DownBlockTypes {
			want = append(want, int(v))
		}
	case []any:
		for _, x := range v {
			f, _ := x.(float64)
			want = append(want, int(f))
		}
	case nil:
		return // the library default
	}
	if !slices.Equal(heads, want) {
		t.Errorf("Heads() = %v; the JSON passes %v", heads, h)
	}
	var perBlock [][]int
	if raw, ok := top["heads_and_head_dims_per_down_block"]; ok {
		if err := json.Unmarshal(raw, &perBlock); err != nil {
			t.Fatal(err)
		}
	}
	for i, hd := range perBlock {
		if i >= len(heads) || len(hd) != 2 {
			t.Errorf("heads_and_head_dims_per_down_block[%d] = %v for %d blocks", i, hd, len(heads))
		} else if heads[i] != hd[0] || u.BlockOutChannels[i]/heads[i] != hd[1] {
			t.Errorf("down block %d: %d heads of %d, the JSON lists %v", i, heads[i], u.BlockOutChannels[i]/heads[i], hd)
		}
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
