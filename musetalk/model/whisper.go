package model

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// WhisperConfig is a Hugging Face Whisper config (config.json of
// openai/whisper-tiny); the encoder reads its encoder fields.
type WhisperConfig = weights.WhisperConfig

// DefaultWhisperConfig returns whisper-tiny's config.
func DefaultWhisperConfig() WhisperConfig { return weights.DefaultWhisperConfig() }

// ParseWhisperConfig reads a Whisper config.json (keys it leaves out keep
// the defaults) and checks that the encoder can run it.
func ParseWhisperConfig(data []byte) (WhisperConfig, error) {
	c, err := weights.ParseWhisperConfig(data)
	if err != nil {
		return WhisperConfig{}, err
	}
	return *c, validateWhisperConfig(*c)
}

// validateWhisperConfig reports a config the encoder cannot run.
func validateWhisperConfig(c WhisperConfig) error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{
		{"d_model", c.DModel},
		{"encoder_attention_heads", c.EncoderAttentionHeads},
		{"encoder_ffn_dim", c.EncoderFFNDim},
		{"max_source_positions", c.MaxSourcePositions},
		{"num_mel_bins", c.NumMelBins},
	} {
		if f.v <= 0 {
			errs = append(errs, fmt.Errorf("%s = %d, want > 0", f.name, f.v))
		}
	}
	if c.EncoderLayers < 0 {
		errs = append(errs, fmt.Errorf("encoder_layers = %d, want >= 0", c.EncoderLayers))
	}
	if c.EncoderAttentionHeads > 0 && c.DModel%c.EncoderAttentionHeads != 0 {
		errs = append(errs, fmt.Errorf("d_model %d is not a multiple of encoder_attention_heads %d", c.DModel, c.EncoderAttentionHeads))
	}
	if c.ActivationFunction != "gelu" {
		errs = append(errs, fmt.Errorf("activation_function %q is not supported (only \"gelu\")", c.ActivationFunction))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("whisper config: %w", err)
	}
	return nil
}

// WhisperEncoderSpec lists the encoder's weights with the names of
// transformers' WhisperModel.state_dict() ("encoder.*"). The Hugging Face
// openai/whisper-tiny checkpoint stores them under "model.encoder.*" (read it
// through [WithPrefix](src, "model.")); its decoder tensors are not needed.
func WhisperEncoderSpec(cfg WhisperConfig) []TensorSpec {
	d, f, m := cfg.DModel, cfg.EncoderFFNDim, cfg.NumMelBins
	spec := []TensorSpec{
		{"encoder.conv1.weight", []int{d, m, 3}},
		{"encoder.conv1.bias", []int{d}},
		{"encoder.conv2.weight", []int{d, d, 3}},
		{"encoder.conv2.bias", []int{d}},
		{"encoder.embed_positions.weight", []int{cfg.MaxSourcePositions, d}},
	}
	for i := range cfg.EncoderLayers {
		p := "encoder.layers." + strconv.Itoa(i) + "."
		spec = append(spec,
			TensorSpec{p + "self_attn_layer_norm.weight", []int{d}},
			TensorSpec{p + "self_attn_layer_norm.bias", []int{d}},
			TensorSpec{p + "self_attn.q_proj.weight", []int{d, d}},
			TensorSpec{p + "self_attn.q_proj.bias", []int{d}},
			TensorSpec{p + "self_attn.k_proj.weight", []int{d, d}},
			TensorSpec{p + "self_attn.v_proj.weight", []int{d, d}},
			TensorSpec{p + "self_attn.v_proj.bias", []int{d}},
			TensorSpec{p + "self_attn.out_proj.weight", []int{d, d}},
			TensorSpec{p + "self_attn.out_proj.bias", []int{d}},
			TensorSpec{p + "final_layer_norm.weight", []int{d}},
			TensorSpec{p + "final_layer_norm.bias", []int{d}},
			TensorSpec{p + "fc1.weight", []int{f, d}},
			TensorSpec{p + "fc1.bias", []int{f}},
			TensorSpec{p + "fc2.weight", []int{d, f}},
			TensorSpec{p + "fc2.bias", []int{d}},
		)
	}
	return append(spec,
		TensorSpec{"encoder.layer_norm.weight", []int{d}},
		TensorSpec{"encoder.layer_norm.bias", []int{d}},
	)
}

// whisperLNEps is nn.LayerNorm's default eps, which every Whisper LayerNorm
// uses.
const whisperLNEps = 1e-5

