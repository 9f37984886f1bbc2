//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/face"
	"github.com/avatargen/musetalk/musetalk/model"
	"github.com/avatargen/musetalk/musetalk/model/weights"
	"github.com/avatargen/musetalk/musetalk/modeldir"
)

// TestRenderCLILandmarkBox renders the test photo with `weights tiny` and
// no --face-box, so preparation finds the face box as MuseTalk does:
// S3FD, then DWPose's face landmarks through MuseTalk's box rules. The
// expected box is computed here, in-process, from the same weight files
// (S3FD's box and DWPose's keypoints through face.MuseTalkBox, then
// v1.5's margin and the frame's edge); the render must log it as a
// landmark box, store it in its cache entry, and change the photo only
// around it, in its lower half.
func TestRenderCLILandmarkBox(t *testing.T) {
	needSuite(t)
	needTools(t, "ffmpeg", "ffprobe", "espeak-ng")
	astronaut := testMedia(t, "astronaut.png")
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	weightsDir := filepath.Join(dir, "weights")
	runTool(t, ctx, musetalkBin, "weights", "tiny", "--out", weightsDir)
	speech := filepath.Join(dir, "speech.wav")
	runTool(t, ctx, "espeak-ng", "-w", speech, "Where is my face?")

	want, source := landmarkPathBox(t, ctx, weightsDir, astronaut)
	if source != face.SourceLandmarks {
		t.Fatalf("the landmark path gives a box from %s on the test photo, want one from the tiny DWPose's landmarks", source)
	}
	t.Logf("the landmark path's box: %v", want)

	out, cache := filepath.Join(dir, "out.mp4"), filepath.Join(dir, "cache")
	args := []string{"render", "--avatar", astronaut, "--audio", speech, "--out", out, "--weights", weightsDir,
		"--avatar-cache", cache, "--batch-size", "8", "--threads", "2", "--fps", "10"}
	cmd := exec.CommandContext(ctx, musetalkBin, args...)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("musetalk %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	log := string(b)
	for _, s := range []string{"avatar: face box", "source=landmarks", "detector=dwpose", fmt.Sprintf("box=\"%v\"", want)} {
		if !strings.Contains(log, s) && !strings.Contains(log, strings.ReplaceAll(s, `"`, "")) {
			t.Errorf("the render's log lacks %s:\n%s", s, log)
		}
	}
	manifests, _ := filepath.Glob(filepath.Join(cache, "*", "manifest.json"))
	if len(manifests) != 1 {
		t.Fatalf("cache entries %v, want one", manifests)
	}
	raw, err := os.ReadFile(manifests[0])
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Options struct {
			FaceDetector string
		} `json:"options"`
		Frames []struct {
			Face *[4]int `json:"face"`
		} `json:"frames"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Frames) != 1 || m.Frames[0].Face == nil || *m.Frames[0].Face != [4]int(want) || m.Options.FaceDetector != "dwpose" {
		t.Errorf("cache entry: detector %q, frames %+v; want dwpose and the face box %v", m.Options.FaceDetector, m.Frames, want)
	}
	checkRender(t, ctx, astronaut, speech, out, big.NewRat(10, 1), nil, [4]int(want))
}

// landmarkPathBox computes the face box preparation should use for the
// still at path with the weights in dir, v1.5 defaults: S3FD's box, the
// tiny DWPose's keypoints, MuseTalk's rules, then the 10 px margin and the
// frame's edge. It returns the rule that gave the box.
func landmarkPathBox(t *testing.T, ctx context.Context, dir, path string) (media.Box, face.BoxSource) {
	t.Helper()
	be, err := cpu.New(cpu.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	d := modeldir.Dir(dir)
	open := func(kind weights.Kind) *modeldir.Source {
		src, err := d.Open(kind, modeldir.V15)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		return src
	}
	s3fd, err := model.NewS3FD(be, open(weights.KindS3FD))
	if err != nil {
		t.Fatal(err)
	}
	defer s3fd.Close()
	src := open(weights.KindDWPose)
	cfg, err := model.InferDWPoseConfig(src)
	if err != nil {
		t.Fatal(err)
	}
	dw, err := model.NewDWPose(be, cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	defer dw.Close()

	frames := decodeAll(t, ctx, path)
	f := frames[0]
	bgr := (&media.Image8{W: f.W, H: f.H, C: 3, Pix: f.Pix}).SwapRB()
	box, found, err := face.NewDetector(s3fd, be).Detect(ctx, bgr)
	if err != nil {
		t.Fatal(err)
	}
	r, err := dw.Keypoints(ctx, bgr, model.WholeFrameBox(bgr.W, bgr.H))
	if err != nil {
		t.Fatal(err)
	}
	lm, err := face.TruncLandmarks(r.Keypoints[:])
	if err != nil {
		t.Fatal(err)
	}
	got := face.MuseTalkBox(lm, box, found, 0)
	b := got.Box
	b = media.Box{max(b[0], 0), max(b[1], 0), min(b[2], bgr.W), min(b[3], bgr.H)}
	b[3] = min(b[3]+renderMargin, bgr.H)
	t.Logf("S3FD %v (found %v), landmark rules %v from %s", box, found, got.Box, got.Source)
	return b, got.Source
}
