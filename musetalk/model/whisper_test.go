package model_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/model"
)

// whisperMapSource is a weight source backed by a map, for tests.
type whisperMapSource map[string]struct {
	data  []float32
	shape []int
}

func (m whisperMapSource) Tensor(name string) ([]float32, []int, error) {
	t, ok := m[name]
	if !ok {
		return nil, nil, fmt.Errorf("tensor %s not found", name)
	}
	return t.data, t.shape, nil
}

// randomWhisperWeights fills every tensor of the spec with small seeded
// values.
func randomWhisperWeights(cfg model.WhisperConfig, seed uint64) whisperMapSource {
	rng := rand.New(rand.NewPCG(seed, 1))
	src := whisperMapSource{}
	for _, s := range model.WhisperEncoderSpec(cfg) {
		n := 1
		for _, d := range s.Shape {
			n *= d
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(rng.NormFloat64() * 0.05)
		}
		if strings.HasSuffix(s.Name, "layer_norm.weight") {
			for i := range data {
				data[i] += 1
			}
		}
		src[s.Name] = struct {
			data  []float32
			shape []int
		}{data, s.Shape}
	}
	return src
}

func TestWhisperEncoderSpecTiny(t *testing.T) {
	t.Parallel()
	spec := model.WhisperEncoderSpec(model.DefaultWhisperConfig())
	// whisper-tiny's encoder: 8,208,384 parameters in 67 tensors.
	if got := model.SpecParams(spec); got != 8208384 {
		t.Errorf("whisper-tiny encoder spec: %d parameters, want 8208384", got)
	}
	if len(spec) != 5+4*15+2 {
		t.Errorf("whisper-tiny encoder spec: %d tensors, want %d", len(spec), 5+4*15+2)
	}
	seen := map[string]bool{}
	for _, s := range spec {
		if seen[s.Name] {
			t.Errorf("duplicate name %s", s.Name)
		}
		seen[s.Name] = true
	}
	if !seen["encoder.layers.3.self_attn.k_proj.weight"] || seen["encoder.layers.0.self_attn.k_proj.bias"] {
		t.Error("k_proj must have a weight and no bias")
	}
}

func TestParseWhisperConfig(t *testing.T) {
	t.Parallel()
	cfg, err := model.ParseWhisperConfig([]byte(`{"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2,
		"encoder_ffn_dim": 64, "max_source_positions": 50, "decoder_layers": 1, "vocab_size": 64}`))
	if err != nil {
		t.Fatal(err)
	}
	// Keys the file gives are read, the others keep whisper-tiny's values.
	want := model.DefaultWhisperConfig()
	want.DModel, want.EncoderLayers, want.EncoderAttentionHeads, want.EncoderFFNDim = 32, 2, 2, 64
	want.MaxSourcePositions, want.DecoderLayers, want.VocabSize = 50, 1, 64
	if cfg != want {
		t.Errorf("got %+v, want %+v", cfg, want)
	}
	for _, bad := range []string{
		`{"d_model": 30, "encoder_attention_heads": 4}`,
		`{"activation_function": "relu"}`,
		`{"max_source_positions": 0}`,
		`{"d_model": "x"}`,
	} {
		if _, err := model.ParseWhisperConfig([]byte(bad)); err == nil {
			t.Errorf("ParseWhisperConfig(%s): no error", bad)
		}
	}
}

func TestNewWhisperEncoderWeightErrors(t *testing.T) {
	t.Parallel()
	cfg := model.WhisperConfig{ActivationFunction: "gelu", DModel: 8, EncoderAttentionHeads: 2, EncoderFFNDim: 16,
		EncoderLayers: 1, MaxSourcePositions: 4, NumMelBins: 3}
	b, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	src := randomWhisperWeights(cfg, 1)
	delete(src, "encoder.layers.0.fc2.bias")
	_, err = model.NewWhisperEncoder(b, cfg, src)
	if err == nil || !strings.Contains(err.Error(), "encoder.layers.0.fc2.bias") {
		t.Errorf("missing weight: error %v, want one naming encoder.layers.0.fc2.bias", err)
	}

	src = randomWhisperWeights(cfg, 1)
	w := src["encoder.conv2.weight"]
	w.shape = []int{8, 3, 8}
	src["encoder.conv2.weight"] = w
	_, err = model.NewWhisperEncoder(b, cfg, src)
	if err == nil || !strings.Contains(err.Error(), "encoder.conv2.weight") || !strings.Contains(err.Error(), "[8 8 3]") {
		t.Errorf("misshapen weight: error %v, want one naming encoder.conv2.weight and [8 8 3]", err)
	}

	// Through a prefix, as the Hugging Face checkpoint names them.
	hf := whisperMapSource{}
	for k, v := range randomWhisperWeights(cfg, 1) {
		hf["model."+k] = v
	}
	enc, err := model.NewWhisperEncoder(b, cfg, model.WithPrefix(hf, "model."))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	if _, err := enc.Forward(kernels.Upload(b, make([]float32, 3*7), 1, 3, 7)); err == nil {
		t.Error("Forward on 7 mel frames (want 8): no error")
	}
	states, err := enc.Forward(kernels.Upload(b, make([]float32, 2*3*8), 2, 3, 8))
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 2 || !slices.Equal(states[1].Shape(), []int{2, 4, 8}) {
		t.Errorf("Forward: %d states, last %v; want 2 of [2 4 8]", len(states), states[len(states)-1].Shape())
	}
}

