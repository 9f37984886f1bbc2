//go:build cuda

package cudrv_test

import (
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cuda"
	"github.com/avatargen/musetalk/kernels/cuda/cudrv"
	"github.com/avatargen/musetalk/kernels/kerneltest"
)

// onTheGPU returns the CUDA backend on device 0 through this package's
// Driver, closed (and checked) when the test ends. GPU machines only: this
// binary cannot start without one (scripts/gpu-check runs it there).
func onTheGPU(t *testing.T, opts cuda.Options) *cuda.Backend {
	t.Helper()
	d, err := cudrv.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cuda.New(d, opts)
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	t.Logf("backend %s, device %+v", b.Name(), d.Info())
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// TestOpsOnTheGPU runs the op table against the reference loops on the
// real GPU: the same cases kernels/cuda's TestOps runs on the emulator.
func TestOpsOnTheGPU(t *testing.T) {
	b := onTheGPU(t, cuda.Options{})
	kerneltest.Exercise(t, b)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestOpsF16OnTheGPU is TestOpsOnTheGPU with tensors stored in fp16, at
// kerneltest's fp16 tolerances.
func TestOpsF16OnTheGPU(t *testing.T) {
	b := onTheGPU(t, cuda.Options{Precision: kernels.F16})
	kerneltest.ExerciseWith(t, b, kerneltest.Options{Precision: kernels.F16})
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
}
