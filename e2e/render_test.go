//go:build linux

package e2e

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/avatargen/musetalk/internal/goldendir"
	"github.com/avatargen/musetalk/internal/testenv"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/protocol"
)

// renderFaceBox is the astronaut's face in /work/shared/media/astronaut.png
// (512×512), passed as --face-box: with random tiny weights S3FD's box
// would be arbitrary.
var renderFaceBox = [4]int{168, 64, 280, 184}

// renderMargin is v1.5's default extra margin: the face box grows this
// much downwards, and with it the blended region.
const renderMargin = 10

// testMedia returns the shared test media file name, or skips.
func testMedia(t *testing.T, name string) string {
	t.Helper()
	golden, err := goldendir.Dir()
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	p := filepath.Join(filepath.Dir(golden), "media", name)
	if _, err := os.Stat(p); err != nil {
		testenv.Missing(t, "test media %s unavailable: %v", name, err)
	}
	return p
}

// needTools stops the test unless every tool is on PATH.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, "%s not installed", tool)
		}
	}
}

// runTool runs a command to completion and fails the test on error.
func runTool(t *testing.T, ctx context.Context, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestRenderCLI runs `musetalk render` on tiny random weights with a fixed
// face box, for a still image and for a short zooming video with three
// black frames spliced in, and checks the output: frame count and duration
// follow the speech, an audio stream is there, pixels away from the face
// box are the input's (within codec error), and frames with nothing in the
// face box pass through.
func TestRenderCLI(t *testing.T) {
	needSuite(t)
	needTools(t, "ffmpeg", "ffprobe", "espeak-ng")
	astronaut := testMedia(t, "astronaut.png")
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel) // the subtests run after this function returns
	if out, err := exec.CommandContext(ctx, musetalkBin, "render", "--help").CombinedOutput(); err != nil {
		t.Fatalf("`musetalk render --help`: %v (is renderCommand registered in cmd/musetalk/main.go?)\n%s", err, out)
	}
	dir := t.TempDir()
	weights := filepath.Join(dir, "weights")
	runTool(t, ctx, musetalkBin, "weights", "tiny", "--out", weights)
	speech := filepath.Join(dir, "speech.wav")
	runTool(t, ctx, "espeak-ng", "-w", speech, "Hello there, lip sync.")

	// 12 frames of a slow zoom at 10 fps, black frames 5-7 spliced in:
	// lossless (FFV1, RGB) so the test sees exactly what the renderer read.
	video := filepath.Join(dir, "zoom.mkv")
	runTool(t, ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-loop", "1", "-i", astronaut, "-f", "lavfi", "-i", "color=c=black:s=512x512:r=10",
		"-filter_complex", "[0]zoompan=z='1+0.004*on':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d=1:s=512x512:fps=10,"+
			"trim=end_frame=12,setpts=PTS-STARTPTS,format=rgb24,split[p1][p2];"+
			"[p1]trim=end_frame=5,setpts=PTS-STARTPTS[a];[p2]trim=start_frame=5,setpts=PTS-STARTPTS[c];"+
			"[1]trim=end_frame=3,setpts=PTS-STARTPTS,format=rgb24[b];[a][b][c]concat=n=3:v=1:a=0[v]",
		"-map", "[v]", "-c:v", "ffv1", "-pix_fmt", "bgr0", video)

	for _, tc := range []struct {
		name, avatar, fps string
		black             []int // source frames spliced in black
		extra             []string
	}{
		// The still at a rational rate, v1.5's jaw mask.
		{name: "still", avatar: astronaut, fps: "25/2"},
		// The video at its own rate; the raw mask keeps preparation quick.
		{name: "video", avatar: video, fps: "10", black: []int{5, 6, 7}, extra: []string{"--parsing-mode", "raw"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(dir, tc.name+".mp4")
			args := []string{"render", "--avatar", tc.avatar, "--audio", speech, "--out", out, "--weights", weights,
				"--avatar-cache", filepath.Join(dir, "cache-"+tc.name), "--batch-size", "8", "--threads", "2",
				"--face-box", fmt.Sprintf("%d,%d,%d,%d", renderFaceBox[0], renderFaceBox[1], renderFaceBox[2], renderFaceBox[3])}
			if tc.name == "still" {
				args = append(args, "--fps", tc.fps)
			}
			args = append(args, tc.extra...)
			start := time.Now()
			cmd := exec.CommandContext(ctx, musetalkBin, args...)
			cmd.Env = append(os.Environ(), "HOME="+dir)
			b, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("musetalk %s: %v\n%s", strings.Join(args, " "), err, b)
			}
			// Preparation says which face box it used and where it came from.
			if !strings.Contains(string(b), "avatar: face box") || !strings.Contains(string(b), "source=face-box") {
				t.Errorf("musetalk render does not log the face box and its source:\n%s", b)
			}
			t.Logf("rendered in %v", time.Since(start).Round(time.Millisecond))
			fps, _ := new(big.Rat).SetString(tc.fps)
			box := renderFaceBox
			box[3] += renderMargin
			checkRender(t, ctx, tc.avatar, speech, out, fps, tc.black, box)
		})
	}
}

