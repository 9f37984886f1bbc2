package avatar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/media"
)

// checkFrame verifies one prepared face frame against MuseTalk's pixel
// path computed directly from the stored source frame: the latent equals
// a one-image-at-a-time VAE encode of the crop (masked, then reference),
// the mask equals media.BlendMask of the parser's map, and the parser saw
// the RGB crop square.
func checkFrame(t *testing.T, nets Networks, a *Avatar, i int, wantFace media.Box, opt Options, parsed *media.Image8) {
	t.Helper()
	f := a.Frames[i]
	if !f.HasFace || f.Face != wantFace {
		t.Fatalf("frame %d: face %v (has %v), want %v", i, f.Face, f.HasFace, wantFace)
	}
	crop, _ := media.CropBox(wantFace, 1.5)
	if f.Crop != crop {
		t.Fatalf("frame %d: crop %v, want %v", i, f.Crop, crop)
	}
	frame, err := a.FrameBGR(i)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(f.Latent, directLatent(t, nets, frame, wantFace)); d > 1e-5 {
		t.Errorf("frame %d: latent differs from a direct encode by %g", i, d)
	}
	if !slices.Equal(a.LatentShape, []int{8, 32, 32}) || len(f.Latent) != 8*32*32 {
		t.Errorf("frame %d: latent shape %v, %d values", i, a.LatentShape, len(f.Latent))
	}
	pm, _ := media.ParsingMask(classMap(ParseSize), opt.ParsingMode, opt.LeftCheek, opt.RightCheek)
	want := media.BlendMask(pm, wantFace, crop, 0.5, 0.1)
	if f.Mask == nil || f.Mask.W != crop[2]-crop[0] || f.Mask.H != crop[3]-crop[1] || !bytes.Equal(f.Mask.Pix, want.Pix) {
		t.Errorf("frame %d: mask differs from media.BlendMask", i)
	}
	if parsed != nil {
		wantIn := frame.SwapRB().Crop(crop[0], crop[1], crop[2], crop[3])
		if parsed.W != wantIn.W || parsed.H != wantIn.H || !bytes.Equal(parsed.Pix, wantIn.Pix) {
			t.Errorf("frame %d: the parser got a %dx%d image, not the RGB crop square", i, parsed.W, parsed.H)
		}
	}
}

func TestPrepareStillWithFaceBox(t *testing.T) {
	still := fixture(t, "still.png")
	nets := testNets(t)
	dir := filepath.Join(t.TempDir(), "entry")
	opt := DefaultOptions()
	opt.FaceBox = &testFaceBox
	var prog [][2]int
	a, err := Prepare(context.Background(), still, dir, opt, nets, func(d, n int) { prog = append(prog, [2]int{d, n}) })
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.W != 512 || a.H != 512 || len(a.Frames) != 1 || a.FPS.Cmp(big.NewRat(25, 1)) != 0 || a.Key != "" {
		t.Fatalf("avatar %dx%d, %d frames, fps %v, key %q", a.W, a.H, len(a.Frames), a.FPS, a.Key)
	}
	if !slices.Equal(prog, [][2]int{{1, 1}}) {
		t.Errorf("progress %v", prog)
	}
	// v1.5 extends the box by the 10 px extra margin (golden case i's v15 box).
	face := media.Box{178, 56, 270, 192}
	parser := nets.Parser.(*fakeParser)
	checkFrame(t, nets, a, 0, face, mustNormalize(t, opt), parser.inputs[0])
	frame, _ := a.FrameBGR(0)
	if src := decodeBGR(t, still); !bytes.Equal(frame.Pix, src[0].Pix) {
		t.Error("stored frame differs from the decoded still")
	}
	if _, err := a.FrameBGR(1); err == nil {
		t.Error("FrameBGR(1) of a still succeeded")
	}

	// The directory reopens to the same avatar.
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.W != a.W || b.H != a.H || b.FPS.Cmp(a.FPS) != 0 || !slices.Equal(b.LatentShape, a.LatentShape) ||
		b.Options.Version != "v15" || b.Options.ExtraMargin != 10 || *b.Options.FaceBox != testFaceBox {
		t.Fatalf("reopened %+v", b)
	}
	fa, fb := a.Frames[0], b.Frames[0]
	if fa.Face != fb.Face || fa.Crop != fb.Crop || !slices.Equal(fa.Latent, fb.Latent) || !bytes.Equal(fa.Mask.Pix, fb.Mask.Pix) {
		t.Error("reopened frame differs")
	}
}

