package media_test

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"

	"github.com/avatargen/musetalk/media"
)

// logmelGolden is one golden case: the JSON beside it and the tensors of its
// safetensors file, converted to float64.
type logmelGolden struct {
	meta    map[string]json.RawMessage
	tensors map[string]logmelTensor
	atol    map[string]float64
}

type logmelTensor struct {
	shape []int
	data  []float64
}

// loadLogmelGolden reads case name, skipping the test if its files are missing.
func loadLogmelGolden(t *testing.T, name string) *logmelGolden {
	t.Helper()
	c := golden.Load(t, name)
	g := &logmelGolden{meta: c.Meta, atol: c.Atol, tensors: map[string]logmelTensor{}}
	for k, v := range c.AllFloat64(t) {
		g.tensors[k] = logmelTensor{shape: v.Shape, data: v.Data}
	}
	return g
}

func (g *logmelGolden) tensor(t *testing.T, name string) logmelTensor {
	t.Helper()
	x, ok := g.tensors[name]
	if !ok {
		t.Fatalf("golden tensor %s missing", name)
	}
	return x
}

func (g *logmelGolden) float32s(t *testing.T, name string) []float32 {
	x := g.tensor(t, name)
	out := make([]float32, len(x.data))
	for i, v := range x.data {
		out[i] = float32(v)
	}
	return out
}

// compare checks got (shape) against the golden tensor name within atol and
// logs the error.
func (g *logmelGolden) compare(t *testing.T, name string, got []float32, shape []int, atol float64) {
	t.Helper()
	want := g.tensor(t, name)
	if !slices.Equal(want.shape, shape) {
		t.Errorf("%s: shape %v, golden %v", name, shape, want.shape)
		return
	}
	worst, at := 0.0, 0
	for i, v := range want.data {
		d := math.Abs(float64(got[i]) - v)
		if d > worst || math.IsNaN(d) {
			worst, at = d, i
		}
	}
	t.Logf("%s: max abs err %.3g (atol %.3g)", name, worst, atol)
	if !(worst <= atol) {
		t.Errorf("%s: max abs err %.3g at %d (got %g, want %g) > atol %.3g", name, worst, at, got[at], want.data[at], atol)
	}
}

// outputs lists the tensors named output.* in the file.
func (g *logmelGolden) outputs() []string {
	var out []string
	for k := range g.tensors {
		if strings.HasPrefix(k, "output.") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
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
		if !slices.Equal(ref.shape, []int{bins, cfg.NMels}) {
			t.Fatalf("mel_filters: golden shape %v, want [%d %d]", ref.shape, bins, cfg.NMels)
		}
		worst := 0.0
		for i, v := range ref.data {
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
		for i, v := range ref.data {
			worst = max(worst, math.Abs(w[i]-v))
		}
		t.Logf("ref.hann_window_periodic: max abs err %.3g", worst)
		// The golden window is torch's float32 table: a few float32 ulps.
		if len(ref.data) != len(w) || worst > 1e-6 {
			t.Errorf("hann window: %d values (golden %d), max abs err %.3g > 1e-6", len(w), len(ref.data), worst)
		}
	}

	// input.waveform is one waveform [samples] or a batch [B, samples];
	// the library treats each waveform alone (its own clamp maximum).
	in := g.tensor(t, "input.waveform")
	all := g.float32s(t, "input.waveform")
	batch := 1
	if len(in.shape) == 2 {
		batch = in.shape[0]
	} else if len(in.shape) != 1 {
		t.Fatalf("input.waveform %v: want [samples] or [B samples]", in.shape)
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
