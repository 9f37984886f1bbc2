package main

import (
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/musetalk/model"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure the speed of the networks, of the whole pipeline and of the control plane",
		Subcommands: []*cli.Command{{
			Name:  "model",
			Usage: "time the full-size MuseTalk UNet and VAE decoder with seeded random weights",
			Description: `Builds the full-size MuseTalk UNet (849.9 M parameters) and the
sd-vae-ft-mse decoder with seeded random weights and reports, per batch
size, seconds per frame for the UNet, the VAE decoder and both, the
GFLOP/s each reached (FLOPs counted from the ops' shapes), and the
process's peak resident memory. Needs about 8 GB of memory. The networks
run on --device at --precision (the device's default: fp16 on cuda, fp32
on cpu), both reported on the first line; --isa and --conv choose the CPU
device's code paths and are refused when the networks would run
elsewhere.`,
			Flags: append([]cli.Flag{
				&cli.IntSliceFlag{Name: "batch", Value: cli.NewIntSlice(1, 8), Usage: "batch sizes to time"},
				&cli.IntFlag{Name: "iters", Value: 2, Usage: "timed passes per network and batch size"},
				&cli.StringFlag{Name: "isa", Value: "auto", Usage: "cpu device only: code path, auto, go, avx2 or avx512"},
				&cli.StringFlag{Name: "conv", Value: "auto", Usage: "cpu device only: 3×3 convolution algorithm, auto, direct or winograd"},
				&cli.Float64Flag{Name: "peak-gflops", Usage: "the machine's peak GFLOP/s, to report each network's share of it"},
			}, deviceFlags("threads of the cpu device")...),
			Action: runBenchModel,
		}, benchPipelineCommand(), benchControlCommand()},
	}
}

func parseISA(s string) (cpu.ISA, error) {
	for _, i := range []cpu.ISA{cpu.ISAAuto, cpu.ISAGo, cpu.ISAAVX2, cpu.ISAAVX512} {
		if i.String() == s {
			return i, nil
		}
	}
	return 0, fmt.Errorf("--isa %q: want auto, go, avx2 or avx512", s)
}

