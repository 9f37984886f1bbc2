package cuda_test

import (
	"testing"

	"github.com/avatargen/musetalk/kernels/cuda"
	"github.com/avatargen/musetalk/kernels/cuda/emu"
	"github.com/avatargen/musetalk/kernels/kerneltest"
)

// BenchmarkOps runs kerneltest.Benchmark on the emulator at its Small
// sizes (batch 1, 8×8 latents, each op at most a few hundred MFLOP): the
// emulator runs one CUDA thread at a time on the host, so full MuseTalk
// sizes would take minutes per op. Its figures measure the emulator, not a
// GPU; they check that every benchmark runs (and how launches scale) until
// the same benchmark runs on the cudrv Driver.
//
//	go test -run '^$' -bench BenchmarkOps -benchtime 1x ./kernels/cuda/
func BenchmarkOps(b *testing.B) {
	be, err := cuda.New(emu.New(), cuda.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	kerneltest.Benchmark(b, be, kerneltest.Options{Small: true})
}