// checkRender compares the rendered video with its inputs; box is the face
// box the frames with a face were rendered with (v1.5's margin included).
func checkRender(t *testing.T, ctx context.Context, avatarPath, speech, out string, fps *big.Rat, black []int, box [4]int) {
	t.Helper()
	ff := &media.FFmpeg{}
	samples, err := ff.DecodeAudio(ctx, speech)
	if err != nil {
		t.Fatal(err)
	}
	// Frames: ceil(samples · fps / 16000).
	num := new(big.Int).Mul(big.NewInt(int64(len(samples))), fps.Num())
	den := new(big.Int).Mul(big.NewInt(16000), fps.Denom())
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	want := int(q.Int64())
	if r.Sign() > 0 {
		want++
	}
	fpsF, _ := fps.Float64()
	speechSec := float64(len(samples)) / 16000

	info, err := ff.Probe(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	if info.Video == nil || info.Audio == nil {
		t.Fatalf("output streams: %s, want video and audio", ffprobeStreams(ctx, t, out))
	}
	if d := info.Duration.Seconds(); math.Abs(d-speechSec) > 1/fpsF {
		t.Errorf("output lasts %.3f s, the speech %.3f s: more than one frame (%.3f s) apart", d, speechSec, 1/fpsF)
	}
	if d := info.Audio.Duration.Seconds(); math.Abs(d-speechSec) > 1/fpsF {
		t.Errorf("output audio lasts %.3f s, the speech %.3f s", d, speechSec)
	}

	src := decodeAll(t, ctx, avatarPath)
	isBlack := map[int]bool{}
	for _, k := range black {
		isBlack[k] = true
	}
	rd, err := ff.DecodeFrames(ctx, out, media.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	n, faces := 0, 0
	var mouthSum, mouthMin float64
	mouthMin = math.Inf(1)
	for ; ; n++ {
		f, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		k := n % (2 * len(src)) // the ping-pong cycle
		if k >= len(src) {
			k = 2*len(src) - 1 - k
		}
		s := src[k]
		if isBlack[k] {
			if d := meanAbsDiff(f, s, nil); d > 1 {
				t.Errorf("output frame %d (black source frame %d) differs from it by %.2f on average", n, k, d)
			}
			continue
		}
		// Away from the face box (and the chroma blocks it touches) the
		// frame is the source's, up to CRF 18's error.
		outside := func(x, y int) bool {
			return x < box[0]-8 || x >= box[2]+8 || y < box[1]-8 || y >= box[3]+8
		}
		if d := meanAbsDiff(f, s, outside); d > 2.5 {
			t.Errorf("output frame %d (source %d) differs from the source by %.2f outside the face box", n, k, d)
		}
		// The lower half of the face box (the mouth region, where the
		// blend mask lies) shows the generated face: even tiny random
		// weights must visibly replace it, far beyond codec error.
		lowerFace := func(x, y int) bool {
			return x >= box[0] && x < box[2] && y >= (box[1]+box[3])/2 && y < box[3]
		}
		d := meanAbsDiff(f, s, lowerFace)
		if d < minMouthDiff {
			t.Errorf("output frame %d (source %d) differs from the source by only %.2f in the lower half of the face box, want at least %.0f: the mouth was not regenerated",
				n, k, d, float64(minMouthDiff))
		}
		faces++
		mouthSum += d
		mouthMin = min(mouthMin, d)
	}
	if n != want {
		t.Errorf("output has %d frames, want ceil(%d samples · %s / 16000) = %d", n, len(samples), fps.RatString(), want)
	}
	if faces > 0 {
		t.Logf("%d frames; in the lower half of the face box, %d frames with a face differ from the source by %.2f on average (least %.2f)",
			n, faces, mouthSum/float64(faces), mouthMin)
	}
}

// minMouthDiff is the least mean absolute difference (0-255 per channel)
// between an output frame and its source in the lower half of the face
// box: the generated mouth must show, where CRF 18's error alone stays
// near 1.
const minMouthDiff = 20

// decodeAll decodes every frame of a still or a video (RGB).
func decodeAll(t *testing.T, ctx context.Context, path string) []*media.Frame {
	t.Helper()
	rd, err := (&media.FFmpeg{}).DecodeFrames(ctx, path, media.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var out []*media.Frame
	for {
		f, err := rd.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		c := *f
		c.Pix = append([]uint8(nil), f.Pix...)
		out = append(out, &c)
	}
}

// meanAbsDiff is the mean absolute difference of two equally sized RGB
// frames over the pixels where keep is true (all when keep is nil).
func meanAbsDiff(a, b *media.Frame, keep func(x, y int) bool) float64 {
	if a.W != b.W || a.H != b.H {
		return math.Inf(1)
	}
	var sum, n float64
	for y := range a.H {
		for x := range a.W {
			if keep != nil && !keep(x, y) {
				continue
			}
			p := (y*a.W + x) * 3
			for c := range 3 {
				sum += math.Abs(float64(a.Pix[p+c]) - float64(b.Pix[p+c]))
			}
			n += 3
		}
	}
	if n == 0 {
		return 0
	}
	return sum / n
}

// TestWorkerDefaultEnginesWithoutWeights starts `musetalk worker` with its
// default engines (musetalk, preview) and an empty weight directory: the
// worker stays alive but not ready, its self-check (in /health and in the
// registry) names the missing files and the fetch command, and it claims
// nothing, so a job waits for a worker that can run it instead of failing.
func TestWorkerDefaultEnginesWithoutWeights(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{kind: previewWorkers})
	for _, w := range c.workers { // leave the jobs to the worker under test
		if err := c.do(http.MethodPost, "/v1/workers/"+w.id+"/drain", nil, "", http.StatusOK, nil); err != nil {
			t.Fatal(err)
		}
	}
	id := sanitize(t.Name()) + "-default"
	env := []string{
		"ORCHESTRATOR_BASE_URL=http://" + c.controlAddr, "INTERNAL_API_KEY=" + internalKey, "WORKER_ID=" + id,
		"WORKER_TYPE=main", "PROVIDER=other", "GPU_CLASS_NAME=E2E_CPU", "POLL_INTERVAL_SEC=1",
		"B2_ENDPOINT=" + c.b2.URL, "B2_KEY_ID=" + c.b2.KeyID, "B2_APP_KEY=" + c.b2.AppKey, "B2_BUCKET_NAME=" + c.b2.Bucket,
	}
	w := &workerProc{id: id, healthAddr: freeAddr(t)}
	w.proc = startProc(t, c.dir, id, musetalkBin, []string{"worker", "--health-addr", w.healthAddr,
		"--work-dir", filepath.Join(c.dir, "work-"+id), "--weights", filepath.Join(c.dir, "no-weights"),
		"--avatar-cache", filepath.Join(c.dir, "avatars-"+id)}, env, "")
	eventually(t, 30*time.Second, 100*time.Millisecond, id+" reports the missing weights", func() (bool, string) {
		ready, body := c.health(w, "/ready")
		live, health := c.health(w, "/health")
		return live == http.StatusOK && ready == http.StatusServiceUnavailable &&
			strings.Contains(health, `"weights_present":false`) && strings.Contains(health, "musetalk weights fetch") &&
			strings.Contains(health, "musetalkV15/"), fmt.Sprintf("/ready %d %s; /health %d %s", ready, body, live, health)
	})
	job := c.submitParams(avatarPNG, "speech.wav", mustRead(t, speechWAV), "")
	eventually(t, 10*time.Second, 100*time.Millisecond, "the registry shows the self-check", func() (bool, string) {
		var list protocol.WorkerList
		if err := c.do(http.MethodGet, "/v1/workers", nil, "", http.StatusOK, &list); err != nil {
			return false, err.Error()
		}
		for _, wv := range list.Workers {
			if wv.ID == id && wv.SelfCheck != nil && strings.Contains(wv.SelfCheck.Error, "musetalk weights fetch") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", list.Workers)
	})
	time.Sleep(3 * time.Second) // three heartbeat intervals: a claim would have happened
	var j protocol.JobView
	if err := c.do(http.MethodGet, "/v1/jobs/"+job.ID, nil, "", http.StatusOK, &j); err != nil {
		t.Fatal(err)
	}
	if j.State != protocol.JobQueued || len(j.Attempts) != 0 {
		t.Fatalf("a worker without weights took the job: %s", describe(j))
	}
	// The start is logged once, by the worker itself.
	if logs, _ := os.ReadFile(w.proc.logPath); strings.Count(string(logs), `msg="worker starting"`) != 1 {
		t.Errorf("want one \"worker starting\" line:\n%s", logs)
	}
}
