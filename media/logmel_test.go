package media

import (
	"math"
	"math/cmplx"
	"math/rand/v2"
	"testing"
)

func TestFFTMatchesDFT(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 25, 30, 49, 77, 100, 121, 400, 512} {
		in := make([]complex128, n)
		for i := range in {
			in[i] = complex(rng.NormFloat64(), rng.NormFloat64())
		}
		p := newFFTPlan(n)
		out := make([]complex128, n)
		p.transform(out, in, make([]complex128, p.scratchLen()))
		worst := 0.0
		for k := range n {
			var want complex128
			for j := range n {
				want += in[j] * cmplx.Exp(complex(0, -2*math.Pi*float64(j*k%n)/float64(n)))
			}
			worst = max(worst, cmplx.Abs(out[k]-want))
		}
		if worst > 1e-9*float64(n) {
			t.Errorf("n=%d (factors %v): max |fft−dft| = %g", n, p.factors, worst)
		}
	}
}

func TestReflectIndex(t *testing.T) {
	t.Parallel()
	// numpy.pad([0 1 2 3 4], 3, mode="reflect") = 3 2 1 | 0 1 2 3 4 | 3 2 1
	want := []int{3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1}
	for i, w := range want {
		if got := reflectIndex(i-3, 5); got != w {
			t.Errorf("reflectIndex(%d, 5) = %d, want %d", i-3, got, w)
		}
	}
}

func TestLogMelShapesAndErrors(t *testing.T) {
	t.Parallel()
	m, err := NewLogMel(WhisperLogMelConfig())
	if err != nil {
		t.Fatal(err)
	}
	c := m.Config()
	if c.NSamples() != 480000 || c.MaxFrames() != 3000 {
		t.Fatalf("NSamples %d MaxFrames %d, want 480000 3000", c.NSamples(), c.MaxFrames())
	}
	if got := len(m.Features(nil)); got != 80*3000 {
		t.Errorf("Features(nil): %d values, want %d", got, 80*3000)
	}
	if _, _, err := m.FeaturesLongest(make([]float32, 200)); err == nil {
		t.Error("FeaturesLongest(200 samples): no error; reflect padding needs > 200")
	}
	if segs := m.Segments(make([]float32, 480001)); len(segs) != 2 {
		t.Errorf("Segments(480001 samples): %d segments, want 2", len(segs))
	}
	if _, err := ParseLogMelConfig([]byte(`{"n_fft": 0}`)); err == nil {
		t.Error("ParseLogMelConfig(n_fft 0): no error")
	}
	cfg, err := ParseLogMelConfig([]byte(`{"feature_size": 128, "mel_filters": [[0.1]]}`))
	if err != nil || cfg.NMels != 128 || cfg.NFFT != 400 {
		t.Errorf("ParseLogMelConfig: %+v, %v", cfg, err)
	}
}

func BenchmarkLogMel30s(b *testing.B) {
	m, err := NewLogMel(WhisperLogMelConfig())
	if err != nil {
		b.Fatal(err)
	}
	x := make([]float32, 480000)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range x {
		x[i] = float32(rng.NormFloat64() * 0.1)
	}
	for b.Loop() {
		m.Features(x)
	}
}
