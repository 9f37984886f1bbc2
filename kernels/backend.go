package kernels

// Backend executes tensor ops. Models receive a Backend and never name a
// concrete one: the CPU backend (package kernels/cpu) is always available, a
// CUDA backend lives behind the `cuda` build tag.
//
// Calling convention (one per op, like ggml's op table):
//   - The first argument is the destination. Ops never allocate their
//     outputs; the caller passes a tensor of the documented shape, usually
//     from [Memory.Alloc]. Ops write every element of dst.
//   - dst must not overlap an input unless the op says so (elementwise
//     ops, GroupNorm, LayerNorm, ScaleNorm and Softmax allow dst == their
//     first input: in place).
//   - Inputs and dst may be views ([Tensor.Reshape], [Tensor.Slice]).
//   - Invalid arguments (wrong ranks or shapes, a tensor of another backend)
//     are programming errors and panic with a message naming the op.
//   - Ops may run asynchronously; [Memory.Download] and [Memory.Sync] wait
//     for them and report device failures.
//
// A Backend is safe for concurrent use by multiple goroutines unless the
// implementation says otherwise; concurrent ops must not write the same
// tensor.
type Backend interface {
	Memory
	Ops

	// Close releases the backend's workers and memory. Tensors it allocated
	// must not be used afterwards.
	Close() error
	// Name identifies the backend and its code path, e.g. "cpu/avx512".
	Name() string
	// Supports reports whether the backend implements op. Calling an
	// unsupported op panics.
	Supports(op Op) bool
}

// Memory allocates tensors on a backend and moves data to and from them.
//
// Ownership: a tensor from Alloc belongs to the caller until it passes it to
// Free; Free hands its storage back to the backend's pool, which reuses it
// for a later Alloc of the same size, so a model's per-layer temporaries
// cost no allocation after the first forward pass. After Free the tensor and
// every view of it must not be used. Tensors that are never freed are
// reclaimed by the garbage collector (host) or by Close.
type Memory interface {
	// Alloc returns a tensor of the given shape. Its contents are
	// unspecified (possibly a previous tensor's elements).
	Alloc(shape ...int) *Tensor
	// Download copies src's elements into dst (len(dst) == src.Len()) after
	// every op issued before it has finished, and returns the first error
	// any of them reported.
	Download(dst []float32, src *Tensor) error
	// Free returns t, which must have come from Alloc (or be a Reshape of
	// such a tensor), to the pool.
	Free(t *Tensor)
	// Sync waits for every op issued so far and returns the first error any
	// of them reported.
	Sync() error
	// Upload copies src (len(src) == dst.Len()) into dst.
	Upload(dst *Tensor, src []float32)
	// Weight returns an immutable tensor of the given shape holding data,
	// for model parameters. A host backend may use data in place, a device
	// backend copies it; either way the caller must not modify data
	// afterwards. Backends may keep the weight in additional layouts their
	// ops prefer (the CPU backend caches GEMM-packed panels). Free releases
	// a weight and those copies.
	Weight(data []float32, shape ...int) *Tensor
}

