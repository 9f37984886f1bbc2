package model_test

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/musetalk/model"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// Golden tests of the UNet (case a) and the VAE (case b) against
// ../shared/golden (or $MUSETALK_GOLDEN_DIR). Everything (config, sizes,
// batch, outputs) is read from the files. Helpers carry a dm ("diffusers
// model") prefix to stay clear of the other golden tests of this package.

// dmGolden is one golden case: its JSON and its safetensors file.
type dmGolden struct {
	name string
	meta map[string]json.RawMessage
	r    *weights.Safetensors
	atol map[string]float64
}

// dmLoadGolden opens case name, skipping the test when its files are missing.
func dmLoadGolden(t *testing.T, name string) *dmGolden {
	t.Helper()
	c := golden.Load(t, name)
	return &dmGolden{name: name, meta: c.Meta, r: c.File, atol: c.Atol}
}

func (g *dmGolden) Tensor(name string) ([]float32, []int, error) {
	x, err := g.r.ReadFloat32(name)
	if err != nil {
		return nil, nil, err
	}
	return x.Data, x.Shape, nil
}

// config returns the JSON's config_full (or config_passed).
func (g *dmGolden) config(t *testing.T) []byte {
	t.Helper()
	for _, k := range []string{"config_full", "config_passed"} {
		if raw, ok := g.meta[k]; ok {
			return raw
		}
	}
	t.Fatalf("%s: no config_full or config_passed", g.name)
	return nil
}

// upload reads a tensor onto the backend.
func (g *dmGolden) upload(t *testing.T, be kernels.Backend, name string) *kernels.Tensor {
	t.Helper()
	data, shape, err := g.Tensor(name)
	if err != nil {
		t.Fatalf("%s: %v", g.name, err)
	}
	return kernels.Upload(be, data, shape...)
}

// names returns the file's tensor names with the given prefix, sorted.
func (g *dmGolden) names(prefix string) []string {
	var out []string
	for _, ti := range g.r.Tensors() {
		if strings.HasPrefix(ti.Name, prefix) {
			out = append(out, ti.Name)
		}
	}
	slices.Sort(out)
	return out
}

// weightNames returns the names of the model's weights in the file (those
// without a role prefix).
func (g *dmGolden) weightNames() []string {
	var out []string
	for _, ti := range g.r.Tensors() {
		if i := strings.IndexByte(ti.Name, '.'); i > 0 {
			switch ti.Name[:i] {
			case "input", "output", "output_f64", "output_np", "intermediate", "ref", "ref_f64":
				continue
			}
		}
		out = append(out, ti.Name)
	}
	return out
}

// compare checks got against the reference tensor name within its
// suggested atol: max|got − ref| ≤ atol.
func (g *dmGolden) compare(t *testing.T, name string, got []float32, shape []int) {
	t.Helper()
	atol, ok := g.atol[name]
	if !ok {
		t.Errorf("%s: no suggested_tolerance for %s", g.name, name)
		return
	}
	ref, refShape, err := g.Tensor(name)
	if err != nil {
		t.Errorf("%s: %v", g.name, err)
		return
	}
	if !slices.Equal(shape, refShape) {
		t.Errorf("%s: shape %v, want %v", name, shape, refShape)
		return
	}
	maxErr, at, refMax := 0.0, 0, 0.0
	for i, r := range ref {
		d := math.Abs(float64(got[i]) - float64(r))
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		if d > maxErr {
			maxErr, at = d, i
		}
		refMax = max(refMax, math.Abs(float64(r)))
	}
	if maxErr > atol {
		t.Errorf("%-40s max|go−ref| = %.3g > atol %.3g (at %d: go %v, ref %v; max|ref| %.3g)",
			name, maxErr, atol, at, got[at], ref[at], refMax)
		return
	}
	t.Logf("%-40s max|go−ref| = %.3g ≤ atol %.3g (%.2f of it)", name, maxErr, atol, maxErr/atol)
}

// compareOn judges an output computed on gb: by compare on an fp32
// backend, by the fp16 rule with relative allowance r on an fp16 one (see
// model.F16Bound).
func (g *dmGolden) compareOn(t *testing.T, gb goldenBackend, r float64, name string, got []float32, shape []int) {
	t.Helper()
	if gb.prec != kernels.F16 {
		g.compare(t, name, got, shape)
		return
	}
	atol, ok := g.atol[name]
	if !ok {
		t.Errorf("%s: no suggested_tolerance for %s", g.name, name)
		return
	}
	ref, refShape, err := g.Tensor(name)
	if err != nil {
		t.Errorf("%s: %v", g.name, err)
		return
	}
	model.CompareF16(t, name, got, shape, ref, refShape, atol, r)
}

