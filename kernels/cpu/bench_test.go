package cpu

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"

	"github.com/avatargen/musetalk/kernels"
)

// benchBackends returns the (ISA, threads) pairs benchmarks run on: the
// SIMD paths this CPU has, on one thread and on all of them.
func benchConfigs() []Options {
	var out []Options
	for _, isa := range []ISA{ISAAVX512, ISAAVX2} {
		if !isa.Available() {
			continue
		}
		out = append(out, Options{ISA: isa, Threads: 1}, Options{ISA: isa, Threads: 0})
	}
	if len(out) == 0 {
		out = append(out, Options{ISA: ISAGo, Threads: 1})
	}
	return out
}

func benchName(b *Backend) string { return fmt.Sprintf("%v/t%d", b.ISA(), b.Threads()) }

func randTensor(rng *rand.Rand, shape ...int) *kernels.Tensor {
	t := kernels.New(shape...)
	for i := range t.Data() {
		t.Data()[i] = float32(rng.NormFloat64())
	}
	return t
}

// BenchmarkPeak measures the machine's FMA peak: independent
// multiply-adds with no memory traffic, per thread count.
func BenchmarkPeak(b *testing.B) {
	type peak struct {
		isa   ISA
		lanes int
	}
	for _, p := range []peak{{ISAAVX512, 16}, {ISAAVX2, 8}} {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("%v/t%d", p.isa, threads), func(b *testing.B) {
				if !p.isa.Available() {
					b.Skip("not available")
				}
				const iters = 1 << 20
				for b.Loop() {
					var wg sync.WaitGroup
					for range threads {
						wg.Go(func() { runPeak(p.isa, iters) })
					}
					wg.Wait()
				}
				flops := float64(threads) * iters * 12 * float64(p.lanes) * 2
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkGEMM times Linear (C = A·Bᵀ, B a registered weight) at square
// sizes and at the UNet's transformer sizes (tokens × channels).
func BenchmarkGEMM(b *testing.B) {
	type size struct{ m, k, n int }
	sizes := []size{{256, 256, 256}, {512, 512, 512}, {1024, 1024, 1024}, {1024, 320, 1280}, {1024, 320, 2560}, {256, 2560, 640}, {64, 5120, 1280}}
	for _, s := range sizes {
		for _, o := range benchConfigs() {
			be, _ := New(o)
			b.Run(fmt.Sprintf("m%d_k%d_n%d/%s", s.m, s.k, s.n, benchName(be)), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 2))
				x, y := randTensor(rng, s.m, s.k), kernels.New(s.m, s.n)
				w := be.Weight(randTensor(rng, s.n, s.k).Data(), s.n, s.k)
				for b.Loop() {
					be.Linear(y, x, w, nil)
				}
				b.ReportMetric(2*float64(s.m*s.k*s.n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
			be.Close()
		}
	}
}

// BenchmarkConv2D times convolutions at MuseTalk's UNet and VAE decoder
// sizes (batch 1, weights registered with Weight, their cached panels
// built before timing). GFLOP/s count the direct convolution's FLOPs
// whichever algorithm Conv2D picks.
func BenchmarkConv2D(b *testing.B) {
	type size struct {
		name      string
		c, hw, co int
		k, s, p   int
	}
	sizes := []size{
		{"unet_c320_64x64", 320, 64, 320, 3, 1, 1},
		{"unet_c320_32x32", 320, 32, 320, 3, 1, 1},
		{"unet_c640_16x16", 640, 16, 640, 3, 1, 1},
		{"unet_c1280_8x8", 1280, 8, 1280, 3, 1, 1},
		{"unet_c1280_4x4", 1280, 4, 1280, 3, 1, 1},
		{"unet_down_c320_32x32_s2", 320, 32, 320, 3, 2, 1},
		{"unet_1x1_c640_16x16", 640, 16, 640, 1, 1, 0},
		{"vae_c512_64x64", 512, 64, 512, 3, 1, 1},
		{"vae_c256_128x128", 256, 128, 256, 3, 1, 1},
		{"vae_c128_256x256", 128, 256, 128, 3, 1, 1},
	}
	for _, s := range sizes {
		for _, o := range benchConfigs() {
			be, _ := New(o)
			b.Run(s.name+"/"+benchName(be), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 2))
				p := kernels.Conv2DPad(s.s, s.p)
				x, bias := randTensor(rng, 1, s.c, s.hw, s.hw), randTensor(rng, s.co)
				w := be.Weight(randTensor(rng, s.co, s.c, s.k, s.k).Data(), s.co, s.c, s.k, s.k)
				y := kernels.New(p.OutShape(x, w)...)
				flops := 2 * float64(s.co*s.c*s.k*s.k*y.Dim(2)*y.Dim(3))
				be.Conv2D(y, x, w, bias, p) // build the cached weight panels
				for b.Loop() {
					be.Conv2D(y, x, w, bias, p)
				}
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
			be.Close()
		}
	}
}

// BenchmarkMicroKernel times the micro-kernel alone on one packed A
// sliver and a row of B slivers that stay in cache: the ceiling for the
// GEMM.
func BenchmarkMicroKernel(b *testing.B) {
	for _, isa := range []ISA{ISAAVX512, ISAAVX2, ISAGo} {
		b.Run(isa.String(), func(b *testing.B) {
			if !isa.Available() {
				b.Skip("not available")
			}
			kern := kernelFor(isa)
			const k, slivers = 256, 8
			a := alignedFloats(k * kern.mr)
			bp := alignedFloats(k * kern.nr * slivers)
			c := alignedFloats(kern.mr * kern.nr * slivers)
			for b.Loop() {
				for s := range slivers {
					kern.fn(k, a, bp[s*k*kern.nr:], c[s*kern.nr:], kern.nr*slivers, true)
				}
			}
			flops := 2 * float64(k*kern.mr*kern.nr*slivers)
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkElementwise times the exp-based activations on 1M elements.
func BenchmarkElementwise(b *testing.B) {
	for _, isa := range []ISA{ISAAVX512, ISAGo} {
		be, err := New(Options{ISA: isa, Threads: 1})
		if err != nil {
			continue
		}
		rng := rand.New(rand.NewPCG(1, 2))
		x := randTensor(rng, 1<<20)
		y := kernels.New(1 << 20)
		g := kernels.New(1, 1<<19)
		ops := []struct {
			name string
			run  func()
		}{
			{"silu", func() { be.SiLU(y, x) }},
			{"gelu", func() { be.GELU(y, x) }},
			{"geglu", func() { be.GEGLU(g, x.Reshape(1, 1<<20)) }},
			{"softmax1024", func() { be.Softmax(y.Reshape(1024, 1024), x.Reshape(1024, 1024)) }},
			{"groupnorm32", func() {
				be.GroupNorm(y.Reshape(1, 256, 4096), x.Reshape(1, 256, 4096), nil, nil, kernels.GroupNormParams{Groups: 32, Eps: 1e-5})
			}},
		}
		for _, op := range ops {
			b.Run(op.name+"/"+isa.String(), func(b *testing.B) {
				for b.Loop() {
					op.run()
				}
				b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(b.N<<20), "ns/elem")
			})
		}
		be.Close()
	}
}

// BenchmarkAttention times multi-head attention at MuseTalk's sizes.
func BenchmarkAttention(b *testing.B) {
	type size struct {
		name             string
		lq, lk, c, heads int
	}
	sizes := []size{
		{"unet_self_32x32_c320", 1024, 1024, 320, 8},
		{"unet_cross_32x32_c320", 1024, 50, 320, 8},
		{"unet_self_16x16_c640", 256, 256, 640, 8},
		{"vae_mid_32x32_c512", 1024, 1024, 512, 1},
		{"whisper_1500_c384", 1500, 1500, 384, 6},
	}
	for _, s := range sizes {
		for _, o := range benchConfigs() {
			be, _ := New(o)
			b.Run(s.name+"/"+benchName(be), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 2))
				q, k, v := randTensor(rng, 1, s.lq, s.c), randTensor(rng, 1, s.lk, s.c), randTensor(rng, 1, s.lk, s.c)
				y := kernels.New(1, s.lq, s.c)
				for b.Loop() {
					be.Attention(y, q, k, v, kernels.AttentionParams{Heads: s.heads})
				}
				b.ReportMetric(4*float64(s.lq*s.lk*s.c)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
			be.Close()
		}
	}
}

// cpuSeconds returns the process's user+system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// BenchmarkConvAlgo times the 3×3 convolutions of MuseTalk's UNet and VAE
// decoder by both algorithms, direct (implicit-im2col GEMM) and Winograd
// F(4×4, 3×3), on 2 threads. GFLOP/s count the direct convolution's
// FLOPs for both; cpu-GFLOP/s divides them by the CPU time the process
// used per thread, which is steadier than wall time on a shared machine.
func BenchmarkConvAlgo(b *testing.B) {
	type size struct {
		name         string
		n, c, hw, co int
	}
	sizes := []size{
		{"unet_c320_64x64", 1, 320, 64, 320},
		{"unet_c640_32x32", 1, 640, 32, 640},
		{"unet_c1280_16x16", 1, 1280, 16, 1280},
		{"unet_c1280_8x8", 1, 1280, 8, 1280},
		{"unet_c1280_8x8_n8", 8, 1280, 8, 1280},
		{"vae_c512_32x32", 1, 512, 32, 512},
		{"vae_c512_64x64", 1, 512, 64, 512},
		{"vae_c256_128x128", 1, 256, 128, 256},
		{"vae_c128_256x256", 1, 128, 256, 128},
	}
	be, err := New(Options{ISA: BestISA(), Threads: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	for _, s := range sizes {
		rng := rand.New(rand.NewPCG(1, 2))
		p := kernels.Conv2DPad(1, 1)
		x, bias := randTensor(rng, s.n, s.c, s.hw, s.hw), randTensor(rng, s.co)
		w := be.Weight(randTensor(rng, s.co, s.c, 3, 3).Data(), s.co, s.c, 3, 3)
		y := kernels.New(s.n, s.co, s.hw, s.hw)
		flops := 2 * float64(s.n*s.co*s.c*9*s.hw*s.hw)
		algos := []struct {
			name string
			run  func()
		}{
			{"direct", func() { be.convGEMM(y.Data(), x.Data(), w.Data(), bias.Data(), s.n, s.c, s.hw, s.hw, s.co, 3, 3, p) }},
			{"winograd", func() {
				be.convWinograd(y.Data(), x.Data(), w.Data(), bias.Data(), s.n, s.c, s.hw, s.hw, s.co, winoBlockFloats)
			}},
		}
		for _, a := range algos {
			b.Run(s.name+"/"+a.name, func(b *testing.B) {
				a.run() // build the cached weight panels
				cpu0 := cpuSeconds()
				for b.Loop() {
					a.run()
				}
				cpu := cpuSeconds() - cpu0
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				b.ReportMetric(flops*float64(b.N)/(cpu/2)/1e9, "cpu-GFLOP/s")
			})
		}
		be.Free(w)
	}
}
