package media

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
)

// LogMelConfig configures Whisper's log-mel front end. JSON keys are those of
// a Hugging Face preprocessor_config.json (WhisperFeatureExtractor); other
// keys, such as a stored mel_filters table, are ignored (the filters are
// recomputed).
type LogMelConfig struct {
	// ChunkLength is the window in seconds the default call pads or
	// truncates to (30).
	ChunkLength int `json:"chunk_length"`
	// HopLength is the STFT hop in samples (160).
	HopLength int `json:"hop_length"`
	// NFFT is the STFT size and window length in samples (400).
	NFFT int `json:"n_fft"`
	// NMels is the number of mel channels (feature_size, 80).
	NMels int `json:"feature_size"`
	// PaddingValue fills samples appended up to ChunkLength seconds (0).
	PaddingValue float32 `json:"padding_value"`
	// SampleRate is the input rate in Hz (16000).
	SampleRate int `json:"sampling_rate"`
}

// WhisperLogMelConfig returns WhisperFeatureExtractor's defaults, which are
// whisper-tiny's preprocessor config: 80 mels, 16 kHz, n_fft 400, hop 160,
// 30 s chunks.
func WhisperLogMelConfig() LogMelConfig {
	return LogMelConfig{ChunkLength: 30, HopLength: 160, NFFT: 400, NMels: 80, SampleRate: 16000}
}

// ParseLogMelConfig reads a preprocessor_config.json; missing keys keep
// [WhisperLogMelConfig]'s values.
func ParseLogMelConfig(data []byte) (LogMelConfig, error) {
	cfg := WhisperLogMelConfig()
	if err := json.Unmarshal(data, &cfg); err != nil {
		return LogMelConfig{}, fmt.Errorf("log-mel config: %w", err)
	}
	return cfg, cfg.Validate()
}

// Validate reports a config the extractor cannot run.
func (c LogMelConfig) Validate() error {
	var errs []error
	if c.ChunkLength <= 0 || c.HopLength <= 0 || c.NFFT < 2 || c.NMels <= 0 || c.SampleRate <= 0 {
		errs = append(errs, fmt.Errorf("chunk_length %d, hop_length %d, n_fft %d, feature_size %d, sampling_rate %d: want positive (n_fft >= 2)",
			c.ChunkLength, c.HopLength, c.NFFT, c.NMels, c.SampleRate))
	}
	if len(errs) == 0 && c.NSamples() < max(c.NFFT/2+1, c.HopLength) {
		errs = append(errs, fmt.Errorf("a %d s chunk at %d Hz is shorter than n_fft/2+1 (%d) or one hop (%d)",
			c.ChunkLength, c.SampleRate, c.NFFT/2+1, c.HopLength))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("log-mel config: %w", err)
	}
	return nil
}

// NSamples returns the samples in one chunk (n_samples, 480000).
func (c LogMelConfig) NSamples() int { return c.ChunkLength * c.SampleRate }

// MaxFrames returns the frames of one chunk (nb_max_frames, 3000).
func (c LogMelConfig) MaxFrames() int { return c.NSamples() / c.HopLength }

// LogMel computes Whisper's log-mel spectrogram exactly as transformers
// 4.39.2's WhisperFeatureExtractor does (its torch path), in float64:
//
//  1. STFT with a periodic Hann window of n_fft samples, hop hop_length,
//     centred frames (reflect padding of n_fft/2 on both sides);
//  2. power |X|², the last frame dropped;
//  3. the Slaney-style mel filter bank (Slaney mel scale and area
//     normalisation, 0–8000 Hz whatever the sampling rate, as transformers'
//     mel_filter_bank builds it);
//  4. log10(max(·, 1e-10)), then max(·, global max − 8), then (x + 4)/4.
//
// A LogMel is safe for concurrent use.
type LogMel struct {
	cfg     LogMelConfig
	window  []float64
	filters []float64 // [bins, mels], as transformers stores mel_filters
	// Non-zero range [lo[m], hi[m]) of bins of mel filter m.
	lo, hi []int
	fft    *fftPlan
}

// NewLogMel validates cfg and precomputes the window and filters.
func NewLogMel(cfg LogMelConfig) (*LogMel, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bins := cfg.NFFT/2 + 1
	m := &LogMel{
		cfg:     cfg,
		window:  HannWindow(cfg.NFFT),
		filters: MelFilterBank(bins, cfg.NMels, 0, 8000, cfg.SampleRate),
		lo:      make([]int, cfg.NMels),
		hi:      make([]int, cfg.NMels),
		fft:     newFFTPlan(cfg.NFFT),
	}
	for j := range cfg.NMels {
		m.lo[j], m.hi[j] = bins, 0
		for k := range bins {
			if m.filters[k*cfg.NMels+j] != 0 {
				m.lo[j] = min(m.lo[j], k)
				m.hi[j] = k + 1
			}
		}
		if m.hi[j] == 0 {
			m.lo[j] = 0
		}
	}
	return m, nil
}

