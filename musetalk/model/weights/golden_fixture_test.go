package weights

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// The reader and the config parsers are checked against known values on
// small files in the layout of the golden data (testdata/golden_style*),
// which this file's generators write: the golden tests themselves derive
// every expectation from the golden set they are given. Rewrite the files
// after changing a generator with
//
//	go test ./musetalk/model/weights -run Fixture -update-fixtures

var updateFixtures = flag.Bool("update-fixtures", false, "rewrite testdata/golden_style* from their generators")

// fixture returns the generated content of testdata file name, writing it
// with -update-fixtures and otherwise requiring the checked-in file to be
// identical, so that the two cannot drift apart.
func fixture(t *testing.T, name string, gen []byte) string {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateFixtures {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, gen, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (generate it with -update-fixtures)", err)
	}
	if !bytes.Equal(have, gen) {
		t.Fatalf("%s differs from its generator's output; rerun with -update-fixtures", path)
	}
	return path
}

// fixtureTensor is one tensor of a hand-assembled safetensors file: its
// little-endian bytes are written here, not by the package's writer.
type fixtureTensor struct {
	dtype DType
	shape []int
	data  []byte
}

func le16(v ...uint16) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint16(b, x)
	}
	return b
}

func le64(v ...int64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, uint64(x))
	}
	return b
}

func le64f(v ...float64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	return b
}

