package model_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/musetalk/model"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// dmTinyUNetConfig is MuseTalk's UNet at the golden file's tiny sizes.
func dmTinyUNetConfig() weights.UNetConfig {
	c := model.MuseTalkUNetConfig()
	c.BlockOutChannels = []int{12, 24, 32, 32}
	c.NormNumGroups = 4
	c.AttentionHeadDim = weights.IntList{4}
	c.CrossAttentionDim = weights.IntList{24}
	return c
}

// dmTinyVAEConfig is sd-vae-ft-mse at the golden file's tiny sizes.
func dmTinyVAEConfig() weights.VAEConfig {
	c := model.SDVAEConfig()
	c.BlockOutChannels = []int{16, 24, 32, 32}
	c.NormNumGroups = 8
	return c
}

// dmMapSource is an editable model.Tensors.
type dmMapSource map[string]struct {
	data  []float32
	shape []int
}

func (m dmMapSource) Tensor(name string) ([]float32, []int, error) {
	t, ok := m[name]
	if !ok {
		return nil, nil, fmt.Errorf("tensor %q not found", name)
	}
	return t.data, t.shape, nil
}

func dmRandomSource(t testing.TB, spec []model.TensorSpec, seed uint64) dmMapSource {
	t.Helper()
	src := model.RandomTensors(spec, seed)
	m := dmMapSource{}
	for _, s := range spec {
		d, sh, err := src.Tensor(s.Name)
		if err != nil {
			t.Fatal(err)
		}
		m[s.Name] = struct {
			data  []float32
			shape []int
		}{d, sh}
	}
	return m
}

func dmSpecShape(spec []model.TensorSpec, name string) []int {
	for _, s := range spec {
		if s.Name == name {
			return s.Shape
		}
	}
	return nil
}

func dmMaxDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	m := 0.0
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		m = max(m, d)
	}
	return m
}

