package weights

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Kind names a network, which decides how [MapNames] renames its tensors.
type Kind string

// The networks MuseTalk loads.
const (
	// KindAuto asks [DetectKind] to decide from the tensor names.
	KindAuto Kind = "auto"
	// KindUNet is MuseTalk's UNet2DConditionModel (unet.pth,
	// pytorch_model.bin): names pass through unchanged.
	KindUNet Kind = "unet"
	// KindVAE is AutoencoderKL (sd-vae-ft-mse): legacy attention names are
	// renamed and conv-shaped attention weights squeezed.
	KindVAE Kind = "vae"
	// KindWhisper is the Whisper encoder: "model.encoder.*" becomes
	// "encoder.*" and everything else (the decoder, proj_out) is dropped.
	KindWhisper Kind = "whisper"
	// KindS3FD is the face-alignment S3FD detector: names pass through.
	KindS3FD Kind = "s3fd"
	// KindBiSeNet is the face-parsing BiSeNet: names pass through.
	KindBiSeNet Kind = "bisenet"
	// KindDWPose is DWPose's RTMPose whole-body model (mmpose
	// TopdownPoseEstimator, dw-ll_ucoco_384.pth): the state dict's
	// "backbone.*" and "head.*" names pass through, BatchNorm buffers
	// (running_mean, running_var, num_batches_tracked) included; anything
	// else (mmengine loads the checkpoint non-strictly) is dropped.
	KindDWPose Kind = "dwpose"
)

// Kinds lists the concrete kinds (all but [KindAuto]).
func Kinds() []Kind {
	return []Kind{KindUNet, KindVAE, KindWhisper, KindS3FD, KindBiSeNet, KindDWPose}
}

// ParseKind accepts a kind name as given on a command line; "" means auto.
func ParseKind(s string) (Kind, error) {
	k := Kind(strings.ToLower(strings.TrimSpace(s)))
	if k == "" || k == KindAuto || slices.Contains(Kinds(), k) {
		if k == "" {
			k = KindAuto
		}
		return k, nil
	}
	return "", fmt.Errorf("unknown weights kind %q (want auto, unet, vae, whisper, s3fd, bisenet or dwpose)", s)
}

// DetectKind recognises a network from the names of its tensors, with or
// without a DataParallel "module." prefix.
func DetectKind(tensors []TensorInfo) (Kind, error) {
	names := make(map[string]bool, len(tensors))
	for _, t := range tensors {
		names[strings.TrimPrefix(t.Name, "module.")] = true
	}
	switch {
	case names["time_embedding.linear_1.weight"] && names["conv_in.weight"]:
		return KindUNet, nil
	case names["quant_conv.weight"] && names["post_quant_conv.weight"]:
		return KindVAE, nil
	case names["encoder.embed_positions.weight"] || names["model.encoder.embed_positions.weight"]:
		return KindWhisper, nil
	case names["conv1_1.weight"] && names["fc7.weight"]:
		return KindS3FD, nil
	case names["cp.resnet.conv1.weight"]:
		return KindBiSeNet, nil
	case names["backbone.stem.0.conv.weight"] && names["head.gau.uv.weight"]:
		return KindDWPose, nil
	}
	var sample []string
	for _, t := range tensors[:min(len(tensors), 5)] {
		sample = append(sample, t.Name)
	}
	return "", fmt.Errorf("cannot tell which network %d tensors (%s, ...) belong to; give the kind explicitly: %w",
		len(tensors), strings.Join(sample, ", "), ErrUnsupported)
}

// nameRules holds the compiled patterns of the renaming rules.
type nameRules struct {
	legacyAttn *regexp.Regexp // VAE attention: query/key/value/proj_attn
	linearAttn *regexp.Regexp // VAE attention weights that must be 2-D
	ldmVAE     *regexp.Regexp // original CompVis layout, not diffusers
}

func newNameRules() *nameRules {
	return &nameRules{
		legacyAttn: regexp.MustCompile(`^(.*\battentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$`),
		linearAttn: regexp.MustCompile(`\battentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$`),
		ldmVAE:     regexp.MustCompile(`^(encoder|decoder)\.(down|up)\.\d+\.block\.|^(encoder|decoder)\.mid\.attn_1\.`),
	}
}

// legacyAttnName maps the attention names of diffusers < 0.14 checkpoints
// (such as sd-vae-ft-mse, written by 0.4.2) to today's.
func legacyAttnName(s string) string {
	switch s {
	case "query":
		return "to_q"
	case "key":
		return "to_k"
	case "value":
		return "to_v"
	}
	return "to_out.0" // proj_attn
}

// mapped is one tensor of a renamed view: its new name and shape, and the
// source tensor it reads.
type mapped struct {
	info TensorInfo
	src  string
}

