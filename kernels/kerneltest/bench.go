package kerneltest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/avatargen/musetalk/kernels"
)

// Benchmark times the ops that dominate MuseTalk's networks on be, one
// sub-benchmark (b.Run) per op and size, named op/size. Each sub-benchmark
// allocates its tensors (weights through [kernels.Memory.Weight], as
// models make them), runs the op once untimed (the CPU backend packs
// weights then; allocator pools fill), then times calls each followed by
// Sync, so that an asynchronous backend's work is inside the measurement.
// GEMM-like ops report GFLOP/s (2 per multiply-add: Linear 2·M·K·N, a
// convolution 2·N·Cout·Ho·Wo·Cin·KH·KW whatever algorithm runs, attention
// 2·N·Lq·Lk·(Cq+Cv)); memory-bound ops report GB/s, counting each element
// read once and each written once at o.Precision's element size (the
// least traffic the op needs; a kernel that reads twice gets no credit for
// it). Ops be does not support skip.
//
// Sizes, at MuseTalk's realtime batch of 20 frames (the UNet's latents
// are 32×32 at 320 channels, 16×16 at 640; attention runs over 1024
// tokens at the top level, cross-attention over 50 audio tokens of 384
// channels; the VAE decoder works on one frame at a time):
//
//   - Linear: [20·64, 320]·[320→1280]; the 32×32 level's projections
//     [20·1024, 320]→320 (q, k, v, out), →2560 (GEGLU's input) and
//     [20·1024, 1280]→320 (feed-forward out); the audio context's k and v
//     projection [20·50, 384]→320.
//   - Conv2D 3×3, padding 1, bias: [20,320,32,32]→320 and [20,640,16,16]→640
//     (UNet), [1,512,64,64]→512 and [1,256,256,256]→256 (VAE decoder).
//   - GroupNorm with SiLU, 32 groups: [20,320,32,32].
//   - Attention, 8 heads: self over [20,1024,320]; cross with q
//     [20,1024,320] and k, v [20,50,320].
//   - Softmax over the last dimension of [8,1024,1024] (one frame's
//     self-attention scores, were they materialised).
//   - GEGLU: [20,1024,2560]→[20,1024,1280].
//   - UpsampleNearest ×2: [20,640,16,16] (UNet) and [1,256,128,128] (VAE).
//
// The largest, the VAE's 256-channel conv (77 GFLOP), takes well under a
// second on the CPU backend's two AVX-512 cores, so `-benchtime 1x` runs
// every size in a few seconds each and the batch need not shrink.
//
// With o.Small the same ops and channel counts run at batch 1 with 64
// tokens (8×8 latents, 4×4 at 640 channels) and 8×8 VAE maps, each at
// most about 300 MFLOP, for the CUDA emulator, which runs one CUDA thread
// at a time on the host at well under 1 GFLOP/s (its Conv2D at 8×8 with
// 512 channels takes about 0.7 s). The names carry the sizes, so Small
// figures never pass for full-size ones.
func Benchmark(b *testing.B, be kernels.Backend, o Options) {
	for _, c := range benchCases(o.Small) {
		b.Run(c.name, func(b *testing.B) { c.run(b, be, o) })
	}
}

// benchCase is one op at one size.
type benchCase struct {
	name  string
	op    kernels.Op
	flops float64 // per call; reported as GFLOP/s when > 0
	elems float64 // elements read plus written per call; GB/s when > 0
	// setup allocates the op's tensors and returns the call to time.
	setup func(bt *benchTensors) func()
}