func TestUNetSpecMuseTalk(t *testing.T) {
	t.Parallel()
	spec, err := model.UNetSpec(model.MuseTalkUNetConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got := model.SpecParams(spec); got != 849_947_844 {
		t.Errorf("params = %d, want 849,947,844", got)
	}
	if len(spec) != 686 {
		t.Errorf("%d tensors, want 686", len(spec))
	}
	seen := map[string]bool{}
	for _, s := range spec {
		if seen[s.Name] {
			t.Errorf("duplicate %s", s.Name)
		}
		seen[s.Name] = true
	}
	for name, want := range map[string][]int{
		"conv_in.weight":                                                    {320, 8, 3, 3},
		"time_embedding.linear_1.weight":                                    {1280, 320},
		"time_embedding.linear_2.weight":                                    {1280, 1280},
		"down_blocks.0.resnets.0.time_emb_proj.weight":                      {320, 1280},
		"down_blocks.0.attentions.0.proj_in.weight":                         {320, 320, 1, 1},
		"down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": {320, 384},
		"down_blocks.1.resnets.0.conv_shortcut.weight":                      {640, 320, 1, 1},
		"down_blocks.2.downsamplers.0.conv.weight":                          {1280, 1280, 3, 3},
		"mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight":  {10240, 1280},
		"mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight":       {1280, 5120},
		"up_blocks.0.resnets.0.conv1.weight":                                {1280, 2560, 3, 3},
		"up_blocks.1.resnets.2.conv1.weight":                                {1280, 1920, 3, 3},
		"up_blocks.2.upsamplers.0.conv.weight":                              {640, 640, 3, 3},
		"up_blocks.3.resnets.0.conv_shortcut.weight":                        {320, 960, 1, 1},
		"up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_out.0.bias": {320},
		"conv_out.weight":                                                   {4, 320, 3, 3},
	} {
		if got := dmSpecShape(spec, name); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
	for _, absent := range []string{
		"down_blocks.3.attentions.0.norm.weight", "up_blocks.0.attentions.0.norm.weight",
		"down_blocks.3.downsamplers.0.conv.weight", "up_blocks.3.upsamplers.0.conv.weight",
		"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.bias",
	} {
		if seen[absent] {
			t.Errorf("%s should not exist", absent)
		}
	}
}

func TestVAESpecSD(t *testing.T) {
	t.Parallel()
	spec, err := model.VAESpec(model.SDVAEConfig())
	if err != nil {
		t.Fatal(err)
	}
	var enc, dec int64
	for _, s := range spec {
		n := model.SpecParams([]model.TensorSpec{s})
		switch {
		case strings.HasPrefix(s.Name, "encoder.") || strings.HasPrefix(s.Name, "quant_conv."):
			enc += n
		case strings.HasPrefix(s.Name, "decoder.") || strings.HasPrefix(s.Name, "post_quant_conv."):
			dec += n
		default:
			t.Errorf("unexpected %s", s.Name)
		}
	}
	if got := model.SpecParams(spec); got != 83_653_863 || len(spec) != 248 {
		t.Errorf("%d tensors, %d params; want 248, 83,653,863", len(spec), got)
	}
	if enc != 34_163_664 || dec != 49_490_199 {
		t.Errorf("encoder %d, decoder %d; want 34,163,664 and 49,490,199", enc, dec)
	}
	if got := dmSpecShape(spec, "encoder.mid_block.attentions.0.to_q.weight"); !slices.Equal(got, []int{512, 512}) {
		t.Errorf("to_q: %v", got)
	}
	if got := dmSpecShape(spec, "decoder.up_blocks.3.resnets.0.conv_shortcut.weight"); !slices.Equal(got, []int{128, 256, 1, 1}) {
		t.Errorf("decoder.up_blocks.3.resnets.0.conv_shortcut: %v", got)
	}
	if f := model.SDVAEConfig().ScalingFactor; f != 0.18215 {
		t.Errorf("scaling factor %v", f)
	}
}

func TestUNetConfigRejects(t *testing.T) {
	t.Parallel()
	str := func(s string) *string { return &s }
	for name, edit := range map[string]func(*weights.UNetConfig){
		"num_attention_heads": func(c *weights.UNetConfig) { c.NumAttentionHeads = weights.IntList{8} },
		"class_embed_type":    func(c *weights.UNetConfig) { c.ClassEmbedType = str("timestep") },
		"down_block_types":    func(c *weights.UNetConfig) { c.DownBlockTypes[3] = "AttnDownBlock2D" },
		"cross_attention_dim": func(c *weights.UNetConfig) { c.CrossAttentionDim = weights.IntList{384, 384, 768, 768} },
		"act_fn":              func(c *weights.UNetConfig) { c.ActFn = "gelu" },
		"norm_num_groups":     func(c *weights.UNetConfig) { c.NormNumGroups = 7 },
		"mid_block_type":      func(c *weights.UNetConfig) { c.MidBlockType = "UNetMidBlock2DSimpleCrossAttn" },
	} {
		c := model.MuseTalkUNetConfig()
		edit(&c)
		err := model.ValidateUNetConfig(c)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v should name it", name, err)
		}
		if _, err := model.UNetSpec(c); err == nil {
			t.Errorf("%s: UNetSpec accepted the config", name)
		}
	}
	if err := model.ValidateUNetConfig(model.MuseTalkUNetConfig()); err != nil {
		t.Error(err)
	}
}

// TestUNetHeads checks attention_head_dim is the head count: per-block
// heads change no weight shape, and the computation follows them (a head
// count of 1 and 4 give different outputs).
func TestUNetHeads(t *testing.T) {
	t.Parallel()
	be := dmBackend(t)
	c1 := dmTinyUNetConfig()
	c1.AttentionHeadDim = weights.IntList{1, 2, 4, 8}
	c4 := dmTinyUNetConfig()
	s1, err := model.UNetSpec(c1)
	if err != nil {
		t.Fatal(err)
	}
	s4, err := model.UNetSpec(c4)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(s1, s4, func(a, b model.TensorSpec) bool { return a.Name == b.Name && slices.Equal(a.Shape, b.Shape) }) {
		t.Fatal("head count changed the weights")
	}
	src := dmRandomSource(t, s1, 3)
	outs := make([][]float32, 2)
	for i, c := range []weights.UNetConfig{c1, c4} {
		u, err := model.NewUNet(be, c, src)
		if err != nil {
			t.Fatal(err)
		}
		x := kernels.Upload(be, dmRandomValues(8*8*8, 1), 1, 8, 8, 8)
		cond := kernels.Upload(be, dmRandomValues(7*24, 2), 1, 7, 24)
		y, err := u.Forward(x, []float32{0}, cond)
		if err != nil {
			t.Fatal(err)
		}
		outs[i] = dmDownload(t, be, y)
		u.Close()
	}
	if d := dmMaxDiff(outs[0], outs[1]); d < 1e-4 {
		t.Errorf("1 vs 4 heads differ by only %g", d)
	}
}

func dmRandomValues(n int, seed uint64) []float32 {
	src := model.RandomTensors([]model.TensorSpec{{Name: "x", Shape: []int{n, 3}}}, seed)
	d, _, _ := src.Tensor("x") // uniform, variance 1/3
	return d[:n]
}

func TestUNetWeightErrors(t *testing.T) {
	t.Parallel()
	cfg := dmTinyUNetConfig()
	spec, err := model.UNetSpec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src := dmRandomSource(t, spec, 1)
	delete(src, "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight")
	e := src["up_blocks.1.resnets.2.conv1.weight"]
	e.shape = []int{32, 55, 3, 3}
	src["up_blocks.1.resnets.2.conv1.weight"] = e
	_, err = model.NewUNet(dmBackend(t), cfg, src)
	if err == nil {
		t.Fatal("NewUNet accepted a broken checkpoint")
	}
	for _, want := range []string{"mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight", "up_blocks.1.resnets.2.conv1.weight", "[32 55 3 3]", "2 problem"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

// TestUNetBatchAndTimesteps checks a batch equals its items run alone,
// per-item timesteps, odd spatial sizes and the argument errors.
func TestUNetBatchAndTimesteps(t *testing.T) {
	t.Parallel()
	be := dmBackend(t)
	cfg := dmTinyUNetConfig()
	spec, _ := model.UNetSpec(cfg)
	u, err := model.NewUNet(be, cfg, dmRandomSource(t, spec, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	const n, h, w, l = 2, 10, 14, 5 // 10×14 → 5×7 → 3×4 → 2×2 and back
	xs := dmRandomValues(n*8*h*w, 3)
	cs := dmRandomValues(n*l*24, 4)
	x := kernels.Upload(be, xs, n, 8, h, w)
	cond := kernels.Upload(be, cs, n, l, 24)
	ts := []float32{0, 500}
	y, err := u.Forward(x, ts, cond)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(y.Shape(), []int{n, 4, h, w}) {
		t.Fatalf("output %v", y)
	}
	batch := dmDownload(t, be, y)
	per := len(batch) / n
	for i := range n {
		xi := kernels.Upload(be, xs[i*8*h*w:(i+1)*8*h*w], 1, 8, h, w)
		ci := kernels.Upload(be, cs[i*l*24:(i+1)*l*24], 1, l, 24)
		yi, err := u.Forward(xi, ts[i:i+1], ci)
		if err != nil {
			t.Fatal(err)
		}
		if d := dmMaxDiff(dmDownload(t, be, yi), batch[i*per:(i+1)*per]); d > 1e-5 {
			t.Errorf("item %d: batch vs alone differ by %g", i, d)
		}
	}
	if _, err := u.Forward(x, []float32{0, 0, 0}, cond); err == nil {
		t.Error("3 timesteps for batch 2 accepted")
	}
	if _, err := u.Forward(cond.Reshape(n, l, 24, 1), ts, cond); err == nil {
		t.Error("wrong sample shape accepted")
	}
	if _, err := u.Forward(x, ts, kernels.Upload(be, cs[:n*l*12], n, l, 12)); err == nil {
		t.Error("wrong cross-attention width accepted")
	}
}

// TestUNetVariants builds configs the golden file does not cover: linear
// projections, two transformer layers, per-block heads and layers, a
// centered input and a custom time embedding width.
func TestUNetVariants(t *testing.T) {
	t.Parallel()
	be := dmBackend(t)
	cfg := dmTinyUNetConfig()
	cfg.UseLinearProjection = true
	cfg.TransformerLayersPerBlock = weights.IntList{2}
	cfg.LayersPerBlock = weights.IntList{1, 2, 1, 1}
	cfg.AttentionHeadDim = weights.IntList{2, 3, 4, 4}
	cfg.CenterInputSample = true
	td := 20
	cfg.TimeEmbeddingDim = &td
	spec, err := model.UNetSpec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]int{
		"down_blocks.0.attentions.0.proj_in.weight":                          {12, 12},
		"down_blocks.1.attentions.1.transformer_blocks.1.norm3.weight":       {24},
		"up_blocks.3.resnets.1.time_emb_proj.weight":                         {12, 20},
		"time_embedding.linear_2.weight":                                     {20, 20},
		"mid_block.attentions.0.transformer_blocks.1.attn2.to_v.weight":      {32, 24},
		"up_blocks.2.attentions.2.transformer_blocks.0.ff.net.0.proj.weight": {192, 24},
	} {
		if got := dmSpecShape(spec, name); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
	if dmSpecShape(spec, "down_blocks.0.resnets.1.norm1.weight") != nil {
		t.Error("down block 0 has one layer")
	}
	u, err := model.NewUNet(be, cfg, model.RandomTensors(spec, 5))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	x := kernels.Upload(be, dmRandomValues(8*16*16, 6), 1, 8, 16, 16)
	cond := kernels.Upload(be, dmRandomValues(3*24, 7), 1, 3, 24)
	y, err := u.Forward(x, []float32{7}, cond)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range dmDownload(t, be, y) {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("non-finite output")
		}
	}
}

func TestTimestepProjection(t *testing.T) {
	t.Parallel()
	got := model.TimestepProjection([]float32{0, 1}, 6, true, 0)
	want0 := []float32{1, 1, 1, 0, 0, 0}
	if !slices.Equal(got[:6], want0) {
		t.Errorf("t=0 flipped: %v", got[:6])
	}
	// t=1: freqs exp(−ln(1e4)·i/3) = 1, 10^(−4/3), 10^(−8/3).
	for i, f := range []float64{1, math.Pow(10, -4.0/3), math.Pow(10, -8.0/3)} {
		if d := math.Abs(float64(got[6+i]) - math.Cos(f)); d > 1e-6 {
			t.Errorf("cos %d: %v vs %v", i, got[6+i], math.Cos(f))
		}
		if d := math.Abs(float64(got[9+i]) - math.Sin(f)); d > 1e-6 {
			t.Errorf("sin %d: %v vs %v", i, got[9+i], math.Sin(f))
		}
	}
	plain := model.TimestepProjection([]float32{1}, 6, false, 0)
	if !slices.Equal(plain[:3], got[9:12]) || !slices.Equal(plain[3:], got[6:9]) {
		t.Errorf("flip_sin_to_cos=false: %v", plain)
	}
}

// TestVAEEncodeDecode checks Encode (the mean) against EncodeMoments, with
// and without quant_conv, the legacy attention names (including 1×1-conv
// shaped weights), and the argument errors.
func TestVAEEncodeDecode(t *testing.T) {
	t.Parallel()
	be := dmBackend(t)
	for _, quant := range []bool{true, false} {
		cfg := dmTinyVAEConfig()
		cfg.UseQuantConv, cfg.UsePostQuantConv = quant, quant
		spec, err := model.VAESpec(cfg)
		if err != nil {
			t.Fatal(err)
		}
		src := dmRandomSource(t, spec, 8)
		v, err := model.NewVAE(be, cfg, src)
		if err != nil {
			t.Fatal(err)
		}
		x := kernels.Upload(be, dmRandomValues(2*3*32*32, 9), 2, 3, 32, 32)
		m, err := v.EncodeMoments(x)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(m.Shape(), []int{2, 8, 4, 4}) {
			t.Fatalf("moments %v", m)
		}
		dist, err := model.NewLatentDist(dmDownload(t, be, m), m.Shape())
		if err != nil {
			t.Fatal(err)
		}
		mean, err := v.Encode(x)
		if err != nil {
			t.Fatal(err)
		}
		if d := dmMaxDiff(dmDownload(t, be, mean), dist.Mean); d > 1e-6 {
			t.Errorf("quant %v: Encode vs moments mean differ by %g", quant, d)
		}
		dec, err := v.Decode(mean)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(dec.Shape(), []int{2, 3, 32, 32}) {
			t.Errorf("decoded %v", dec)
		}
		ref := dmDownload(t, be, dec)
		v.Close()

		// The legacy checkpoint names, with 1×1-conv shaped q/k/v/out.
		legacy := dmMapSource{}
		for name, e := range src {
			for _, r := range [][2]string{{"to_q.", "query."}, {"to_k.", "key."}, {"to_v.", "value."}, {"to_out.0.", "proj_attn."}} {
				if strings.Contains(name, "mid_block.attentions.0."+r[0]) {
					name = strings.Replace(name, r[0], r[1], 1)
					if len(e.shape) == 2 {
						e.shape = []int{e.shape[0], e.shape[1], 1, 1}
					}
				}
			}
			legacy[name] = e
		}
		v2, err := model.NewVAE(be, cfg, legacy)
		if err != nil {
			t.Fatal(err)
		}
		dec2, err := v2.Decode(mean)
		if err != nil {
			t.Fatal(err)
		}
		if d := dmMaxDiff(dmDownload(t, be, dec2), ref); d != 0 {
			t.Errorf("legacy names decode differently (%g)", d)
		}
		if _, err := v2.Decode(x); err == nil {
			t.Error("Decode accepted an image")
		}
		if _, err := v2.Encode(mean); err == nil {
			t.Error("Encode accepted latents")
		}
		v2.Close()
	}
}

func TestBenchHelpersTiny(t *testing.T) {
	t.Parallel()
	be := dmBackend(t)
	ctx := context.Background()
	opt := model.BenchOptions{Batch: 2, Iters: 2, LatentSize: 8, CondLen: 5}
	r, err := model.BenchUNet(ctx, be, dmTinyUNetConfig(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Times) != 2 || r.Params != 667_672 || r.Mean() <= 0 {
		t.Errorf("unet: %v", r)
	}
	t.Log(r)
	r, err = model.BenchVAEDecoder(ctx, be, dmTinyVAEConfig(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Times) != 2 || !slices.Equal(r.InputShape, []int{2, 4, 8, 8}) {
		t.Errorf("vae: %v", r)
	}
	t.Log(r)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := model.BenchUNet(cctx, be, dmTinyUNetConfig(), opt); err == nil {
		t.Error("cancelled bench ran")
	}
}

// Full-size benchmarks: MuseTalk's UNet (850 M parameters, 3.4 GB fp32
// weights, twice that with the CPU backend's packed copies) and the
// sd-vae-ft-mse decoder with random weights. They run only with
// MUSETALK_BENCH_FULL=1; MUSETALK_BENCH_BATCH sets the batch (default 1):
//
//	MUSETALK_BENCH_FULL=1 go test ./musetalk/model -run '^$' -bench Full -benchtime 3x

func dmBenchBatch(b *testing.B) int {
	if os.Getenv("MUSETALK_BENCH_FULL") != "1" {
		b.Skip("set MUSETALK_BENCH_FULL=1 to run the full-size model benchmarks")
	}
	n := 1
	if s := os.Getenv("MUSETALK_BENCH_BATCH"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			b.Fatalf("MUSETALK_BENCH_BATCH=%q", s)
		}
	}
	return n
}

func BenchmarkUNetFull(b *testing.B) {
	dmBenchUNet(b, model.MuseTalkUNetConfig(), dmBenchBatch(b), 32, 50)
}

func BenchmarkVAEDecoderFull(b *testing.B) {
	dmBenchVAEDecoder(b, model.SDVAEConfig(), dmBenchBatch(b), 32)
}

// The tiny benchmarks run at the golden files' sizes and need nothing.
func BenchmarkUNetTiny(b *testing.B) { dmBenchUNet(b, dmTinyUNetConfig(), 2, 16, 50) }

func BenchmarkVAEDecoderTiny(b *testing.B) { dmBenchVAEDecoder(b, dmTinyVAEConfig(), 2, 8) }

func dmBenchUNet(b *testing.B, cfg weights.UNetConfig, batch, size, condLen int) {
	be := dmBackend(b)
	spec, err := model.UNetSpec(cfg)
	if err != nil {
		b.Fatal(err)
	}
	u, err := model.NewUNet(be, cfg, model.RandomTensors(spec, 1))
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	xd := cfg.CrossAttentionDim[0]
	x := kernels.Upload(be, dmRandomValues(batch*cfg.InChannels*size*size, 2), batch, cfg.InChannels, size, size)
	cond := kernels.Upload(be, dmRandomValues(batch*condLen*xd, 3), batch, condLen, xd)
	pass := func() (*kernels.Tensor, error) { return u.Forward(x, []float32{0}, cond) }
	// One untimed pass packs the weights and fills the memory pool.
	y, err := pass()
	if err != nil {
		b.Fatal(err)
	}
	be.Free(y)
	b.ReportMetric(float64(batch), "items/op")
	for b.Loop() {
		y, err := pass()
		if err != nil {
			b.Fatal(err)
		}
		if err := be.Sync(); err != nil {
			b.Fatal(err)
		}
		be.Free(y)
	}
}

func dmBenchVAEDecoder(b *testing.B, cfg weights.VAEConfig, batch, size int) {
	be := dmBackend(b)
	spec, err := model.VAESpec(cfg)
	if err != nil {
		b.Fatal(err)
	}
	v, err := model.NewVAE(be, cfg, model.RandomTensors(spec, 1))
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	z := kernels.Upload(be, dmRandomValues(batch*cfg.LatentChannels*size*size, 2), batch, cfg.LatentChannels, size, size)
	y, err := v.Decode(z) // untimed: packs the weights, fills the pool
	if err != nil {
		b.Fatal(err)
	}
	be.Free(y)
	b.ReportMetric(float64(batch), "items/op")
	for b.Loop() {
		y, err := v.Decode(z)
		if err != nil {
			b.Fatal(err)
		}
		if err := be.Sync(); err != nil {
			b.Fatal(err)
		}
		be.Free(y)
	}
}
