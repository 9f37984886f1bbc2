package face_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/face"
)

// Golden case k2 (k_dwpose_facebox): MuseTalk's real get_landmark_and_bbox
// on stored keypoints and S3FD boxes. Every expectation comes from the
// case's own files: the sub-cases are those its JSON lists (each must have
// its tensors), the coordinates output.<sub>.coords (exact), the sources
// and the "Manually adjust range" line from the JSON, so the test holds on
// any set with this layout.

// facebox is one sub-case of the JSON's "subcases".
type facebox struct {
	BBoxShift int        `json:"bbox_shift"`
	Frames    int        `json:"frames"`
	Coords    [][4]int64 `json:"coords"`
	Source    []string   `json:"source"`
	RangeLine []string   `json:"stdout_range_line"`
}

// sourceNames maps the JSON's source names to ours.
var sourceNames = map[string]face.BoxSource{
	"landmark":    face.SourceLandmarks,
	"s3fd":        face.SourceS3FD,
	"placeholder": face.SourceNone,
}

// rangeRE reads MuseTalk's line "... Manually adjust range : [ -M~P ] ...".
var rangeRE = regexp.MustCompile(`Manually adjust range : \[ -(-?\d+)~(-?\d+) \]`)

func TestGoldenDWPoseFaceBox(t *testing.T) {
	c := golden.Load(t, "k_dwpose_facebox")
	var subs map[string]facebox
	if err := json.Unmarshal(c.Meta["subcases"], &subs); err != nil || len(subs) == 0 {
		t.Fatalf("subcases: %v (%d)", err, len(subs))
	}
	// Every sub-case with tensors is in the JSON, and the other way round.
	var inFile []string
	for _, n := range c.Names("output.") {
		if sub, ok := strings.CutSuffix(strings.TrimPrefix(n, "output."), ".coords"); ok {
			inFile = append(inFile, sub)
		}
	}
	var inJSON []string
	for sub := range subs {
		inJSON = append(inJSON, sub)
	}
	slices.Sort(inJSON)
	if !slices.Equal(inFile, inJSON) {
		t.Errorf("sub-cases with tensors %v, in the JSON %v", inFile, inJSON)
	}
	s := c.Set(t)
	sources := map[face.BoxSource]int{}
	for _, sub := range inJSON {
		meta := subs[sub]
		t.Run(sub, func(t *testing.T) {
			kp := s.Get(t, "input."+sub+".keypoints")
			raw := s.Get(t, "input."+sub+".s3fd_raw")
			has := s.Get(t, "input."+sub+".s3fd_has_face")
			shift := int(s.Get(t, "input."+sub+".bbox_shift").Data[0])
			want := s.Get(t, "output."+sub+".coords")
			frames := kp.Shape[0]
			if len(kp.Shape) != 3 || kp.Shape[1] != face.WholeBodyKeypoints || kp.Shape[2] != 2 ||
				!slices.Equal(raw.Shape, []int{frames, 5}) || !slices.Equal(has.Shape, []int{frames}) ||
				!slices.Equal(want.Shape, []int{frames, 4}) {
				t.Fatalf("shapes: keypoints %v, s3fd_raw %v, s3fd_has_face %v, coords %v", kp.Shape, raw.Shape, has.Shape, want.Shape)
			}
			if shift != meta.BBoxShift || frames != meta.Frames || len(meta.Coords) != frames || len(meta.Source) != frames {
				t.Fatalf("JSON: bbox_shift %d, %d frames, %d coords, %d sources; tensors: shift %d, %d frames",
					meta.BBoxShift, meta.Frames, len(meta.Coords), len(meta.Source), shift, frames)
			}
			var sr face.ShiftRange
			for f := range frames {
				pts := make([][2]float64, face.WholeBodyKeypoints)
				for i := range pts {
					o := (f*face.WholeBodyKeypoints + i) * 2
					pts[i] = [2]float64{kp.Data[o], kp.Data[o+1]}
				}
				lm, err := face.TruncLandmarks(pts)
				if err != nil {
					t.Fatal(err)
				}
				r := raw.Data[5*f : 5*f+5]
				box, found, err := face.FinalBox([]face.Candidate{{
					X1: float32(r[0]), Y1: float32(r[1]), X2: float32(r[2]), Y2: float32(r[3]), Score: float32(r[4])}})
				if err != nil {
					t.Fatal(err)
				}
				found = found && has.Data[f] != 0
				got := face.MuseTalkBox(lm, box, found, shift)
				sr.Add(got)
				sources[got.Source]++
				w := media.Box{int(want.Data[4*f]), int(want.Data[4*f+1]), int(want.Data[4*f+2]), int(want.Data[4*f+3])}
				if got.Box != w {
					t.Errorf("frame %d: box %v (%s), want %v (%s)", f, got.Box, got.Source, w, meta.Source[f])
				}
				if jb := (media.Box{int(meta.Coords[f][0]), int(meta.Coords[f][1]), int(meta.Coords[f][2]), int(meta.Coords[f][3])}); jb != w {
					t.Errorf("frame %d: the JSON's coords %v differ from the tensor's %v", f, jb, w)
				}
				if ws, ok := sourceNames[meta.Source[f]]; !ok || got.Source != ws {
					t.Errorf("frame %d: source %s, want %q", f, got.Source, meta.Source[f])
				}
			}
			if len(meta.RangeLine) != 1 {
				t.Fatalf("stdout_range_line: %q, want one line", meta.RangeLine)
			}
			m := rangeRE.FindStringSubmatch(meta.RangeLine[0])
			if m == nil {
				t.Fatalf("stdout_range_line %q: no range", meta.RangeLine[0])
			}
			wm, _ := strconv.Atoi(m[1])
			wp, _ := strconv.Atoi(m[2])
			if gm, gp, ok := sr.Range(); !ok || gm != wm || gp != wp {
				t.Errorf("range [-%d~%d] (ok %v), MuseTalk printed [-%d~%d]", gm, gp, ok, wm, wp)
			}
		})
	}
	t.Logf("boxes by source: %v", sources)
	for _, src := range []face.BoxSource{face.SourceLandmarks, face.SourceS3FD, face.SourceNone} {
		if sources[src] == 0 {
			t.Errorf("no frame of the case took the %s rule", src)
		}
	}
}
