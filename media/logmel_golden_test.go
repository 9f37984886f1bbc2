package media_test

import (
	"encoding/json"
	"math"
	"slices"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"

	"github.com/avatargen/musetalk/media"
)

// logmelGolden is one golden case: the JSON beside it and its tensors as float64.
type logmelGolden struct {
	meta    map[string]json.RawMessage
	tensors golden.Set
	atol    map[string]float64
}

// loadLogmelGolden reads case name, skipping the test if its files are missing.
func loadLogmelGolden(t *testing.T, name string) *logmelGolden {
	t.Helper()
	c := golden.Load(t, name)
	return &logmelGolden{meta: c.Meta, atol: c.Atol, tensors: c.Set(t)}
}

func (g *logmelGolden) tensor(t *testing.T, name string) golden.Tensor64 {
	return g.tensors.Get(t, name)
}
func (g *logmelGolden) float32s(t *testing.T, name string) []float32 {
	return g.tensors.Float32s(t, name)
}
func (g *logmelGolden) outputs() []string { return g.tensors.Outputs() }
func (g *logmelGolden) compare(t *testing.T, name string, got []float32, shape []int, atol float64) {
	t.Helper()
	g.tensors.Compare(t, name, got, shape, atol)
}

func TestGoldenWhisperFeatures(t *testing.T) {
	t.Parallel()
	g := loadLogmelGolden(t, "d_whisper_features")
	cfg := media.WhisperLogMelConfig()
	if raw, ok := g.meta["config_full"]; ok {
		// config_full is the extractor's to_dict(); "mel_filters" is a note.
		var err error
		if cfg, err = media.ParseLogMelConfig(raw); err != nil {
			t.Fatal(err)
		}
	}
	m, err := media.NewLogMel(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// The helper tables: filters and window as the library built them.
	if ref, ok := g.tensors["mel_filters"]; ok {
		filters := m.Filters()
		bins := cfg.NFFT/2 + 1
		if !slices.Equal(ref.Shape, []int{bins, cfg.NMels}) {
			t.Fatalf("mel_filters: golden shape %v, want [%d %d]", ref.Shape, bins, cfg.NMels)
		}
		worst := 0.0
		for i, v := range ref.Data {
			worst = max(worst, math.Abs(filters[i]-v))
		}
		t.Logf("mel_filters: max abs err %.3g", worst)
		if worst > 1e-9 {
			t.Errorf("mel_filters: max abs err %.3g > 1e-9", worst)
		}
	}
	if ref, ok := g.tensors["ref.hann_window_periodic"]; ok {
		w := m.Window()
		worst := 0.0
		for i, v := range ref.Data {
			worst = max(worst, math.Abs(w[i]-v))
		}
		t.Logf("ref.hann_window_periodic: max abs err %.3g", worst)
		// The golden window is torch's float32 table: a few float32 ulps.
		if len(ref.Data) != len(w) || worst > 1e-6 {
			t.Errorf("hann window: %d values (golden %d), max abs err %.3g > 1e-6", len(w), len(ref.Data), worst)
		}
	}

	// input.waveform is one waveform [samples] or a batch [B, samples];
	// the library treats each waveform alone (its own clamp maximum).
	in := g.tensor(t, "input.waveform")
	all := g.float32s(t, "input.waveform")
	batch := 1
	if len(in.Shape) == 2 {
		batch = in.Shape[0]
	} else if len(in.Shape) != 1 {
		t.Fatalf("input.waveform %v: want [samples] or [B samples]", in.Shape)
	}
	per := len(all) / batch
	outs := g.outputs()
	if len(outs) == 0 {
		t.Fatal("no output.* tensors")
	}
	for _, name := range outs {
		atol, ok := g.atol[name]
		if !ok {
			t.Fatalf("%s: no suggested_tolerance", name)
		}
		var got []float32
		frames := 0
		for i := range batch {
			wave := all[i*per : (i+1)*per]
			switch name {
			case "output.input_features":
				got = append(got, m.Features(wave)...)
				frames = cfg.MaxFrames()
			case "output.input_features_nopad":
				f, n, err := m.FeaturesLongest(wave)
				if err != nil {
					t.Fatal(err)
				}
				got, frames = append(got, f...), n
			default:
				t.Fatalf("%s: unknown output", name)
			}
		}
		g.compare(t, name, got, []int{batch, cfg.NMels, frames}, atol)
	}
}