// Ops is the op table. Shapes are row-major; N is the batch size. Every op
// panics on invalid arguments (see [Backend]).
type Ops interface {
	// Add sets dst = a + b. b is broadcast to a's shape with NumPy rules
	// (trailing dimensions aligned, size-1 dimensions repeated), e.g. a
	// [N,C,H,W] plus b [N,C,1,1] or [C,1,1]. dst has a's shape and may be a.
	Add(dst, a, b *Tensor)
	// Attention computes multi-head softmax attention on projected inputs:
	// q [N,Lq,Cq], k [N,Lk,Cq], v [N,Lk,Cv], dst [N,Lq,Cv]. Head h uses
	// channels [h·Cq/Heads, (h+1)·Cq/Heads) of q and k and the matching
	// slice of v: dst_h = softmax(Scale·q_h·k_hᵀ)·v_h.
	Attention(dst, q, k, v *Tensor, p AttentionParams)
	// AvgPool2D sets dst [N,C,Ho,Wo] to the mean of each window of x
	// [N,C,H,W] (sizes from [Pool2DParams.OutSize]). Padded cells count as
	// zeros in the mean, as PyTorch's default count_include_pad=True; a
	// window the size of the map is a global average pool.
	AvgPool2D(dst, x *Tensor, p Pool2DParams)
	// Concat writes srcs one after another along axis into dst; all other
	// dimensions must agree.
	Concat(dst *Tensor, axis int, srcs ...*Tensor)
	// Conv1D is a 1-D convolution: x [N,Cin,L], w [Cout,Cin,K], bias [Cout]
	// or nil, dst [N,Cout,Lout] with Lout from [Conv1DParams.OutLen].
	Conv1D(dst, x, w, bias *Tensor, p Conv1DParams)
	// Conv2D is a 2-D convolution (cross-correlation, as in PyTorch):
	// x [N,Cin,H,W], w [Cout,Cin,KH,KW], bias [Cout] or nil, dst
	// [N,Cout,Hout,Wout] with sizes from [Conv2DParams.OutSize]. Padding
	// reads zeros.
	Conv2D(dst, x, w, bias *Tensor, p Conv2DParams)
	// Copy copies src into dst; they must have the same number of elements.
	Copy(dst, src *Tensor)
	// DepthwiseConv2D is a depthwise 2-D convolution, PyTorch's Conv2d
	// with groups = in_channels = out_channels: x [N,C,H,W], w
	// [C,1,KH,KW], bias [C] or nil, dst [N,C,Hout,Wout] with sizes from
	// [Conv2DParams.OutSize]. Channel c of dst is channel c of x
	// cross-correlated with w[c]. Padding reads zeros.
	DepthwiseConv2D(dst, x, w, bias *Tensor, p Conv2DParams)
	// GEGLU splits x [..., 2D] into halves h = x[..., :D] and gate =
	// x[..., D:] and sets dst [..., D] = h · GELU(gate) (exact erf GELU).
	GEGLU(dst, x *Tensor)
	// GELU sets dst = x·Φ(x) with the exact (erf) Φ. dst may be x.
	GELU(dst, x *Tensor)
	// GroupNorm normalises x [N,C,...] over each of p.Groups channel groups
	// (biased variance, eps inside the square root) and applies the
	// per-channel affine weight [C] and bias [C] when they are non-nil,
	// then SiLU if p.SiLU is set. dst has x's shape and may be x.
	GroupNorm(dst, x, weight, bias *Tensor, p GroupNormParams)
	// HardSigmoid sets dst = min(max(x + 3, 0), 6) / 6 (PyTorch's
	// Hardsigmoid). dst may be x.
	HardSigmoid(dst, x *Tensor)
	// LayerNorm normalises x over its last dimension and applies the affine
	// weight and bias (shape [last], nil to skip). dst may be x.
	LayerNorm(dst, x, weight, bias *Tensor, p LayerNormParams)
	// L2Norm normalises x [N,C,...] across its channels at every position
	// and scales each channel: dst = x / (sqrt(Σ_c x²) + eps) · weight[c],
	// with eps added after the square root (S3FD's L2Norm). weight is [C].
	// dst may be x.
	L2Norm(dst, x, weight *Tensor, eps float32)
	// Linear sets dst [..., Nout] = x [..., K] · wᵀ + bias, with w
	// [Nout,K] (PyTorch layout) and bias [Nout] or nil.
	Linear(dst, x, w, bias *Tensor)
	// MatMul sets dst [..., M, N] = Alpha · op(a) · op(b) for each leading
	// (batch) index, where op transposes when p.TransA / p.TransB is set.
	// a is [..., M, K] ([..., K, M] transposed), b is [..., K, N] ([..., N,
	// K] transposed) or a rank-2 matrix shared by every batch entry.
	MatMul(dst, a, b *Tensor, p MatMulParams)
	// MaxPool2D sets dst [N,C,Ho,Wo] to the maximum of each window of x
	// [N,C,H,W] (sizes from [Pool2DParams.OutSize]); padded cells never
	// win. A NaN in a window gives NaN.
	MaxPool2D(dst, x *Tensor, p Pool2DParams)
	// Mul sets dst = a · b elementwise, broadcasting b as [Ops.Add] does.
	Mul(dst, a, b *Tensor)
	// Permute sets dst = x.permute(perm...) as in PyTorch: dst dimension i
	// is x dimension perm[i].
	Permute(dst, x *Tensor, perm ...int)
	// ReLU sets dst = max(x, 0). dst may be x.
	ReLU(dst, x *Tensor)
	// Scale sets dst = s · x. dst may be x.
	Scale(dst, x *Tensor, s float32)
	// ScaleNorm normalises x over its last dimension (D elements) by its
	// scaled L2 norm, as RTMPose's ScaleNorm: dst = x / max(‖x‖₂·Scale,
	// Eps) · Gain (see [ScaleNormParams] for the defaults). dst may be x.
	ScaleNorm(dst, x *Tensor, p ScaleNormParams)
	// Sigmoid sets dst = 1 / (1 + exp(−x)). dst may be x.
	Sigmoid(dst, x *Tensor)
	// SiLU sets dst = x · sigmoid(x). dst may be x.
	SiLU(dst, x *Tensor)
	// Softmax applies softmax over the last dimension. dst may be x.
	Softmax(dst, x *Tensor)
	// UpsampleBilinear resizes x [N,C,H,W] to dst [N,C,H2,W2] by bilinear
	// interpolation with PyTorch's F.interpolate(mode="bilinear")
	// semantics: with alignCorners the corner pixels' centres coincide
	// (src = dst·(in−1)/(out−1)); without, half-pixel centres clamped at
	// the edges (src = (dst+0.5)·in/out − 0.5, at least 0).
	UpsampleBilinear(dst, x *Tensor, alignCorners bool)
	// UpsampleNearest resizes x [N,C,H,W] to dst [N,C,H2,W2] by nearest
	// neighbour, reading source index floor(i·H/H2) (PyTorch's legacy
	// "nearest"; exact for integer factors such as ×2).
	UpsampleNearest(dst, x *Tensor)
}

// Upload allocates a tensor of the given shape on m and copies data into it.
func Upload(m Memory, data []float32, shape ...int) *Tensor {
	t := m.Alloc(shape...)
	m.Upload(t, data)
	return t
}