// WhisperEncoder is transformers' WhisperEncoder (v4.39.2) in inference
// mode: conv1 (k3 p1) + GELU, conv2 (k3 s2 p1) + GELU, + embed_positions,
// pre-LN transformer layers (self-attention with biased q/v/out and
// bias-free k, q·kᵀ scaled by head_dim^-½; FFN fc1 → GELU → fc2), final
// LayerNorm. All GELUs are the exact erf form.
type WhisperEncoder struct {
	b      kernels.Backend
	cfg    WhisperConfig
	loader weightLoader

	conv1W, conv1B, conv2W, conv2B *kernels.Tensor
	pos                            *kernels.Tensor // [P, D]
	layers                         []whisperLayer
	lnW, lnB                       *kernels.Tensor
}

type whisperLayer struct {
	attnLNW, attnLNB *kernels.Tensor
	qW, qB, kW       *kernels.Tensor
	vW, vB           *kernels.Tensor
	outW, outB       *kernels.Tensor
	ffnLNW, ffnLNB   *kernels.Tensor
	fc1W, fc1B       *kernels.Tensor
	fc2W, fc2B       *kernels.Tensor
}

// NewWhisperEncoder validates cfg and loads the weights [WhisperEncoderSpec]
// lists from src onto b. A missing or misshapen weight is an error naming it.
func NewWhisperEncoder(b kernels.Backend, cfg WhisperConfig, src Tensors) (*WhisperEncoder, error) {
	if err := validateWhisperConfig(cfg); err != nil {
		return nil, err
	}
	e := &WhisperEncoder{b: b, cfg: cfg, loader: weightLoader{b: b, src: src, model: "whisper encoder"}}
	l := &e.loader
	spec := WhisperEncoderSpec(cfg)
	w := make(map[string]*kernels.Tensor, len(spec))
	for _, s := range spec {
		w[s.Name] = l.load(s.Name, s.Shape...)
	}
	if err := l.finish(); err != nil {
		return nil, err
	}
	e.conv1W, e.conv1B = w["encoder.conv1.weight"], w["encoder.conv1.bias"]
	e.conv2W, e.conv2B = w["encoder.conv2.weight"], w["encoder.conv2.bias"]
	e.pos = w["encoder.embed_positions.weight"]
	e.lnW, e.lnB = w["encoder.layer_norm.weight"], w["encoder.layer_norm.bias"]
	e.layers = make([]whisperLayer, cfg.EncoderLayers)
	for i := range e.layers {
		p := "encoder.layers." + strconv.Itoa(i) + "."
		e.layers[i] = whisperLayer{
			attnLNW: w[p+"self_attn_layer_norm.weight"], attnLNB: w[p+"self_attn_layer_norm.bias"],
			qW: w[p+"self_attn.q_proj.weight"], qB: w[p+"self_attn.q_proj.bias"],
			kW: w[p+"self_attn.k_proj.weight"],
			vW: w[p+"self_attn.v_proj.weight"], vB: w[p+"self_attn.v_proj.bias"],
			outW: w[p+"self_attn.out_proj.weight"], outB: w[p+"self_attn.out_proj.bias"],
			ffnLNW: w[p+"final_layer_norm.weight"], ffnLNB: w[p+"final_layer_norm.bias"],
			fc1W: w[p+"fc1.weight"], fc1B: w[p+"fc1.bias"],
			fc2W: w[p+"fc2.weight"], fc2B: w[p+"fc2.bias"],
		}
	}
	return e, nil
}

// Config returns the encoder's config.
func (e *WhisperEncoder) Config() WhisperConfig { return e.cfg }

// Close releases the encoder's weights; it must not be used afterwards.
func (e *WhisperEncoder) Close() { e.loader.free() }

