package cuda_test

import (
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cuda"
	"github.com/avatargen/musetalk/kernels/cuda/emu"
	"github.com/avatargen/musetalk/kernels/kerneltest"
)

// newEmu returns a backend over the emulator, closed when the test ends.
func newEmu(t *testing.T, opts cuda.Options) *cuda.Backend {
	t.Helper()
	b, err := cuda.New(emu.New(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// TestOps runs the op table against the reference loops on the emulator;
// the ops the backend does not implement yet skip.
func TestOps(t *testing.T) {
	b := newEmu(t, cuda.Options{})
	kerneltest.Exercise(t, b)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestOpsF16 runs the op table with fp16 storage against the reference on
// half-rounded inputs, with the fp16 tolerances of kerneltest.
func TestOpsF16(t *testing.T) {
	b := newEmu(t, cuda.Options{Precision: kernels.F16})
	kerneltest.ExerciseWith(t, b, kerneltest.Options{Precision: kernels.F16})
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestOpsF16NoTensorCores runs the fp16 op table as a Turing card would
// (compute capability 7.5): GEMMs on CUDA cores (sgemm_f16) instead of
// hgemm_tc.
func TestOpsF16NoTensorCores(t *testing.T) {
	b, err := cuda.New(emu.NewArch(75), cuda.Options{Precision: kernels.F16})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	kerneltest.ExerciseWith(t, b, kerneltest.Options{Precision: kernels.F16})
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
}
