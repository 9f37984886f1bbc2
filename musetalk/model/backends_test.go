package model

import (
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/kernels/cuda"
	"github.com/avatargen/musetalk/kernels/cuda/emu"
)

// NamedBackend is a backend a network's golden test runs on.
type NamedBackend struct {
	Name string
	New  func(t testing.TB) kernels.Backend // closed when the test ends
}

// GoldenBackends are the backends every network's golden test runs on: the
// CPU backend, and the CUDA backend's kernels (the .cu sources the GPU
// runs) on the CPU emulator. (Exported for the package's external tests.)
var GoldenBackends = []NamedBackend{
	{"cpu", func(t testing.TB) kernels.Backend {
		t.Helper()
		b, err := cpu.New(cpu.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}},
	{"cuda-emu", func(t testing.TB) kernels.Backend {
		t.Helper()
		b, err := cuda.New(emu.New(), cuda.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}},
}
