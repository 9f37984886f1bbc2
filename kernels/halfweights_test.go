package kernels

import (
	"math"
	"testing"
)

func TestHalfConversions(t *testing.T) {
	bits := []uint16{0x0000, 0x8000, 0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0xfc00}
	want := []float32{0, float32(math.Copysign(0, -1)), 1, -2, 65504, 0x1p-24, float32(math.Inf(1)), float32(math.Inf(-1))}
	got := make([]float32, len(bits))
	HalfToFloat32(got, bits)
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Errorf("HalfToFloat32(%#04x) = %v, want %v", bits[i], got[i], want[i])
		}
	}
	back := make([]uint16, len(got))
	Float32ToHalf(back, got)
	for i := range back {
		if back[i] != bits[i] {
			t.Errorf("Float32ToHalf(%v) = %#04x, want %#04x", got[i], back[i], bits[i])
		}
	}
	// Ties to even, overflow to infinity.
	rounded := make([]uint16, 3)
	Float32ToHalf(rounded, []float32{1 + 0x1p-11, 1 + 3*0x1p-11, 65520})
	if rounded[0] != 0x3c00 || rounded[1] != 0x3c02 || rounded[2] != 0x7c00 {
		t.Errorf("rounding: %#04x, want [0x3c00 0x3c02 0x7c00]", rounded)
	}
}

// hostWeights is a Memory whose Weight keeps its slice, for WeightFromHalf.
type hostWeights struct{ Memory }

func (hostWeights) Weight(data []float32, shape ...int) *Tensor { return FromSlice(data, shape...) }

func TestWeightFromHalf(t *testing.T) {
	bits := []uint16{0x3c00, 0x4000, 0xbc00, 0x3800, 0x0000, 0x7bff}
	w := WeightFromHalf(hostWeights{}, bits, 2, 3)
	want := []float32{1, 2, -1, 0.5, 0, 65504}
	if w.Dim(0) != 2 || w.Dim(1) != 3 {
		t.Fatalf("shape %v, want [2 3]", w.Shape())
	}
	for i, v := range w.Data() {
		if v != want[i] {
			t.Errorf("element %d = %v, want %v", i, v, want[i])
		}
	}
	bits[0] = 0 // the weight does not alias bits
	if w.Data()[0] != 1 {
		t.Error("WeightFromHalf kept a reference to bits")
	}
}

type precisionBackend struct {
	Backend
	p Precision
}

func (b precisionBackend) Precision() Precision { return b.p }

func TestPrecisionOf(t *testing.T) {
	if got := PrecisionOf(precisionBackend{p: F16}); got != F16 {
		t.Errorf("PrecisionOf a backend reporting fp16 = %v", got)
	}
	type plain struct{ Backend }
	if got := PrecisionOf(plain{}); got != F32 {
		t.Errorf("PrecisionOf a backend reporting nothing = %v, want fp32", got)
	}
}
