package golden

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/goldendir"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// TestWriteVariant writes two modified copies of the golden set, to check
// that the golden tests derive their expectations from the set they are
// given rather than from the particular files of ../shared/golden:
//
//	MUSETALK_GOLDEN_VARIANT_OUT=/tmp/gv go test ./internal/golden -run TestWriteVariant
//	MUSETALK_GOLDEN_DIR=/tmp/gv/consistent go test ./musetalk/... -run Golden
//
// $OUT/consistent is a set every reference result of which still holds:
// cases a, b, c and e keep one batch item of two (e also only the first
// 30 positions), b has another VAE scaling_factor with latents_scaled
// rescaled, the two inputs of g and the two sub-cases of g2 trade places,
// and i's frame is moved inside a larger one (the boxes move with it; the
// blended frames get the same border, which blending leaves as it is).
// Every golden test must pass on it.
//
// $OUT/configs is $OUT/consistent with configs edited in ways their
// weights' shapes allow (heads, groups, sample_size), for the tests that
// read configs and tensors without running the networks (package weights);
// the network tests must fail on it, as its outputs were not recomputed.
func TestWriteVariant(t *testing.T) {
	out := os.Getenv("MUSETALK_GOLDEN_VARIANT_OUT")
	if out == "" {
		t.Skip("set MUSETALK_GOLDEN_VARIANT_OUT to write variants of the golden set")
	}
	src, err := goldendir.Dir()
	if err != nil {
		t.Fatal(err)
	}
	consistent, configs := filepath.Join(out, "consistent"), filepath.Join(out, "configs")
	writeVariant(t, src, consistent, map[string]func(*testing.T, *variantCase){
		"a_unet2d_condition": func(t *testing.T, c *variantCase) { c.keepBatchItem(t, "input.sample", 1) },
		"b_autoencoder_kl": func(t *testing.T, c *variantCase) {
			c.keepBatchItem(t, "input.image", 1)
			c.rescaleLatents(t, 0.25)
		},
		"c_whisper_encoder": func(t *testing.T, c *variantCase) { c.keepBatchItem(t, "input.input_features", 1) },
		"e_positional_encoding": func(t *testing.T, c *variantCase) {
			c.keepBatchItem(t, "input.x", 1)
			c.keepPositions(t, 1, 30)
		},
		"g_s3fd":            func(t *testing.T, c *variantCase) { c.swapSubCases(t, "images") },
		"g_sfd_postprocess": func(t *testing.T, c *variantCase) { c.swapSubCases(t, "sub_cases") },
		"i_blending":        func(t *testing.T, c *variantCase) { c.moveFrame(t, 40, 24, 16, 8) },
	})
	writeVariant(t, consistent, configs, map[string]func(*testing.T, *variantCase){
		"a_unet2d_condition": func(t *testing.T, c *variantCase) {
			c.setConfig("attention_head_dim", 2)
			c.setConfig("norm_num_groups", 2)
			c.setConfig("sample_size", 32)
			var boc []int
			c.configValue(t, "block_out_channels", &boc)
			var hd [][]int
			for _, ch := range boc[:len(boc)-1] {
				hd = append(hd, []int{2, ch / 2})
			}
			c.meta["heads_and_head_dims_per_down_block"] = hd
		},
		"b_autoencoder_kl":        func(t *testing.T, c *variantCase) { c.setConfig("norm_num_groups", 4) },
		"c_whisper_encoder":       func(t *testing.T, c *variantCase) { c.setConfig("encoder_attention_heads", 4) },
		"f_musetalk_audio_chunks": func(t *testing.T, c *variantCase) { c.setConfig("encoder_attention_heads", 4) },
		"j_musetalk_audio_real":   func(t *testing.T, c *variantCase) { c.setConfig("encoder_attention_heads", 4) },
	})
}

// writeVariant copies the golden set in src to dst, rewriting the cases
// that edits names.
func writeVariant(t *testing.T, src, dst string, edits map[string]func(*testing.T, *variantCase)) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		base := strings.TrimSuffix(strings.TrimSuffix(name, ".json"), ".safetensors")
		if edits[base] != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for base, edit := range edits {
		t.Run(filepath.Base(dst)+"/"+base, func(t *testing.T) {
			c := loadVariantCase(t, src, base)
			edit(t, c)
			c.save(t, dst, base)
		})
	}
}

