package model

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// RandomTensors returns a source serving every tensor of spec with seeded
// pseudo-random values of a realistic scale, for benchmarks and tests
// without a checkpoint: matrices and kernels uniform with variance 1/fan_in,
// rank-1 ".weight" tensors (norm scales) 1 ± 0.1, biases ± 0.05. A tensor's
// values depend only on seed and its name; each call returns a new slice.
func RandomTensors(spec []TensorSpec, seed uint64) Tensors {
	m := make(map[string][]int, len(spec))
	for _, s := range spec {
		m[s.Name] = s.Shape
	}
	return randomTensors{shapes: m, seed: seed}
}

type randomTensors struct {
	shapes map[string][]int
	seed   uint64
}

func (r randomTensors) Tensor(name string) ([]float32, []int, error) {
	shape, ok := r.shapes[name]
	if !ok {
		return nil, nil, fmt.Errorf("tensor %q not found", name)
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	rng := rand.New(rand.NewPCG(r.seed, h.Sum64()))
	data := make([]float32, shapeElems(shape))
	var center, half float32
	switch {
	case strings.HasSuffix(name, ".bias"):
		center, half = 0, 0.05
	case len(shape) == 1:
		center, half = 1, 0.1
	default:
		fanIn := shapeElems(shape[1:])
		center, half = 0, float32(math.Sqrt(3/float64(fanIn)))
	}
	for i := range data {
		u := float32(rng.Uint64()>>40) * (1.0 / (1 << 24)) // [0,1)
		data[i] = center + half*(2*u-1)
	}
	return data, slices.Clone(shape), nil
}

// BenchOptions configures [BenchUNet] and [BenchVAEDecoder].
type BenchOptions struct {
	// Batch is the number of items per forward pass (default 1; MuseTalk's
	// realtime default is 20).
	Batch int
	// CondLen is the number of audio tokens per item for the UNet
	// (default 50, MuseTalk's).
	CondLen int
	// Iters is the number of timed forward passes (default 3).
	Iters int
	// LatentSize is the latent side: the UNet's input and the decoder's
	// input (default 32, MuseTalk's 256×256 faces).
	LatentSize int
	// Seed seeds the weights and the inputs.
	Seed uint64
	// Warmup is the number of untimed passes first (default 1; a negative
	// value means none). The first pass packs weights and fills the
	// backend's memory pool.
	Warmup int
}

func (o BenchOptions) withDefaults() BenchOptions {
	if o.Batch <= 0 {
		o.Batch = 1
	}
	if o.CondLen <= 0 {
		o.CondLen = 50
	}
	if o.Iters <= 0 {
		o.Iters = 3
	}
	if o.LatentSize <= 0 {
		o.LatentSize = 32
	}
	if o.Warmup == 0 {
		o.Warmup = 1
	}
	return o
}

// BenchResult is the timing of one benchmarked model.
type BenchResult struct {
	// Model is "unet" or "vae-decoder"; Backend the backend's Name.
	Model, Backend string
	// Params is the model's parameter count.
	Params int64
	// Batch is the items per pass; InputShape the input tensor's shape.
	Batch      int
	InputShape []int
	// Build is the time to generate the random weights and build the model.
	Build time.Duration
	// Times holds one duration per timed pass (forward + Sync).
	Times []time.Duration
}

// Mean returns the mean time of a timed pass.
func (r BenchResult) Mean() time.Duration {
	if len(r.Times) == 0 {
		return 0
	}
	var s time.Duration
	for _, t := range r.Times {
		s += t
	}
	return s / time.Duration(len(r.Times))
}

// Min returns the fastest timed pass.
func (r BenchResult) Min() time.Duration {
	if len(r.Times) == 0 {
		return 0
	}
	return slices.Min(r.Times)
}

// PerItem returns the mean time per batch item.
func (r BenchResult) PerItem() time.Duration { return r.Mean() / time.Duration(max(r.Batch, 1)) }

// String formats the result on one line.
func (r BenchResult) String() string {
	return fmt.Sprintf("%s on %s: %d params, batch %d, input %v: build %v, mean %v, min %v, %v/item (%d passes)",
		r.Model, r.Backend, r.Params, r.Batch, r.InputShape, r.Build.Round(time.Millisecond),
		r.Mean().Round(time.Microsecond), r.Min().Round(time.Microsecond), r.PerItem().Round(time.Microsecond), len(r.Times))
}

// BenchUNet builds a UNet of cfg (e.g. [MuseTalkUNetConfig]: 850 M
// parameters, 3.4 GB of float32 weights plus whatever copies the backend
// keeps) with seeded random weights and times forward passes on random
// inputs with timestep 0, as MuseTalk runs it. The model is released
// before it returns.
func BenchUNet(ctx context.Context, b kernels.Backend, cfg weights.UNetConfig, opt BenchOptions) (BenchResult, error) {
	opt = opt.withDefaults()
	spec, err := UNetSpec(cfg)
	if err != nil {
		return BenchResult{}, err
	}
	start := time.Now()
	u, err := NewUNet(b, cfg, RandomTensors(spec, opt.Seed))
	if err != nil {
		return BenchResult{}, err
	}
	defer u.Close()
	res := BenchResult{Model: "unet", Backend: b.Name(), Params: u.Params(), Batch: opt.Batch, Build: time.Since(start)}
	rng := rand.New(rand.NewPCG(opt.Seed, 1))
	res.InputShape = []int{opt.Batch, cfg.InChannels, opt.LatentSize, opt.LatentSize}
	sample := kernels.Upload(b, randomUniform(rng, shapeElems(res.InputShape)), res.InputShape...)
	defer b.Free(sample)
	crossDim := u.plan.crossDim
	cond := kernels.Upload(b, randomUniform(rng, opt.Batch*opt.CondLen*crossDim), opt.Batch, opt.CondLen, crossDim)
	defer b.Free(cond)
	err = benchPasses(ctx, b, opt, &res, func() (*kernels.Tensor, error) {
		return u.Forward(sample, []float32{0}, cond)
	})
	return res, err
}

// BenchVAEDecoder builds a VAE of cfg (e.g. [SDVAEConfig]) with seeded
// random weights and times decoder passes on random latents. The model is
// released before it returns.
func BenchVAEDecoder(ctx context.Context, b kernels.Backend, cfg weights.VAEConfig, opt BenchOptions) (BenchResult, error) {
	opt = opt.withDefaults()
	spec, err := VAESpec(cfg)
	if err != nil {
		return BenchResult{}, err
	}
	start := time.Now()
	v, err := NewVAE(b, cfg, RandomTensors(spec, opt.Seed))
	if err != nil {
		return BenchResult{}, err
	}
	defer v.Close()
	res := BenchResult{Model: "vae-decoder", Backend: b.Name(), Params: v.decoderParams(), Batch: opt.Batch, Build: time.Since(start)}
	rng := rand.New(rand.NewPCG(opt.Seed, 2))
	res.InputShape = []int{opt.Batch, cfg.LatentChannels, opt.LatentSize, opt.LatentSize}
	z := kernels.Upload(b, randomUniform(rng, shapeElems(res.InputShape)), res.InputShape...)
	defer b.Free(z)
	err = benchPasses(ctx, b, opt, &res, func() (*kernels.Tensor, error) { return v.Decode(z) })
	return res, err
}

// decoderParams counts the decoder's and post_quant_conv's parameters.
func (v *VAE) decoderParams() int64 {
	var n int64
	for _, s := range v.st.spec {
		if strings.HasPrefix(s.Name, "decoder.") || strings.HasPrefix(s.Name, "post_quant_conv.") {
			n += int64(shapeElems(s.Shape))
		}
	}
	return n
}

func benchPasses(ctx context.Context, b kernels.Backend, opt BenchOptions, res *BenchResult, pass func() (*kernels.Tensor, error)) error {
	run := func() (time.Duration, error) {
		start := time.Now()
		out, err := pass()
		if err != nil {
			return 0, err
		}
		err = b.Sync()
		d := time.Since(start)
		b.Free(out)
		return d, err
	}
	for range max(opt.Warmup, 0) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := run(); err != nil {
			return err
		}
	}
	for range opt.Iters {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, err := run()
		if err != nil {
			return err
		}
		res.Times = append(res.Times, d)
	}
	return nil
}

func randomUniform(rng *rand.Rand, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = 2*rng.Float32() - 1
	}
	return out
}