// The batch dimension must not mix entries: a batch of two gives the same
// states as two runs of one.
func TestWhisperEncoderBatchConsistent(t *testing.T) {
	t.Parallel()
	cfg := model.WhisperConfig{ActivationFunction: "gelu", DModel: 24, EncoderAttentionHeads: 3, EncoderFFNDim: 40,
		EncoderLayers: 2, MaxSourcePositions: 10, NumMelBins: 5}
	b, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	enc, err := model.NewWhisperEncoder(b, cfg, randomWhisperWeights(cfg, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	mel := make([]float32, 2*5*20)
	for i := range mel {
		mel[i] = float32(rng.NormFloat64())
	}
	both, err := enc.StackedHiddenStates([][]float32{mel[:100], mel[100:]})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := enc.Forward(kernels.Upload(b, mel, 2, 5, 20))
	if err != nil {
		t.Fatal(err)
	}
	s, d, p := cfg.HiddenStates(), cfg.DModel, cfg.MaxSourcePositions
	for h, st := range batch {
		got := make([]float32, st.Len())
		if err := b.Download(got, st); err != nil {
			t.Fatal(err)
		}
		for n := range 2 {
			for tt := range p {
				for c := range d {
					a := got[(n*p+tt)*d+c]
					w := both[((n*p+tt)*s+h)*d+c]
					if diff := a - w; diff > 1e-5 || diff < -1e-5 {
						t.Fatalf("state %d entry %d pos %d ch %d: batch %g, single %g", h, n, tt, c, a, w)
					}
				}
			}
		}
	}
}

// BenchmarkWhisperEncoderTiny runs the full-size whisper-tiny encoder (random
// weights) on one 30 s segment.
func BenchmarkWhisperEncoderTiny(b *testing.B) {
	cfg := model.DefaultWhisperConfig()
	be, err := cpu.New(cpu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	enc, err := model.NewWhisperEncoder(be, cfg, randomWhisperWeights(cfg, 3))
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	mel := make([]float32, cfg.NumMelBins*cfg.MelFrames())
	for b.Loop() {
		if _, err := enc.StackedHiddenStates([][]float32{mel}); err != nil {
			b.Fatal(err)
		}
	}
}

// The whole audio path at whisper-tiny's full size (random weights): 3 s of
// audio at 25 fps → 75 frames of 50×384 tokens.
func TestAudioPathFullSize(t *testing.T) {
	if testing.Short() {
		t.Skip("full-size encoder in -short mode")
	}
	t.Parallel()
	cfg := model.DefaultWhisperConfig()
	b, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	enc, err := model.NewWhisperEncoder(b, cfg, randomWhisperWeights(cfg, 4))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	mel, err := media.NewLogMel(media.WhisperLogMelConfig())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	wave := make([]float32, 3*16000)
	for i := range wave {
		wave[i] = float32(0.3*math.Sin(float64(i)*0.05) + 0.01*rng.NormFloat64())
	}
	segs := mel.Segments(wave)
	stacked, err := enc.StackedHiddenStates(segs)
	if err != nil {
		t.Fatal(err)
	}
	frames := len(segs) * cfg.MaxSourcePositions
	prompts, n, err := model.AudioPrompts(stacked, frames, cfg.HiddenStates(), cfg.DModel, len(wave), model.DefaultAudioChunkParams())
	if err != nil {
		t.Fatal(err)
	}
	if n != 75 || len(prompts) != 75*50*384 {
		t.Fatalf("%d frames, %d values; want 75 × 50 × 384", n, len(prompts))
	}
	for i, v := range prompts {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("value %d is %g", i, v)
		}
	}
}
