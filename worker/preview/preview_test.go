package preview_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/engine"
	"github.com/avatargen/musetalk/worker/preview"
)

// ffmpeg runs ffmpeg to make a test input.
func ffmpeg(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ffmpeg", append([]string{"-hide_banner", "-loglevel", "error", "-y"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg %v: %v: %s", args, err, out)
	}
}

func requireFFmpeg(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for this test (apt-get install ffmpeg): %v", tool, err)
		}
	}
}

type probed struct {
	Streams []struct {
		CodecType string `json:"codec_type"`
		CodecName string `json:"codec_name"`
		PixFmt    string `json:"pix_fmt"`
		Duration  string `json:"duration"`
	} `json:"streams"`
	Format struct {
		Duration string `json:"duration"`
	} `json:"format"`
}

func probe(t *testing.T, path string) probed {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries",
		"format=duration:stream=codec_type,codec_name,pix_fmt,duration", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var p probed
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func newJob(t *testing.T, avatar, audio string) *engine.Job {
	dir := t.TempDir()
	return &engine.Job{ID: "j1", Attempt: 1, AvatarPath: avatar, AudioPath: audio,
		OutputPath: filepath.Join(dir, "out.mp4"), WorkDir: dir}
}

func checkOutput(t *testing.T, path string, wantSec float64) {
	t.Helper()
	p := probe(t, path)
	var video, audio bool
	for _, s := range p.Streams {
		switch s.CodecType {
		case "video":
			video = true
			if s.CodecName != "h264" || s.PixFmt != "yuv420p" {
				t.Errorf("video stream is %s/%s, want h264/yuv420p", s.CodecName, s.PixFmt)
			}
		case "audio":
			audio = true
		}
		// Each stream, not just the container, must last as long as the
		// audio: a frame cap on the video once cut the audio stream short.
		if sd, err := strconv.ParseFloat(s.Duration, 64); err != nil || math.Abs(sd-wantSec) > 0.1 {
			t.Errorf("%s stream lasts %q s, want the audio's %.3fs", s.CodecType, s.Duration, wantSec)
		}
	}
	if !video || !audio {
		t.Fatalf("output streams %+v: want one video and one audio stream", p.Streams)
	}
	d, err := strconv.ParseFloat(p.Format.Duration, 64)
	if err != nil {
		t.Fatalf("output duration %q: %v", p.Format.Duration, err)
	}
	if math.Abs(d-wantSec) > 0.1 {
		t.Errorf("output lasts %.3fs, want the audio's %.3fs", d, wantSec)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	requireFFmpeg(t)
	res, err := preview.New(preview.Options{}).Check(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.Device != "cpu" || !res.WeightsPresent {
		t.Errorf("Check = %+v", res)
	}
	_, err = preview.New(preview.Options{FFmpeg: "/nonexistent/ffmpeg"}).Check(t.Context())
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("Check without ffmpeg = %v, want a not-found error", err)
	}
}

func TestRunStillImage(t *testing.T) {
	t.Parallel()
	requireFFmpeg(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "face.png")
	wav := filepath.Join(dir, "speech.wav")
	ffmpeg(t, "-f", "lavfi", "-i", "testsrc=size=161x121:rate=1", "-frames:v", "1", img)
	ffmpeg(t, "-f", "lavfi", "-i", "sine=frequency=440:duration=1.5", wav)

	job := newJob(t, img, wav)
	var got []protocol.Progress
	if err := preview.New(preview.Options{}).Run(t.Context(), job, func(p protocol.Progress) { got = append(got, p) }); err != nil {
		t.Fatal(err)
	}
	checkOutput(t, job.OutputPath, 1.5)
	last := got[len(got)-1]
	if last.Stage != "render" || last.FramesTotal != 38 || last.FramesDone != 38 {
		t.Errorf("last progress %+v, want render 38/38 (1.5 s at 25 fps)", last)
	}
	done := -1
	for _, p := range got {
		if err := p.Validate(); err != nil {
			t.Errorf("progress %+v: %v", p, err)
		}
		if p.Stage == "render" {
			if p.FramesDone < done {
				t.Errorf("frames went back from %d to %d", done, p.FramesDone)
			}
			done = p.FramesDone
		}
	}
}

func TestRunVideoAvatarLoops(t *testing.T) {
	t.Parallel()
	requireFFmpeg(t)
	dir := t.TempDir()
	vid := filepath.Join(dir, "face.mp4")
	wav := filepath.Join(dir, "speech.wav")
	ffmpeg(t, "-f", "lavfi", "-i", "testsrc=size=128x96:rate=30:duration=0.7", "-pix_fmt", "yuv420p", vid)
	ffmpeg(t, "-f", "lavfi", "-i", "sine=frequency=300:duration=2", wav)

	job := newJob(t, vid, wav)
	var last protocol.Progress
	if err := preview.New(preview.Options{}).Run(t.Context(), job, func(p protocol.Progress) { last = p }); err != nil {
		t.Fatal(err)
	}
	checkOutput(t, job.OutputPath, 2)
	if last.FramesTotal != 60 {
		t.Errorf("frames total %d, want 60 (2 s at the avatar's 30 fps)", last.FramesTotal)
	}
}

func TestRunBadAudioIsPermanent(t *testing.T) {
	t.Parallel()
	requireFFmpeg(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "face.png")
	ffmpeg(t, "-f", "lavfi", "-i", "testsrc=size=64x64:rate=1", "-frames:v", "1", img)
	corrupt := filepath.Join(dir, "corrupt.wav")
	if err := os.WriteFile(corrupt, []byte("RIFF\x10\x00\x00\x00WAVEthis is not audio at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, audio := range map[string]string{
		"corrupt":  corrupt,
		"missing":  filepath.Join(dir, "nope.wav"),
		"no audio": img,
	} {
		err := preview.New(preview.Options{}).Run(t.Context(), newJob(t, img, audio), nil)
		retryable, classified := engine.Classify(err)
		if err == nil || !classified || retryable {
			t.Errorf("%s audio: err %v (classified %v, retryable %v), want a permanent error", name, err, classified, retryable)
			continue
		}
		if !strings.HasPrefix(err.Error(), "audio: ") {
			t.Errorf("%s audio: error %q does not say the audio is at fault", name, err)
		}
		if strings.Contains(err.Error(), dir) {
			t.Errorf("%s audio: error %q shows the worker's directory to the client", name, err)
		}
	}
}

func TestRunCancelKillsFFmpeg(t *testing.T) {
	t.Parallel()
	requireFFmpeg(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "face.png")
	wav := filepath.Join(dir, "speech.wav")
	ffmpeg(t, "-f", "lavfi", "-i", "testsrc=size=640x480:rate=1", "-frames:v", "1", img)
	ffmpeg(t, "-f", "lavfi", "-i", "sine=frequency=440:duration=300", wav)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	job := newJob(t, img, wav)
	var cancelledAt int
	err := preview.New(preview.Options{}).Run(ctx, job, func(p protocol.Progress) {
		if p.FramesDone > 0 && cancelledAt == 0 {
			cancelledAt = p.FramesDone
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel = %v, want context.Canceled", err)
	}
	if _, classified := engine.Classify(err); classified {
		t.Errorf("a cancelled run was classified as a job failure: %v", err)
	}
	if cancelledAt == 0 || cancelledAt >= 7500 {
		t.Errorf("cancelled at frame %d of 7500", cancelledAt)
	}
}