func benchCases(small bool) []benchCase {
	// Batch and token counts: full size, or Small's.
	n, tokens, side, ctx := 20, 1024, 32, 50
	vae512, vae256, vaeUp := 64, 256, 128 // VAE map sides
	if small {
		n, tokens, side = 1, 64, 8
		vae512, vae256, vaeUp = 8, 8, 8
	}
	var cs []benchCase

	type lin struct{ m, k, nOut int }
	lins := []lin{{n * 64, 320, 1280}, {n * tokens, 320, 320}, {n * tokens, 320, 2560}, {n * tokens, 1280, 320}, {n * ctx, 384, 320}}
	for _, l := range lins {
		cs = append(cs, benchCase{
			name:  fmt.Sprintf("Linear/m%d_k%d_n%d", l.m, l.k, l.nOut),
			op:    kernels.OpLinear,
			flops: 2 * float64(l.m) * float64(l.k) * float64(l.nOut),
			setup: func(bt *benchTensors) func() {
				x := bt.rand(1, l.m, l.k)
				w := bt.weight(1/math.Sqrt(float64(l.k)), l.nOut, l.k)
				bias := bt.weight(0.5, l.nOut)
				y := bt.alloc(l.m, l.nOut)
				return func() { bt.be.Linear(y, x, w, bias) }
			},
		})
	}

	type conv struct{ n, c, h, w, co int }
	convs := []conv{
		{n, 320, side, side, 320}, {n, 640, side / 2, side / 2, 640},
		{1, 512, vae512, vae512, 512}, {1, 256, vae256, vae256, 256},
	}
	for _, c := range convs {
		cs = append(cs, benchCase{
			name:  fmt.Sprintf("Conv2D/n%d_c%d_%dx%d_co%d_k3", c.n, c.c, c.h, c.w, c.co),
			op:    kernels.OpConv2D,
			flops: 2 * float64(c.n*c.co*c.h*c.w) * float64(c.c*9),
			setup: func(bt *benchTensors) func() {
				x := bt.rand(1, c.n, c.c, c.h, c.w)
				w := bt.weight(1/math.Sqrt(float64(c.c*9)), c.co, c.c, 3, 3)
				bias := bt.weight(0.5, c.co)
				y := bt.alloc(c.n, c.co, c.h, c.w)
				p := kernels.Conv2DPad(1, 1)
				return func() { bt.be.Conv2D(y, x, w, bias, p) }
			},
		})
	}

	gn := []int{n, 320, side, side}
	cs = append(cs, benchCase{
		name:  fmt.Sprintf("GroupNormSiLU/n%d_c%d_%dx%d_g32", gn[0], gn[1], gn[2], gn[3]),
		op:    kernels.OpGroupNorm,
		elems: 2 * float64(gn[0]*gn[1]*gn[2]*gn[3]),
		setup: func(bt *benchTensors) func() {
			x := bt.rand(1, gn...)
			w, bias := bt.weight(1, gn[1]), bt.weight(1, gn[1])
			y := bt.alloc(gn...)
			p := kernels.GroupNormParams{Groups: 32, Eps: 1e-5, SiLU: true}
			return func() { bt.be.GroupNorm(y, x, w, bias, p) }
		},
	})

	type att struct {
		kind       string
		lq, lk, ch int
	}
	for _, a := range []att{{"self", tokens, tokens, 320}, {"cross", tokens, ctx, 320}} {
		cs = append(cs, benchCase{
			name:  fmt.Sprintf("Attention/%s_n%d_lq%d_lk%d_c%d_h8", a.kind, n, a.lq, a.lk, a.ch),
			op:    kernels.OpAttention,
			flops: 2 * float64(n*a.lq*a.lk) * float64(2*a.ch),
			setup: func(bt *benchTensors) func() {
				q := bt.rand(1, n, a.lq, a.ch)
				k, v := bt.rand(1, n, a.lk, a.ch), bt.rand(1, n, a.lk, a.ch)
				y := bt.alloc(n, a.lq, a.ch)
				p := kernels.AttentionParams{Heads: 8}
				return func() { bt.be.Attention(y, q, k, v, p) }
			},
		})
	}

	sm := []int{8, tokens, tokens}
	cs = append(cs, benchCase{
		name:  fmt.Sprintf("Softmax/%dx%dx%d", sm[0], sm[1], sm[2]),
		op:    kernels.OpSoftmax,
		elems: 2 * float64(sm[0]*sm[1]*sm[2]),
		setup: func(bt *benchTensors) func() {
			x := bt.rand(4, sm...)
			y := bt.alloc(sm...)
			return func() { bt.be.Softmax(y, x) }
		},
	})

	cs = append(cs, benchCase{
		name:  fmt.Sprintf("GEGLU/n%d_l%d_d2560", n, tokens),
		op:    kernels.OpGEGLU,
		elems: float64(n*tokens) * (2560 + 1280),
		setup: func(bt *benchTensors) func() {
			x := bt.rand(1, n, tokens, 2560)
			y := bt.alloc(n, tokens, 1280)
			return func() { bt.be.GEGLU(y, x) }
		},
	})

	for _, u := range []conv{{n, 640, side / 2, side / 2, 0}, {1, 256, vaeUp, vaeUp, 0}} {
		cs = append(cs, benchCase{
			name:  fmt.Sprintf("UpsampleNearest/n%d_c%d_%dx%d_x2", u.n, u.c, u.h, u.w),
			op:    kernels.OpUpsampleNearest,
			elems: 5 * float64(u.n*u.c*u.h*u.w), // reads 1, writes 4
			setup: func(bt *benchTensors) func() {
				x := bt.rand(1, u.n, u.c, u.h, u.w)
				y := bt.alloc(u.n, u.c, 2*u.h, 2*u.w)
				return func() { bt.be.UpsampleNearest(y, x) }
			},
		})
	}
	return cs
}

func (c benchCase) run(b *testing.B, be kernels.Backend, o Options) {
	if !be.Supports(c.op) {
		b.Skipf("%v is not supported by %s", c.op, be.Name())
	}
	bt := &benchTensors{be: be, rng: rand.New(rand.NewPCG(1, 2))}
	defer bt.free()
	call := c.setup(bt)
	call()
	if err := be.Sync(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		call()
		if err := be.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	if c.flops > 0 {
		b.ReportMetric(c.flops/sec/1e9, "GFLOP/s")
	}
	if c.elems > 0 {
		b.ReportMetric(c.elems*float64(o.Precision.ElemBytes())/sec/1e9, "GB/s")
	}
}

// benchTensors allocates a benchmark's tensors and frees them.
type benchTensors struct {
	be    kernels.Backend
	rng   *rand.Rand
	owned []*kernels.Tensor
}

// values returns uniform values in [−scale·√3, scale·√3) (variance scale²).
func (bt *benchTensors) values(scale float64, n int) []float32 {
	v := make([]float32, n)
	s := float32(scale * math.Sqrt(3) * 0x1p-31)
	for i := range v {
		v[i] = float32(int32(bt.rng.Uint32())) * s
	}
	return v
}

// rand returns a tensor of random values with standard deviation scale.
func (bt *benchTensors) rand(scale float64, shape ...int) *kernels.Tensor {
	t := bt.alloc(shape...)
	bt.be.Upload(t, bt.values(scale, t.Len()))
	return t
}

// weight returns a weight tensor of random values with standard deviation
// scale.
func (bt *benchTensors) weight(scale float64, shape ...int) *kernels.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	t := bt.be.Weight(bt.values(scale, n), shape...)
	bt.owned = append(bt.owned, t)
	return t
}

func (bt *benchTensors) alloc(shape ...int) *kernels.Tensor {
	t := bt.be.Alloc(shape...)
	bt.owned = append(bt.owned, t)
	return t
}

func (bt *benchTensors) free() {
	for _, t := range bt.owned {
		bt.be.Free(t)
	}
}
