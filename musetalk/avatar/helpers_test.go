package avatar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/avatargen/musetalk/internal/testenv"
	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/model"
)

// astronaut is the project's real face photo (512×512); tests fall back to
// a synthetic picture where it is absent.
const astronaut = "/work/shared/media/astronaut.png"

// testFaceBox is a face box on the 512×512 astronaut (golden case i's).
var testFaceBox = media.Box{178, 56, 270, 182}

var (
	fixOnce  sync.Once
	fixDir   string
	fixFiles map[string]string
	fixErr   error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixDir != "" {
		os.RemoveAll(fixDir)
	}
	os.Exit(code)
}

// fixture returns the path of a generated test file: "still.png" (the
// astronaut, or a 512×512 test pattern) or "video.mp4" (6 frames at 25 fps
// made from it, colours rotating per frame). It skips without ffmpeg.
func fixture(t *testing.T, name string) string {
	t.Helper()
	fixOnce.Do(func() {
		if _, err := exec.LookPath("ffmpeg"); err != nil {
			return
		}
		fixDir, fixErr = os.MkdirTemp("", "avatar-test")
		if fixErr == nil {
			fixFiles, fixErr = makeFixtures(fixDir)
		}
	})
	if fixErr != nil {
		t.Fatalf("making fixtures: %v", fixErr)
	}
	if fixFiles == nil {
		testenv.Missing(t, "ffmpeg not installed (Debian package ffmpeg)")
	}
	return fixFiles[name]
}

func makeFixtures(dir string) (map[string]string, error) {
	run := func(args ...string) error {
		full := append([]string{"-nostdin", "-v", "error", "-y"}, args...)
		if out, err := exec.Command("ffmpeg", full...).CombinedOutput(); err != nil {
			return fmt.Errorf("ffmpeg %v: %v: %s", args, err, out)
		}
		return nil
	}
	still := filepath.Join(dir, "still.png")
	if _, err := os.Stat(astronaut); err == nil {
		if err := run("-i", astronaut, still); err != nil {
			return nil, err
		}
	} else if err := run("-f", "lavfi", "-i", "testsrc=size=512x512:rate=1", "-frames:v", "1", still); err != nil {
		return nil, err
	}
	video := filepath.Join(dir, "video.mp4")
	if err := run("-loop", "1", "-framerate", "25", "-i", still, "-vf", "hue=h=60*n", "-frames:v", "6",
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", video); err != nil {
		return nil, err
	}
	return map[string]string{"still.png": still, "video.mp4": video}, nil
}

// testNets builds a CPU backend and a tiny random VAE (4 latent channels,
// factor-8 down-sampling) shared by a test.
func testNets(t *testing.T) Networks {
	t.Helper()
	be, err := cpu.New(cpu.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	cfg := model.SDVAEConfig()
	cfg.BlockOutChannels = []int{8, 8, 8, 8}
	cfg.NormNumGroups = 4
	cfg.LayersPerBlock = 1
	spec, err := model.VAESpec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vae, err := model.NewVAE(be, cfg, model.RandomTensors(spec, 7))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vae.Close)
	return Networks{Backend: be, VAE: vae, Parser: &fakeParser{}}
}

// fakeDetector returns box for every frame except the calls (0-based, in
// frame order) listed in noFace. It counts calls.
type fakeDetector struct {
	box    media.Box
	noFace map[int]bool
	boxes  map[int]media.Box // per-call overrides of box
	calls  atomic.Int32
}

func (d *fakeDetector) Detect(ctx context.Context, frame *media.Image8) (media.Box, bool, error) {
	i := int(d.calls.Add(1)) - 1
	if frame.C != 3 || frame.W <= 0 || frame.H <= 0 {
		return media.Box{}, false, errors.New("fake detector: bad frame")
	}
	if d.noFace[i] {
		return media.Box{}, false, nil
	}
	if b, ok := d.boxes[i]; ok {
		return b, true, nil
	}
	return d.box, true, nil
}

// fakeLandmarks returns def's whole-body keypoints for every call except
// those (0-based) listed in kp. It counts calls.
type fakeLandmarks struct {
	def   [][2]float64
	kp    map[int][][2]float64
	calls atomic.Int32
}

func (l *fakeLandmarks) Keypoints(ctx context.Context, frame *media.Image8) ([][2]float64, error) {
	i := int(l.calls.Add(1)) - 1
	if frame.C != 3 || frame.W <= 0 || frame.H <= 0 {
		return nil, errors.New("fake landmarks: bad frame")
	}
	if k, ok := l.kp[i]; ok {
		return k, nil
	}
	return l.def, nil
}

