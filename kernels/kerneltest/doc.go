// Package kerneltest checks a [kernels.Backend] against naive reference
// loops computed in float64, and measures its hot ops. Every backend's
// tests call [Exercise] (fp32 storage) or [ExerciseWith] (a storage
// precision of choice); a new op lands with its cases here. [Benchmark]
// times the ops at MuseTalk's sizes.
//
// Each case fills its inputs with seeded random values, writes its output
// into a view with guard rows before and after it (which must come back
// untouched), and compares element by element: element i passes when
//
//	|got − want| ≤ abs + rel·|want| + magRel·mag[i]
//
// where mag[i] is the sum of |terms| that produced the element (for ops
// that sum products). NaN never passes, nor does ±Inf unless the reference
// is that infinity (only the F16 upload_rounding case below expects one).
//
// # fp32 tolerances
//
// The values the harness uploads are float32, and the reference is
// computed from exactly those values.
//
//   - GEMM-like ops (Linear, MatMul, Conv1D, Conv2D, DepthwiseConv2D):
//     magRel 2e-6 (float32 accumulation over K terms), abs 1e-6; 1e-5 of
//     the magnitude for the 3×3 shapes where a backend may use Winograd
//     F(4×4, 3×3).
//   - Attention: magRel 1e-5, abs 2e-6.
//   - Pointwise activations (HardSigmoid included), AvgPool2D: rel 2e-6,
//     abs 2e-6.
//   - Normalisations (GroupNorm, LayerNorm, L2Norm, ScaleNorm),
//     UpsampleBilinear: rel 1e-5, abs 1e-5. Softmax: rel 2e-6, abs 1e-7.
//   - Add and Mul: exact against the float32-rounded result.
//   - Ops that only move elements (Copy, Permute, Concat, UpsampleNearest,
//     MaxPool2D): exact.
//   - Guard rows must still hold the sentinel.
//
// # fp16 tolerances
//
// With [Options.Precision] = [kernels.F16] the backend stores tensors as
// IEEE half (Upload rounds to nearest, ties to even; Download widens) and
// accumulates, normalises and takes softmax in fp32; GEMMs may run on
// tensor cores (fp16×fp16 products, fp32 accumulation). The harness
// rounds every value it uploads to half ([RoundF16]) before computing the
// reference, so the reference sees what the device holds and the
// tolerance only has to cover what half storage of results costs. From
// the fp32 tolerance above:
//
//   - Every result is stored once: rel += 2⁻¹⁰ (twice round-to-nearest's
//     bound of half an ulp, 2⁻¹¹ of the value; the margin covers the fp32
//     error the value had before it was rounded) and abs += 2⁻²⁴ (one
//     step of half's subnormal range, where rounding is absolute).
//   - GEMM-like ops: the products of half inputs are exact in fp32, so
//     only the accumulation and the output rounding remain, but tensor
//     cores need not round their fp32 sums to nearest (measured ones align
//     and truncate within each MMA), so errors need not cancel: magRel is
//     at least 2⁻¹⁶ ≈ 1.5e-5, still 32 times below one half rounding of
//     the magnitude.
//   - Attention: as GEMM-like, plus magRel += 2⁻¹⁰ because the
//     probabilities are rounded to half before they multiply v (each term
//     of the p·v sum gains a relative error of at most 2⁻¹¹). The scores
//     q·kᵀ, their scale and the softmax must stay fp32: rounding the
//     scores to half would move the output by up to 2⁻¹⁰·|score|·mag,
//     which this tolerance does not allow.
//   - Add and Mul: the sum or product of two halves is exact in float64,
//     so the reference is exact and the result must be that value rounded
//     once: rel 2⁻¹¹ + 2⁻²² (the second term allows the double rounding of
//     computing in fp32 first), abs 2⁻²⁵.
//   - Ops that only move elements stay exact: their inputs are halves.
//   - Every downloaded element must be a half value (a backend that
//     ignores the precision fails here), and guard rows must hold the
//     sentinel as half stores it: −12345.678 is kept rather than replaced
//     by a half value, so the fp32 check is unchanged and in F16 every
//     guard also checks Upload's rounding (it comes back as −12344).
//   - No case may generate values beyond half's range (±65504): the
//     harness fails a case whose rounded inputs or whose reference
//     outputs exceed it. The fp32 scales already stay in range (the
//     largest values are the pointwise extremes ±200, Softmax's 80 and
//     MatMul sums of a few tens), so only the pointwise cases' tiny extremes change in F16: ±1e-6, a
//     half subnormal, instead of ±1e-8, which half rounds to zero.
//   - A Copy case, upload_rounding, uploads float32 values that are not
//     halves (ties, subnormals, values that overflow to ±Inf) and checks
//     that they come back rounded as [RoundF16] rounds them (in fp32:
//     unchanged).
//
// The package's tests check the fp16 rules on a fake backend, the CPU
// backend with every uploaded value and every op's result rounded to half:
// it passes, using about half of each tolerance (all of it for Add and
// Mul, whose bound is exact). The same fake rounding to bfloat16 (8
// significant bits) fails every case of every op but a few one- to
// four-element ones.
package kerneltest
