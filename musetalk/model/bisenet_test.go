package model

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
)

// BiSeNetForwardTrace is a test hook for the external golden test: Forward
// reporting the golden file's intermediate.* activations (names without
// the prefix).
func BiSeNetForwardTrace(n *BiSeNet, x *kernels.Tensor, trace func(string, *kernels.Tensor)) (*kernels.Tensor, error) {
	return n.forward(x, trace)
}

// testBackend is a CPU backend closed when the test ends.
func testBackend(t testing.TB) kernels.Backend {
	t.Helper()
	be, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

func bisenetRandom(rng *rand.Rand, n int, lo, hi float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(lo + (hi-lo)*rng.Float64())
	}
	return out
}

// TestFoldBatchNorm checks the fold against convolution followed by
// BatchNorm, both evaluated in float64 on random data.
func TestFoldBatchNorm(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	const cout, cin, k, h, w = 4, 3, 3, 6, 5
	wt := bisenetRandom(rng, cout*cin*k*k, -1, 1)
	gamma := bisenetRandom(rng, cout, 0.5, 1.5)
	beta := bisenetRandom(rng, cout, -0.3, 0.3)
	mean := bisenetRandom(rng, cout, -2, 2)
	variance := bisenetRandom(rng, cout, 0.01, 4)
	x := bisenetRandom(rng, cin*h*w, -1, 1)

	fw, fb, err := foldBatchNorm(wt, gamma, beta, mean, variance, bisenetBNEps)
	if err != nil {
		t.Fatal(err)
	}
	// conv returns the valid (unpadded) k×k convolution at (o, y, x).
	conv := func(wts []float32, o, y, xx int) float64 {
		s := 0.0
		for c := range cin {
			for i := range k {
				for j := range k {
					s += float64(wts[((o*cin+c)*k+i)*k+j]) * float64(x[(c*h+y+i)*w+xx+j])
				}
			}
		}
		return s
	}
	worst := 0.0
	for o := range cout {
		for y := range h - k + 1 {
			for xx := range w - k + 1 {
				want := (conv(wt, o, y, xx)-float64(mean[o]))/math.Sqrt(float64(variance[o])+bisenetBNEps)*float64(gamma[o]) + float64(beta[o])
				got := conv(fw, o, y, xx) + float64(fb[o])
				worst = max(worst, math.Abs(got-want)/(1+math.Abs(want)))
			}
		}
	}
	if worst > 1e-6 {
		t.Errorf("folded conv differs from conv+BN by %.3g (relative)", worst)
	}
	// The fold rounds once from float64.
	for o := range cout {
		s := float64(gamma[o]) / math.Sqrt(float64(variance[o])+bisenetBNEps)
		if want := float32(float64(wt[o*cin*k*k+5]) * s); fw[o*cin*k*k+5] != want {
			t.Errorf("channel %d: folded weight %v, want %v", o, fw[o*cin*k*k+5], want)
		}
		if want := float32(float64(beta[o]) - float64(mean[o])*s); fb[o] != want {
			t.Errorf("channel %d: folded bias %v, want %v", o, fb[o], want)
		}
	}
	// The inputs are not modified.
	if &fw[0] == &wt[0] {
		t.Error("the folded weight aliases the source weight")
	}
}

func TestFoldBatchNormRejects(t *testing.T) {
	t.Parallel()
	ones := []float32{1, 1}
	for _, tc := range []struct {
		name              string
		w, variance, mean []float32
		wantErrSubstring  string
	}{
		{"negative variance", []float32{1, 2}, []float32{1, -1}, ones, "channel 1"},
		{"NaN variance", []float32{1, 2}, []float32{float32(math.NaN()), 1}, ones, "channel 0"},
		{"infinite mean", []float32{1, 2}, ones, []float32{1, float32(math.Inf(1))}, "channel 1"},
		{"weight not a multiple of the channels", []float32{1, 2, 3}, ones, ones, "3 elements"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := foldBatchNorm(tc.w, ones, ones, tc.mean, tc.variance, bisenetBNEps)
			if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstring) {
				t.Errorf("error %v, want one mentioning %q", err, tc.wantErrSubstring)
			}
		})
	}
}

func TestBiSeNetSpec(t *testing.T) {
	t.Parallel()
	spec := BiSeNetSpec()
	// 36 convolution weights and 31 BatchNorms of 4 tensors each.
	if len(spec) != 36+31*4 {
		t.Errorf("spec has %d tensors, want %d", len(spec), 36+31*4)
	}
	seen := map[string]bool{}
	for _, s := range spec {
		if seen[s.Name] {
			t.Errorf("%s listed twice", s.Name)
		}
		seen[s.Name] = true
		if strings.Contains(s.Name, "num_batches_tracked") {
			t.Errorf("%s listed", s.Name)
		}
	}
	for name, shape := range map[string][]int{
		"cp.resnet.conv1.weight":                 {64, 3, 7, 7},
		"cp.resnet.layer2.0.downsample.0.weight": {128, 64, 1, 1},
		"cp.resnet.layer4.1.bn2.running_var":     {512},
		"cp.arm16.conv.conv.weight":              {128, 256, 3, 3},
		"cp.arm32.bn_atten.running_mean":         {128},
		"cp.conv_avg.conv.weight":                {128, 512, 1, 1},
		"ffm.conv1.weight":                       {64, 256, 1, 1},
		"ffm.conv2.weight":                       {256, 64, 1, 1},
		"conv_out.conv_out.weight":               {19, 256, 1, 1},
		"conv_out32.conv.conv.weight":            {64, 128, 3, 3},
	} {
		i := slices.IndexFunc(spec, func(s TensorSpec) bool { return s.Name == name })
		if i < 0 {
			t.Errorf("%s missing", name)
			continue
		}
		if !slices.Equal(spec[i].Shape, shape) {
			t.Errorf("%s: shape %v, want %v", name, spec[i].Shape, shape)
		}
	}
	if _, err := NewBiSeNet(testBackend(t), RandomTensors(spec, 1)); err != nil {
		t.Errorf("the spec's own tensors do not load: %v", err)
	}
}