// faceKeypoints returns 133 whole-body keypoints whose 68 face landmarks
// (23..90) lie on the ellipse of centre (cx, cy) and radii rx, ry
// (landmark 0 at the right, 17 at the bottom, 34 at the left), landmarks
// 28, 29 and 30 at x cx+0.7 and y cy−9.5, cy+0.9, cy+10.2; edit changes
// the face landmarks (index 0..67) before they are returned.
func faceKeypoints(cx, cy, rx, ry float64, edit func(lm [][2]float64)) [][2]float64 {
	kp := make([][2]float64, 133)
	lm := kp[23:91]
	for i := range lm {
		a := float64(i) / 68 * 2 * math.Pi
		lm[i] = [2]float64{cx + rx*math.Cos(a), cy + ry*math.Sin(a)}
	}
	lm[28] = [2]float64{cx + 0.7, cy - 9.5}
	lm[29] = [2]float64{cx + 0.7, cy + 0.9}
	lm[30] = [2]float64{cx + 0.7, cy + 10.2}
	if edit != nil {
		edit(lm)
	}
	return kp
}

// fakeParser returns a fixed synthetic class map (a face-like layout:
// hair on top, a skin ellipse holding nose, lips and mouth, neck and
// cloth below) and remembers the images it was given.
type fakeParser struct {
	mu     sync.Mutex
	inputs []*media.Image8
	calls  atomic.Int32
}

func (p *fakeParser) Parse(ctx context.Context, rgb *media.Image8, size int) (*media.Image8, error) {
	p.calls.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.inputs = append(p.inputs, rgb.Clone())
	p.mu.Unlock()
	return classMap(size), nil
}

// classMap draws the fake parser's size×size map of BiSeNet class ids.
func classMap(size int) *media.Image8 {
	m := media.NewImage8(size, size, 1)
	s := float64(size)
	for y := range size {
		for x := range size {
			fx, fy := float64(x)/s, float64(y)/s
			var c uint8
			switch {
			case fy < 0.2:
				c = 17 // hair
			case math.Pow((fx-0.5)/0.3, 2)+math.Pow((fy-0.5)/0.35, 2) <= 1:
				c = 1 // skin
				switch {
				case math.Abs(fx-0.5) < 0.05 && fy > 0.4 && fy < 0.6:
					c = 10 // nose
				case math.Abs(fx-0.5) < 0.12 && fy > 0.66 && fy < 0.7:
					c = 12 // upper lip
				case math.Abs(fx-0.5) < 0.12 && fy >= 0.7 && fy < 0.72:
					c = 11 // mouth
				case math.Abs(fx-0.5) < 0.12 && fy >= 0.72 && fy < 0.76:
					c = 13 // lower lip
				}
			case fy > 0.85 && math.Abs(fx-0.5) < 0.15:
				c = 14 // neck
			case fy > 0.9:
				c = 16 // cloth
			}
			m.Pix[y*size+x] = c
		}
	}
	return m
}

// directLatent encodes the crop of frame at face as MuseTalk does, one
// image at a time: [masked latent, reference latent] × scaling factor.
func directLatent(t *testing.T, nets Networks, frame *media.Image8, face media.Box) []float32 {
	t.Helper()
	c := media.CropResizeLanczos4(frame, face, CropSize, CropSize)
	var out []float32
	for _, half := range []bool{true, false} {
		x := kernels.Upload(nets.Backend, media.VAEInput(c, half), 1, 3, CropSize, CropSize)
		m, err := nets.VAE.Encode(x)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]float32, m.Len())
		if err := nets.Backend.Download(buf, m); err != nil {
			t.Fatal(err)
		}
		nets.Backend.Free(x)
		nets.Backend.Free(m)
		for _, v := range buf {
			out = append(out, v*nets.VAE.ScalingFactor())
		}
	}
	return out
}

func maxDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// decodeBGR decodes every frame of path as BGR images, independently of
// preparation.
func decodeBGR(t *testing.T, path string) []*media.Image8 {
	t.Helper()
	rd, err := (&media.FFmpeg{}).DecodeFrames(context.Background(), path, media.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var out []*media.Image8
	for {
		f, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, (&media.Image8{W: f.W, H: f.H, C: 3, Pix: f.Pix}).SwapRB())
	}
	return out
}
