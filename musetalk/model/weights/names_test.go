package weights

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// memReader is an in-memory Reader for tests.
type memReader struct {
	idx    infoIndex
	data   map[string][]float32
	closed bool
}

func newMemReader(ts ...Tensor) *memReader {
	m := &memReader{data: map[string][]float32{}}
	for _, t := range ts {
		m.idx.add(TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape})
		m.data[t.Name] = t.Data
	}
	return m
}

func (m *memReader) Tensors() []TensorInfo { return m.idx.list() }
func (m *memReader) Info(name string) (TensorInfo, bool) {
	t, _, ok := m.idx.lookup(name)
	return t, ok
}
func (m *memReader) ReadFloat32(name string) (*Tensor, error) { return readFloat32(m, name) }
func (m *memReader) ReadFloat32Into(name string, dst []float32) error {
	d, ok := m.data[name]
	if !ok {
		return fmt.Errorf("mem: tensor %q: %w", name, ErrNotFound)
	}
	copy(dst, d)
	return nil
}
func (m *memReader) ReadInt64(name string) ([]int64, error) {
	d, ok := m.data[name]
	if !ok {
		return nil, fmt.Errorf("mem: tensor %q: %w", name, ErrNotFound)
	}
	out := make([]int64, len(d))
	for i, v := range d {
		out[i] = int64(v)
	}
	return out, nil
}
func (m *memReader) Close() error { m.closed = true; return nil }

func tensor(name string, shape ...int) Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	data := make([]float32, n)
	for i := range data {
		data[i] = float32(len(name)*1000 + i)
	}
	return Tensor{Name: name, DType: F32, Shape: shape, Data: data}
}

func names(ts []TensorInfo) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Name)
	}
	return out
}

func TestMapNamesVAE(t *testing.T) {
	t.Parallel()
	const attn = "encoder.mid_block.attentions.0."
	src := newMemReader(
		tensor("quant_conv.weight", 8, 8, 1, 1),
		tensor("post_quant_conv.weight", 4, 4, 1, 1),
		tensor(attn+"group_norm.weight", 4),
		tensor(attn+"query.weight", 4, 4),
		tensor(attn+"query.bias", 4),
		tensor(attn+"key.weight", 4, 4, 1, 1), // conv-shaped, as in some old checkpoints
		tensor(attn+"value.weight", 4, 4),
		tensor(attn+"proj_attn.weight", 4, 4, 1, 1),
		tensor(attn+"proj_attn.bias", 4),
		tensor("decoder.mid_block.attentions.0.to_q.weight", 4, 4), // already new
		tensor("decoder.up_blocks.0.resnets.0.conv_shortcut.weight", 4, 8, 1, 1),
	)
	m, err := MapNames(src, KindAuto)
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind() != KindVAE {
		t.Fatalf("Kind() = %s, want vae", m.Kind())
	}
	want := []TensorInfo{
		{Name: "quant_conv.weight", Shape: []int{8, 8, 1, 1}},
		{Name: "post_quant_conv.weight", Shape: []int{4, 4, 1, 1}},
		{Name: attn + "group_norm.weight", Shape: []int{4}},
		{Name: attn + "to_q.weight", Shape: []int{4, 4}},
		{Name: attn + "to_q.bias", Shape: []int{4}},
		{Name: attn + "to_k.weight", Shape: []int{4, 4}},
		{Name: attn + "to_v.weight", Shape: []int{4, 4}},
		{Name: attn + "to_out.0.weight", Shape: []int{4, 4}},
		{Name: attn + "to_out.0.bias", Shape: []int{4}},
		{Name: "decoder.mid_block.attentions.0.to_q.weight", Shape: []int{4, 4}},
		{Name: "decoder.up_blocks.0.resnets.0.conv_shortcut.weight", Shape: []int{4, 8, 1, 1}}, // not squeezed
	}
	got := m.Tensors()
	if len(got) != len(want) {
		t.Fatalf("mapped names %v", names(got))
	}
	for i := range want {
		if got[i].Name != want[i].Name || !slices.Equal(got[i].Shape, want[i].Shape) {
			t.Errorf("tensor %d = %s %v, want %s %v", i, got[i].Name, got[i].Shape, want[i].Name, want[i].Shape)
		}
	}
	v, err := m.ReadFloat32(attn + "to_out.0.weight")
	if err != nil || v.Name != attn+"to_out.0.weight" || !slices.Equal(v.Shape, []int{4, 4}) ||
		!slices.Equal(v.Data, src.data[attn+"proj_attn.weight"]) {
		t.Errorf("ReadFloat32 through the mapping = %+v, %v", v, err)
	}
	if s, _ := m.Source(attn + "to_k.weight"); s != attn+"key.weight" {
		t.Errorf("Source(to_k) = %q", s)
	}
	if _, err := m.ReadFloat32(attn + "query.weight"); !errors.Is(err, ErrNotFound) {
		t.Errorf("old name still readable: %v", err)
	}
	m.Close()
	if !src.closed {
		t.Error("closing the view did not close the source")
	}

	// Old and new names for one tensor collide.
	dup := newMemReader(tensor("quant_conv.weight", 1), tensor("post_quant_conv.weight", 1),
		tensor(attn+"query.weight", 4, 4), tensor(attn+"to_q.weight", 4, 4))
	if _, err := MapNames(dup, KindVAE); err == nil || !strings.Contains(err.Error(), "query.weight") || !strings.Contains(err.Error(), "to_q.weight") {
		t.Errorf("colliding names: %v", err)
	}
	// The original CompVis layout needs a different converter.
	ldm := newMemReader(tensor("encoder.down.0.block.0.conv1.weight", 1), tensor("quant_conv.weight", 1), tensor("post_quant_conv.weight", 1))
	if _, err := MapNames(ldm, KindVAE); !errors.Is(err, ErrUnsupported) {
		t.Errorf("LDM VAE: %v, want ErrUnsupported", err)
	}
}

