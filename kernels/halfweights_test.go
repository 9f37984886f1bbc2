package kernels

import "testing"

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
