package model

import (
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/kernels/cuda"
	"github.com/avatargen/musetalk/kernels/cuda/emu"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// halfRecorder is a CPU backend made to look like a device: it implements
// kernels.HalfWeighter and counts the weights each path gets. With copies
// set, Weight copies its data as a device backend does (the CPU backend
// keeps the slice it is given).
type halfRecorder struct {
	kernels.Backend
	copies bool

	mu              sync.Mutex
	weights, halves int
}

var _ kernels.HalfWeighter = (*halfRecorder)(nil)

func newHalfRecorder(t *testing.T, copies bool) *halfRecorder {
	t.Helper()
	b, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &halfRecorder{Backend: b, copies: copies}
}

func (r *halfRecorder) Weight(data []float32, shape ...int) *kernels.Tensor {
	r.mu.Lock()
	r.weights++
	r.mu.Unlock()
	if r.copies {
		data = slices.Clone(data)
	}
	return r.Backend.Weight(data, shape...)
}

// WeightF16 widens bits into a new slice (the recorder does not keep bits,
// as the interface requires) and hands it to the CPU backend.
func (r *halfRecorder) WeightF16(bits []uint16, shape ...int) *kernels.Tensor {
	r.mu.Lock()
	r.halves++
	r.mu.Unlock()
	return kernels.WeightFromHalf(r.Backend, bits, shape...)
}

func (r *halfRecorder) counts() (weights, halves int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.weights, r.halves
}

// stSource serves a safetensors file as modeldir.Source does: Tensor
// converts to float32, TensorF16 hands out F16 tensors' bits.
type stSource struct{ f *weights.Safetensors }

func (s stSource) Tensor(name string) ([]float32, []int, error) {
	t, err := s.f.ReadFloat32(name)
	if err != nil {
		return nil, nil, err
	}
	return t.Data, t.Shape, nil
}

func (s stSource) TensorF16(name string) ([]uint16, []int, bool, error) {
	info, ok := s.f.Info(name)
	if !ok || info.DType != weights.F16 {
		return nil, nil, false, nil
	}
	bits, err := s.f.ReadF16(name)
	if err != nil {
		return nil, nil, false, err
	}
	return bits, info.Shape, true, nil
}

var _ HalfTensors = stSource{}

// writeSpecFile writes spec's tensors, seeded random values, as dtype and
// opens the file; it is closed when the test ends.
func writeSpecFile(t *testing.T, spec []TensorSpec, dtype weights.DType) stSource {
	t.Helper()
	path := filepath.Join(t.TempDir(), string(dtype)+".safetensors")
	infos := make([]weights.TensorInfo, len(spec))
	for i, s := range spec {
		infos[i] = weights.TensorInfo{Name: s.Name, DType: dtype, Shape: s.Shape}
	}
	w, err := weights.CreateSafetensors(path, infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	src := RandomTensors(spec, 3)
	for _, s := range spec {
		data, _, err := src.Tensor(s.Name)
		if err == nil {
			err = w.WriteFloat32(s.Name, data)
		}
		if err != nil {
			w.Abort()
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := weights.OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return stSource{f}
}

func tinyWhisperConfig() WhisperConfig {
	return WhisperConfig{ActivationFunction: "gelu", DModel: 8, EncoderAttentionHeads: 2, EncoderFFNDim: 16,
		EncoderLayers: 2, MaxSourcePositions: 4, NumMelBins: 3}
}

func tinyUNetConfig() weights.UNetConfig {
	c := MuseTalkUNetConfig()
	c.BlockOutChannels = []int{12, 24, 32, 32}
	c.NormNumGroups = 4
	c.AttentionHeadDim = weights.IntList{4}
	c.CrossAttentionDim = weights.IntList{24}
	return c
}

// TestHalfWeightsTakeTheF16Path: on a backend that takes half weights,
// every tensor an F16 file stores goes through WeightF16 and none through
// Weight, for the Whisper encoder (weightLoader) and the UNet
// (paramState); from an F32 file every one goes through Weight. The
// encoder built from the F16 bits computes exactly what the one built
// from the converted float32 values does.
func TestHalfWeightsTakeTheF16Path(t *testing.T) {
	t.Parallel()
	wcfg := tinyWhisperConfig()
	ucfg := tinyUNetConfig()
	uspec, err := UNetSpec(ucfg)
	if err != nil {
		t.Fatal(err)
	}
	nets := []struct {
		name  string
		spec  []TensorSpec
		build func(b kernels.Backend, src Tensors) (closer func(), err error)
	}{
		{"whisper", WhisperEncoderSpec(wcfg), func(b kernels.Backend, src Tensors) (func(), error) {
			e, err := NewWhisperEncoder(b, wcfg, src)
			if err != nil {
				return nil, err
			}
			return e.Close, nil
		}},
		{"unet", uspec, func(b kernels.Backend, src Tensors) (func(), error) {
			u, err := NewUNet(b, ucfg, src)
			if err != nil {
				return nil, err
			}
			return u.Close, nil
		}},
	}
	for _, net := range nets {
		for _, dtype := range []weights.DType{weights.F16, weights.F32} {
			src := writeSpecFile(t, net.spec, dtype)
			rec := newHalfRecorder(t, true)
			closeNet, err := net.build(rec, src)
			if err != nil {
				t.Fatalf("%s from %s: %v", net.name, dtype, err)
			}
			w, h := rec.counts()
			want := [2]int{0, len(net.spec)} // Weight, WeightF16
			if dtype == weights.F32 {
				want = [2]int{len(net.spec), 0}
			}
			if [2]int{w, h} != want {
				t.Errorf("%s from an %s file: %d Weight and %d WeightF16 calls, want %d and %d", net.name, dtype, w, h, want[0], want[1])
			}
			closeNet()
		}
	}

	// Same values either way: the F16 path against the CPU backend reading
	// the converted float32 values.
	src := writeSpecFile(t, WhisperEncoderSpec(wcfg), weights.F16)
	rec := newHalfRecorder(t, true)
	viaHalf, err := NewWhisperEncoder(rec, wcfg, src)
	if err != nil {
		t.Fatal(err)
	}
	defer viaHalf.Close()
	viaF32, err := NewWhisperEncoder(rec.Backend, wcfg, src)
	if err != nil {
		t.Fatal(err)
	}
	defer viaF32.Close()
	mel := make([]float32, 2*wcfg.NumMelBins*wcfg.MelFrames())
	for i := range mel {
		mel[i] = float32(i%7)/7 - 0.5
	}
	run := func(e *WhisperEncoder) []float32 {
		x := kernels.Upload(rec.Backend, mel, 2, wcfg.NumMelBins, wcfg.MelFrames())
		defer rec.Backend.Free(x)
		hs, err := e.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		last := hs[len(hs)-1]
		out := make([]float32, last.Len())
		if err := rec.Backend.Download(out, last); err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			rec.Backend.Free(h)
		}
		return out
	}
	if a, b := run(viaHalf), run(viaF32); !slices.Equal(a, b) {
		t.Errorf("the encoder built from F16 bits differs from the one built from their float32 values")
	}
}

// TestHalfWeightsErrorsUnchanged: a misshapen F16 tensor is reported as on
// the float32 path.
func TestHalfWeightsErrorsUnchanged(t *testing.T) {
	t.Parallel()
	cfg := tinyWhisperConfig()
	spec := WhisperEncoderSpec(cfg)
	for i := range spec {
		if spec[i].Name == "encoder.conv2.weight" {
			spec[i].Shape = []int{8, 3, 8}
		}
	}
	src := writeSpecFile(t, spec, weights.F16)
	_, errHalf := NewWhisperEncoder(newHalfRecorder(t, true), cfg, src)
	_, errF32 := NewWhisperEncoder(newHalfRecorder(t, true).Backend, cfg, src)
	if errHalf == nil || errF32 == nil || errHalf.Error() != errF32.Error() {
		t.Errorf("misshapen F16 weight: %v via WeightF16, %v via Weight; want the same error", errHalf, errF32)
	}
}

// cleanedSource hands out float32 slices (from RandomTensors), keeping
// each as an in-memory source does, and counts how many of them the
// garbage collector has reclaimed: none while the source is reachable.
type cleanedSource struct {
	src           Tensors
	kept          *[][]float32
	handed, freed *atomic.Int64
}

func newCleanedSource(src Tensors, handed, freed *atomic.Int64) cleanedSource {
	return cleanedSource{src: src, kept: new([][]float32), handed: handed, freed: freed}
}

func (s cleanedSource) Tensor(name string) ([]float32, []int, error) {
	data, shape, err := s.src.Tensor(name)
	if err != nil {
		return nil, nil, err
	}
	// At least 64 bytes, so that no slice shares a tiny-allocator block.
	out := make([]float32, len(data), max(len(data), 16))
	copy(out, data)
	s.handed.Add(1)
	*s.kept = append(*s.kept, out)
	runtime.AddCleanup(&out[:1][0], func(c *atomic.Int64) { c.Add(1) }, s.freed)
	return out, shape, nil
}

// TestDeviceModelsKeepNoHostCopies: on a backend that copies weights (a
// device), a built model keeps none of the float32 slices its source
// handed out reachable (the loaders drop the source when they finish).
func TestDeviceModelsKeepNoHostCopies(t *testing.T) {
	t.Parallel()
	wcfg := tinyWhisperConfig()
	ucfg := tinyUNetConfig()
	uspec, err := UNetSpec(ucfg)
	if err != nil {
		t.Fatal(err)
	}
	var handed, freed atomic.Int64
	rec := newHalfRecorder(t, true)
	e, err := NewWhisperEncoder(rec, wcfg, newCleanedSource(RandomTensors(WhisperEncoderSpec(wcfg), 1), &handed, &freed))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	u, err := NewUNet(rec, ucfg, newCleanedSource(RandomTensors(uspec, 2), &handed, &freed))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	deadline := time.Now().Add(5 * time.Second)
	for freed.Load() < handed.Load() && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if f, h := freed.Load(), handed.Load(); f != h {
		t.Errorf("%d of the %d float32 slices the sources handed out are still reachable after the models were built", h-f, h)
	}
	runtime.KeepAlive(e)
	runtime.KeepAlive(u)
}

// The CUDA backend takes half weights and reports its precision.
var (
	_ kernels.HalfWeighter      = (*cuda.Backend)(nil)
	_ kernels.PrecisionReporter = (*cuda.Backend)(nil)
)

// TestHalfWeightsOnEmulatedCUDA: on the CUDA backend storing fp16 (its
// kernels on the CPU emulator), the Whisper encoder built from an F16
// file through WeightF16 computes exactly what the one built from the
// file's float32 values through Weight does (rounding a half value to
// fp16 is exact).
func TestHalfWeightsOnEmulatedCUDA(t *testing.T) {
	t.Parallel()
	b, err := cuda.New(emu.New(), cuda.Options{Precision: kernels.F16})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if kernels.PrecisionOf(b) != kernels.F16 {
		t.Fatalf("PrecisionOf the fp16 CUDA backend = %v", kernels.PrecisionOf(b))
	}
	cfg := tinyWhisperConfig()
	src := writeSpecFile(t, WhisperEncoderSpec(cfg), weights.F16)
	viaHalf, err := NewWhisperEncoder(b, cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	defer viaHalf.Close()
	viaF32, err := NewWhisperEncoder(b, cfg, onlyTensors{src})
	if err != nil {
		t.Fatal(err)
	}
	defer viaF32.Close()
	mel := make([]float32, cfg.NumMelBins*cfg.MelFrames())
	for i := range mel {
		mel[i] = float32(i%5)/5 - 0.4
	}
	run := func(e *WhisperEncoder) []float32 {
		x := kernels.Upload(b, mel, 1, cfg.NumMelBins, cfg.MelFrames())
		defer b.Free(x)
		hs, err := e.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		last := hs[len(hs)-1]
		out := make([]float32, last.Len())
		if err := b.Download(out, last); err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			b.Free(h)
		}
		return out
	}
	if a, c := run(viaHalf), run(viaF32); !slices.Equal(a, c) {
		t.Errorf("on fp16 CUDA, the encoder built through WeightF16 differs from the one built through Weight")
	}
}

// onlyTensors hides a source's TensorF16.
type onlyTensors struct{ src Tensors }

func (o onlyTensors) Tensor(name string) ([]float32, []int, error) { return o.src.Tensor(name) }