// variantTensor is one tensor of a case being rewritten: raw
// little-endian bytes, and the group of the JSON's tensor list it belongs
// to.
type variantTensor struct {
	dtype weights.DType
	shape []int
	data  []byte
	group string
}

type variantCase struct {
	meta     map[string]any
	fileMeta map[string]string
	tensors  map[string]*variantTensor
}

func loadVariantCase(t *testing.T, dir, base string) *variantCase {
	t.Helper()
	js, err := os.ReadFile(filepath.Join(dir, base+".json"))
	if err != nil {
		t.Fatal(err)
	}
	c := &variantCase{tensors: map[string]*variantTensor{}}
	dec := json.NewDecoder(bytes.NewReader(weights.PythonJSON(js)))
	dec.UseNumber()
	if err := dec.Decode(&c.meta); err != nil {
		t.Fatal(err)
	}
	groups := map[string]string{}
	if listed, ok := c.meta["tensors"].(map[string]any); ok {
		for g, names := range listed {
			for n := range names.(map[string]any) {
				groups[n] = g
			}
		}
	}
	s, err := weights.OpenSafetensors(filepath.Join(dir, base+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c.fileMeta = s.Metadata()
	for _, info := range s.Tensors() {
		raw, err := s.RawBytes(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		g := groups[info.Name]
		if g == "" {
			t.Fatalf("%s: tensor %s is not listed in the JSON", base, info.Name)
		}
		c.tensors[info.Name] = &variantTensor{dtype: info.DType, shape: slices.Clone(info.Shape), data: raw, group: g}
	}
	return c
}

// save writes the case's JSON (with its tensor list rebuilt from the
// tensors) and its safetensors file in the golden layout: header padded
// with spaces to a multiple of 8, tensors contiguous in key order.
func (c *variantCase) save(t *testing.T, dir, base string) {
	t.Helper()
	listed := map[string]map[string]any{}
	names := make([]string, 0, len(c.tensors))
	for n, x := range c.tensors {
		names = append(names, n)
		if listed[x.group] == nil {
			listed[x.group] = map[string]any{}
		}
		listed[x.group][n] = map[string]any{"dtype": x.dtype, "shape": x.shape}
	}
	sort.Strings(names)
	c.meta["tensors"] = listed
	js, err := json.MarshalIndent(c.meta, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, base+".json"), append(js, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	header := map[string]any{"__metadata__": c.fileMeta}
	var data []byte
	for _, n := range names {
		x := c.tensors[n]
		header[n] = map[string]any{"dtype": x.dtype, "shape": x.shape, "data_offsets": []int{len(data), len(data) + len(x.data)}}
		data = append(data, x.data...)
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	file := append(binary.LittleEndian.AppendUint64(nil, uint64(len(h))), h...)
	if err := os.WriteFile(filepath.Join(dir, base+".safetensors"), append(file, data...), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (c *variantCase) get(t *testing.T, name string) *variantTensor {
	t.Helper()
	x, ok := c.tensors[name]
	if !ok {
		t.Fatalf("no tensor %s", name)
	}
	return x
}

// isData says whether a tensor is an input, output or activation (not a
// weight or a helper table).
func isData(name string) bool {
	role, _, _ := strings.Cut(name, ".")
	switch role {
	case "input", "output", "output_f64", "output_np", "intermediate":
		return true
	}
	return false
}

// keepBatchItem keeps item b of the batch: every input, output and
// activation whose first dimension is the batch size of tensor ref loses
// the other items. Batch items are computed independently, so the
// reference results still hold.
func (c *variantCase) keepBatchItem(t *testing.T, ref string, b int) {
	t.Helper()
	batch := c.get(t, ref).shape[0]
	if b >= batch || batch < 2 {
		t.Fatalf("%s has batch %d, cannot keep item %d", ref, batch, b)
	}
	for name, x := range c.tensors {
		if !isData(name) || len(x.shape) == 0 || x.shape[0] != batch {
			continue
		}
		per := len(x.data) / batch
		x.data = slices.Clone(x.data[b*per : (b+1)*per])
		x.shape[0] = 1
	}
}

// keepPositions keeps the first n positions along axis of every tensor of
// the positional-encoding case (input, outputs and the PE table alike):
// x + pe[:T] is computed position by position.
func (c *variantCase) keepPositions(t *testing.T, axis, n int) {
	t.Helper()
	for name, x := range c.tensors {
		if len(x.shape) <= axis || x.shape[axis] < n {
			t.Fatalf("%s %v: no axis %d of at least %d", name, x.shape, axis, n)
		}
		outer, inner := 1, x.dtype.Size()
		for _, d := range x.shape[:axis] {
			outer *= d
		}
		for _, d := range x.shape[axis+1:] {
			inner *= d
		}
		size := x.shape[axis]
		var out []byte
		for o := range outer {
			out = append(out, x.data[(o*size)*inner:(o*size+n)*inner]...)
		}
		x.data, x.shape[axis] = out, n
	}
}

// configs returns the case's config objects (config_passed, config_full).
func (c *variantCase) configs() []map[string]any {
	var out []map[string]any
	for _, k := range []string{"config_passed", "config_full"} {
		if m, ok := c.meta[k].(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func (c *variantCase) setConfig(key string, v any) {
	for _, m := range c.configs() {
		m[key] = v
	}
}

func (c *variantCase) configValue(t *testing.T, key string, v any) {
	t.Helper()
	for _, m := range c.configs() {
		if x, ok := m[key]; ok {
			b, _ := json.Marshal(x)
			if err := json.Unmarshal(b, v); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no config key %s", key)
}

func f32s(x *variantTensor) []float32 {
	out := make([]float32, len(x.data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(x.data[4*i:]))
	}
	return out
}

// rescaleLatents gives the VAE another scaling_factor and recomputes
// output.latents_scaled = scaling_factor · latent_sample (in float32, and
// in float64 for output_f64.*).
func (c *variantCase) rescaleLatents(t *testing.T, sf float64) {
	t.Helper()
	c.setConfig("scaling_factor", sf)
	sample := f32s(c.get(t, "output.latent_sample"))
	scaled := c.get(t, "output.latents_scaled")
	scaled.data = scaled.data[:0]
	for _, v := range sample {
		scaled.data = binary.LittleEndian.AppendUint32(scaled.data, math.Float32bits(float32(sf)*v))
	}
	if s64, ok := c.tensors["output_f64.latent_sample"]; ok {
		out := c.get(t, "output_f64.latents_scaled")
		out.data = out.data[:0]
		for i := 0; i < len(s64.data); i += 8 {
			v := math.Float64frombits(binary.LittleEndian.Uint64(s64.data[i:]))
			out.data = binary.LittleEndian.AppendUint64(out.data, math.Float64bits(sf*v))
		}
	}
}

// swapSubCases exchanges sub-cases 0 and 1: tensors role.0.* and role.1.*
// trade names, and so do the JSON's per-sub-case entries (the list under
// listKey, with its "index" fields, and the maps keyed "0" and "1").
func (c *variantCase) swapSubCases(t *testing.T, listKey string) {
	t.Helper()
	swap := map[string]string{"0": "1", "1": "0"}
	renamed := map[string]*variantTensor{}
	for name, x := range c.tensors {
		parts := strings.SplitN(name, ".", 3)
		if len(parts) == 3 && swap[parts[1]] != "" {
			parts[1] = swap[parts[1]]
		}
		renamed[strings.Join(parts, ".")] = x
	}
	c.tensors = renamed
	list, ok := c.meta[listKey].([]any)
	if !ok || len(list) != 2 {
		t.Fatalf("%s: want a list of two sub-cases", listKey)
	}
	list[0], list[1] = list[1], list[0]
	for i, e := range list {
		if m, ok := e.(map[string]any); ok {
			if _, has := m["index"]; has {
				m["index"] = i
			}
		}
	}
	for key, v := range c.meta {
		m, ok := v.(map[string]any)
		if !ok || key == "tensors" {
			continue
		}
		out := map[string]any{}
		changed := false
		for k, x := range m {
			nk := k
			if swap[k] != "" {
				nk, changed = swap[k], true
			} else if parts := strings.SplitN(k, ".", 3); len(parts) == 3 && swap[parts[1]] != "" {
				parts[1] = swap[parts[1]]
				nk, changed = strings.Join(parts, "."), true
			}
			out[nk] = x
		}
		if changed {
			c.meta[key] = out
		}
	}
}

// moveFrame puts case i's frame at (dx, dy) inside a frame larger by
// dx+right columns and dy+bottom rows, filled with a pattern. Every box
// moves by (dx, dy); crops, masks and faces are unchanged; the blended
// frames get the same border, since blending only changes the crop box.
func (c *variantCase) moveFrame(t *testing.T, dx, dy, right, bottom int) {
	t.Helper()
	frame := c.get(t, "input.frame_bgr")
	h, w := frame.shape[0], frame.shape[1]
	nh, nw := h+dy+bottom, w+dx+right
	var crops [][4]int
	for name, x := range c.tensors {
		if strings.HasPrefix(name, "ref.") && strings.HasSuffix(name, ".crop_box") {
			var b [4]int
			for i := range b {
				b[i] = int(int64(binary.LittleEndian.Uint64(x.data[8*i:])))
			}
			if b[0] < 0 || b[1] < 0 || b[2] > w || b[3] > h {
				t.Fatalf("%s %v reaches outside the frame: moving it would change the crop", name, b)
			}
			crops = append(crops, b)
		}
		if strings.HasSuffix(name, "face_box") && int(int64(binary.LittleEndian.Uint64(x.data[24:]))) >= h {
			t.Fatalf("%s reaches the frame's bottom (v1.5 clamps its margin there): moving it would change it", name)
		}
	}
	inside := func(x, y int) bool {
		for _, b := range crops {
			if x >= b[0] && x < b[2] && y >= b[1] && y < b[3] {
				return true
			}
		}
		return false
	}
	pad := func(x *variantTensor, check bool) {
		if x.dtype != weights.U8 || !slices.Equal(x.shape, []int{h, w, 3}) {
			t.Fatalf("frame tensor %v %s", x.shape, x.dtype)
		}
		out := make([]byte, nh*nw*3)
		for y := range nh {
			for xx := range nw {
				for ch := range 3 {
					out[(y*nw+xx)*3+ch] = byte(xx*7 + y*13 + ch*85)
				}
			}
		}
		for y := range h {
			copy(out[((y+dy)*nw+dx)*3:((y+dy)*nw+dx+w)*3], x.data[y*w*3:(y+1)*w*3])
			if check {
				for xx := range w {
					if !inside(xx, y) && !bytes.Equal(x.data[(y*w+xx)*3:(y*w+xx+1)*3], frame.data[(y*w+xx)*3:(y*w+xx+1)*3]) {
						t.Fatalf("a blended frame differs from the frame at (%d,%d), outside every crop box", xx, y)
					}
				}
			}
		}
		x.data, x.shape = out, []int{nh, nw, 3}
	}
	for name, x := range c.tensors {
		if strings.HasPrefix(name, "output.") && strings.HasSuffix(name, ".blended_bgr") {
			pad(x, true)
		}
	}
	pad(frame, false)
	for name, x := range c.tensors {
		if x.dtype == weights.I64 && len(x.data) == 32 && (strings.HasSuffix(name, "face_box") || strings.HasSuffix(name, "crop_box")) {
			for i := range 4 {
				v := int64(binary.LittleEndian.Uint64(x.data[8*i:]))
				v += int64([]int{dx, dy}[i%2])
				binary.LittleEndian.PutUint64(x.data[8*i:], uint64(v))
			}
		}
	}
	details, _ := c.meta["details"].(map[string]any)
	for _, d := range details {
		m, ok := d.(map[string]any)
		if !ok {
			continue
		}
		for _, key := range []string{"face_box_used", "crop_box"} {
			box, ok := m[key].([]any)
			if !ok {
				continue
			}
			for i, v := range box {
				n, err := strconv.Atoi(fmt.Sprint(v))
				if err != nil {
					t.Fatalf("details %s: %v", key, err)
				}
				box[i] = n + []int{dx, dy}[i%2]
			}
		}
	}
	c.meta["frame_note"] = fmt.Sprintf("the photo (%dx%d) at (%d,%d) inside a %dx%d frame with a pattern border (variant)", w, h, dx, dy, nw, nh)
}
