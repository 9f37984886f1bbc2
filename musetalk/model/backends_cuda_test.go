//go:build cuda

package model

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cuda"
	"github.com/avatargen/musetalk/kernels/cuda/cudrv"
)

// In the CUDA build of this package's tests (GPU machines only: the binary
// cannot start without a usable GPU, see cudrv), every golden test also
// runs on the real GPU: "cuda" is the CUDA backend on device 0 storing
// fp32, "cuda-fp16" the same storing fp16 (judged by the fp16 rules).
//
// MUSETALK_GOLDEN_BACKENDS, a comma-separated list of names ("cuda"),
// keeps only those backends, so a GPU check need not spend its time on the
// CPU backend and the emulator (scripts/gpu-check sets it); a name this
// binary lacks stops it at start.
func init() {
	if n, err := cudrv.DeviceCount(); err == nil && n > 0 {
		GoldenBackends = append(GoldenBackends,
			NamedBackend{Name: "cuda", New: gpuBackend(kernels.F32)},
			NamedBackend{Name: "cuda-fp16", New: gpuBackend(kernels.F16), Precision: kernels.F16})
	}
	only := os.Getenv("MUSETALK_GOLDEN_BACKENDS")
	if only == "" {
		return
	}
	var have, kept []string
	var keep []NamedBackend
	want := strings.Split(only, ",")
	for _, nb := range GoldenBackends {
		have = append(have, nb.Name)
		if slices.Contains(want, nb.Name) {
			keep = append(keep, nb)
			kept = append(kept, nb.Name)
		}
	}
	for _, w := range want {
		if !slices.Contains(kept, w) {
			fmt.Fprintf(os.Stderr, "MUSETALK_GOLDEN_BACKENDS=%s: this test binary has no golden backend %q (it has %s)\n",
				only, w, strings.Join(have, ", "))
			os.Exit(2)
		}
	}
	GoldenBackends = keep
}

// gpuBackend returns the constructor of a CUDA backend on device 0 that
// stores p.
func gpuBackend(p kernels.Precision) func(testing.TB) kernels.Backend {
	return func(t testing.TB) kernels.Backend {
		t.Helper()
		d, err := cudrv.Open(0)
		if err != nil {
			t.Fatal(err)
		}
		b, err := cuda.New(d, cuda.Options{Precision: p})
		if err != nil {
			d.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Error(err)
			}
		})
		return b
	}
}