// Config returns the extractor's config.
func (m *LogMel) Config() LogMelConfig { return m.cfg }

// Filters returns the mel filter bank, [n_fft/2+1, n_mels] row-major (the
// layout of transformers' mel_filters). The caller must not modify it.
func (m *LogMel) Filters() []float64 { return m.filters }

// Window returns the periodic Hann window. The caller must not modify it.
func (m *LogMel) Window() []float64 { return m.window }

// Features is the extractor's default call: samples (mono, at SampleRate)
// are truncated or padded with PaddingValue to ChunkLength seconds, and the
// result is [n_mels, MaxFrames()] row-major (input_features[0]).
func (m *LogMel) Features(samples []float32) []float32 {
	n := m.cfg.NSamples()
	x := make([]float64, n)
	for i := range x {
		if i < len(samples) {
			x[i] = float64(samples[i])
		} else {
			x[i] = float64(m.cfg.PaddingValue)
		}
	}
	out, _ := m.compute(x)
	return out
}

// FeaturesLongest is the call with padding="longest" on one waveform:
// samples are truncated to ChunkLength seconds but not padded. It returns
// [n_mels, frames] row-major with frames = len/hop_length. The reflect
// padding needs more than n_fft/2 samples.
func (m *LogMel) FeaturesLongest(samples []float32) ([]float32, int, error) {
	n := min(len(samples), m.cfg.NSamples())
	if n <= m.cfg.NFFT/2 || n/m.cfg.HopLength == 0 {
		return nil, 0, fmt.Errorf("log-mel: %d samples, want more than %d and at least one hop (%d)", n, m.cfg.NFFT/2, m.cfg.HopLength)
	}
	x := make([]float64, n)
	for i := range x {
		x[i] = float64(samples[i])
	}
	out, frames := m.compute(x)
	return out, frames, nil
}

// Segments is MuseTalk's AudioProcessor.get_audio_feature: the waveform is
// cut into consecutive ChunkLength-second segments (the last one shorter)
// and each goes through [LogMel.Features] (so each is padded to a full chunk
// and clamped at its own maximum). Each result is [n_mels, MaxFrames()]. An
// empty waveform gives no segment.
func (m *LogMel) Segments(samples []float32) [][]float32 {
	n := m.cfg.NSamples()
	var segs [][]float32
	for i := 0; i < len(samples); i += n {
		segs = append(segs, m.Features(samples[i:min(i+n, len(samples))]))
	}
	return segs
}

// compute runs the algorithm on x (already padded/truncated; len(x) >
// n_fft/2) and returns [n_mels, len(x)/hop] and the number of frames.
func (m *LogMel) compute(x []float64) ([]float32, int) {
	c := m.cfg
	half := c.NFFT / 2
	// Reflect padding (numpy/torch "reflect": the edge sample is not
	// repeated).
	padded := make([]float64, len(x)+2*half)
	copy(padded[half:], x)
	for i := 1; i <= half; i++ {
		padded[half-i] = x[reflectIndex(i, len(x))]
		padded[half+len(x)-1+i] = x[reflectIndex(len(x)-1+i, len(x))]
	}
	frames := len(x) / c.HopLength // STFT gives frames+1; the last is dropped
	mel := make([]float64, c.NMels*frames)

	workers := min(runtime.GOMAXPROCS(0), (frames+63)/64)
	var wg sync.WaitGroup
	per := (frames + workers - 1) / workers
	for w := range workers {
		lo, hi := w*per, min((w+1)*per, frames)
		if lo >= hi {
			break
		}
		wg.Go(func() { m.melFrames(mel, padded, frames, lo, hi) })
	}
	wg.Wait()

	maxv := math.Inf(-1)
	for i, v := range mel {
		v = math.Log10(math.Max(v, 1e-10))
		mel[i] = v
		maxv = math.Max(maxv, v)
	}
	out := make([]float32, len(mel))
	floor := maxv - 8
	for i, v := range mel {
		out[i] = float32((math.Max(v, floor) + 4) / 4)
	}
	return out, frames
}

