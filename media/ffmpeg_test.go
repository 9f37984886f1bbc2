package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/internal/testenv"
)

// Test fixtures, generated with ffmpeg on first use (so that tests not
// needing them, such as the log-mel ones, do not wait) and removed by
// TestMain.
var (
	fixOnce  sync.Once
	fixtures map[string]string // nil when ffmpeg is missing
	fixErr   error
	fixDir   string
)

const astronaut = "/work/shared/media/astronaut.png"

func TestMain(m *testing.M) {
	code := m.Run()
	if fixDir != "" {
		os.RemoveAll(fixDir)
	}
	os.Exit(code)
}

func loadFixtures() {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		return
	}
	fixDir, fixErr = os.MkdirTemp("", "media-ffmpeg-test")
	if fixErr == nil {
		fixtures, fixErr = makeFixtures(fixDir)
	}
}

func makeFixtures(dir string) (map[string]string, error) {
	fx := map[string]string{}
	gen := func(name string, args ...string) error {
		p := filepath.Join(dir, name)
		full := append([]string{"-nostdin", "-v", "error", "-y"}, args...)
		full = append(full, p)
		if out, err := exec.Command("ffmpeg", full...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", name, err, out)
		}
		fx[name] = p
		return nil
	}
	x264 := []string{"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"}
	steps := []func() error{
		func() error {
			return gen("video.mp4", append(append([]string{
				"-f", "lavfi", "-i", "testsrc=size=320x240:rate=30000/1001:duration=2",
				"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=2"},
				x264...), "-c:a", "aac", "-shortest")...)
		},
		func() error {
			return gen("red.mp4", append([]string{"-f", "lavfi", "-i", "color=c=red:size=64x48:rate=25:duration=1"},
				append(x264, "-crf", "10")...)...)
		},
		func() error {
			return gen("sine.wav", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1.5",
				"-af", "pan=stereo|c0=c0|c1=0*c0")
		},
		func() error {
			return gen("long.mp4", append([]string{"-f", "lavfi", "-i", "testsrc=size=320x240:rate=30:duration=20"}, x264...)...)
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	// A 64x48 stream, top half black, bottom white, displayed rotated by
	// 90°: frames are 48x64 with a black and a white vertical half.
	if err := gen("split.mp4", append([]string{"-f", "lavfi", "-i", "color=c=white:size=64x48:rate=25:duration=1",
		"-vf", "drawbox=x=0:y=0:w=64:h=24:color=black:t=fill"}, x264...)...); err != nil {
		return nil, err
	}
	if out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-i", fx["split.mp4"], "-c", "copy",
		"-metadata:s:v:0", "rotate=90", filepath.Join(dir, "rotated.mp4")).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("rotated.mp4: %v: %s", err, out)
	}
	fx["rotated.mp4"] = filepath.Join(dir, "rotated.mp4")
	if _, err := exec.LookPath("espeak-ng"); err == nil {
		p := filepath.Join(dir, "speech.wav")
		if out, err := exec.Command("espeak-ng", "-w", p, "The quick brown fox jumps over the lazy dog.").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("espeak-ng: %v: %s", err, out)
		}
		fx["speech.wav"] = p
	}
	if err := os.WriteFile(filepath.Join(dir, "garbage.mp4"), []byte("this is not a media file\n"), 0o644); err != nil {
		return nil, err
	}
	fx["garbage.mp4"] = filepath.Join(dir, "garbage.mp4")
	fx["dir"] = dir
	return fx, nil
}

