package model

import (
	"math"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/kernels/cuda"
	"github.com/avatargen/musetalk/kernels/cuda/emu"
)

// NamedBackend is a backend a network's golden test runs on.
type NamedBackend struct {
	Name string
	New  func(t testing.TB) kernels.Backend // closed when the test ends
	// Precision is how the backend stores tensors, and so how the golden
	// tests judge its outputs: F32 outputs must be within the golden
	// file's suggested_tolerance atol (10× the reference's own float32
	// error); F16 outputs within F16Bound, since rounding every stored
	// activation (and the float32 inputs, on upload) to 11 significant
	// bits costs far more than those fp32 figures.
	Precision kernels.Precision
}

// GoldenBackends are the backends every network's golden test runs on: the
// CPU backend, and the CUDA backend's kernels (the .cu sources the GPU
// runs) on the CPU emulator, with fp32 and with fp16 storage. (Exported
// for the package's external tests.)
var GoldenBackends = []NamedBackend{
	{Name: "cpu", New: func(t testing.TB) kernels.Backend {
		t.Helper()
		b, err := cpu.New(cpu.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}, Precision: kernels.F32},
	{Name: "cuda-emu", New: newEmuBackend(kernels.F32), Precision: kernels.F32},
	{Name: "cuda-emu-fp16", New: newEmuBackend(kernels.F16), Precision: kernels.F16},
}

// newEmuBackend is the constructor of the CUDA backend on the emulator
// with the given storage precision.
func newEmuBackend(p kernels.Precision) func(t testing.TB) kernels.Backend {
	return func(t testing.TB) kernels.Backend {
		t.Helper()
		b, err := cuda.New(emu.New(), cuda.Options{Precision: p})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
}

// How fp16 outputs are judged.
//
// A backend that stores tensors as IEEE half rounds every activation it
// writes (relative error up to 2⁻¹¹ ≈ 4.9e-4, per layer) and the float32
// golden inputs on upload; accumulation, statistics and softmax stay fp32.
// Its error therefore scales with the size of the values, not with the
// reference's fp32-vs-fp64 error the suggested atol is made of. An F16
// backend's output passes when
//
//	max|got − ref| ≤ atol + r·max|ref|
//
// where atol is the golden file's suggested (fp32) atol for that tensor,
// max|ref| is taken over the whole reference tensor, and r is the
// network's relative allowance below. Each r is about 2-3× the fraction
// max|got − ref| / max|ref| measured on the cuda-emu-fp16 backend (the
// tests log it as "fp16 err/max|ref|", so a regression shows before it
// fails), rounded up; the UNet's may never exceed 0.02, the issue's
// fidelity target for the full-size UNet (its fp16 output within 2 % of
// its max |value| of the fp32 result). The VAE's decoded frames are also
// held to the full-size target of ≥ 40 dB PSNR against the reference
// (after MuseTalk's (x/2+0.5).clamp(0,1) mapping): see F16MinPSNR.
//
// Per-layer intermediates are not compared on F16 backends: their fp32
// atols say nothing about fp16, and every final output is.
//
// Outputs that are argmaxes of compared logits (DWPose's SimCC keypoints)
// follow the logits' rule: on fp32 the keypoints must be exact where the
// golden case marks the argmax stable and elsewhere at a bin whose
// reference logit is within the atol of the maximum; on fp16 the same with
// the fp16 bound in place of the atol, exact only where the reference's
// top-two margin exceeds twice that bound (fp16 storage rounds logits of
// ~100 to steps of 0.06, so near-ties of the random-weight case can flip).
//
// The measured fractions (cuda-emu-fp16, the emulator's default arch) are
// in the comments. BiSeNet's is the largest: its seeded, non-trivial
// BatchNorms (folded into the convolutions) amplify what enters the
// network — rounding only the input to fp16 on the fp32 CPU backend
// already moves its logits by 0.0022 of max|ref| — and the context path
// runs the deepest (ResNet-18 to stride 32, then two upsampling stages).
const (
	F16RelUNet    = 0.005 // measured 0.0014 (sample), 0.0018 (sample_t500)
	F16RelVAE     = 0.007 // measured ≤ 0.0027 (latent_mean; decoded 0.0022)
	F16RelS3FD    = 0.004 // measured ≤ 0.0014 (heads of both crops, logits included)
	F16RelBiSeNet = 0.015 // measured 0.0060 (logits)
	F16RelWhisper = 0.003 // measured ≤ 0.0012 (hidden states); audio prompts ≤ 0.0008
	F16RelDWPose  = 0.01  // measured ≤ 0.0035 (simcc_y; the flip-test averages 0.0030, scores 0.0027)

	// F16MinPSNR is the least PSNR, in dB, of an fp16 backend's decoded
	// VAE frames against the reference.
	F16MinPSNR = 40.0
)

// F16Bound is the largest max|got − ref| accepted from an F16 backend:
// atol + r·max|ref|.
func F16Bound(atol, r, refMax float64) float64 { return atol + r*refMax }

// CompareF16 checks got (of the given shape) against ref (of refShape) by
// the fp16 rule, max|got − ref| ≤ F16Bound(atol, r, max|ref|), and logs the
// measured fraction max|got − ref| / max|ref| next to r.
func CompareF16[R float32 | float64](t testing.TB, name string, got []float32, shape []int, ref []R, refShape []int, atol, r float64) {
	t.Helper()
	if len(shape) != len(refShape) {
		t.Errorf("%s: shape %v, golden %v", name, shape, refShape)
		return
	}
	for i := range shape {
		if shape[i] != refShape[i] {
			t.Errorf("%s: shape %v, golden %v", name, shape, refShape)
			return
		}
	}
	if len(got) != len(ref) {
		t.Errorf("%s: %d values, golden %d", name, len(got), len(ref))
		return
	}
	worst, at, refMax := 0.0, 0, 0.0
	for i, v := range ref {
		d := math.Abs(float64(got[i]) - float64(v))
		if d > worst || math.IsNaN(d) {
			worst, at = d, i
		}
		refMax = max(refMax, math.Abs(float64(v)))
	}
	bound := F16Bound(atol, r, refMax)
	frac := worst / refMax
	t.Logf("%-36s fp16 err/max|ref| = %.3g (r %.3g, %.2f of it); max abs err %.3g ≤? %.3g; max|ref| %.3g",
		name, frac, r, frac/r, worst, bound, refMax)
	if !(worst <= bound) {
		t.Errorf("%s: fp16 max abs err %.3g at %d (got %g, want %g) > atol %.3g + r %.3g · max|ref| %.3g = %.3g",
			name, worst, at, got[at], ref[at], atol, r, refMax, bound)
	}
}

// TestF16Tolerances keeps the fp16 allowances within their bounds: each
// positive, and the UNet's within the full-size fidelity target of 2 %.
func TestF16Tolerances(t *testing.T) {
	for name, r := range map[string]float64{
		"unet": F16RelUNet, "vae": F16RelVAE, "s3fd": F16RelS3FD, "bisenet": F16RelBiSeNet, "whisper": F16RelWhisper,
		"dwpose": F16RelDWPose,
	} {
		if !(r > 0) {
			t.Errorf("%s: r = %g, want > 0", name, r)
		}
	}
	if F16RelUNet > 0.02 {
		t.Errorf("F16RelUNet = %g: above the full-size target of 0.02", F16RelUNet)
	}
	if F16MinPSNR < 40 {
		t.Errorf("F16MinPSNR = %g dB: below the full-size target of 40 dB", F16MinPSNR)
	}
}