func TestMapNamesWhisper(t *testing.T) {
	t.Parallel()
	src := newMemReader(
		tensor("model.encoder.conv1.weight", 4, 2, 3),
		tensor("model.encoder.embed_positions.weight", 6, 4),
		tensor("model.encoder.layers.0.self_attn.k_proj.weight", 4, 4),
		tensor("model.encoder.layer_norm.bias", 4),
		tensor("model.decoder.embed_tokens.weight", 10, 4),
		tensor("model.decoder.layers.0.fc1.weight", 8, 4),
		tensor("proj_out.weight", 10, 4),
	)
	m, err := MapNames(src, KindAuto)
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind() != KindWhisper {
		t.Fatalf("Kind() = %s", m.Kind())
	}
	wantNames := []string{"encoder.conv1.weight", "encoder.embed_positions.weight", "encoder.layers.0.self_attn.k_proj.weight", "encoder.layer_norm.bias"}
	if got := names(m.Tensors()); !slices.Equal(got, wantNames) {
		t.Errorf("names = %v, want %v", got, wantNames)
	}
	wantDropped := []string{"model.decoder.embed_tokens.weight", "model.decoder.layers.0.fc1.weight", "proj_out.weight"}
	if got := m.Dropped(); !slices.Equal(got, wantDropped) {
		t.Errorf("Dropped() = %v, want %v", got, wantDropped)
	}
	// A WhisperModel encoder saved without the prefix maps to itself.
	plain := newMemReader(tensor("encoder.conv1.weight", 1), tensor("encoder.embed_positions.weight", 1))
	if m, err := MapNames(plain, KindWhisper); err != nil || !slices.Equal(names(m.Tensors()), []string{"encoder.conv1.weight", "encoder.embed_positions.weight"}) {
		t.Errorf("unprefixed encoder: %v", err)
	}
	// A decoder alone has nothing to keep.
	dec := newMemReader(tensor("model.decoder.layers.0.fc1.weight", 1))
	if _, err := MapNames(dec, KindWhisper); !errors.Is(err, ErrNotFound) {
		t.Errorf("decoder-only checkpoint: %v, want ErrNotFound", err)
	}
}

