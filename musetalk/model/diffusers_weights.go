package model

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/avatargen/musetalk/kernels"
)

// paramState is what a diffusers-style model constructor (UNet, VAE) walks
// its structure with: every parameter is recorded in spec and, when b is not
// nil, read from src, checked and turned into a backend weight. Problems are
// collected rather than stopping at the first, so one error lists every
// missing or misshapen tensor of a checkpoint. The constructor ends the
// walk with [paramState.err], which drops src.
type paramState struct {
	b      kernels.Backend // nil: only record the spec
	src    Tensors         // nil once loading ended
	model  string          // for messages: "unet"
	spec   []TensorSpec
	errs   []string
	loaded []*kernels.Tensor
}

// paramScope is a name prefix ("down_blocks.0.resnets.1.") within a walk.
type paramScope struct {
	st     *paramState
	prefix string
}

func newParamScope(st *paramState) paramScope { return paramScope{st: st} }

// sub returns the scope prefix+parts joined with dots, e.g.
// s.sub("resnets", 1) for "resnets.1.".
func (s paramScope) sub(parts ...any) paramScope {
	var b strings.Builder
	b.WriteString(s.prefix)
	for _, p := range parts {
		switch v := p.(type) {
		case int:
			b.WriteString(strconv.Itoa(v))
		default:
			fmt.Fprint(&b, v)
		}
		b.WriteByte('.')
	}
	return paramScope{st: s.st, prefix: b.String()}
}

// param records the parameter prefix+name of the given shape and returns it
// as a weight of exactly that shape (nil when only recording, or when it is
// missing or misshapen: the problem is recorded). A tensor stored as F16
// goes to a backend that takes half weights ([kernels.HalfWeighter]) as it
// is, when the source serves it so ([HalfTensors]).
func (s paramScope) param(name string, shape ...int) *kernels.Tensor {
	if t, done := s.paramF16(name, shape...); done {
		return t
	}
	data := s.read(name, shape...)
	if data == nil {
		return nil
	}
	return s.st.upload(data, shape...)
}

// paramF16 is param's half-precision path: done is false when it does not
// apply (a backend without [kernels.HalfWeighter], a tensor the source does
// not serve as F16) and param must read the tensor as float32; otherwise t
// is the weight, or nil with the problem recorded.
func (s paramScope) paramF16(name string, shape ...int) (t *kernels.Tensor, done bool) {
	st := s.st
	if st.b == nil {
		return nil, false
	}
	hw, ok := st.b.(kernels.HalfWeighter)
	if !ok {
		return nil, false
	}
	full := s.prefix + name
	bits, got, ok, err := tensorF16(st.src, full)
	if !ok && err == nil {
		return nil, false
	}
	st.spec = append(st.spec, TensorSpec{Name: full, Shape: slices.Clone(shape)})
	if err != nil {
		st.errs = append(st.errs, fmt.Sprintf("%s: %v", full, err))
		return nil, true
	}
	if msg := checkTensorShape(len(bits), got, shape); msg != "" {
		st.errs = append(st.errs, full+": "+msg)
		return nil, true
	}
	t = hw.WeightF16(bits, shape...)
	st.loaded = append(st.loaded, t)
	return t, true
}

// read records prefix+name of the given shape in the spec and, when
// loading, returns its elements as the source stores them (nil when only
// recording, or when the tensor is missing or misshapen: the problem is
// recorded). The caller must not modify the slice; models that transform a
// parameter before use (BatchNorm folding) read it and upload the result.
func (s paramScope) read(name string, shape ...int) []float32 {
	st := s.st
	full := s.prefix + name
	st.spec = append(st.spec, TensorSpec{Name: full, Shape: slices.Clone(shape)})
	if st.b == nil {
		return nil
	}
	data, got, err := st.src.Tensor(full)
	if err != nil {
		st.errs = append(st.errs, fmt.Sprintf("%s: %v", full, err))
		return nil
	}
	if msg := checkTensorShape(len(data), got, shape); msg != "" {
		st.errs = append(st.errs, full+": "+msg)
		return nil
	}
	return data
}

// upload turns data into a backend weight of the given shape that free
// releases.
func (st *paramState) upload(data []float32, shape ...int) *kernels.Tensor {
	t := st.b.Weight(data, shape...)
	st.loaded = append(st.loaded, t)
	return t
}