func le32f(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// assembleSafetensors lays out tensors as the golden files are: an 8-byte
// header length, a JSON header padded with spaces to a multiple of 8, then
// the tensors' bytes contiguously in key order.
func assembleSafetensors(meta map[string]string, tensors map[string]fixtureTensor) []byte {
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	header := map[string]any{"__metadata__": meta}
	var data []byte
	for _, n := range names {
		ft := tensors[n]
		header[n] = map[string]any{"dtype": ft.dtype, "shape": ft.shape, "data_offsets": []int{len(data), len(data) + len(ft.data)}}
		data = append(data, ft.data...)
	}
	h, err := json.Marshal(header)
	if err != nil {
		panic(err)
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	return append(append(out, h...), data...)
}

// goldenStyleSafetensors is a tiny file with the kinds of tensors the
// golden cases hold: F16 weights (normal, subnormal, signed zero, the
// largest half), a BF16 table, I64 indices and boxes, a 0-d I64, an empty
// [0,5] detection list, F64 references and a U8 image.
func goldenStyleSafetensors() []byte {
	return assembleSafetensors(map[string]string{
		"case": "fixture", "set": "test", "seed": "0", "generator": "golden_fixture_test.go",
		"config_json": "golden_style.json",
	}, map[string]fixtureTensor{
		"conv.bias":                {F16, []int{7}, le16(0x3c00, 0xc100, 0x0001, 0x03ff, 0x7bff, 0x8000, 0x3555)},
		"bn.num_batches_tracked":   {I64, []int{}, le64(3)},
		"ref.bf16":                 {BF16, []int{2}, le16(0x3f80, 0xc0a0)},
		"input.timestep":           {I64, []int{1}, le64(0)},
		"input.timestep_alt":       {I64, []int{1}, le64(500)},
		"input.image_u8":           {U8, []int{2, 2}, []byte{0, 1, 128, 255}},
		"output.0.nms_keep":        {I64, []int{4}, le64(2, 0, 3, 1)},
		"output.0.final_box":       {I64, []int{4}, le64(12, 7, 40, 33)},
		"output.1.final_box":       {I64, []int{4}, le64(-1, -1, -1, -1)},
		"output.1.detections":      {F32, []int{0, 5}, nil},
		"output.0.detections":      {F32, []int{1, 5}, le32f(12.5, 7.25, 40.75, 33.125, 0.875)},
		"output_f64.0.detections":  {F64, []int{1, 5}, le64f(12.5, 7.25, 40.75, 33.125, 0.1)},
		"intermediate.big_integer": {I64, []int{2}, le64(-(1 << 40), 1<<53+1)},
	})
}

// TestGoldenStyleFixtureValues reads testdata/golden_style.safetensors and
// requires the values its generator wrote.
func TestGoldenStyleFixtureValues(t *testing.T) {
	t.Parallel()
	path := fixture(t, "golden_style.safetensors", goldenStyleSafetensors())
	s, err := OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if m := s.Metadata(); m["case"] != "fixture" || m["config_json"] != "golden_style.json" {
		t.Errorf("metadata %v", m)
	}
	floats := func(name string, dtype DType, shape []int, want []float32) {
		t.Helper()
		x, err := s.ReadFloat32(name)
		if err != nil {
			t.Fatal(err)
		}
		if x.DType != dtype || !slices.Equal(x.Shape, shape) || !slices.EqualFunc(x.Data, want, sameFloat32) {
			t.Errorf("%s = %s %v %v; want %s %v %v", name, x.DType, x.Shape, x.Data, dtype, shape, want)
		}
	}
	ints := func(name string, shape []int, want []int64) {
		t.Helper()
		got, err := s.ReadInt64(name)
		info, _ := s.Info(name)
		if err != nil || !slices.Equal(got, want) || !slices.Equal(info.Shape, shape) {
			t.Errorf("%s = %v %v, %v; want %v %v", name, info.Shape, got, err, shape, want)
		}
	}
	floats("conv.bias", F16, []int{7}, []float32{1, -2.5, 5.9604645e-08, 6.097555e-05, 65504, float32(math.Copysign(0, -1)), 0.333251953125})
	floats("ref.bf16", BF16, []int{2}, []float32{1, -5})
	floats("output.0.detections", F32, []int{1, 5}, []float32{12.5, 7.25, 40.75, 33.125, 0.875})
	floats("output_f64.0.detections", F64, []int{1, 5}, []float32{12.5, 7.25, 40.75, 33.125, float32(0.1)})
	floats("output.1.detections", F32, []int{0, 5}, []float32{})
	floats("input.image_u8", U8, []int{2, 2}, []float32{0, 1, 128, 255})
	ints("bn.num_batches_tracked", []int{}, []int64{3})
	ints("input.timestep", []int{1}, []int64{0})
	ints("input.timestep_alt", []int{1}, []int64{500})
	ints("input.image_u8", []int{2, 2}, []int64{0, 1, 128, 255})
	ints("output.0.nms_keep", []int{4}, []int64{2, 0, 3, 1})
	ints("output.0.final_box", []int{4}, []int64{12, 7, 40, 33})
	ints("output.1.final_box", []int{4}, []int64{-1, -1, -1, -1})
	ints("intermediate.big_integer", []int{2}, []int64{-(1 << 40), 1<<53 + 1})
	// The test's own decoding of the bytes agrees as well.
	checkRawDecode(t, path)
}

// goldenStyleJSON writes a case JSON the way the golden generator does
// (indented, Python's NaN literal in a diagnostic) around config_passed,
// config_full and reference_full_size_config.
func goldenStyleJSON(model string, passed, full map[string]any, reference string, weights map[string][]int) []byte {
	tensors := map[string]any{}
	for n, shape := range weights {
		tensors[n] = map[string]any{"dtype": "F32", "shape": shape}
	}
	var ref any
	if err := json.Unmarshal([]byte(reference), &ref); err != nil {
		panic(err)
	}
	b, err := json.MarshalIndent(map[string]any{
		"case": "fixture", "set": "test", "seed": 0, "model_class": model,
		"config_passed": passed, "config_full": full, "reference_full_size_config": ref,
		"determinism_two_runs": map[string]any{"outputs_max_abs": "@NaN@", "weights_max_abs": 0.0},
		"tensors":              map[string]any{"weights": tensors},
	}, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(bytes.ReplaceAll(b, []byte(`"@NaN@"`), []byte("NaN")), '\n')
}

// withDefaults returns passed with the extra keys of a library's full
// config added.
func withDefaults(passed map[string]any, extra map[string]any) map[string]any {
	full := map[string]any{}
	for k, v := range passed {
		full[k] = v
	}
	for k, v := range extra {
		full[k] = v
	}
	return full
}

func fixtureUNetJSON() []byte {
	passed := map[string]any{
		"act_fn": "silu", "attention_head_dim": 2, "block_out_channels": []int{8, 16, 24, 24},
		"cross_attention_dim": 20, "down_block_types": []string{"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"},
		"up_block_types": []string{"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"},
		"in_channels":    8, "out_channels": 4, "layers_per_block": 1, "norm_num_groups": 4, "norm_eps": 1e-06, "sample_size": 12,
		"flip_sin_to_cos": true, "freq_shift": 0, "downsample_padding": 1,
	}
	full := withDefaults(passed, map[string]any{
		"mid_block_type": "UNetMidBlock2DCrossAttn", "num_attention_heads": nil, "transformer_layers_per_block": 1,
		"use_linear_projection": false, "time_embedding_dim": nil, "_use_default_values": []string{"mid_block_type"},
	})
	return goldenStyleJSON("diffusers.UNet2DConditionModel", passed, full, museTalkUNetJSON, map[string][]int{"conv_in.weight": {8, 8, 3, 3}})
}

func fixtureVAEJSON() []byte {
	passed := map[string]any{
		"block_out_channels": []int{8, 16, 16}, "down_block_types": []string{"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"},
		"up_block_types":  []string{"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"},
		"latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4, "sample_size": 32, "scaling_factor": 0.13025,
	}
	full := withDefaults(passed, map[string]any{"shift_factor": nil, "latents_mean": nil, "use_quant_conv": true, "mid_block_add_attention": true})
	return goldenStyleJSON("diffusers.AutoencoderKL", passed, full, sdVAEJSON, map[string][]int{"encoder.conv_in.weight": {8, 3, 3, 3}})
}

func fixtureWhisperJSON() []byte {
	passed := map[string]any{
		"d_model": 24, "encoder_layers": 3, "encoder_attention_heads": 3, "encoder_ffn_dim": 48,
		"num_mel_bins": 40, "max_source_positions": 20, "vocab_size": 64, "activation_function": "gelu",
	}
	full := withDefaults(passed, map[string]any{"model_type": "whisper", "decoder_layers": 1, "torch_dtype": nil})
	return goldenStyleJSON("transformers.WhisperModel", passed, full, whisperTinyJSON, map[string][]int{"encoder.conv1.weight": {24, 40, 3}})
}

// TestGoldenStyleFixtureConfigs parses the generated golden-style JSON
// files (testdata/golden_style_*.json): the parsers must read config_full
// out of a whole case file (NaN literals and all), keep the stated sizes,
// and read reference_full_size_config, in the official files' layout, the
// same way.
func TestGoldenStyleFixtureConfigs(t *testing.T) {
	t.Parallel()
	unetPath := fixture(t, "golden_style_unet.json", fixtureUNetJSON())
	vaePath := fixture(t, "golden_style_vae.json", fixtureVAEJSON())
	whisperPath := fixture(t, "golden_style_whisper.json", fixtureWhisperJSON())
	reference := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(PythonJSON(b), &top); err != nil {
			t.Fatal(err)
		}
		return top["reference_full_size_config"]
	}

	u, err := LoadUNetConfig(unetPath)
	if err != nil {
		t.Fatal(err)
	}
	heads, _ := u.Heads()
	layers, _ := u.LayersPerBlock.PerBlock(4)
	if !slices.Equal(u.BlockOutChannels, []int{8, 16, 24, 24}) || u.NormNumGroups != 4 || u.NormEps != 1e-6 ||
		!slices.Equal(heads, []int{2, 2, 2, 2}) || !slices.Equal([]int(u.CrossAttentionDim), []int{20}) ||
		u.InChannels != 8 || u.OutChannels != 4 || !slices.Equal([]int(u.SampleSize), []int{12}) ||
		!slices.Equal(layers, []int{1, 1, 1, 1}) || len(u.NumAttentionHeads) != 0 || u.TimeEmbeddingDim != nil {
		t.Errorf("golden-style UNet config_full parsed as %+v", u)
	}
	uf, err := ParseUNetConfig(reference(unetPath))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(uf.BlockOutChannels, []int{320, 640, 1280, 1280}) || !slices.Equal([]int(uf.CrossAttentionDim), []int{384}) || uf.NormNumGroups != 32 {
		t.Errorf("reference UNet config parsed as %+v", uf)
	}

	v, err := LoadVAEConfig(vaePath)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(v.BlockOutChannels, []int{8, 16, 16}) || v.NormNumGroups != 4 || v.LayersPerBlock != 1 ||
		v.ScalingFactor != 0.13025 || v.ShiftFactor != nil || v.LatentChannels != 4 || v.SampleSize != 32 {
		t.Errorf("golden-style VAE config_full parsed as %+v", v)
	}
	vf, err := ParseVAEConfig(reference(vaePath))
	if err != nil || vf.ScalingFactor != 0.18215 || !slices.Equal(vf.BlockOutChannels, []int{128, 256, 512, 512}) {
		t.Errorf("reference VAE config: %+v, %v", vf, err)
	}

	w, err := LoadWhisperConfig(whisperPath)
	if err != nil {
		t.Fatal(err)
	}
	if w.DModel != 24 || w.EncoderLayers != 3 || w.EncoderAttentionHeads != 3 || w.EncoderFFNDim != 48 ||
		w.NumMelBins != 40 || w.MaxSourcePositions != 20 || w.HeadDim() != 8 || w.MelFrames() != 40 || w.HiddenStates() != 4 {
		t.Errorf("golden-style Whisper config_full parsed as %+v", w)
	}
	wf, err := ParseWhisperConfig(reference(whisperPath))
	if err != nil || wf.DModel != 384 || wf.EncoderLayers != 4 || wf.MaxSourcePositions != 1500 {
		t.Errorf("reference Whisper config: %+v, %v", wf, err)
	}

	// The fixtures pass the derived checks of the golden configs too.
	for path, kind := range map[string]string{unetPath: "unet", vaePath: "vae", whisperPath: "whisper"} {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".json"), func(t *testing.T) {
			checkGoldenConfig(t, kind, path)
		})
	}
}