// mapping computes the renamed tensor list of kind from the source list.
// Dropped tensors are returned separately.
func mapping(src []TensorInfo, kind Kind) (_ Kind, out []mapped, dropped []string, err error) {
	if kind == KindAuto || kind == "" {
		if kind, err = DetectKind(src); err != nil {
			return "", nil, nil, err
		}
	}
	if !slices.Contains(Kinds(), kind) {
		return "", nil, nil, fmt.Errorf("unknown weights kind %q", kind)
	}
	// A DataParallel prefix on every name is stripped.
	strip := len(src) > 0
	for _, t := range src {
		strip = strip && strings.HasPrefix(t.Name, "module.")
	}
	rules := newNameRules()
	from := make(map[string]string, len(src))
	for _, t := range src {
		name := t.Name
		if strip {
			name = strings.TrimPrefix(name, "module.")
		}
		shape := slices.Clone(t.Shape)
		switch kind {
		case KindVAE:
			if rules.ldmVAE.MatchString(name) {
				return "", nil, nil, fmt.Errorf("tensor %q: original CompVis/LDM VAE layout, not diffusers AutoencoderKL: %w", t.Name, ErrUnsupported)
			}
			if m := rules.legacyAttn.FindStringSubmatch(name); m != nil {
				name = m[1] + legacyAttnName(m[2]) + "." + m[3]
			}
			if rules.linearAttn.MatchString(name) && len(shape) == 4 && shape[2] == 1 && shape[3] == 1 {
				shape = shape[:2] // conv-shaped [C, C, 1, 1] → linear [C, C]
			}
		case KindWhisper:
			name = strings.TrimPrefix(name, "model.")
			if !strings.HasPrefix(name, "encoder.") {
				dropped = append(dropped, t.Name)
				continue
			}
		case KindDWPose:
			if !strings.HasPrefix(name, "backbone.") && !strings.HasPrefix(name, "head.") {
				dropped = append(dropped, t.Name)
				continue
			}
		}
		if prev, dup := from[name]; dup {
			return "", nil, nil, fmt.Errorf("tensors %q and %q both map to %q", prev, t.Name, name)
		}
		from[name] = t.Name
		out = append(out, mapped{info: TensorInfo{Name: name, DType: t.DType, Shape: shape}, src: t.Name})
	}
	if len(out) == 0 {
		return "", nil, nil, fmt.Errorf("no %s tensors among %d: %w", kind, len(src), ErrNotFound)
	}
	return kind, out, dropped, nil
}

// MappedReader is a renamed view of another [Reader] (see [MapNames]).
type MappedReader struct {
	r       Reader
	kind    Kind
	tensors infoIndex
	src     []string // source name, parallel to tensors.infos
	dropped []string
}

var _ Reader = (*MappedReader)(nil)

// MapNames returns a view of r with the tensor names (and, for squeezed VAE
// attention weights, shapes) the model code expects for kind; [KindAuto]
// detects the kind. Names in every kind lose a "module." prefix that all of
// them share. The view owns r: closing it closes r.
func MapNames(r Reader, kind Kind) (*MappedReader, error) {
	kind, ms, dropped, err := mapping(r.Tensors(), kind)
	if err != nil {
		return nil, err
	}
	m := &MappedReader{r: r, kind: kind, dropped: dropped}
	for _, t := range ms {
		m.tensors.add(t.info)
		m.src = append(m.src, t.src)
	}
	return m, nil
}

// OpenMapped opens the weights file at path with [Open] and returns it with
// the names of kind, as [MapNames] gives them.
func OpenMapped(path string, kind Kind) (*MappedReader, error) {
	r, err := Open(path)
	if err != nil {
		return nil, err
	}
	m, err := MapNames(r, kind)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("%s: mapping names: %w", path, err)
	}
	return m, nil
}

// Kind returns the network kind the names were mapped for.
func (m *MappedReader) Kind() Kind { return m.kind }

// Dropped lists the source tensors left out of the view (Whisper's decoder,
// whatever a DWPose checkpoint holds besides its backbone and head).
func (m *MappedReader) Dropped() []string { return slices.Clone(m.dropped) }

// Source returns the name the tensor has in the underlying file.
func (m *MappedReader) Source(name string) (string, bool) {
	_, i, ok := m.tensors.lookup(name)
	if !ok {
		return "", false
	}
	return m.src[i], true
}

// Tensors implements [Reader].
func (m *MappedReader) Tensors() []TensorInfo { return m.tensors.list() }

// Info implements [Reader].
func (m *MappedReader) Info(name string) (TensorInfo, bool) {
	t, _, ok := m.tensors.lookup(name)
	return t, ok
}

func (m *MappedReader) source(name string) (TensorInfo, string, error) {
	t, i, ok := m.tensors.lookup(name)
	if !ok {
		return t, "", fmt.Errorf("tensor %q (%s names): %w", name, m.kind, ErrNotFound)
	}
	return t, m.src[i], nil
}

// ReadFloat32 implements [Reader]; the result carries the mapped name and
// shape.
func (m *MappedReader) ReadFloat32(name string) (*Tensor, error) {
	t, src, err := m.source(name)
	if err != nil {
		return nil, err
	}
	out, err := m.r.ReadFloat32(src)
	if err != nil {
		return nil, err
	}
	out.Name, out.Shape = t.Name, t.Shape
	return out, nil
}

// ReadFloat32Into implements [Reader].
func (m *MappedReader) ReadFloat32Into(name string, dst []float32) error {
	_, src, err := m.source(name)
	if err != nil {
		return err
	}
	return m.r.ReadFloat32Into(src, dst)
}

// ReadInt64 implements [Reader].
func (m *MappedReader) ReadInt64(name string) ([]int64, error) {
	_, src, err := m.source(name)
	if err != nil {
		return nil, err
	}
	return m.r.ReadInt64(src)
}

// Close implements [Reader]; it closes the underlying reader.
func (m *MappedReader) Close() error { return m.r.Close() }