// Forward runs the encoder on mel [N, num_mel_bins, 2·max_source_positions]
// and returns every hidden state, as transformers' encoder does with
// output_hidden_states=True: index 0 is the embedding output (convolutions,
// GELUs and positions), index i in 1..L−1 is the raw output of layer i−1,
// and index L is the last layer's output after the final LayerNorm (=
// last_hidden_state). Each is [N, max_source_positions, d_model], allocated
// on the backend; the caller frees them.
func (e *WhisperEncoder) Forward(mel *kernels.Tensor) ([]*kernels.Tensor, error) {
	c := e.cfg
	if mel.Rank() != 3 || mel.Dim(1) != c.NumMelBins || mel.Dim(2) != c.MelFrames() {
		return nil, fmt.Errorf("whisper encoder: input %v, want [N %d %d] (num_mel_bins, 2·max_source_positions)",
			mel.Shape(), c.NumMelBins, c.MelFrames())
	}
	b := e.b
	n, t, p, d := mel.Dim(0), mel.Dim(2), c.MaxSourcePositions, c.DModel
	conv := kernels.Conv1DParams{PadLeft: 1, PadRight: 1, Stride: 1}
	h1 := b.Alloc(n, d, t)
	b.Conv1D(h1, mel, e.conv1W, e.conv1B, conv)
	b.GELU(h1, h1)
	conv.Stride = 2
	h2 := b.Alloc(n, d, conv.OutLen(t, 3))
	b.Conv1D(h2, h1, e.conv2W, e.conv2B, conv)
	b.Free(h1)
	b.GELU(h2, h2)
	hs := b.Alloc(n, p, d)
	b.Permute(hs, h2, 0, 2, 1)
	b.Free(h2)
	b.Add(hs, hs, e.pos)

	states := make([]*kernels.Tensor, 0, c.HiddenStates())
	states = append(states, hs)
	norm := b.Alloc(n, p, d)
	q, k, v, attn, proj := b.Alloc(n, p, d), b.Alloc(n, p, d), b.Alloc(n, p, d), b.Alloc(n, p, d), b.Alloc(n, p, d)
	ffn := b.Alloc(n, p, c.EncoderFFNDim)
	lnp := kernels.LayerNormParams{Eps: whisperLNEps}
	ap := kernels.AttentionParams{Heads: c.EncoderAttentionHeads}
	for i := range e.layers {
		l := &e.layers[i]
		x := hs
		hs = b.Alloc(n, p, d)
		// Self-attention block.
		b.LayerNorm(norm, x, l.attnLNW, l.attnLNB, lnp)
		b.Linear(q, norm, l.qW, l.qB)
		b.Linear(k, norm, l.kW, nil)
		b.Linear(v, norm, l.vW, l.vB)
		b.Attention(attn, q, k, v, ap)
		b.Linear(proj, attn, l.outW, l.outB)
		b.Add(hs, x, proj)
		// FFN block.
		b.LayerNorm(norm, hs, l.ffnLNW, l.ffnLNB, lnp)
		b.Linear(ffn, norm, l.fc1W, l.fc1B)
		b.GELU(ffn, ffn)
		b.Linear(proj, ffn, l.fc2W, l.fc2B)
		b.Add(hs, hs, proj)
		states = append(states, hs)
	}
	for _, tmp := range []*kernels.Tensor{norm, q, k, v, attn, proj, ffn} {
		b.Free(tmp)
	}
	// transformers appends each layer's input and finally LayerNorm(last
	// output); with zero layers that is the single state LN(embedding).
	last := states[len(states)-1]
	b.LayerNorm(last, last, e.lnW, e.lnB, lnp)
	if err := b.Sync(); err != nil {
		for _, s := range states {
			b.Free(s)
		}
		return nil, fmt.Errorf("whisper encoder: %w", err)
	}
	return states, nil
}

// StackedHiddenStates runs the encoder on each mel segment (each
// [num_mel_bins·2·max_source_positions] floats, channel-major as the feature
// extractor returns it) and returns the hidden states stacked the way
// MuseTalk's AudioProcessor.get_whisper_chunk stacks them
// (torch.stack(hidden_states, dim=2), then torch.cat over segments on the
// time axis, batch dimension dropped): [segments·max_source_positions,
// HiddenStates(), d_model], row-major.
func (e *WhisperEncoder) StackedHiddenStates(segments [][]float32) ([]float32, error) {
	c := e.cfg
	p, s, d := c.MaxSourcePositions, c.HiddenStates(), c.DModel
	out := make([]float32, len(segments)*p*s*d)
	buf := make([]float32, p*d)
	for si, seg := range segments {
		if len(seg) != c.NumMelBins*c.MelFrames() {
			return nil, fmt.Errorf("whisper encoder: segment %d has %d values, want %d×%d", si, len(seg), c.NumMelBins, c.MelFrames())
		}
		mel := kernels.Upload(e.b, seg, 1, c.NumMelBins, c.MelFrames())
		states, err := e.Forward(mel)
		e.b.Free(mel)
		if err != nil {
			return nil, err
		}
		base := out[si*p*s*d:]
		for h, st := range states {
			err := e.b.Download(buf, st)
			e.b.Free(st)
			if err != nil {
				for _, rest := range states[h+1:] {
					e.b.Free(rest)
				}
				return nil, fmt.Errorf("whisper encoder: %w", err)
			}
			for t := range p {
				copy(base[(t*s+h)*d:(t*s+h+1)*d], buf[t*d:(t+1)*d])
			}
		}
	}
	return out, nil
}