// bisenetFaultySource serves RandomTensors with some tensors dropped,
// reshaped or replaced.
type bisenetFaultySource struct {
	base     Tensors
	missing  string
	reshaped string
	replace  map[string][]float32
}

func (f bisenetFaultySource) Tensor(name string) ([]float32, []int, error) {
	if name == f.missing {
		return nil, nil, errors.New("not found")
	}
	data, shape, err := f.base.Tensor(name)
	if err != nil {
		return nil, nil, err
	}
	if name == f.reshaped {
		return data, []int{len(data)}, nil
	}
	if r, ok := f.replace[name]; ok {
		data = r
	}
	return data, shape, nil
}

func TestNewBiSeNetReportsEveryProblem(t *testing.T) {
	t.Parallel()
	badVar := make([]float32, 128)
	for i := range badVar {
		badVar[i] = 1
	}
	badVar[7] = -2
	src := bisenetFaultySource{
		base:     RandomTensors(BiSeNetSpec(), 3),
		missing:  "cp.resnet.layer3.0.bn1.running_mean",
		reshaped: "ffm.conv2.weight",
		replace:  map[string][]float32{"cp.arm16.bn_atten.running_var": badVar},
	}
	_, err := NewBiSeNet(testBackend(t), src)
	if err == nil {
		t.Fatal("NewBiSeNet accepted a faulty checkpoint")
	}
	for _, want := range []string{
		"bisenet",
		"cp.resnet.layer3.0.bn1.running_mean: not found",
		"ffm.conv2.weight: shape [16384], want [256 64 1 1]",
		"cp.arm16.bn_atten: channel 7: running_var -2",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestBiSeNetForward(t *testing.T) {
	t.Parallel()
	be := testBackend(t)
	net, err := NewBiSeNet(be, RandomTensors(BiSeNetSpec(), 5))
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()

	if _, err := net.Forward(be.Alloc(1, 4, 32, 32)); err == nil || !strings.Contains(err.Error(), "[N,3,H,W]") {
		t.Errorf("4-channel input: error %v", err)
	}
	if _, err := net.Forward(be.Alloc(3, 32, 32)); err == nil {
		t.Error("rank-3 input accepted")
	}

	// An odd size exercises the floor of every stride and the non-integer
	// nearest and bilinear factors.
	const n, h, w = 2, 37, 45
	rng := rand.New(rand.NewPCG(7, 8))
	x := kernels.Upload(be, bisenetRandom(rng, n*3*h*w, -2, 2), n, 3, h, w)
	var traced []string
	out, err := BiSeNetForwardTrace(net, x, func(name string, t *kernels.Tensor) { traced = append(traced, name+t.String()) })
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{n, BiSeNetClasses, h, w}; !slices.Equal(out.Shape(), want) {
		t.Fatalf("logits %v, want %v", out.Shape(), want)
	}
	// 37×45 → stem 19×23 → pool 10×12 → 5×6 → 3×3 → 2×2.
	wantTrace := []string{
		"cp.resnet.0Tensor[2 128 5 6]", "cp.resnet.1Tensor[2 256 3 3]", "cp.resnet.2Tensor[2 512 2 2]",
		"cp.2Tensor[2 128 3 3]", "cp.1Tensor[2 128 5 6]", "ffmTensor[2 256 5 6]",
		"conv_out.conv_outTensor[2 19 5 6]",
	}
	if !slices.Equal(traced, wantTrace) {
		t.Errorf("trace %v, want %v", traced, wantTrace)
	}
	got := make([]float32, out.Len())
	if err := be.Download(got, out); err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("logit %d is %v", i, v)
		}
	}
	// Batch entries are independent: the second alone gives the same
	// logits.
	one, err := net.Forward(x.Slice(1, 2))
	if err != nil {
		t.Fatal(err)
	}
	got1 := make([]float32, one.Len())
	if err := be.Download(got1, one); err != nil {
		t.Fatal(err)
	}
	for i, v := range got1 {
		if d := math.Abs(float64(v - got[len(got1)+i])); d > 1e-4 {
			t.Fatalf("batch entry 1 alone differs at %d by %g", i, d)
		}
	}
}

// BenchmarkBiSeNet512 times one forward pass at MuseTalk's parse size.
func BenchmarkBiSeNet512(b *testing.B) {
	be := testBackend(b)
	net, err := NewBiSeNet(be, RandomTensors(BiSeNetSpec(), 1))
	if err != nil {
		b.Fatal(err)
	}
	defer net.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	x := kernels.Upload(be, bisenetRandom(rng, 3*512*512, -2, 2), 1, 3, 512, 512)
	for b.Loop() {
		out, err := net.Forward(x)
		if err != nil {
			b.Fatal(err)
		}
		if err := be.Sync(); err != nil {
			b.Fatal(err)
		}
		be.Free(out)
	}
}