// melFrames computes the mel power of frames [lo, hi) into mel [n_mels,
// frames]. Two real frames share one complex FFT.
func (m *LogMel) melFrames(mel, padded []float64, frames, lo, hi int) {
	c := m.cfg
	nfft, bins := c.NFFT, c.NFFT/2+1
	in := make([]complex128, nfft)
	spec := make([]complex128, nfft)
	scratch := make([]complex128, m.fft.scratchLen())
	p1, p2 := make([]float64, bins), make([]float64, bins)
	for t := lo; t < hi; t += 2 {
		a := padded[t*c.HopLength : t*c.HopLength+nfft]
		var b []float64
		if t+1 < hi {
			b = padded[(t+1)*c.HopLength : (t+1)*c.HopLength+nfft]
		}
		for i, w := range m.window {
			im := 0.0
			if b != nil {
				im = b[i] * w
			}
			in[i] = complex(a[i]*w, im)
		}
		m.fft.transform(spec, in, scratch)
		// Z = A + iB with A, B the spectra of the real frames:
		// A[k] = (Z[k] + conj(Z[n−k]))/2, B[k] = (Z[k] − conj(Z[n−k]))/(2i).
		for k := range bins {
			z, zc := spec[k], spec[(nfft-k)%nfft]
			zc = complex(real(zc), -imag(zc))
			fa := (z + zc) / 2
			fb := (z - zc) / complex(0, 2)
			p1[k] = real(fa)*real(fa) + imag(fa)*imag(fa)
			p2[k] = real(fb)*real(fb) + imag(fb)*imag(fb)
		}
		m.applyFilters(mel, p1, frames, t)
		if b != nil {
			m.applyFilters(mel, p2, frames, t+1)
		}
	}
}

func (m *LogMel) applyFilters(mel, power []float64, frames, t int) {
	nm := m.cfg.NMels
	for j := range nm {
		s := 0.0
		for k := m.lo[j]; k < m.hi[j]; k++ {
			s += m.filters[k*nm+j] * power[k]
		}
		mel[j*frames+t] = s
	}
}

// reflectIndex maps index i (possibly outside [0, n)) to its mirror without
// repeating the edge sample, for one reflection (|overshoot| < n).
func reflectIndex(i, n int) int {
	if i < 0 {
		return -i
	}
	if i >= n {
		return 2*(n-1) - i
	}
	return i
}

// HannWindow returns the periodic Hann window of length n, torch.hann_window(n):
// 0.5 − 0.5·cos(2πi/n).
func HannWindow(n int) []float64 {
	w := make([]float64, n)
	for i := range w {
		w[i] = 0.5 - 0.5*math.Cos(2*math.Pi*float64(i)/float64(n))
	}
	return w
}

// MelFilterBank returns transformers' mel_filter_bank(bins, mels, fmin, fmax,
// sampleRate, norm="slaney", mel_scale="slaney"): triangular filters between
// mels+2 points evenly spaced on the Slaney mel scale, each scaled by
// 2/(f[m+2] − f[m]), evaluated at bins frequencies evenly spaced from 0 to
// sampleRate/2 (integer division, as the library does). Shape [bins, mels]
// row-major.
func MelFilterBank(bins, mels int, fmin, fmax float64, sampleRate int) []float64 {
	mmin, mmax := hzToMelSlaney(fmin), hzToMelSlaney(fmax)
	pts := linspace(mmin, mmax, mels+2)
	for i, v := range pts {
		pts[i] = melToHzSlaney(v)
	}
	fft := linspace(0, float64(sampleRate/2), bins)
	out := make([]float64, bins*mels)
	for k, f := range fft {
		for j := range mels {
			down := -(pts[j] - f) / (pts[j+1] - pts[j])
			up := (pts[j+2] - f) / (pts[j+2] - pts[j+1])
			v := math.Max(0, math.Min(down, up))
			out[k*mels+j] = v * (2 / (pts[j+2] - pts[j]))
		}
	}
	return out
}

// linspace is numpy.linspace(start, stop, n) (endpoint included).
func linspace(start, stop float64, n int) []float64 {
	out := make([]float64, n)
	if n == 1 {
		out[0] = start
		return out
	}
	step := (stop - start) / float64(n-1)
	for i := range out {
		out[i] = float64(i)*step + start
	}
	out[n-1] = stop
	return out
}

const (
	slaneyMinLogHz  = 1000.0
	slaneyMinLogMel = 15.0
)

var slaneyLogStep = 27.0 / math.Log(6.4)

func hzToMelSlaney(f float64) float64 {
	if f >= slaneyMinLogHz {
		return slaneyMinLogMel + math.Log(f/slaneyMinLogHz)*slaneyLogStep
	}
	return 3 * f / 200
}

func melToHzSlaney(m float64) float64 {
	if m >= slaneyMinLogMel {
		return slaneyMinLogHz * math.Exp(math.Log(6.4)/27*(m-slaneyMinLogMel))
	}
	return 200 * m / 3
}