func TestMapNamesPassThroughAndDetect(t *testing.T) {
	t.Parallel()
	unet := newMemReader(
		tensor("module.conv_in.weight", 4, 8, 3, 3),
		tensor("module.time_embedding.linear_1.weight", 16, 4),
		tensor("module.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", 4, 4),
		tensor("module.down_blocks.0.attentions.0.proj_in.weight", 4, 4, 1, 1),
	)
	m, err := MapNames(unet, KindAuto)
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind() != KindUNet {
		t.Errorf("Kind() = %s, want unet", m.Kind())
	}
	got := m.Tensors()
	if got[0].Name != "conv_in.weight" || !slices.Equal(got[3].Shape, []int{4, 4, 1, 1}) {
		t.Errorf("UNet mapping changed more than the module. prefix: %+v", got)
	}

	for _, tc := range []struct {
		names []string
		want  Kind
	}{
		{[]string{"conv1_1.weight", "fc7.weight", "conv3_3_norm.weight"}, KindS3FD},
		{[]string{"cp.resnet.conv1.weight", "ffm.convblk.conv.weight"}, KindBiSeNet},
		{[]string{"encoder.embed_positions.weight"}, KindWhisper},
		{[]string{"backbone.stem.0.conv.weight", "head.gau.uv.weight", "head.cls_x.weight"}, KindDWPose},
	} {
		var infos []TensorInfo
		for _, n := range tc.names {
			infos = append(infos, TensorInfo{Name: n})
		}
		if k, err := DetectKind(infos); k != tc.want || err != nil {
			t.Errorf("DetectKind(%v) = %s, %v; want %s", tc.names, k, err, tc.want)
		}
	}
	if _, err := DetectKind([]TensorInfo{{Name: "fc.weight"}}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "fc.weight") {
		t.Errorf("DetectKind of unknown names: %v", err)
	}

	for in, want := range map[string]Kind{"": KindAuto, "Auto": KindAuto, "vae": KindVAE, " whisper ": KindWhisper, "bisenet": KindBiSeNet, "DWPose": KindDWPose} {
		if k, err := ParseKind(in); k != want || err != nil {
			t.Errorf("ParseKind(%q) = %s, %v", in, k, err)
		}
	}
	if _, err := ParseKind("openpose"); err == nil {
		t.Error("ParseKind accepted openpose")
	}
}

func TestCheckSpec(t *testing.T) {
	t.Parallel()
	have := []TensorInfo{{Name: "a", Shape: []int{2}}, {Name: "b", Shape: []int{3, 3}}, {Name: "extra", Shape: []int{1}}}
	spec := []TensorSpec{{Name: "a", Shape: []int{2}}, {Name: "b", Shape: []int{3, 4}}, {Name: "gone", Shape: []int{5}}}
	err := CheckSpec(have, spec, false)
	var se *SpecError
	if !errors.As(err, &se) {
		t.Fatalf("CheckSpec = %v, want *SpecError", err)
	}
	if !slices.Equal(se.Missing, []string{"gone"}) || !slices.Equal(se.Unexpected, []string{"extra"}) ||
		len(se.Misshapen) != 1 || se.Misshapen[0].Name != "b" || !slices.Equal(se.Misshapen[0].Got, []int{3, 3}) {
		t.Errorf("SpecError = %+v", se)
	}
	if !errors.Is(err, ErrNotFound) {
		t.Error("missing tensors do not match ErrNotFound")
	}
	for _, s := range []string{`"gone"`, `"b" is [3 3], want [3 4]`, `"extra"`} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %s", err, s)
		}
	}
	if err := CheckSpec(have, spec[:1], true); err != nil {
		t.Errorf("subset with allowUnexpected: %v", err)
	}
	if err := CheckSpec(have[:1], spec[:1], false); err != nil {
		t.Errorf("exact match: %v", err)
	}
}
