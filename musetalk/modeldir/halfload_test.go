package modeldir

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/musetalk/model"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// halfRecorder is a CPU backend that takes half weights
// (kernels.HalfWeighter) and copies float32 ones, as a device backend
// does, counting both.
type halfRecorder struct {
	kernels.Backend

	mu              sync.Mutex
	weights, halves int
}

func (r *halfRecorder) Weight(data []float32, shape ...int) *kernels.Tensor {
	r.mu.Lock()
	r.weights++
	r.mu.Unlock()
	return r.Backend.Weight(slices.Clone(data), shape...)
}

func (r *halfRecorder) WeightF16(bits []uint16, shape ...int) *kernels.Tensor {
	r.mu.Lock()
	r.halves++
	r.mu.Unlock()
	return kernels.WeightFromHalf(r.Backend, bits, shape...)
}

func (r *halfRecorder) take() (weights, halves int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, h := r.weights, r.halves
	r.weights, r.halves = 0, 0
	return w, h
}

// TestSourceServesF16: the tiny directory's S3FD (stored F16) reaches a
// backend that takes half weights through WeightF16 alone, the Whisper
// encoder (stored F32) through Weight alone, and the whole set loads
// (the sources closed, their mappings dropped, before the models run).
func TestSourceServesF16(t *testing.T) {
	t.Parallel()
	d := sharedTiny(t)
	src, err := d.Open(weights.KindS3FD, V15)
	if err != nil {
		t.Fatal(err)
	}
	bits, shape, ok, err := src.TensorF16("conv1_1.weight")
	if err != nil || !ok || !slices.Equal(shape, []int{64, 3, 3, 3}) || len(bits) != 64*27 {
		t.Errorf("TensorF16(conv1_1.weight) = %d bits %v, %v, %v; want the F16 tensor", len(bits), shape, ok, err)
	}
	if _, _, ok, err := src.TensorF16("no.such.tensor"); ok || err != nil {
		t.Errorf("TensorF16 of a missing name: ok %v, %v; want false and no error (Tensor reports it)", ok, err)
	}
	rec := &halfRecorder{Backend: newBackend(t)}
	s3fd, err := model.NewS3FD(rec, src)
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	s3fd.Close()
	if w, h := rec.take(); w != 0 || h != len(model.S3FDSpec()) {
		t.Errorf("S3FD from F16: %d Weight and %d WeightF16 calls, want 0 and %d", w, h, len(model.S3FDSpec()))
	}

	src, err = d.Open(weights.KindWhisper, V15)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := src.TensorF16("encoder.conv1.weight"); ok || err != nil {
		t.Errorf("TensorF16 of an F32 tensor: ok %v, %v; want false and no error", ok, err)
	}
	cfg, err := d.WhisperConfig()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := model.NewWhisperEncoder(rec, cfg, src)
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	enc.Close()
	if w, h := rec.take(); w != len(model.WhisperEncoderSpec(cfg)) || h != 0 {
		t.Errorf("Whisper from F32: %d Weight and %d WeightF16 calls, want %d and 0", w, h, len(model.WhisperEncoderSpec(cfg)))
	}

	m, err := d.Load(context.Background(), rec, V15)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, h := rec.take(); h < len(model.S3FDSpec()) {
		t.Errorf("Load: %d WeightF16 calls, want at least S3FD's %d", h, len(model.S3FDSpec()))
	}
}