func parseConvAlgo(s string) (cpu.ConvAlgo, error) {
	for _, a := range []cpu.ConvAlgo{cpu.ConvAuto, cpu.ConvDirect, cpu.ConvWinograd} {
		if a.String() == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("--conv %q: want auto, direct or winograd", s)
}

func runBenchModel(c *cli.Context) error {
	isa, err := parseISA(c.String("isa"))
	if err != nil {
		return err
	}
	algo, err := parseConvAlgo(c.String("conv"))
	if err != nil {
		return err
	}
	log, err := logger(c)
	if err != nil {
		return err
	}
	device, err := deviceConfigFrom(c, log)
	if err != nil {
		return err
	}
	device.cpu.ISA, device.cpu.Conv3x3 = isa, algo
	be, err := device.open()
	if err != nil {
		return err
	}
	defer be.Close()
	out := c.App.Writer
	cb, onCPU := be.(*cpu.Backend)
	switch {
	case onCPU:
		fmt.Fprintf(out, "backend %s (%s), %d threads, GOMAXPROCS %d, 3×3 convs %s\n", cb.Name(), kernels.PrecisionOf(cb), cb.Threads(), runtime.GOMAXPROCS(0), algo)
	case c.IsSet("isa") || c.IsSet("conv"):
		return fmt.Errorf("--isa and --conv choose the cpu device's code paths, but the networks run on %s (use --device cpu)", be.Name())
	default:
		fmt.Fprintf(out, "backend %s (%s)\n", be.Name(), kernels.PrecisionOf(be))
	}
	b := &flopCounter{Backend: be}
	peak := c.Float64("peak-gflops")
	for _, batch := range c.IntSlice("batch") {
		if batch < 1 {
			return fmt.Errorf("--batch %d: must be at least 1", batch)
		}
		opt := model.BenchOptions{Batch: batch, Iters: c.Int("iters"), Seed: 1}
		b.flops.Store(0)
		u, err := model.BenchUNet(c.Context, b, model.MuseTalkUNetConfig(), opt)
		if err != nil {
			return fmt.Errorf("UNet at batch %d: %w", batch, err)
		}
		uFlops := float64(b.flops.Load()) / float64(passes(opt))
		b.flops.Store(0)
		v, err := model.BenchVAEDecoder(c.Context, b, model.SDVAEConfig(), opt)
		if err != nil {
			return fmt.Errorf("VAE decoder at batch %d: %w", batch, err)
		}
		vFlops := float64(b.flops.Load()) / float64(passes(opt))
		report(out, "unet", u, uFlops, peak)
		report(out, "vae-decoder", v, vFlops, peak)
		both := u.PerItem() + v.PerItem()
		fmt.Fprintf(out, "batch %d: unet + vae-decoder %.3f s/frame (%.0f GFLOP/frame)\n",
			batch, both.Seconds(), (uFlops+vFlops)/float64(batch)/1e9)
	}
	fmt.Fprintf(out, "peak resident memory %.2f GiB\n", float64(maxRSS())/(1<<30))
	return nil
}

// passes is how many forward passes a bench run makes (warm-up included).
func passes(o model.BenchOptions) int {
	w := o.Warmup
	if w == 0 {
		w = 1
	} else if w < 0 {
		w = 0
	}
	return w + max(o.Iters, 1)
}

func report(w io.Writer, name string, r model.BenchResult, flopsPerPass, peak float64) {
	gflops := flopsPerPass / r.Mean().Seconds() / 1e9
	share := ""
	if peak > 0 {
		share = fmt.Sprintf(", %.0f%% of peak", 100*gflops/peak)
	}
	fmt.Fprintf(w, "batch %d: %-11s %.3f s/frame (mean pass %v, min %v), %.0f GFLOP/frame, %.0f GFLOP/s%s\n",
		r.Batch, name, r.PerItem().Seconds(), r.Mean().Round(time.Millisecond), r.Min().Round(time.Millisecond),
		flopsPerPass/float64(r.Batch)/1e9, gflops, share)
}

// maxRSS is the process's peak resident set in bytes.
func maxRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss * 1024 // Linux reports kilobytes
}

// flopCounter counts the multiply-adds (as 2 FLOPs each) of the ops that
// carry nearly all of a network's work, from their shapes.
type flopCounter struct {
	kernels.Backend
	flops atomic.Int64
}

func (f *flopCounter) Conv2D(dst, x, w, bias *kernels.Tensor, p kernels.Conv2DParams) {
	f.flops.Add(2 * int64(dst.Len()) * int64(w.Len()/w.Dim(0)))
	f.Backend.Conv2D(dst, x, w, bias, p)
}

func (f *flopCounter) Conv1D(dst, x, w, bias *kernels.Tensor, p kernels.Conv1DParams) {
	f.flops.Add(2 * int64(dst.Len()) * int64(w.Len()/w.Dim(0)))
	f.Backend.Conv1D(dst, x, w, bias, p)
}

func (f *flopCounter) Linear(dst, x, w, bias *kernels.Tensor) {
	f.flops.Add(2 * int64(dst.Len()) * int64(w.Dim(1)))
	f.Backend.Linear(dst, x, w, bias)
}

func (f *flopCounter) MatMul(dst, a, b *kernels.Tensor, p kernels.MatMulParams) {
	k := a.Dim(a.Rank() - 1)
	if p.TransA {
		k = a.Dim(a.Rank() - 2)
	}
	f.flops.Add(2 * int64(dst.Len()) * int64(k))
	f.Backend.MatMul(dst, a, b, p)
}

func (f *flopCounter) Attention(dst, q, k, v *kernels.Tensor, p kernels.AttentionParams) {
	// q·kᵀ over Cq channels and scores·v over Cv, for every query and key.
	n, lq, lk := int64(q.Dim(0)), int64(q.Dim(1)), int64(k.Dim(1))
	f.flops.Add(2 * n * lq * lk * int64(q.Dim(2)+v.Dim(2)))
	f.Backend.Attention(dst, q, k, v, p)
}
