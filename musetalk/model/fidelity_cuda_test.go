//go:build cuda

package model_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/kernels/cuda"
	"github.com/avatargen/musetalk/kernels/cuda/cudrv"
	"github.com/avatargen/musetalk/musetalk/model"
)

// TestFullSizeF16Fidelity holds the full-size networks, storing fp16 on
// the GPU, to issue 10's fidelity targets against the CPU backend's fp32
// result on the same seeded weights and inputs: the UNet's output within
// 2 % of its max |value|, and the VAE decoder's frames at ≥ 40 dB PSNR
// after MuseTalk's mapping to pixels. The golden cases check the same
// kernels on tiny networks; this checks that fp16 storage holds over
// MuseTalk's real depth and widths. GPU machines only (the cuda build of
// this test binary cannot start without one).
func TestFullSizeF16Fidelity(t *testing.T) {
	ref, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	d, err := cudrv.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	gpu, err := cuda.New(d, cuda.Options{Precision: kernels.F16})
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	defer gpu.Close()

	t.Run("unet", func(t *testing.T) {
		cfg := model.MuseTalkUNetConfig()
		spec, err := model.UNetSpec(cfg)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(7, 1))
		sample := uniform(rng, 2*cfg.InChannels*32*32)
		cond := uniform(rng, 2*50*cfg.CrossAttentionDim[0])
		run := func(b kernels.Backend) []float32 {
			u, err := model.NewUNet(b, cfg, model.RandomTensors(spec, 1))
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			x := kernels.Upload(b, sample, 2, cfg.InChannels, 32, 32)
			defer b.Free(x)
			c := kernels.Upload(b, cond, 2, 50, cfg.CrossAttentionDim[0])
			defer b.Free(c)
			return result(t, b)(u.Forward(x, []float32{0}, c))
		}
		want, got := run(ref), run(gpu)
		maxErr, maxRef := 0.0, 0.0
		for i := range want {
			maxErr = max(maxErr, math.Abs(float64(got[i]-want[i])))
			maxRef = max(maxRef, math.Abs(float64(want[i])))
		}
		if math.IsNaN(maxErr) || maxErr > 0.02*maxRef {
			t.Errorf("UNet fp16: max|gpu − cpu| = %.3g, %.4f of max|cpu| %.3g (limit 0.02)", maxErr, maxErr/maxRef, maxRef)
		}
		t.Logf("UNet fp16: max|gpu − cpu| / max|cpu| = %.4f", maxErr/maxRef)
	})

	t.Run("vae-decoder", func(t *testing.T) {
		cfg := model.SDVAEConfig()
		spec, err := model.VAESpec(cfg)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(7, 2))
		latents := uniform(rng, 2*cfg.LatentChannels*32*32)
		run := func(b kernels.Backend) []float32 {
			v, err := model.NewVAE(b, cfg, model.RandomTensors(spec, 1))
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			z := kernels.Upload(b, latents, 2, cfg.LatentChannels, 32, 32)
			defer b.Free(z)
			return result(t, b)(v.Decode(z))
		}
		want, got := run(ref), run(gpu)
		if psnr := dmFramePSNR(got, want); !(psnr >= 40) {
			t.Errorf("VAE decoder fp16: %.1f dB PSNR against the CPU (target ≥ 40)", psnr)
		} else {
			t.Logf("VAE decoder fp16: %.1f dB PSNR against the CPU", psnr)
		}
	})
}

// result returns a function that takes a network's result, fails the
// test on its error, and returns its elements, freeing the tensor.
func result(t *testing.T, b kernels.Backend) func(*kernels.Tensor, error) []float32 {
	return func(y *kernels.Tensor, err error) []float32 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer b.Free(y)
		return download(t, b, y)
	}
}

// uniform returns n values uniform in [-1, 1).
func uniform(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(2*rng.Float64() - 1)
	}
	return v
}
