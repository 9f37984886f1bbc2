package weights

import (
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
	"github.com/avatargen/musetalk/internal/testenv"
)

// goldenDir returns the golden data's directory, skipping the test when
// the data is absent.
func goldenDir(t *testing.T) string {
	t.Helper()
	d, err := goldendir.Dir()
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	if _, err := os.Stat(d); err != nil {
		testenv.Missing(t, "golden data not found at %s; set MUSETALK_GOLDEN_DIR", d)
	}
	return d
}

type goldenTensor struct {
	DType DType `json:"dtype"`
	Shape []int `json:"shape"`
}

// goldenJSON reads a golden case's JSON file.
type goldenJSON struct {
	Tensors map[string]map[string]goldenTensor `json:"tensors"`
	raw     []byte
	// top is the file's top level, member by member.
	top map[string]json.RawMessage
}

func readGoldenJSON(t *testing.T, path string) goldenJSON {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var g goldenJSON
	if err := json.Unmarshal(PythonJSON(b), &g); err != nil { // a_unet2d_condition.json holds a NaN
		t.Fatalf("%s: %v", path, err)
	}
	if err := json.Unmarshal(PythonJSON(b), &g.top); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	g.raw = b
	return g
}

// weightSpec turns the "weights" group of a golden JSON into a spec.
func (g goldenJSON) weightSpec() []TensorSpec {
	var spec []TensorSpec
	for name, gt := range g.Tensors["weights"] {
		spec = append(spec, TensorSpec{Name: name, Shape: gt.Shape})
	}
	sort.Slice(spec, func(i, j int) bool { return spec[i].Name < spec[j].Name })
	return spec
}

// TestGoldenFiles opens every golden safetensors file, checks its header
// against the tensor list of the JSON beside it and reads every tensor.
func TestGoldenFiles(t *testing.T) {
	t.Parallel()
	dir := goldenDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden safetensors files in %s (%v)", dir, err)
	}
	for _, path := range files {
		base := strings.TrimSuffix(filepath.Base(path), ".safetensors")
		t.Run(base, func(t *testing.T) {
			t.Parallel()
			g := readGoldenJSON(t, filepath.Join(dir, base+".json"))
			s, err := OpenSafetensors(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			meta := s.Metadata()
			if meta["config_json"] != base+".json" || meta["case"] == "" {
				t.Errorf("__metadata__ = %v, want config_json %q and a case", meta, base+".json")
			}
			want := map[string]goldenTensor{}
			for _, group := range g.Tensors {
				for name, gt := range group {
					want[name] = gt
				}
			}
			infos := s.Tensors()
			if len(infos) != len(want) {
				t.Errorf("%d tensors in the file, %d in the JSON", len(infos), len(want))
			}
			for _, ti := range infos {
				gt, ok := want[ti.Name]
				if !ok {
					t.Errorf("tensor %q not listed in the JSON", ti.Name)
					continue
				}
				if ti.DType != gt.DType || !slices.Equal(ti.Shape, gt.Shape) {
					t.Errorf("%s: %s %v, JSON says %s %v", ti.Name, ti.DType, ti.Shape, gt.DType, gt.Shape)
				}
				v, err := s.ReadFloat32(ti.Name)
				if err != nil {
					t.Fatalf("ReadFloat32(%q): %v", ti.Name, err)
				}
				if len(v.Data) != ti.NumElements() {
					t.Fatalf("%s: %d elements, want %d", ti.Name, len(v.Data), ti.NumElements())
				}
				for i, x := range v.Data {
					if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
						t.Fatalf("%s[%d] = %v", ti.Name, i, x)
					}
				}
				if !ti.DType.IsFloat() {
					if _, err := s.ReadInt64(ti.Name); err != nil {
						t.Fatalf("ReadInt64(%q): %v", ti.Name, err)
					}
				}
			}
		})
	}
}

