package model_test

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/model"
)

// audioGolden is one golden case: the JSON beside it and its tensors as float64.
type audioGolden struct {
	meta    map[string]json.RawMessage
	tensors golden.Set
	atol    map[string]float64
}

// loadAudioGolden reads case name, skipping the test if its files are missing.
func loadAudioGolden(t *testing.T, name string) *audioGolden {
	t.Helper()
	c := golden.Load(t, name)
	return &audioGolden{meta: c.Meta, atol: c.Atol, tensors: c.Set(t)}
}

func (g *audioGolden) tensor(t *testing.T, name string) golden.Tensor64 {
	return g.tensors.Get(t, name)
}
func (g *audioGolden) float32s(t *testing.T, name string) []float32 {
	return g.tensors.Float32s(t, name)
}
func (g *audioGolden) outputs() []string { return g.tensors.Outputs() }
func (g *audioGolden) compare(t *testing.T, name string, got []float32, shape []int, atol float64) {
	t.Helper()
	g.tensors.Compare(t, name, got, shape, atol)
}

// compareOn judges an output computed on nb: within atol on an fp32
// backend, by the fp16 rule with relative allowance r on an fp16 one (see
// model.F16Bound).
func (g *audioGolden) compareOn(t *testing.T, nb model.NamedBackend, r float64, name string, got []float32, shape []int, atol float64) {
	t.Helper()
	if nb.Precision == kernels.F16 {
		ref := g.tensor(t, name)
		model.CompareF16(t, name, got, shape, ref.Data, ref.Shape, atol, r)
		return
	}
	g.compare(t, name, got, shape, atol)
}

// Tensor makes a golden file a weight source for the model constructors.
func (g *audioGolden) Tensor(name string) ([]float32, []int, error) {
	x, ok := g.tensors[name]
	if !ok {
		return nil, nil, fmt.Errorf("tensor %s not in the golden file", name)
	}
	out := make([]float32, len(x.Data))
	for i, v := range x.Data {
		out[i] = float32(v)
	}
	return out, slices.Clone(x.Shape), nil
}

// atolFor returns the suggested tolerance of name; the test fails without
// one.
func (g *audioGolden) atolFor(t *testing.T, name string) float64 {
	t.Helper()
	atol, ok := g.atol[name]
	if !ok {
		t.Fatalf("%s: no suggested_tolerance in the JSON", name)
	}
	return atol
}

// compareOptional compares an intermediate when the JSON suggests a
// tolerance for it and only logs the error otherwise.
func (g *audioGolden) compareOptional(t *testing.T, name string, got []float32, shape []int) {
	t.Helper()
	if _, ok := g.tensors[name]; !ok {
		return
	}
	if atol, ok := g.atol[name]; ok {
		g.compare(t, name, got, shape, atol)
		return
	}
	g.compare(t, name, got, shape, math.Inf(1))
}