func mustNormalize(t *testing.T, o Options) Options {
	t.Helper()
	n, err := o.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPrepareVideoWithDetector(t *testing.T) {
	video := fixture(t, "video.mp4")
	nets := testNets(t)
	det := &fakeDetector{
		box:    media.Box{170, 50, 280, 190},
		noFace: map[int]bool{1: true, 4: true, 5: true},
		// Frame 2's box overshoots the frame: it is clipped, then the
		// margin is clamped at the bottom edge.
		boxes: map[int]media.Box{2: {400, 420, 600, 530}},
	}
	nets.Detector = det
	nets.EncodeBatch = 2
	opt := Options{Version: "v1", BBoxShift: -5, FPS: big.NewRat(25, 1), FaceDetector: DetectorS3FD}
	var prog [][2]int
	a, err := Prepare(context.Background(), video, filepath.Join(t.TempDir(), "e"), opt, nets, func(d, n int) {
		prog = append(prog, [2]int{d, n})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.Frames) != 6 || a.FPS.Cmp(big.NewRat(25, 1)) != 0 || a.FaceFrames() != 3 {
		t.Fatalf("%d frames (%d with a face) at %v fps", len(a.Frames), a.FaceFrames(), a.FPS)
	}
	if det.calls.Load() != 6 || nets.Parser.(*fakeParser).calls.Load() != 3 {
		t.Errorf("detector called %d times, parser %d", det.calls.Load(), nets.Parser.(*fakeParser).calls.Load())
	}
	for i, p := range prog {
		if p != [2]int{i + 1, 6} {
			t.Fatalf("progress %v", prog)
		}
	}
	if len(prog) != 6 {
		t.Fatalf("progress %v", prog)
	}
	src := decodeBGR(t, video)
	n := mustNormalize(t, opt)
	inputs := nets.Parser.(*fakeParser).inputs
	// v1: bbox_shift −5 raises the top by 10 px, no extra margin.
	want := map[int]media.Box{0: {170, 40, 280, 190}, 2: {400, 410, 512, 512}, 3: {170, 40, 280, 190}}
	k := 0
	for i, f := range a.Frames {
		frame, err := a.FrameBGR(i)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(frame.Pix, src[i].Pix) {
			t.Errorf("frame %d: stored pixels differ from the decoded video", i)
		}
		w, ok := want[i]
		if !ok {
			if f.HasFace || f.Latent != nil || f.Mask != nil || f.Face != (media.Box{}) {
				t.Errorf("frame %d: no-face frame %+v", i, f)
			}
			continue
		}
		checkFrame(t, nets, a, i, w, n, inputs[k])
		k++
	}
	if bytes.Equal(src[0].Pix, src[3].Pix) {
		t.Error("the fixture's frames do not differ")
	}
	b, err := Open(a.dirForTest(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := range a.Frames {
		if a.Frames[i].HasFace != b.Frames[i].HasFace || !slices.Equal(a.Frames[i].Latent, b.Frames[i].Latent) {
			t.Errorf("reopened frame %d differs", i)
		}
	}
}

// TestPrepareDWPose: with the dwpose detector the face box is MuseTalk's
// landmark box (v1's bbox_shift applied through landmark 29), S3FD's box
// where the landmarks give none (unshifted, as MuseTalk uses it), no face
// where S3FD finds none (DWPose is then not run), boxes clipped to the
// frame; the summary counts the sources and gives MuseTalk's bbox_shift
// range.
func TestPrepareDWPose(t *testing.T) {
	video := fixture(t, "video.mp4")
	nets := testNets(t)
	nets.EncodeBatch = 2
	log, records := logRecords(t, slog.LevelInfo)
	nets.Logger = log
	s3fd := media.Box{170, 50, 280, 190}
	nets.Detector = &fakeDetector{box: s3fd, noFace: map[int]bool{1: true}}
	// x 180..300, y 80..240, landmark 29 at y 160 (28 at 150, 30 at 170).
	lms := &fakeLandmarks{def: faceKeypoints(240, 160, 60, 80, nil), kp: map[int][][2]float64{
		1: faceKeypoints(240, 160, 60, 80, func(lm [][2]float64) { lm[10][0] = -3.2 }), // x1 < 0: S3FD's box
		2: faceKeypoints(240, 160, 60, 80, func(lm [][2]float64) { lm[0][0] = 650 }),   // past the right edge
	}}
	nets.Landmarks = lms
	opt := Options{Version: "v1", BBoxShift: -5, FPS: big.NewRat(25, 1)}
	a, err := Prepare(context.Background(), video, filepath.Join(t.TempDir(), "e"), opt, nets, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if n := lms.calls.Load(); n != 5 {
		t.Errorf("DWPose ran %d times, want 5 (not on the frame without an S3FD face)", n)
	}
	// Shift −5: half 155, dist 240−155 = 85, upper 70.
	want := map[int]media.Box{0: {180, 70, 300, 240}, 2: s3fd, 3: {180, 70, 512, 240}, 4: {180, 70, 300, 240}, 5: {180, 70, 300, 240}}
	n := mustNormalize(t, opt)
	if n.FaceDetector != DetectorDWPose {
		t.Fatalf("normalized detector %q", n.FaceDetector)
	}
	for i, f := range a.Frames {
		w, ok := want[i]
		if !ok {
			if f.HasFace {
				t.Errorf("frame %d has a face %v", i, f.Face)
			}
			continue
		}
		checkFrame(t, nets, a, i, w, n, nil)
	}
	var summary map[string]any
	for _, r := range records() {
		if r["msg"] == "avatar: face boxes" {
			summary = r
		}
	}
	if summary == nil {
		t.Fatal("no summary record")
	}
	checkRecord(t, summary, "INFO", "avatar: face boxes", map[string]string{
		"frames": "6", "with_face": "5", "detector": "dwpose", "landmarks": "4", "s3fd-fallback": "1", "s3fd": "",
		"extent": "[170 50 512 240]", "bbox_shift_range": "[-10~10]",
	})

	// v1.5: no shift, the extra margin below the landmark box; a still
	// gets a summary too (for the bbox_shift range).
	nets.Landmarks = &fakeLandmarks{def: faceKeypoints(240, 160, 60, 80, nil)}
	nets.Detector = &fakeDetector{box: s3fd}
	log, records = logRecords(t, slog.LevelInfo)
	nets.Logger = log
	still := fixture(t, "still.png")
	b, err := Prepare(context.Background(), still, filepath.Join(t.TempDir(), "e"), DefaultOptions(), nets, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	checkFrame(t, nets, b, 0, media.Box{180, 80, 300, 250}, mustNormalize(t, DefaultOptions()), nil)
	rs := records()
	if len(rs) != 2 {
		t.Fatalf("records %v, want the box and the summary", rs)
	}
	checkRecord(t, rs[0], "INFO", "avatar: face box", map[string]string{
		"frame": "0", "box": "[180 80 300 250]", "source": "landmarks", "detector": "dwpose", "detected": "[180 80 300 240]", "s3fd": "[170 50 280 190]",
	})
	checkRecord(t, rs[1], "INFO", "avatar: face boxes", map[string]string{"landmarks": "1", "bbox_shift_range": "[-10~10]"})

	// DWPose is needed unless the detector is S3FD or a face box is given.
	nets.Landmarks = nil
	if _, err := Prepare(context.Background(), still, filepath.Join(t.TempDir(), "e"), DefaultOptions(), nets, nil); err == nil || !strings.Contains(err.Error(), "landmark") {
		t.Errorf("prepared with dwpose and no landmark detector: %v", err)
	}
}

// dirForTest returns the directory of a's frame file.
func (a *Avatar) dirForTest(t *testing.T) string {
	t.Helper()
	return filepath.Dir(a.frames.Name())
}

func TestPrepareErrors(t *testing.T) {
	still := fixture(t, "still.png")
	nets := testNets(t)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		box  media.Box
	}{
		{"outside", media.Box{400, 400, 600, 600}},
		{"inverted", media.Box{200, 100, 100, 200}},
		{"negative", media.Box{-1, 0, 100, 100}},
	} {
		dir := filepath.Join(t.TempDir(), "e")
		opt := DefaultOptions()
		opt.FaceBox = &c.box
		_, err := Prepare(ctx, still, dir, opt, nets, nil)
		if !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: %v", c.name, err)
		}
		if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
			t.Errorf("%s: %s left behind", c.name, dir)
		}
	}
	// Not a media file.
	bad := filepath.Join(t.TempDir(), "bad.mp4")
	os.WriteFile(bad, []byte("not a video"), 0o644)
	if _, err := Prepare(ctx, bad, filepath.Join(t.TempDir(), "e"), DefaultOptions(), Networks{Backend: nets.Backend, VAE: nets.VAE, Parser: nets.Parser, Detector: &fakeDetector{}, Landmarks: &fakeLandmarks{}}, nil); !errors.Is(err, media.ErrUnreadable) {
		t.Errorf("garbage file: %v", err)
	}
	// No detector and no face box.
	if _, err := Prepare(ctx, still, filepath.Join(t.TempDir(), "e"), DefaultOptions(), nets, nil); err == nil {
		t.Error("prepared without a detector")
	}
	// A non-empty directory is refused and kept.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), nil, 0o644)
	opt := DefaultOptions()
	opt.FaceBox = &testFaceBox
	if _, err := Prepare(ctx, still, dir, opt, nets, nil); err == nil {
		t.Error("prepared into a non-empty directory")
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err != nil {
		t.Error(err)
	}
}

func TestPrepareCancel(t *testing.T) {
	video := fixture(t, "video.mp4")
	nets := testNets(t)
	nets.Detector = &fakeDetector{box: media.Box{170, 50, 280, 190}}
	nets.EncodeBatch = 1
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := filepath.Join(t.TempDir(), "e")
	last := 0
	_, err := Prepare(ctx, video, dir, Options{Version: "v1", FaceDetector: DetectorS3FD}, nets, func(d, n int) {
		last = d
		if d == 2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if last != 2 {
		t.Errorf("preparation went on to frame %d after the cancel", last)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left behind", dir)
	}
}

func TestPrepareDegenerateDetections(t *testing.T) {
	video := fixture(t, "video.mp4")
	nets := testNets(t)
	// Boxes entirely outside, empty, and a 1-pixel face (no blend square)
	// all become no-face frames rather than errors.
	nets.Detector = &fakeDetector{box: media.Box{170, 50, 280, 190}, boxes: map[int]media.Box{
		0: {600, 600, 700, 700}, 1: {100, 100, 100, 200}, 2: {-50, -50, -10, -10}, 3: {10, 10, 11, 11},
	}}
	a, err := Prepare(context.Background(), video, filepath.Join(t.TempDir(), "e"), Options{Version: "v1", FaceDetector: DetectorS3FD}, nets, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var has []bool
	for _, f := range a.Frames {
		has = append(has, f.HasFace)
	}
	if !slices.Equal(has, []bool{false, false, false, false, true, true}) {
		t.Errorf("faces %v", has)
	}
}

func TestBlankBox(t *testing.T) {
	t.Parallel()
	im := media.NewImage8(10, 10, 3)
	if !blankBox(im, media.Box{2, 2, 8, 8}) {
		t.Error("black box not blank")
	}
	im.Pix[(5*10+5)*3+1] = blankSpread
	if !blankBox(im, media.Box{2, 2, 8, 8}) {
		t.Errorf("a spread of %d is not blank", blankSpread)
	}
	im.Pix[(6*10+6)*3+1] = blankSpread + 1
	if blankBox(im, media.Box{2, 2, 8, 8}) {
		t.Errorf("a spread of %d is blank", blankSpread+1)
	}
	if !blankBox(im, media.Box{7, 7, 20, 20}) {
		t.Error("the box is clipped to the frame: its part inside is black")
	}
	if !blankBox(im, media.Box{12, 12, 20, 20}) {
		t.Error("a box outside the frame holds no face")
	}
}

// TestPrepareBlankFrameHasNoFace: a fixed face box over a black frame (a
// cut to black in a video) marks the frame faceless, so it is neither
// parsed nor encoded and passes through.
func TestPrepareBlankFrameHasNoFace(t *testing.T) {
	black := filepath.Join(t.TempDir(), "black.png")
	if out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "color=c=black:s=512x512",
		"-frames:v", "1", black).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	nets := testNets(t)
	opt := DefaultOptions()
	opt.FaceBox = &testFaceBox
	a, err := Prepare(context.Background(), black, filepath.Join(t.TempDir(), "entry"), opt, nets, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.Frames) != 1 || a.Frames[0].HasFace || a.FaceFrames() != 0 {
		t.Errorf("frames %+v: want one without a face", a.Frames)
	}
	if n := nets.Parser.(*fakeParser).calls.Load(); n != 0 {
		t.Errorf("the parser ran %d times on a black frame", n)
	}
}

// logRecords returns a JSON slog logger at level and a function parsing
// what it wrote, one map per record.
func logRecords(t *testing.T, level slog.Level) (*slog.Logger, func() []map[string]any) {
	t.Helper()
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level}))
	return l, func() []map[string]any {
		var out []map[string]any
		dec := json.NewDecoder(bytes.NewReader(buf.Bytes()))
		for dec.More() {
			var r map[string]any
			if err := dec.Decode(&r); err != nil {
				t.Fatalf("log output %q: %v", buf.String(), err)
			}
			out = append(out, r)
		}
		return out
	}
}

// checkRecord fails unless r has level and msg and every attribute of
// want (boxes as "[x1 y1 x2 y2]", numbers as in fmt's %v of float64).
func checkRecord(t *testing.T, r map[string]any, level, msg string, want map[string]string) {
	t.Helper()
	if r["level"] != level || r["msg"] != msg {
		t.Errorf("record %v: want %s %q", r, level, msg)
		return
	}
	for k, v := range want {
		got, ok := r[k]
		switch {
		case v == "" && ok:
			t.Errorf("record %q has %s=%v, want none", msg, k, got)
		case v != "" && fmt.Sprint(got) != v:
			t.Errorf("record %q: %s=%v, want %s", msg, k, got, v)
		}
	}
}

// TestPrepareLogsFaceBoxes: preparation logs the face box it uses and its
// source at Info, once per avatar, a summary for a video, and a warning
// when a detected box touches the frame's edge (never for a given box).
func TestPrepareLogsFaceBoxes(t *testing.T) {
	still, video := fixture(t, "still.png"), fixture(t, "video.mp4")
	ctx := context.Background()

	t.Run("still with face box", func(t *testing.T) {
		for _, box := range []media.Box{testFaceBox, {0, 100, 150, 300}} { // the second touches the edge
			nets := testNets(t)
			log, records := logRecords(t, slog.LevelInfo)
			nets.Logger = log
			opt := DefaultOptions()
			opt.FaceBox = &box
			a, err := Prepare(ctx, still, filepath.Join(t.TempDir(), "e"), opt, nets, nil)
			if err != nil {
				t.Fatal(err)
			}
			a.Close()
			rs := records()
			if len(rs) != 1 {
				t.Fatalf("face box %v: records %v, want one", box, rs)
			}
			used := box
			used[3] += DefaultExtraMargin
			checkRecord(t, rs[0], "INFO", "avatar: face box", map[string]string{
				"avatar": "still.png", "frame": "0", "box": fmt.Sprint(used), "source": "face-box", "detected": "", "key": "", "detector": "",
			})
		}
	})

	t.Run("still with detector at the edge", func(t *testing.T) {
		nets := testNets(t)
		log, records := logRecords(t, slog.LevelInfo)
		nets.Logger = log
		// An S3FD box overshooting the frame, as random tiny weights give
		// on the astronaut's helmet.
		nets.Detector = &fakeDetector{box: media.Box{401, 207, 687, 817}}
		opt := DefaultOptions()
		opt.FaceDetector = DetectorS3FD
		a, err := Prepare(ctx, still, filepath.Join(t.TempDir(), "e"), opt, nets, nil)
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
		rs := records()
		if len(rs) != 2 {
			t.Fatalf("records %v, want the box and a warning", rs)
		}
		checkRecord(t, rs[0], "INFO", "avatar: face box", map[string]string{
			"frame": "0", "box": "[401 207 512 512]", "source": "s3fd", "detector": "s3fd", "detected": "[401 207 687 817]",
		})
		checkRecord(t, rs[1], "WARN", "avatar: the detected face box touches the frame's edge", map[string]string{
			"avatar": "still.png", "frames": "1", "of": "1", "first_frame": "0", "detected": "[401 207 687 817]",
		})
		if h, _ := rs[1]["hint"].(string); !strings.Contains(h, "--face-box") {
			t.Errorf("the warning's hint %q does not suggest --face-box", h)
		}
	})

	t.Run("video with detector", func(t *testing.T) {
		for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
			nets := testNets(t)
			log, records := logRecords(t, level)
			nets.Logger = log
			nets.Detector = &fakeDetector{
				box:    media.Box{170, 50, 280, 190},
				noFace: map[int]bool{1: true},
				boxes:  map[int]media.Box{3: {0, 40, 120, 200}, 4: {380, 300, 512, 512}},
			}
			// Under a key, as the cache prepares.
			a, err := prepare(ctx, "k1", video, filepath.Join(t.TempDir(), "e"), Options{Version: "v1", FaceDetector: DetectorS3FD}, nets, nil)
			if err != nil {
				t.Fatal(err)
			}
			a.Close()
			rs := records()
			var info []map[string]any
			debug := 0
			for _, r := range rs {
				if r["level"] == "DEBUG" {
					debug++
				} else {
					info = append(info, r)
				}
			}
			if len(info) != 3 {
				t.Fatalf("%v: records above debug %v, want the first box, a summary and a warning", level, info)
			}
			checkRecord(t, info[0], "INFO", "avatar: face box", map[string]string{
				"avatar": "video.mp4", "key": "k1", "frame": "0", "box": "[170 50 280 190]", "source": "s3fd", "detector": "s3fd", "detected": "",
			})
			checkRecord(t, info[1], "INFO", "avatar: face boxes", map[string]string{
				"frames": "6", "with_face": "5", "s3fd": "5", "detector": "s3fd", "extent": "[0 40 512 512]", "at_edge": "2",
				"landmarks": "", "bbox_shift_range": "",
			})
			checkRecord(t, info[2], "WARN", "avatar: the detected face box touches the frame's edge", map[string]string{
				"frames": "2", "of": "6", "first_frame": "3", "detected": "[0 40 120 200]",
			})
			// At debug every frame is there: five boxes, one frame without a face.
			if want := map[slog.Level]int{slog.LevelInfo: 0, slog.LevelDebug: 5}[level]; debug != want {
				t.Errorf("%v: %d debug records, want %d", level, debug, want)
			}
		}
	})
}