// rawEntry is one tensor of a safetensors header as this test reads it on
// its own, without the package's parser.
type rawEntry struct {
	DType   DType    `json:"dtype"`
	Shape   []int    `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

// readRawHeader parses the header of the safetensors file f with
// encoding/json and returns its tensors and the offset of the data
// section.
func readRawHeader(t *testing.T, f *os.File) (map[string]rawEntry, int64) {
	t.Helper()
	var n [8]byte
	if _, err := f.ReadAt(n[:], 0); err != nil {
		t.Fatal(err)
	}
	size := binary.LittleEndian.Uint64(n[:])
	if size == 0 || size > 1<<30 {
		t.Fatalf("%s: header length %d", f.Name(), size)
	}
	header := make([]byte, size)
	if _, err := f.ReadAt(header, 8); err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(header, &top); err != nil {
		t.Fatalf("%s: header: %v", f.Name(), err)
	}
	out := map[string]rawEntry{}
	for name, raw := range top {
		if name == "__metadata__" {
			continue
		}
		var e rawEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("%s: %s: %v", f.Name(), name, err)
		}
		out[name] = e
	}
	return out, 8 + int64(size)
}

// halfBits returns the value of IEEE half-precision bits h, computed from
// the definition (this test's own conversion, independent of the
// package's).
func halfBits(h uint16) float64 {
	e, m := int(h>>10)&0x1f, float64(h&0x3ff)
	var v float64
	switch e {
	case 0:
		v = math.Ldexp(m, -24)
	case 0x1f:
		v = math.Inf(1)
		if m != 0 {
			v = math.NaN()
		}
	default:
		v = math.Ldexp(1024+m, e-25)
	}
	if h&0x8000 != 0 {
		v = -v
	}
	return v
}

// rawFloats decodes little-endian elements of a floating-point dtype.
func rawFloats(d DType, b []byte) ([]float64, bool) {
	le := binary.LittleEndian
	var out []float64
	switch d {
	case F16:
		for i := 0; i+2 <= len(b); i += 2 {
			out = append(out, halfBits(le.Uint16(b[i:])))
		}
	case BF16:
		for i := 0; i+2 <= len(b); i += 2 {
			out = append(out, float64(math.Float32frombits(uint32(le.Uint16(b[i:]))<<16)))
		}
	case F32:
		for i := 0; i+4 <= len(b); i += 4 {
			out = append(out, float64(math.Float32frombits(le.Uint32(b[i:]))))
		}
	case F64:
		for i := 0; i+8 <= len(b); i += 8 {
			out = append(out, math.Float64frombits(le.Uint64(b[i:])))
		}
	default:
		return nil, false
	}
	return out, true
}

// rawInts decodes little-endian elements of an integer dtype.
func rawInts(d DType, b []byte) ([]int64, bool) {
	le := binary.LittleEndian
	var out []int64
	switch d {
	case U8, BOOL:
		for _, x := range b {
			out = append(out, int64(x))
		}
	case I8:
		for _, x := range b {
			out = append(out, int64(int8(x)))
		}
	case I16:
		for i := 0; i+2 <= len(b); i += 2 {
			out = append(out, int64(int16(le.Uint16(b[i:]))))
		}
	case I32:
		for i := 0; i+4 <= len(b); i += 4 {
			out = append(out, int64(int32(le.Uint32(b[i:]))))
		}
	case I64:
		for i := 0; i+8 <= len(b); i += 8 {
			out = append(out, int64(le.Uint64(b[i:])))
		}
	default:
		return nil, false
	}
	return out, true
}

// sameFloat32 compares two float32 values bit for bit, any NaN matching
// any NaN.
func sameFloat32(a, b float32) bool {
	return math.Float32bits(a) == math.Float32bits(b) || a != a && b != b
}

// checkRawDecode reads every tensor of the safetensors file at path twice:
// with OpenSafetensors (ReadFloat32, and ReadInt64 for integers) and from
// the file's bytes with this test's own header parser and decoders. Both
// readings must agree bit for bit.
func checkRawDecode(t *testing.T, path string) {
	s, err := OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries, base := readRawHeader(t, f)
	infos := s.Tensors()
	if len(infos) != len(entries) {
		t.Errorf("reader lists %d tensors, the header %d", len(infos), len(entries))
	}
	for _, info := range infos {
		e, ok := entries[info.Name]
		if !ok {
			t.Errorf("%s: not in the header", info.Name)
			continue
		}
		if info.DType != e.DType || !slices.Equal(info.Shape, e.Shape) {
			t.Errorf("%s: reader says %s %v, header %s %v", info.Name, info.DType, info.Shape, e.DType, e.Shape)
			continue
		}
		raw := make([]byte, e.Offsets[1]-e.Offsets[0])
		if _, err := f.ReadAt(raw, base+e.Offsets[0]); err != nil {
			t.Fatalf("%s: %v", info.Name, err)
		}
		if len(raw) != info.NumElements()*e.DType.Size() {
			t.Errorf("%s: %d bytes for %d %s elements", info.Name, len(raw), info.NumElements(), e.DType)
			continue
		}
		got, err := s.ReadFloat32(info.Name)
		if err != nil {
			t.Fatalf("ReadFloat32(%q): %v", info.Name, err)
		}
		want := make([]float32, 0, info.NumElements())
		ints, isInt := rawInts(e.DType, raw)
		if isInt {
			for _, v := range ints {
				want = append(want, float32(v))
			}
			gi, err := s.ReadInt64(info.Name)
			if err != nil || !slices.Equal(gi, ints) {
				t.Errorf("ReadInt64(%q) = %v, %v; the bytes hold %v", info.Name, clip(gi), err, clip(ints))
			}
		} else if fl, ok := rawFloats(e.DType, raw); ok {
			for _, v := range fl {
				want = append(want, float32(v))
			}
		} else {
			t.Errorf("%s: dtype %s not decoded by this test", info.Name, e.DType)
			continue
		}
		for i := range want {
			if !sameFloat32(got.Data[i], want[i]) {
				t.Errorf("%s[%d]: ReadFloat32 gives %v, the %s bytes hold %v", info.Name, i, got.Data[i], e.DType, want[i])
				break
			}
		}
	}
}

// clip shortens a list for an error message.
func clip[T any](v []T) []T {
	if len(v) > 12 {
		return v[:12]
	}
	return v
}

// TestGoldenValues reads every tensor of every golden file with the
// package's reader and with this test's own decoding of the file's bytes,
// and requires the two to agree. It then checks decoded tensors against
// the values the cases' JSON files state themselves (counts, keep lists,
// detections, boxes and sizes), and against the relations the README
// states between them (detections are the kept candidates above 0.5, the
// final box is the first one clipped and truncated). Nothing expected here
// is a literal: a different valid golden set passes as well.
func TestGoldenValues(t *testing.T) {
	t.Parallel()
	dir := goldenDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden safetensors files in %s (%v)", dir, err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".safetensors"), func(t *testing.T) {
			t.Parallel()
			checkRawDecode(t, path)
		})
	}
	t.Run("stated/g_s3fd", func(t *testing.T) { t.Parallel(); checkStatedS3FD(t, dir) })
	t.Run("stated/g_sfd_postprocess", func(t *testing.T) { t.Parallel(); checkStatedSFDPostprocess(t, dir) })
	t.Run("stated/i_blending", func(t *testing.T) { t.Parallel(); checkStatedBlending(t, dir) })
}

// statedCase opens golden case base (skipping when it is absent) and
// decodes its JSON's top level.
func statedCase(t *testing.T, dir, base string) (*Safetensors, map[string]json.RawMessage) {
	t.Helper()
	jsPath, stPath := filepath.Join(dir, base+".json"), filepath.Join(dir, base+".safetensors")
	for _, p := range []string{jsPath, stPath} {
		if _, err := os.Stat(p); err != nil {
			testenv.Missing(t, "golden case %s: %v", base, err)
		}
	}
	b, err := os.ReadFile(jsPath)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(PythonJSON(b), &top); err != nil {
		t.Fatalf("%s: %v", jsPath, err)
	}
	s, err := OpenSafetensors(stPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, top
}

// member decodes top[key] into v, failing the test when it is missing.
func member(t *testing.T, top map[string]json.RawMessage, key string, v any) {
	t.Helper()
	raw, ok := top[key]
	if !ok {
		t.Fatalf("JSON has no %q", key)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
}

func readInts(t *testing.T, s *Safetensors, name string) []int64 {
	t.Helper()
	v, err := s.ReadInt64(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func readFloats(t *testing.T, s *Safetensors, name string) *Tensor {
	t.Helper()
	v, err := s.ReadFloat32(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func shapeOf(t *testing.T, s *Safetensors, name string) []int {
	t.Helper()
	info, ok := s.Info(name)
	if !ok {
		t.Fatalf("no tensor %s", name)
	}
	return info.Shape
}

// indexes returns the sorted sub-case indices k of the tensors named
// prefix.k.suffix.
func indexes(s *Safetensors, prefix, suffix string) []int {
	var out []int
	for _, info := range s.Tensors() {
		mid, ok := strings.CutPrefix(info.Name, prefix+".")
		if !ok {
			continue
		}
		if k, ok := strings.CutSuffix(mid, "."+suffix); ok {
			if n, err := strconv.Atoi(k); err == nil {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out
}

// finalBoxOf maps a JSON final box (null when there is no face) to the
// stored form, where [-1,-1,-1,-1] stands for none.
func finalBoxOf(box []int64) []int64 {
	if box == nil {
		return []int64{-1, -1, -1, -1}
	}
	return box
}

// checkDetectionRelations checks, on the stored tensors of detection
// sub-case k, what the post-processing makes of its candidates: nms_keep
// are distinct indices into candidates, detections are the kept rows with
// a score above 0.5 in keep order, and final_box is int(clip(·, 0)) of the
// first detection's corners, or [-1,-1,-1,-1] without one.
func checkDetectionRelations(t *testing.T, s *Safetensors, k int) {
	t.Helper()
	pre := fmt.Sprintf("output.%d.", k)
	cands := readFloats(t, s, pre+"candidates")
	keep := readInts(t, s, pre+"nms_keep")
	dets := readFloats(t, s, pre+"detections")
	final := readInts(t, s, pre+"final_box")
	if len(cands.Shape) != 2 || cands.Shape[1] != 5 || len(dets.Shape) != 2 || dets.Shape[1] != 5 {
		t.Fatalf("sub-case %d: candidates %v, detections %v; want [N,5] and [M,5]", k, cands.Shape, dets.Shape)
	}
	n := cands.Shape[0]
	seen := map[int64]bool{}
	var want []float32
	for _, i := range keep {
		if i < 0 || i >= int64(n) || seen[i] {
			t.Fatalf("sub-case %d: nms_keep %v is not a list of distinct indices into %d candidates", k, keep, n)
		}
		seen[i] = true
		if row := cands.Data[5*i : 5*i+5]; row[4] > 0.5 {
			want = append(want, row...)
		}
	}
	if !slices.EqualFunc(dets.Data, want, sameFloat32) {
		t.Errorf("sub-case %d: detections %v are not the kept candidates scoring above 0.5 %v", k, clip(dets.Data), clip(want))
	}
	wantFinal := []int64{-1, -1, -1, -1}
	if len(want) > 0 {
		for j := range wantFinal {
			wantFinal[j] = int64(max(want[j], 0))
		}
	}
	if !slices.Equal(final, wantFinal) {
		t.Errorf("sub-case %d: final_box %v, the first detection gives %v", k, final, wantFinal)
	}
}

// checkStatedS3FD compares case g's tensors with the per-image summary in
// its JSON ("images": input size, head shapes, candidate, keep and
// detection counts, final box).
func checkStatedS3FD(t *testing.T, dir string) {
	s, top := statedCase(t, dir, "g_s3fd")
	var images []struct {
		ResizedHW     []int            `json:"resized_to_HW"`
		HeadShapes    map[string][]int `json:"head_shapes"`
		NumCandidates *int             `json:"num_candidates"`
		NumKeep       *int             `json:"num_nms_keep"`
		NumDetections *int             `json:"num_detections"`
		FinalBox      []int64          `json:"final_box"`
	}
	member(t, top, "images", &images)
	ks := indexes(s, "input", "image_bgr")
	if len(ks) != len(images) {
		t.Fatalf("%d input.k.image_bgr tensors, the JSON describes %d images", len(ks), len(images))
	}
	for k, im := range images {
		pre := fmt.Sprintf("output.%d.", k)
		if got := shapeOf(t, s, fmt.Sprintf("input.%d.image_bgr", k)); len(im.ResizedHW) != 2 || !slices.Equal(got[:2], im.ResizedHW) {
			t.Errorf("image %d: input %v, JSON resized_to_HW %v", k, got, im.ResizedHW)
		}
		for name, shape := range im.HeadShapes {
			if got := shapeOf(t, s, pre+name); !slices.Equal(got, shape) {
				t.Errorf("image %d: %s%s %v, JSON %v", k, pre, name, got, shape)
			}
		}
		for _, c := range []struct {
			what   string
			stated *int
			got    int
		}{
			{"candidates", im.NumCandidates, shapeOf(t, s, pre+"candidates")[0]},
			{"nms_keep", im.NumKeep, shapeOf(t, s, pre+"nms_keep")[0]},
			{"detections", im.NumDetections, shapeOf(t, s, pre+"detections")[0]},
		} {
			if c.stated == nil {
				t.Errorf("image %d: the JSON states no count of %s", k, c.what)
			} else if *c.stated != c.got {
				t.Errorf("image %d: %d %s, JSON says %d", k, c.got, c.what, *c.stated)
			}
		}
		if got := readInts(t, s, pre+"final_box"); !slices.Equal(got, finalBoxOf(im.FinalBox)) {
			t.Errorf("image %d: final_box %v, JSON %v", k, got, im.FinalBox)
		}
		checkDetectionRelations(t, s, k)
	}
}

// checkStatedSFDPostprocess compares case g2's tensors with its JSON's
// sub_cases (image size, head maps, candidate count, keep list,
// detections with their scores, final box).
func checkStatedSFDPostprocess(t *testing.T, dir string) {
	s, top := statedCase(t, dir, "g_sfd_postprocess")
	var subs []struct {
		Index         int     `json:"index"`
		ImageHW       []int64 `json:"image_HW"`
		HeadShapes    [][]int `json:"head_shapes_HW"`
		NumCandidates int     `json:"num_candidates"`
		Keep          []int64 `json:"nms_keep"`
		Detections    []struct {
			Box   []float64 `json:"box"`
			Score float64   `json:"score"`
		} `json:"detections"`
		FinalBox []int64 `json:"final_box"`
	}
	member(t, top, "sub_cases", &subs)
	if ks := indexes(s, "output", "final_box"); len(ks) != len(subs) {
		t.Fatalf("%d sub-cases in the file, %d in the JSON", len(ks), len(subs))
	}
	for _, sc := range subs {
		k := sc.Index
		pre := fmt.Sprintf("output.%d.", k)
		if got := readInts(t, s, fmt.Sprintf("input.%d.image_hw", k)); !slices.Equal(got, sc.ImageHW) {
			t.Errorf("sub-case %d: image_hw %v, JSON %v", k, got, sc.ImageHW)
		}
		for i, hw := range sc.HeadShapes {
			if got := shapeOf(t, s, fmt.Sprintf("input.%d.cls%d_logits", k, i+1)); len(got) != 4 || !slices.Equal(got[2:], hw) {
				t.Errorf("sub-case %d: head %d logits %v, JSON map %v", k, i+1, got, hw)
			}
		}
		if got := shapeOf(t, s, pre+"candidates")[0]; got != sc.NumCandidates {
			t.Errorf("sub-case %d: %d candidates, JSON says %d", k, got, sc.NumCandidates)
		}
		if got := readInts(t, s, pre+"nms_keep"); !slices.Equal(got, sc.Keep) {
			t.Errorf("sub-case %d: nms_keep %v, JSON %v", k, got, sc.Keep)
		}
		var want []float32
		for _, d := range sc.Detections {
			for _, v := range append(slices.Clone(d.Box), d.Score) {
				want = append(want, float32(v))
			}
		}
		if got := readFloats(t, s, pre+"detections"); !slices.EqualFunc(got.Data, want, sameFloat32) {
			t.Errorf("sub-case %d: detections %v, JSON %v", k, clip(got.Data), clip(want))
		}
		if got := readInts(t, s, pre+"final_box"); !slices.Equal(got, finalBoxOf(sc.FinalBox)) {
			t.Errorf("sub-case %d: final_box %v, JSON %v", k, got, sc.FinalBox)
		}
		checkDetectionRelations(t, s, k)
	}
}

// checkStatedBlending compares case i's reference boxes and resized-face
// sizes with the per-version details in its JSON.
func checkStatedBlending(t *testing.T, dir string) {
	s, top := statedCase(t, dir, "i_blending")
	var details map[string]json.RawMessage
	member(t, top, "details", &details)
	n := 0
	for v, raw := range details {
		var d struct {
			FaceBox  []int64 `json:"face_box_used"`
			CropBox  []int64 `json:"crop_box"`
			CropSize *int64  `json:"crop_size"`
			FaceWH   []int   `json:"face_resized_WH"`
		}
		if json.Unmarshal(raw, &d) != nil || d.FaceBox == nil {
			continue // not a version's details
		}
		n++
		if got := readInts(t, s, "ref."+v+".face_box"); !slices.Equal(got, d.FaceBox) {
			t.Errorf("%s: ref face box %v, JSON %v", v, got, d.FaceBox)
		}
		cb := readInts(t, s, "ref."+v+".crop_box")
		if !slices.Equal(cb, d.CropBox) {
			t.Errorf("%s: ref crop box %v, JSON %v", v, cb, d.CropBox)
		}
		if d.CropSize != nil && (cb[2]-cb[0] != *d.CropSize || cb[3]-cb[1] != *d.CropSize) {
			t.Errorf("%s: crop box %v, JSON crop_size %d", v, cb, *d.CropSize)
		}
		if got := shapeOf(t, s, "intermediate."+v+".face_resized_bgr"); len(d.FaceWH) != 2 || got[1] != d.FaceWH[0] || got[0] != d.FaceWH[1] {
			t.Errorf("%s: face_resized_bgr %v, JSON face_resized_WH %v", v, got, d.FaceWH)
		}
		if got := shapeOf(t, s, "intermediate."+v+".mask_unblurred"); got[0] != int(cb[3]-cb[1]) || got[1] != int(cb[2]-cb[0]) {
			t.Errorf("%s: mask_unblurred %v for crop box %v", v, got, cb)
		}
	}
	if n == 0 {
		t.Fatal("the JSON's details describe no version")
	}
}