func (g *audioGolden) whisperConfig(t *testing.T) model.WhisperConfig {
	t.Helper()
	raw, ok := g.meta["config_full"]
	if !ok {
		t.Fatal("JSON has no config_full")
	}
	cfg, err := model.ParseWhisperConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func download(t *testing.T, b kernels.Backend, x *kernels.Tensor) []float32 {
	t.Helper()
	out := make([]float32, x.Len())
	if err := b.Download(out, x); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGoldenWhisperEncoder(t *testing.T) {
	t.Parallel()
	for _, nb := range model.GoldenBackends {
		t.Run(nb.Name, func(t *testing.T) { testGoldenWhisperEncoder(t, nb) })
	}
}

func testGoldenWhisperEncoder(t *testing.T, nb model.NamedBackend) {
	g := loadAudioGolden(t, "c_whisper_encoder")
	b := nb.New(t)
	cfg := g.whisperConfig(t)
	enc, err := model.NewWhisperEncoder(b, cfg, g)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	in := g.tensor(t, "input.input_features")
	mel := kernels.Upload(b, g.float32s(t, "input.input_features"), in.Shape...)
	states, err := enc.Forward(mel)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != cfg.HiddenStates() {
		t.Fatalf("%d hidden states, want %d", len(states), cfg.HiddenStates())
	}
	outs := g.outputs()
	if len(outs) == 0 {
		t.Fatal("no output.* tensors")
	}
	for _, name := range outs {
		var i int
		switch {
		case name == "output.last_hidden_state":
			i = cfg.EncoderLayers
		case strings.HasPrefix(name, "output.hidden_states."):
			var err error
			i, err = strconv.Atoi(strings.TrimPrefix(name, "output.hidden_states."))
			if err != nil || i < 0 || i >= len(states) {
				t.Errorf("%s: no such hidden state (have %d)", name, len(states))
				continue
			}
		default:
			t.Errorf("%s: unknown output", name)
			continue
		}
		g.compareOn(t, nb, model.F16RelWhisper, name, download(t, b, states[i]), states[i].Shape(), g.atolFor(t, name))
	}
}

func TestGoldenPositionalEncoding(t *testing.T) {
	t.Parallel()
	g := loadAudioGolden(t, "e_positional_encoding")
	var cfg struct {
		DModel int `json:"d_model"`
		MaxLen int `json:"max_len"`
	}
	cfg.DModel, cfg.MaxLen = 384, 5000 // the module's defaults
	if raw, ok := g.meta["config_full"]; ok {
		if err := json.Unmarshal(raw, &cfg); err != nil {
			t.Fatal(err)
		}
	}
	b := dmBackend(t)
	pe, err := model.NewPositionalEncoding(b, cfg.DModel, cfg.MaxLen)
	if err != nil {
		t.Fatal(err)
	}
	defer pe.Close()
	in := g.tensor(t, "input.x")
	x := kernels.Upload(b, g.float32s(t, "input.x"), in.Shape...)
	outs := g.outputs()
	if len(outs) == 0 {
		t.Fatal("no output.* tensors")
	}
	for _, name := range outs {
		if name != "output.x_plus_pe" {
			t.Errorf("%s: unknown output", name)
			continue
		}
		y := b.Alloc(x.Shape()...)
		if err := pe.Apply(y, x); err != nil {
			t.Fatal(err)
		}
		g.compare(t, name, download(t, b, y), y.Shape(), g.atolFor(t, name))
	}
	if ref, ok := g.tensors["ref.pe_first_T"]; ok {
		n := ref.Shape[len(ref.Shape)-2]
		table, err := model.PositionalEncodingTable(n, cfg.DModel)
		if err != nil {
			t.Fatal(err)
		}
		g.compare(t, "ref.pe_first_T", table, []int{1, n, cfg.DModel}, g.atolFor(t, "ref.pe_first_T"))
	}
}

func TestGoldenAudioChunks(t *testing.T) {
	t.Parallel()
	for _, nb := range model.GoldenBackends {
		t.Run(nb.Name, func(t *testing.T) { testGoldenAudioPath(t, nb, "f_musetalk_audio_chunks") })
	}
}

func TestGoldenAudioReal(t *testing.T) {
	t.Parallel()
	for _, nb := range model.GoldenBackends {
		t.Run(nb.Name, func(t *testing.T) { testGoldenAudioPath(t, nb, "j_musetalk_audio_real") })
	}
}

// testGoldenAudioPath checks MuseTalk v1.5's audio path (cases f and j):
// waveform → 30 s log-mel segments → Whisper hidden states stacked → one
// window per video frame. It runs twice: from the waveform (our log-mel),
// and from the golden intermediate.input_features, when stored (the encoder
// and chunking alone). The log-mel runs on the host, so its features are
// held to their fp32 atol on every backend; on an fp16 backend the stacked
// hidden states (an intermediate) are not compared and the audio prompts
// are judged by the fp16 rule (see model.F16Bound).
func testGoldenAudioPath(t *testing.T, nb model.NamedBackend, file string) {
	g := loadAudioGolden(t, file)
	b := nb.New(t)
	cfg := g.whisperConfig(t)
	var params struct {
		FPS            int `json:"fps"`
		PadLeft        int `json:"audio_padding_length_left"`
		PadRight       int `json:"audio_padding_length_right"`
		LibrosaLength  int `json:"librosa_length"`
		SamplingRate   int `json:"sampling_rate"`
		NumFrames      int `json:"num_frames"`
		ActualLength   int `json:"actual_length"`
		ExpectedFrames int `json:"-"`
	}
	if err := json.Unmarshal(g.meta["params"], &params); err != nil {
		t.Fatalf("params: %v", err)
	}
	if params.SamplingRate != model.AudioSampleRate {
		t.Fatalf("sampling_rate %d, the audio path runs at %d", params.SamplingRate, model.AudioSampleRate)
	}
	wave := g.float32s(t, "input.waveform")
	if params.LibrosaLength != 0 && params.LibrosaLength != len(wave) {
		t.Fatalf("librosa_length %d, waveform has %d samples", params.LibrosaLength, len(wave))
	}
	chunk := model.AudioChunkParams{FPS: params.FPS, PadLeft: params.PadLeft, PadRight: params.PadRight}
	if params.NumFrames != 0 && chunk.NumFrames(len(wave)) != params.NumFrames {
		t.Errorf("NumFrames = %d, JSON says %d", chunk.NumFrames(len(wave)), params.NumFrames)
	}

	// MuseTalk uses whisper-tiny's preprocessor config (the extractor's
	// defaults), with as many mels as the encoder takes.
	melCfg := media.WhisperLogMelConfig()
	melCfg.NMels = cfg.NumMelBins
	mel, err := media.NewLogMel(melCfg)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := model.NewWhisperEncoder(b, cfg, g)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()

	run := func(t *testing.T, segs [][]float32) {
		frames := len(segs) * cfg.MaxSourcePositions
		stacked, err := enc.StackedHiddenStates(segs)
		if err != nil {
			t.Fatal(err)
		}
		if nb.Precision != kernels.F16 {
			g.compareOptional(t, "intermediate.hidden_states_stacked", stacked,
				[]int{1, frames, cfg.HiddenStates(), cfg.DModel})
		}
		prompts, n, err := model.AudioPrompts(stacked, frames, cfg.HiddenStates(), cfg.DModel, len(wave), chunk)
		if err != nil {
			t.Fatal(err)
		}
		outs := g.outputs()
		if len(outs) == 0 {
			t.Fatal("no output.* tensors")
		}
		for _, name := range outs {
			if name != "output.audio_prompts" {
				t.Errorf("%s: unknown output", name)
				continue
			}
			g.compareOn(t, nb, model.F16RelWhisper, name, prompts, []int{n, chunk.Window() * cfg.HiddenStates(), cfg.DModel}, g.atolFor(t, name))
		}
	}

	t.Run("waveform", func(t *testing.T) {
		segs := mel.Segments(wave)
		if ref, ok := g.tensors["intermediate.input_features"]; ok && len(segs) == ref.Shape[0] {
			var all []float32
			for _, s := range segs {
				all = append(all, s...)
			}
			mc := mel.Config()
			g.compareOptional(t, "intermediate.input_features", all, []int{len(segs), mc.NMels, mc.MaxFrames()})
		}
		run(t, segs)
	})
	t.Run("intermediate_features", func(t *testing.T) {
		ref, ok := g.tensors["intermediate.input_features"]
		if !ok {
			t.Skip("no intermediate.input_features")
		}
		per := cfg.NumMelBins * cfg.MelFrames()
		if len(ref.Data)%per != 0 {
			t.Fatalf("intermediate.input_features %v is not a stack of [%d %d] segments", ref.Shape, cfg.NumMelBins, cfg.MelFrames())
		}
		data := g.float32s(t, "intermediate.input_features")
		var segs [][]float32
		for i := 0; i < len(data); i += per {
			segs = append(segs, data[i:i+per])
		}
		run(t, segs)
	})
}