func fixture(t *testing.T, name string) string {
	t.Helper()
	fixOnce.Do(loadFixtures)
	if fixErr != nil {
		t.Fatalf("generating fixtures: %v", fixErr)
	}
	if fixtures == nil {
		testenv.Missing(t, "ffmpeg not installed (Debian package ffmpeg)")
	}
	p, ok := fixtures[name]
	if !ok {
		testenv.Missing(t, "fixture %s unavailable", name)
	}
	return p
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

func TestProbeVideo(t *testing.T) {
	info, err := (&FFmpeg{}).Probe(context.Background(), fixture(t, "video.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	v, a := info.Video, info.Audio
	if v == nil || a == nil {
		t.Fatalf("want video and audio, got %+v", info)
	}
	if v.Width != 320 || v.Height != 240 || v.PixFmt != "yuv420p" || v.Codec != "h264" || v.IsStill {
		t.Errorf("video %+v", v)
	}
	if v.FPS == nil || v.FPS.Cmp(big.NewRat(30000, 1001)) != 0 {
		t.Errorf("fps %v, want 30000/1001", v.FPS)
	}
	if v.Frames != 60 || v.FramesEstimated {
		t.Errorf("frames %d (estimated %v), want 60 from nb_frames", v.Frames, v.FramesEstimated)
	}
	if a.SampleRate != 44100 || a.Channels != 1 || a.Codec != "aac" {
		t.Errorf("audio %+v", a)
	}
	if !near(info.Duration.Seconds(), 2, 0.05) || len(info.Streams) != 2 {
		t.Errorf("duration %v streams %+v", info.Duration, info.Streams)
	}
}

func TestProbeStill(t *testing.T) {
	fixture(t, "dir")
	if _, err := os.Stat(astronaut); err != nil {
		testenv.Missing(t, "%v", err)
	}
	info, err := (&FFmpeg{}).Probe(context.Background(), astronaut)
	if err != nil {
		t.Fatal(err)
	}
	v := info.Video
	if v == nil || !v.IsStill || v.Frames != 1 || v.FPS != nil || v.Width <= 0 || v.Height <= 0 || info.Audio != nil {
		t.Fatalf("still: %+v video %+v", info, v)
	}
}

func TestProbeAudioOnlyAndNoAudio(t *testing.T) {
	f := &FFmpeg{}
	info, err := f.Probe(context.Background(), fixture(t, "sine.wav"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Video != nil || info.Audio == nil || info.Audio.SampleRate != 44100 || info.Audio.Channels != 2 ||
		!near(info.Audio.Duration.Seconds(), 1.5, 0.001) {
		t.Errorf("sine.wav: %+v audio %+v", info, info.Audio)
	}
	info, err = f.Probe(context.Background(), fixture(t, "red.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Audio != nil || info.Video == nil || info.Video.Frames != 25 || info.Video.FPS.Cmp(big.NewRat(25, 1)) != 0 {
		t.Errorf("red.mp4: %+v video %+v", info, info.Video)
	}
}

func decodeAll(t *testing.T, path string, opts DecodeOptions) (n int, first []uint8, w, h int) {
	t.Helper()
	r, err := (&FFmpeg{}).DecodeFrames(context.Background(), path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for {
		fr, err := r.Next()
		if err == io.EOF {
			return n, first, w, h
		}
		if err != nil {
			t.Fatal(err)
		}
		if fr.Index != n || len(fr.Pix) != fr.W*fr.H*3 {
			t.Fatalf("frame %d: index %d, %dx%d, %d bytes", n, fr.Index, fr.W, fr.H, len(fr.Pix))
		}
		if n == 0 {
			first = append([]uint8(nil), fr.Pix...)
			w, h = fr.W, fr.H
		}
		n++
	}
}

func TestDecodeFramesRed(t *testing.T) {
	n, pix, w, h := decodeAll(t, fixture(t, "red.mp4"), DecodeOptions{})
	if n != 25 || w != 64 || h != 48 {
		t.Fatalf("got %d frames %dx%d, want 25 64x48", n, w, h)
	}
	var sum [3]float64
	for i := 0; i < len(pix); i += 3 {
		for c := range 3 {
			sum[c] += float64(pix[i+c])
		}
	}
	px := float64(w * h)
	if r, g, b := sum[0]/px, sum[1]/px, sum[2]/px; !near(r, 255, 6) || !near(g, 0, 6) || !near(b, 0, 6) {
		t.Errorf("mean RGB (%.1f, %.1f, %.1f), want ~(255, 0, 0)", r, g, b)
	}
}

func TestDecodeFramesResampleAndCap(t *testing.T) {
	path := fixture(t, "video.mp4")
	if n, _, _, _ := decodeAll(t, path, DecodeOptions{FPS: big.NewRat(15, 1)}); n < 29 || n > 31 {
		t.Errorf("resampled to 15 fps: %d frames, want ~30", n)
	}
	if n, _, _, _ := decodeAll(t, path, DecodeOptions{MaxFrames: 7}); n != 7 {
		t.Errorf("MaxFrames 7: %d frames", n)
	}
	if n, _, _, _ := decodeAll(t, path, DecodeOptions{}); n != 60 {
		t.Errorf("passthrough: %d frames, want 60", n)
	}
}

func TestDecodeStill(t *testing.T) {
	fixture(t, "dir")
	if _, err := os.Stat(astronaut); err != nil {
		testenv.Missing(t, "%v", err)
	}
	info, err := (&FFmpeg{}).Probe(context.Background(), astronaut)
	if err != nil {
		t.Fatal(err)
	}
	n, pix, w, h := decodeAll(t, astronaut, DecodeOptions{MaxFrames: 10})
	if n != 1 || w != info.Video.Width || h != info.Video.Height {
		t.Fatalf("got %d frames %dx%d, want 1 %dx%d", n, w, h, info.Video.Width, info.Video.Height)
	}
	var sum float64
	for _, v := range pix {
		sum += float64(v)
	}
	if mean := sum / float64(len(pix)); mean < 5 || mean > 250 {
		t.Errorf("implausible mean pixel %.1f", mean)
	}
}

func TestDecodeAudioSine(t *testing.T) {
	s, err := (&FFmpeg{}).DecodeAudio(context.Background(), fixture(t, "sine.wav"))
	if err != nil {
		t.Fatal(err)
	}
	if !near(float64(len(s)), 1.5*16000, 4) {
		t.Fatalf("%d samples, want %d", len(s), 24000)
	}
	// Skip the resampler's edges.
	mid := s[1600 : len(s)-1600]
	var sq float64
	cross := 0
	for i, v := range mid {
		sq += float64(v) * float64(v)
		if i > 0 && (mid[i-1] < 0) != (v < 0) {
			cross++
		}
	}
	rms := math.Sqrt(sq / float64(len(mid)))
	freq := float64(cross) / 2 / (float64(len(mid)) / 16000)
	// lavfi sine has amplitude 1/8 in the left channel, the right one is
	// silent: the channel mean (librosa's down-mix) has amplitude 1/16.
	if want := 0.0625 / math.Sqrt2; !near(rms, want, 0.002) {
		t.Errorf("rms %.4f, want %.4f", rms, want)
	}
	if !near(freq, 440, 3) {
		t.Errorf("frequency %.1f Hz, want 440", freq)
	}
}

func TestDecodeAudioSpeechAndVideo(t *testing.T) {
	f := &FFmpeg{}
	for _, name := range []string{"speech.wav", "video.mp4"} {
		t.Run(name, func(t *testing.T) {
			path := fixture(t, name)
			info, err := f.Probe(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := f.DecodeAudio(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			want := info.Audio.Duration.Seconds() * 16000
			// AAC's priming and 1024-sample frames blur a compressed
			// stream's duration by up to a frame.
			tol := 4.0
			if info.Audio.Codec == "aac" {
				tol = 1024.0 * 16000 / float64(info.Audio.SampleRate)
			}
			if !near(float64(len(s)), want, tol) {
				t.Errorf("%d samples, want %.0f ± %.0f", len(s), want, tol)
			}
			var peak float32
			for _, v := range s {
				peak = max(peak, v, -v)
			}
			if peak < 0.01 || peak > 1.01 {
				t.Errorf("peak %.3f", peak)
			}
		})
	}
}

func TestDecodeAudioNoAudio(t *testing.T) {
	path := fixture(t, "red.mp4")
	_, err := (&FFmpeg{}).DecodeAudio(context.Background(), path)
	if !errors.Is(err, ErrNoAudio) {
		t.Fatalf("err %v, want ErrNoAudio", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "red.mp4") || strings.Contains(msg, fixtures["dir"]) || !strings.Contains(msg, "no audio stream") {
		t.Errorf("unclear error: %s", msg)
	}
	t.Log(msg)
}

func TestMissingBinary(t *testing.T) {
	ctx := context.Background()
	f := &FFmpeg{ProbePath: "/nonexistent/ffprobe"}
	_, err := f.Probe(ctx, "whatever.mp4")
	if !errors.Is(err, ErrBinaryNotFound) || !strings.Contains(err.Error(), "ffprobe") ||
		!strings.Contains(err.Error(), "apt-get install ffmpeg") {
		t.Errorf("probe: %v", err)
	}
	f = &FFmpeg{Path: "no-such-ffmpeg-binary"}
	if _, err := f.DecodeAudio(ctx, "whatever.wav"); !errors.Is(err, ErrBinaryNotFound) || !strings.Contains(err.Error(), "ffmpeg") {
		t.Errorf("decode audio: %v", err)
	}
	if _, err := f.NewEncoder(ctx, "out.mp4", EncodeOptions{Width: 2, Height: 2, FPS: big.NewRat(25, 1)}); !errors.Is(err, ErrBinaryNotFound) {
		t.Errorf("encoder: %v", err)
	}
	t.Log(err)
}

func TestUnreadableFile(t *testing.T) {
	dir := fixture(t, "dir")
	f := &FFmpeg{}
	for _, path := range []string{fixture(t, "garbage.mp4"), filepath.Join(dir, "missing.mp4")} {
		for what, run := range map[string]func() error{
			"probe":  func() error { _, err := f.Probe(context.Background(), path); return err },
			"frames": func() error { _, err := f.DecodeFrames(context.Background(), path, DecodeOptions{}); return err },
			"audio":  func() error { _, err := f.DecodeAudio(context.Background(), path); return err },
		} {
			err := run()
			if err == nil {
				t.Fatalf("%s %s: no error", what, path)
			}
			msg := err.Error()
			if !errors.Is(err, ErrUnreadable) {
				t.Errorf("%s: %v does not wrap ErrUnreadable", what, err)
			}
			if !strings.Contains(msg, filepath.Base(path)) || strings.Contains(msg, dir) || strings.Contains(msg, "0x") {
				t.Errorf("%s: error should name %s without its directory: %s", what, filepath.Base(path), msg)
			}
			t.Logf("%s: %s", what, msg)
		}
	}
}

func TestDecodeCancel(t *testing.T) {
	path := fixture(t, "long.mp4")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := (&FFmpeg{}).DecodeFrames(ctx, path, DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	cancel()
	start := time.Now()
	for {
		_, err = r.Next()
		if err != nil {
			break
		}
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
	if st := r.proc.cmd.ProcessState; st == nil || st.Success() {
		t.Errorf("ffmpeg not killed: %v", st)
	}
	if r.Frames() >= 600 {
		t.Errorf("decoded all %d frames despite cancellation", r.Frames())
	}
	t.Logf("stopped after %d frames, %v", r.Frames(), time.Since(start))
}

func TestEncodeCancel(t *testing.T) {
	dir := fixture(t, "dir")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := filepath.Join(dir, "cancel.mp4")
	e, err := (&FFmpeg{}).NewEncoder(ctx, out, EncodeOptions{Width: 64, Height: 48, FPS: big.NewRat(25, 1)})
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]uint8, 64*48*3)
	if err := e.WriteFrame(frame); err != nil {
		t.Fatal(err)
	}
	cancel()
	for i := 0; i < 1000 && err == nil; i++ {
		err = e.WriteFrame(frame)
	}
	if err == nil {
		err = e.Close()
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
	if err := e.Abort(); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("partial output left: %v", err)
	}
}

// encode writes n solid frames (RGB c) and returns the probe of the result.
func encode(t *testing.T, out string, opts EncodeOptions, n int, c [3]uint8) *Info {
	t.Helper()
	f := &FFmpeg{}
	e, err := f.NewEncoder(context.Background(), out, opts)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]uint8, opts.Width*opts.Height*3)
	for i := 0; i < len(frame); i += 3 {
		copy(frame[i:], c[:])
	}
	for range n {
		if err := e.WriteFrame(frame); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := f.Probe(context.Background(), out)
	if err != nil {
		t.Fatal(err)
	}
	if v := info.Video; v == nil || v.Codec != "h264" || v.PixFmt != "yuv420p" || v.FPS.Cmp(opts.FPS) != 0 {
		t.Fatalf("video %+v, want h264 yuv420p at %v", info.Video, opts.FPS)
	}
	return info
}

// streamDurations returns each stream's duration in seconds by type.
func streamDurations(info *Info) map[string]float64 {
	d := map[string]float64{}
	for _, s := range info.Streams {
		d[s.Type] = s.Duration.Seconds()
	}
	return d
}

func TestEncodeRoundTripWithAudio(t *testing.T) {
	dir := fixture(t, "dir")
	audio := fixture(t, "sine.wav") // 1.5 s
	fps := big.NewRat(25, 1)
	// One video frame plus one AAC frame (1024 samples at 44.1 kHz).
	const tol = 0.04 + 1024.0/44100
	cases := []struct {
		name      string
		frames    int
		announced int // EncodeOptions.Frames
		wantDur   float64
		wantVideo int
		audioTol  float64
	}{
		{"video shorter", 25, 25, 1.0, 25, tol}, // audio cut to the video's 1 s
		{"audio shorter", 50, 50, 1.5, 38, tol}, // video cut to the audio's 1.5 s
		{"unannounced audio shorter", 50, 0, 1.5, 38, tol},
		// -shortest may let the audio run past the video's end.
		{"unannounced video shorter", 25, 0, 1.0, 25, 0.4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".mp4")
			info := encode(t, out, EncodeOptions{Width: 64, Height: 48, FPS: fps, CRF: 20, Preset: "ultrafast",
				AudioPath: audio, Frames: tc.announced}, tc.frames, [3]uint8{0, 0, 255})
			if info.Audio == nil || info.Audio.Codec != "aac" {
				t.Fatalf("audio %+v", info.Audio)
			}
			if info.Video.Frames != tc.wantVideo {
				t.Errorf("video frames %d, want %d", info.Video.Frames, tc.wantVideo)
			}
			d := streamDurations(info)
			if !near(d["video"], tc.wantDur, tol) {
				t.Errorf("video stream %.3f s, want %.3f ± %.3f", d["video"], tc.wantDur, tol)
			}
			if !near(d["audio"], tc.wantDur, tc.audioTol) {
				t.Errorf("audio stream %.3f s, want %.3f ± %.3f", d["audio"], tc.wantDur, tc.audioTol)
			}
			t.Logf("video %.3f s, audio %.3f s", d["video"], d["audio"])
		})
	}
}

// TestEncodeKeepsTheLastPartialFrame: audio that ends just after a frame
// starts (0.962 s at 25 fps: frame 24 starts at 0.960 s) keeps that frame,
// ⌈duration·fps⌉ = 25 frames, also at NTSC rates where the boundary falls
// between samples.
func TestEncodeKeepsTheLastPartialFrame(t *testing.T) {
	dir := fixture(t, "dir")
	for _, tc := range []struct {
		secs string
		fps  *big.Rat
		want int
	}{
		{"0.962", big.NewRat(25, 1), 25},
		{"0.9985", big.NewRat(25, 1), 25},
		{"1.0015", big.NewRat(30000, 1001), 31},
	} {
		audio := filepath.Join(dir, "tone"+tc.secs+".wav")
		if out, err := exec.Command("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
			"sine=frequency=300:sample_rate=16000:duration="+tc.secs, audio).CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg: %v: %s", err, out)
		}
		out := filepath.Join(dir, "partial"+tc.secs+".mp4")
		info := encode(t, out, EncodeOptions{Width: 32, Height: 32, FPS: tc.fps, Preset: "ultrafast",
			AudioPath: audio, Frames: tc.want}, tc.want, [3]uint8{9, 99, 199})
		if info.Video.Frames != tc.want {
			t.Errorf("%s s of audio at %v fps: %d frames, want %d", tc.secs, tc.fps, info.Video.Frames, tc.want)
		}
	}
}

func TestEncodeOddSizeRoundTrip(t *testing.T) {
	dir := fixture(t, "dir")
	out := filepath.Join(dir, "odd.mp4")
	fps := big.NewRat(30000, 1001)
	info := encode(t, out, EncodeOptions{Width: 33, Height: 21, FPS: fps, Preset: "ultrafast"}, 10, [3]uint8{255, 0, 0})
	if v := info.Video; v.Width != 34 || v.Height != 22 || v.Frames != 10 || info.Audio != nil {
		t.Fatalf("video %+v", v)
	}
	n, pix, _, _ := decodeAll(t, out, DecodeOptions{})
	if n != 10 {
		t.Fatalf("decoded %d frames", n)
	}
	c := pix[(10*34+10)*3:] // an interior pixel
	if !near(float64(c[0]), 255, 8) || !near(float64(c[1]), 0, 8) || !near(float64(c[2]), 0, 8) {
		t.Errorf("pixel (%d, %d, %d), want ~(255, 0, 0)", c[0], c[1], c[2])
	}
}

// TestDecodeMemoryBounded decodes a 20 s 320x240 video (600 frames, 138 MB
// of RGB) and checks the allocations per frame, not the time.
func TestDecodeMemoryBounded(t *testing.T) {
	path := fixture(t, "long.mp4")
	r, err := (&FFmpeg{}).DecodeFrames(context.Background(), path, DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	n := r.Frames()
	if n != 600 {
		t.Fatalf("%d frames, want 600", n)
	}
	perFrame := float64(after.TotalAlloc-before.TotalAlloc) / float64(n-1)
	frameBytes := 320 * 240 * 3
	if perFrame > float64(frameBytes)/10 {
		t.Errorf("%.0f bytes allocated per frame (frame is %d bytes): frames are not streamed through one buffer", perFrame, frameBytes)
	}
	if growth := int64(after.HeapInuse) - int64(before.HeapInuse); growth > 8<<20 {
		t.Errorf("heap in use grew by %d bytes over %d frames", growth, n)
	}
	t.Logf("%.0f bytes allocated per frame", perFrame)
}

// TestEncodeExtraFramesAfterAudioEnds writes large frames well past the
// audio's end: ffmpeg finishes the file at the cut and exits, and the
// surplus frames must be dropped, not reported as a broken pipe.
func TestEncodeExtraFramesAfterAudioEnds(t *testing.T) {
	dir := fixture(t, "dir")
	out := filepath.Join(dir, "extra.mp4")
	info := encode(t, out, EncodeOptions{Width: 640, Height: 480, FPS: big.NewRat(25, 1), Preset: "ultrafast",
		AudioPath: fixture(t, "sine.wav"), Frames: 100}, 100, [3]uint8{0, 255, 0})
	d := streamDurations(info)
	if info.Video.Frames != 38 || !near(d["audio"], 1.5, 0.03) {
		t.Errorf("video %d frames, audio %.3f s; want 38 frames, 1.5 s", info.Video.Frames, d["audio"])
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/x/y/in.mp4: Invalid data found":            "in.mp4: Invalid data found",
		"Error opening input file /srv/jobs/42/a.wav.":   "Error opening input file a.wav.",
		"open '../data/v.mov' failed":                    "open 'v.mov' failed",
		"fps=30000/1001 N/A ratio 16/9":                  "fps=30000/1001 N/A ratio 16/9",
		"stat /nonexistent/ffprobe: no such file":        "stat ffprobe: no such file",
		"  [h264 @ 0x55d] error while decoding MB 3 4  ": "[h264] error while decoding MB 3 4",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
	if got := sanitize("opening rel/dir/f.mp4 failed", "rel/dir/f.mp4"); got != "opening f.mp4 failed" {
		t.Errorf("known path: %q", got)
	}
}

func TestEncodeErrors(t *testing.T) {
	dir := fixture(t, "dir")
	f := &FFmpeg{}
	ctx := context.Background()
	opts := EncodeOptions{Width: 64, Height: 48, FPS: big.NewRat(25, 1), AudioPath: fixture(t, "red.mp4")}
	if _, err := f.NewEncoder(ctx, filepath.Join(dir, "x.mp4"), opts); !errors.Is(err, ErrNoAudio) || !strings.Contains(err.Error(), "red.mp4") {
		t.Errorf("audio without audio stream: %v", err)
	}
	opts.AudioPath, opts.Preset = "", "no-such-preset"
	e, err := f.NewEncoder(ctx, filepath.Join(dir, "bad.mp4"), opts)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]uint8, 64*48*3)
	for i := 0; i < 100 && err == nil; i++ {
		err = e.WriteFrame(frame)
	}
	if err == nil {
		err = e.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "bad.mp4") || strings.Contains(err.Error(), dir) {
		t.Errorf("bad preset: %v", err)
	}
	t.Log(err)
	if err := e.Abort(); err != nil {
		t.Error(err)
	}
	for _, bad := range []EncodeOptions{{Width: 0, Height: 2, FPS: big.NewRat(1, 1)}, {Width: 2, Height: 2}, {Width: 2, Height: 2, FPS: big.NewRat(1, 1), CRF: 60}} {
		if _, err := f.NewEncoder(ctx, filepath.Join(dir, "y.mp4"), bad); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestCancelledBeforeStart(t *testing.T) {
	path := fixture(t, "sine.wav")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (&FFmpeg{}).DecodeAudio(ctx, path); !errors.Is(err, context.Canceled) {
		t.Errorf("DecodeAudio: %v, want context.Canceled", err)
	}
}

func TestRotatedVideo(t *testing.T) {
	path := fixture(t, "rotated.mp4")
	info, err := (&FFmpeg{}).Probe(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if v := info.Video; v.Width != 48 || v.Height != 64 || (v.Rotation != 90 && v.Rotation != 270) {
		t.Fatalf("video %+v, want 48x64 rotated", v)
	}
	n, pix, w, h := decodeAll(t, path, DecodeOptions{})
	if n != 25 || w != 48 || h != 64 {
		t.Fatalf("decoded %d frames %dx%d, want 25 48x64", n, w, h)
	}
	// Every row must read dark|light or light|dark across its 48 pixels.
	for y := 0; y < h; y += 8 {
		left, right := int(pix[(y*w+4)*3]), int(pix[(y*w+w-5)*3])
		if (left < 64) == (right < 64) {
			t.Fatalf("row %d: left %d right %d, want one dark and one light half", y, left, right)
		}
	}
}