// dmFramePSNR is the PSNR in dB of decoded VAE output got against ref after
// MuseTalk's mapping to pixels, (x/2+0.5).clamp(0,1), with peak 1.
func dmFramePSNR(got, ref []float32) float64 {
	pix := func(x float32) float64 { return min(max(float64(x)/2+0.5, 0), 1) }
	var se float64
	for i := range ref {
		d := pix(got[i]) - pix(ref[i])
		se += d * d
	}
	if se == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(float64(len(ref))/se)
}

func dmBackend(t testing.TB) kernels.Backend { return dmBackendConv(t, cpu.ConvAuto) }

// dmBackendConv is a CPU backend with the given 3×3 convolution algorithm,
// closed when the test ends.
func dmBackendConv(t testing.TB, algo cpu.ConvAlgo) kernels.Backend {
	t.Helper()
	be, err := cpu.New(cpu.Options{Conv3x3: algo})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

func dmDownload(t testing.TB, be kernels.Backend, x *kernels.Tensor) []float32 {
	t.Helper()
	out := make([]float32, x.Len())
	if err := be.Download(out, x); err != nil {
		t.Fatal(err)
	}
	return out
}

// dmTracer collects traced activations on the host.
type dmTracer struct {
	be   kernels.Backend
	t    testing.TB
	seen map[string][]float32
	dims map[string][]int
}

func newDMTracer(t testing.TB, be kernels.Backend) *dmTracer {
	return &dmTracer{be: be, t: t, seen: map[string][]float32{}, dims: map[string][]int{}}
}

func (d *dmTracer) trace(name string, x *kernels.Tensor) {
	d.seen["intermediate."+name] = dmDownload(d.t, d.be, x)
	d.dims["intermediate."+name] = x.Shape()
}

// compareIntermediates checks every intermediate.* of the file the trace
// produced; names listed in skip are the file's but not this pass's.
func (d *dmTracer) compareIntermediates(t *testing.T, g *dmGolden, keep func(string) bool) {
	t.Helper()
	for _, name := range g.names("intermediate.") {
		if !keep(name) {
			continue
		}
		got, ok := d.seen[name]
		if !ok {
			t.Errorf("%s: the forward pass did not produce %s", g.name, name)
			continue
		}
		g.compare(t, name, got, d.dims[name])
	}
}

// checkWeightsCovered fails if the spec and the file's weights differ: a
// weight the file holds but the model does not read is a structural bug as
// much as a missing one.
func dmCheckWeightsCovered(t *testing.T, g *dmGolden, spec []model.TensorSpec) {
	t.Helper()
	want := map[string]bool{}
	for _, s := range spec {
		want[s.Name] = true
	}
	have := g.weightNames()
	for _, n := range have {
		if !want[n] {
			t.Errorf("%s: weight %s in the file is not part of the model spec", g.name, n)
		}
	}
	if len(have) != len(spec) {
		t.Errorf("%s: file has %d weights, spec %d", g.name, len(have), len(spec))
	}
	if raw, ok := g.meta["num_weight_tensors"]; ok {
		var n int
		if json.Unmarshal(raw, &n) == nil && n != len(spec) {
			t.Errorf("%s: num_weight_tensors %d, spec %d", g.name, n, len(spec))
		}
	}
	if raw, ok := g.meta["num_weight_params"]; ok {
		var n int64
		if json.Unmarshal(raw, &n) == nil && n != model.SpecParams(spec) {
			t.Errorf("%s: num_weight_params %d, spec %d", g.name, n, model.SpecParams(spec))
		}
	}
}

// goldenBackend is one backend the UNet and VAE golden tests run on.
type goldenBackend struct {
	name string
	new  func(t testing.TB) kernels.Backend
	// intermediates: whether the run compares the per-layer intermediates
	// too. Their tolerances are 10× the direct convolution's float32
	// error at that layer; Winograd's rounding, spread over the few input
	// channels of these tiny networks (the decoder's conv_in has 4), can
	// exceed them at a layer while every output stays well inside its own.
	// An fp16 backend compares none (their fp32 atols say nothing about
	// fp16 storage), only the outputs.
	intermediates bool
	// prec is how the backend stores tensors, and so how its outputs are
	// judged (see model.F16Bound).
	prec kernels.Precision
}

// goldenBackends: the CPU backend with its own choice of 3×3 convolution
// and with Winograd forced on every eligible conv (the golden networks are
// too narrow for the cost model to pick it, and the full-size ones use
// it), and the CUDA backend's kernels run by the CPU emulator (the same
// .cu sources the GPU runs) with fp32 and with fp16 storage.
var goldenBackends = []goldenBackend{
	{cpu.ConvAuto.String(), func(t testing.TB) kernels.Backend { return dmBackendConv(t, cpu.ConvAuto) }, true, kernels.F32},
	{cpu.ConvWinograd.String(), func(t testing.TB) kernels.Backend { return dmBackendConv(t, cpu.ConvWinograd) }, false, kernels.F32},
	goldenBackendNamed("cuda-emu"),
	goldenBackendNamed("cuda-emu-fp16"),
}

// goldenBackendNamed is one of model.GoldenBackends; an fp32 one compares
// the intermediates too.
func goldenBackendNamed(name string) goldenBackend {
	for _, nb := range model.GoldenBackends {
		if nb.Name == name {
			return goldenBackend{nb.Name, nb.New, nb.Precision == kernels.F32, nb.Precision}
		}
	}
	panic("no golden backend " + name)
}

func TestGoldenUNet(t *testing.T) {
	t.Parallel()
	for _, gb := range goldenBackends {
		t.Run(gb.name, func(t *testing.T) { testGoldenUNet(t, gb) })
	}
}

func testGoldenUNet(t *testing.T, gb goldenBackend) {
	g := dmLoadGolden(t, "a_unet2d_condition")
	cfg, err := weights.ParseUNetConfig(g.config(t))
	if err != nil {
		t.Fatal(err)
	}
	spec, err := model.UNetSpec(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	dmCheckWeightsCovered(t, g, spec)

	be := gb.new(t)
	u, err := model.NewUNet(be, *cfg, g)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	sample := g.upload(t, be, "input.sample")
	cond := g.upload(t, be, "input.encoder_hidden_states")

	outs := g.names("output.")
	if len(outs) == 0 {
		t.Fatal("no output.* tensors")
	}
	for _, name := range outs {
		// output.sample is the call with input.timestep; the other outputs
		// (output.sample_t500) use input.timestep_alt.
		tsName := "input.timestep"
		if name != "output.sample" {
			tsName = "input.timestep_alt"
		}
		ts, _, err := g.Tensor(tsName)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var tr *dmTracer
		var trace func(string, *kernels.Tensor)
		if name == "output.sample" {
			tr = newDMTracer(t, be)
			trace = tr.trace
		}
		out, err := model.UNetForwardTrace(u, sample, ts, cond, trace)
		if err != nil {
			t.Fatal(err)
		}
		g.compareOn(t, gb, model.F16RelUNet, name, dmDownload(t, be, out), out.Shape())
		be.Free(out)
		if tr != nil {
			tr.compareIntermediates(t, g, func(string) bool { return gb.intermediates })
		}

		// The untraced path (fused GroupNorm+SiLU at the end) must agree.
		if name == "output.sample" {
			out2, err := u.Forward(sample, ts, cond)
			if err != nil {
				t.Fatal(err)
			}
			g.compareOn(t, gb, model.F16RelUNet, name, dmDownload(t, be, out2), out2.Shape())
			be.Free(out2)
		}
	}
}

func TestGoldenVAE(t *testing.T) {
	t.Parallel()
	for _, gb := range goldenBackends {
		t.Run(gb.name, func(t *testing.T) { testGoldenVAE(t, gb) })
	}
}

func testGoldenVAE(t *testing.T, gb goldenBackend) {
	g := dmLoadGolden(t, "b_autoencoder_kl")
	cfg, err := weights.ParseVAEConfig(g.config(t))
	if err != nil {
		t.Fatal(err)
	}
	spec, err := model.VAESpec(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	dmCheckWeightsCovered(t, g, spec)

	be := gb.new(t)
	v, err := model.NewVAE(be, *cfg, g)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	tr := newDMTracer(t, be)
	image := g.upload(t, be, "input.image")
	moments, err := model.VAEEncodeMomentsTrace(v, image, tr.trace)
	if err != nil {
		t.Fatal(err)
	}
	dist, err := model.NewLatentDist(dmDownload(t, be, moments), moments.Shape())
	if err != nil {
		t.Fatal(err)
	}
	be.Free(moments)
	mean, err := v.Encode(image)
	if err != nil {
		t.Fatal(err)
	}
	meanDev := dmDownload(t, be, mean)
	be.Free(mean)

	var decoded []float32
	var decShape []int
	if slices.Contains(g.names("input."), "input.latents") {
		z := g.upload(t, be, "input.latents")
		out, err := model.VAEDecodeTrace(v, z, tr.trace)
		if err != nil {
			t.Fatal(err)
		}
		decoded, decShape = dmDownload(t, be, out), out.Shape()
		be.Free(out)
	}
	tr.compareIntermediates(t, g, func(string) bool { return gb.intermediates })

	outs := g.names("output.")
	if len(outs) == 0 {
		t.Fatal("no output.* tensors")
	}
	sample := func() []float32 {
		noise, _, err := g.Tensor("input.sample_noise")
		if err != nil {
			t.Fatal(err)
		}
		s, err := dist.Sample(noise)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	compare := func(name string, got []float32, shape []int) {
		t.Helper()
		g.compareOn(t, gb, model.F16RelVAE, name, got, shape)
	}
	for _, name := range outs {
		switch strings.TrimPrefix(name, "output.") {
		case "latent_mean":
			compare(name, dist.Mean, dist.Shape)
			compare(name, meanDev, dist.Shape) // VAE.Encode
		case "latent_logvar":
			compare(name, dist.LogVar, dist.Shape)
		case "latent_std":
			compare(name, dist.Std(), dist.Shape)
		case "latent_sample":
			compare(name, sample(), dist.Shape)
		case "latents_scaled":
			s := sample()
			for i := range s {
				s[i] *= v.ScalingFactor()
			}
			compare(name, s, dist.Shape)
		case "decoded":
			if decoded == nil {
				t.Errorf("%s: no input.latents to decode", name)
				continue
			}
			compare(name, decoded, decShape)
			if ref, _, err := g.Tensor(name); err == nil && len(ref) == len(decoded) {
				psnr := dmFramePSNR(decoded, ref)
				t.Logf("%-36s PSNR of the frames %.1f dB", name, psnr)
				if gb.prec == kernels.F16 && !(psnr >= model.F16MinPSNR) {
					t.Errorf("%s: fp16 frames' PSNR %.1f dB < %g dB", name, psnr, model.F16MinPSNR)
				}
			}
		default:
			t.Errorf("%s: unknown output", name)
		}
	}
}

// TestGoldenFullSizeConfigs parses the reference_full_size_config of both
// golden JSONs and builds the real networks' specs from it (nothing is
// allocated). The reference is the official config (musetalk.json,
// sd-vae-ft-mse), so the spec must be the one of the built-in config, whose
// parameter counts TestUNetSpecMuseTalk and TestVAESpecSD check; and the
// tiny model has exactly the full-size weight names, as many as its JSON's
// num_weight_tensors.
func TestGoldenFullSizeConfigs(t *testing.T) {
	t.Parallel()
	unetSpec := func(raw []byte) ([]model.TensorSpec, error) {
		cfg, err := weights.ParseUNetConfig(raw)
		if err != nil {
			return nil, err
		}
		return model.UNetSpec(*cfg)
	}
	vaeSpec := func(raw []byte) ([]model.TensorSpec, error) {
		cfg, err := weights.ParseVAEConfig(raw)
		if err != nil {
			return nil, err
		}
		return model.VAESpec(*cfg)
	}
	for _, c := range []struct {
		file    string
		builtIn func() ([]model.TensorSpec, error)
		spec    func(raw []byte) ([]model.TensorSpec, error)
	}{
		{"a_unet2d_condition", func() ([]model.TensorSpec, error) { return model.UNetSpec(model.MuseTalkUNetConfig()) }, unetSpec},
		{"b_autoencoder_kl", func() ([]model.TensorSpec, error) { return model.VAESpec(model.SDVAEConfig()) }, vaeSpec},
	} {
		t.Run(c.file, func(t *testing.T) {
			g := dmLoadGolden(t, c.file)
			raw, ok := g.meta["reference_full_size_config"]
			if !ok {
				t.Skip("no reference_full_size_config")
			}
			spec, err := c.spec(raw)
			if err != nil {
				t.Fatal(err)
			}
			want, err := c.builtIn()
			if err != nil {
				t.Fatal(err)
			}
			if got, wantParams := model.SpecParams(spec), model.SpecParams(want); got != wantParams || len(spec) != len(want) {
				t.Errorf("reference config: %d tensors, %d params; the built-in config %d, %d", len(spec), got, len(want), wantParams)
			}
			wantShapes := map[string][]int{}
			for _, s := range want {
				wantShapes[s.Name] = s.Shape
			}
			for _, s := range spec {
				if w, ok := wantShapes[s.Name]; !ok || !slices.Equal(w, s.Shape) {
					t.Errorf("%s %v: the built-in config's spec has %v", s.Name, s.Shape, w)
				}
			}
			// The full-size network has exactly the golden file's weight names.
			names := map[string]bool{}
			for _, s := range spec {
				names[s.Name] = true
			}
			tiny := g.weightNames()
			for _, n := range tiny {
				if !names[n] {
					t.Errorf("weight %s of the tiny model is missing from the full-size spec", n)
				}
			}
			if len(tiny) != len(spec) {
				t.Errorf("the tiny model has %d weights, the full-size spec %d", len(tiny), len(spec))
			}
			var stated int
			if err := json.Unmarshal(g.meta["num_weight_tensors"], &stated); err != nil || stated != len(spec) {
				t.Errorf("num_weight_tensors %s, the full-size spec has %d", g.meta["num_weight_tensors"], len(spec))
			}
		})
	}
}