// err ends loading and returns nil, or one error listing the problems
// found (the first maxWeightProblems of them) and the model they belong
// to. It drops the source, so nothing the source holds (a file mapping,
// float32 copies of the weights) stays reachable through the model: on a
// backend that copies weights (a device) the model then holds no host copy
// of them, while the CPU backend keeps the slices it was given as its
// weights.
func (st *paramState) err() error {
	st.src = nil
	if len(st.errs) == 0 {
		return nil
	}
	return problemsError(st.model+": weights", st.errs)
}

// free releases every weight loaded so far, and drops the source.
func (st *paramState) free() {
	for _, t := range st.loaded {
		st.b.Free(t)
	}
	st.loaded = nil
	st.src = nil
}

const maxWeightProblems = 20

func problemsError(what string, problems []string) error {
	shown := problems[:min(len(problems), maxWeightProblems)]
	more := ""
	if n := len(problems) - len(shown); n > 0 {
		more = fmt.Sprintf("\n\t… and %d more", n)
	}
	return fmt.Errorf("%s: %d problem(s):\n\t%s%s", what, len(problems), strings.Join(shown, "\n\t"), more)
}

// checkTensorShape returns "" if a stored tensor of n elements and shape
// got can serve as a parameter of shape want, else what is wrong. Shapes
// match if they are equal or differ only in trailing size-1 dimensions (a
// [C,C,1,1] 1×1 conv kernel stored for a [C,C] linear weight, as some VAE
// conversions do).
func checkTensorShape(n int, got, want []int) string {
	if !slices.Equal(trimOnes(got), trimOnes(want)) {
		return fmt.Sprintf("shape %v, want %v", got, want)
	}
	if n != shapeElems(want) {
		return fmt.Sprintf("%d elements for shape %v", n, want)
	}
	return ""
}

func trimOnes(s []int) []int {
	for len(s) > 1 && s[len(s)-1] == 1 {
		s = s[:len(s)-1]
	}
	return s
}

// vaeLegacyName returns the name the original sd-vae-ft-mse checkpoint
// (written by diffusers 0.4) uses for a mid-block attention tensor that
// diffusers 0.30 calls name: to_q, to_k, to_v and to_out.0 were query, key,
// value and proj_attn. ok is false for every other name.
func vaeLegacyName(name string) (legacy string, ok bool) {
	i := strings.Index(name, "mid_block.attentions.")
	if i < 0 {
		return "", false
	}
	rest := name[i+len("mid_block.attentions."):]
	j := strings.IndexByte(rest, '.')
	if j < 0 {
		return "", false
	}
	head, tail := name[:i+len("mid_block.attentions.")+j+1], rest[j+1:]
	for _, m := range [...][2]string{{"to_q.", "query."}, {"to_k.", "key."}, {"to_v.", "value."}, {"to_out.0.", "proj_attn."}} {
		if strings.HasPrefix(tail, m[0]) {
			return head + m[1] + tail[len(m[0]):], true
		}
	}
	return "", false
}

// vaeLegacySource serves each VAE tensor under its diffusers 0.30 name,
// reading the legacy name (vaeLegacyName) when src lacks the new one, so a
// VAE loads from the original checkpoint's names too (weights.MapNames
// does the same renaming for `musetalk weights convert`).

type vaeLegacySource struct{ src Tensors }

func (v vaeLegacySource) Tensor(name string) ([]float32, []int, error) {
	data, shape, err := v.src.Tensor(name)
	if err == nil {
		return data, shape, nil
	}
	if legacy, ok := vaeLegacyName(name); ok {
		if d, s, err2 := v.src.Tensor(legacy); err2 == nil {
			return d, s, nil
		}
	}
	return nil, nil, err
}

// TensorF16 implements [HalfTensors] when src does: name, else (when src
// serves no F16 tensor under name) its legacy name. ok false sends the
// loader to Tensor, which reports a missing name.
func (v vaeLegacySource) TensorF16(name string) ([]uint16, []int, bool, error) {
	bits, shape, ok, err := tensorF16(v.src, name)
	if ok || err != nil {
		return bits, shape, ok, err
	}
	if legacy, isLegacy := vaeLegacyName(name); isLegacy {
		return tensorF16(v.src, legacy)
	}
	return nil, nil, false, nil
}
