package musetalk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"log/slog"
	"math"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/internal/testenv"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/modeldir"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/engine"
)

// tiny holds one tiny weight directory for the whole package run.
var tiny struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tiny.dir != "" {
		os.RemoveAll(tiny.dir)
	}
	os.Exit(code)
}

// tinyWeights returns a directory of seeded random tiny weights.
func tinyWeights(t *testing.T) string {
	t.Helper()
	tiny.once.Do(func() {
		tiny.dir, tiny.err = os.MkdirTemp("", "musetalk-tiny-")
		if tiny.err == nil {
			tiny.err = modeldir.WriteTiny(tiny.dir, 1)
		}
	})
	if tiny.err != nil {
		t.Fatal(tiny.err)
	}
	return tiny.dir
}

func needFFmpeg(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, "%s not installed (Debian package ffmpeg)", tool)
		}
	}
}

// writePNG writes a w×h textured RGB image.
func writePNG(t *testing.T, path string, w, h int) {
	t.Helper()
	im := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			im.Set(x, y, color.RGBA{uint8(3*x + y), uint8(2*y + x), uint8(x * y), 255})
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := png.Encode(f, im); err != nil {
		t.Fatal(err)
	}
}

// writeWAV writes seconds of a 16 kHz mono 16-bit tone.
func writeWAV(t *testing.T, path string, seconds float64) {
	t.Helper()
	n := int(seconds * 16000)
	var b []byte
	le := binary.LittleEndian
	b = append(b, "RIFF"...)
	b = le.AppendUint32(b, uint32(36+2*n))
	b = append(b, "WAVEfmt "...)
	b = le.AppendUint32(b, 16)
	b = le.AppendUint16(b, 1)
	b = le.AppendUint16(b, 1)
	b = le.AppendUint32(b, 16000)
	b = le.AppendUint32(b, 32000)
	b = le.AppendUint16(b, 2)
	b = le.AppendUint16(b, 16)
	b = append(b, "data"...)
	b = le.AppendUint32(b, uint32(2*n))
	for i := range n {
		v := int16(8000 * math.Sin(2*math.Pi*220*float64(i)/16000) * (1 + math.Sin(float64(i)/800)) / 2)
		b = le.AppendUint16(b, uint16(v))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

type renderBundle struct {
	r      *Renderer
	dir    string
	avatar string
	audio  string
}

// setupRender makes a Renderer on tiny weights with its own cache, a
// 96×96 still avatar and 0.5 s of audio.
func setupRender(t *testing.T) *renderBundle {
	t.Helper()
	needFFmpeg(t)
	dir := t.TempDir()
	r, err := New(context.Background(), Options{
		WeightsDir: tinyWeights(t), CacheDir: filepath.Join(dir, "cache"), NewBackend: cpuBackend(2), Preset: "ultrafast",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	b := &renderBundle{r: r, dir: dir, avatar: filepath.Join(dir, "face.png"), audio: filepath.Join(dir, "speech.wav")}
	writePNG(t, b.avatar, 96, 96)
	writeWAV(t, b.audio, 0.5)
	return b
}

func (b *renderBundle) request(out string) Request {
	return Request{AvatarPath: b.avatar, AudioPath: b.audio, OutPath: filepath.Join(b.dir, out),
		Params: protocol.JobParams{FaceBox: []int{24, 20, 72, 76}, BatchSize: 4}}
}

// progressLog records progress and checks its contract as it comes.
type progressLog struct {
	mu     sync.Mutex
	stages []string
	last   map[string]protocol.Progress
	bad    []string
}

func (l *progressLog) add(p protocol.Progress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]protocol.Progress{}
	}
	if len(l.stages) == 0 || l.stages[len(l.stages)-1] != p.Stage {
		if slices.Contains(l.stages, p.Stage) {
			l.bad = append(l.bad, "stage "+p.Stage+" came back")
		}
		l.stages = append(l.stages, p.Stage)
	}
	if prev, ok := l.last[p.Stage]; ok && p.FramesDone < prev.FramesDone {
		l.bad = append(l.bad, fmt.Sprintf("%s went back from %d to %d", p.Stage, prev.FramesDone, p.FramesDone))
	}
	if p.FramesDone > p.FramesTotal && p.FramesTotal > 0 {
		l.bad = append(l.bad, fmt.Sprintf("%s: %d of %d", p.Stage, p.FramesDone, p.FramesTotal))
	}
	l.last[p.Stage] = p
}

func TestRenderStill(t *testing.T) {
	t.Parallel()
	b := setupRender(t)
	var pl progressLog
	req := b.request("out.mp4")
	res, err := b.r.render(context.Background(), req, pl.add)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := FrameCount(8000, res.FPS)
	if res.Frames != want || res.FPS.RatString() != "25" || res.AvatarCached || res.FaceFrames != 1 {
		t.Errorf("result %+v: want %d frames at 25 fps, a fresh avatar with one face frame", res, want)
	}
	if len(pl.bad) > 0 {
		t.Errorf("progress: %v", pl.bad)
	}
	if wantStages := []string{StageLoad, StagePrepare, StageFeatures, StageGenerate, StageEncode}; !slices.Equal(pl.stages, wantStages) {
		t.Errorf("stages %v, want %v", pl.stages, wantStages)
	}
	if g := pl.last[StageGenerate]; g.FramesDone != want || g.FramesTotal != want {
		t.Errorf("last generate progress %+v, want %d/%d", g, want, want)
	}
	// The result has the mode os.Create gives (0666 less the umask), as
	// `musetalk submit`'s download does, not os.CreateTemp's 0600.
	if got, want := fileMode(t, req.OutPath), createdMode(t, filepath.Dir(req.OutPath)); got != want {
		t.Errorf("output mode %v, want %v", got, want)
	}
	ff := media.FFmpeg{}
	info, err := ff.Probe(context.Background(), req.OutPath)
	if err != nil {
		t.Fatal(err)
	}
	if info.Video == nil || info.Audio == nil || info.Video.Width != 96 || info.Video.Height != 96 {
		t.Fatalf("output %+v: want 96x96 video with audio", info)
	}
	rd, err := ff.DecodeFrames(context.Background(), req.OutPath, media.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	n := 0
	for {
		if _, err := rd.Next(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != want {
		t.Errorf("output has %d frames, want %d", n, want)
	}

	// The same avatar again comes from the cache; Stats say so and account
	// for every stage.
	var st Stats
	req2 := b.request("again.mp4")
	req2.Stats = &st
	if err := b.r.Render(context.Background(), req2, nil); err != nil {
		t.Fatal(err)
	}
	if !st.AvatarCached || st.AvatarFrames != 1 || st.Frames != want || st.FaceFrames != want {
		t.Errorf("second render stats %+v: want a cached 1-frame avatar, %d frames all with a face", st, want)
	}
	for name, d := range map[string]time.Duration{"Prepare": st.Prepare, "Features": st.Features, "UNet": st.UNet,
		"VAEDecode": st.VAEDecode, "Blend": st.Blend, "Encode": st.Encode} {
		if d <= 0 || d > st.Wall {
			t.Errorf("Stats.%s = %v, want within (0, Wall %v]", name, d, st.Wall)
		}
	}
	res2, err := b.r.render(context.Background(), b.request("again2.mp4"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res2.AvatarCached || res2.AvatarKey != res.AvatarKey {
		t.Errorf("second render: cached %v key %s, want the first render's entry %s", res2.AvatarCached, res2.AvatarKey, res.AvatarKey)
	}
	if keys := b.r.CachedAvatars(); !slices.Equal(keys, []string{res.AvatarKey}) {
		t.Errorf("cache keys %v, want [%s]", keys, res.AvatarKey)
	}
}

func TestRenderCancelLeavesNoFile(t *testing.T) {
	t.Parallel()
	b := setupRender(t)
	writeWAV(t, b.audio, 1.5)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := b.request("out.mp4")
	req.Params.BatchSize = 2
	req.Params.ParsingMode = "raw" // quicker to prepare than jaw
	var pl progressLog
	err := b.r.Render(ctx, req, func(p protocol.Progress) {
		pl.add(p)
		if p.Stage == StageGenerate && p.FramesDone >= 2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Render: %v, want context.Canceled", err)
	}
	if g := pl.last[StageGenerate]; g.FramesDone > 6 {
		t.Errorf("generation went on to %d frames after the cancel at 2 (batches of 2)", g.FramesDone)
	}
	ents, err := os.ReadDir(b.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".mp4") {
			t.Errorf("cancelled render left %s", e.Name())
		}
	}
}

func TestRenderInputErrors(t *testing.T) {
	t.Parallel()
	b := setupRender(t)
	// A flat grey picture: a face box on it covers one colour.
	flat := filepath.Join(b.dir, "flat.png")
	im := image.NewRGBA(image.Rect(0, 0, 64, 64))
	draw.Draw(im, im.Bounds(), image.NewUniform(color.RGBA{128, 128, 128, 255}), image.Point{}, draw.Src)
	var buf bytes.Buffer
	if err := png.Encode(&buf, im); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(flat, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Request)
		input string
		says  string
	}{
		{"audio without sound", func(r *Request) { r.AudioPath = b.avatar }, "audio", ""},
		{"missing audio", func(r *Request) { r.AudioPath = filepath.Join(b.dir, "nope.wav") }, "audio", ""},
		{"garbage avatar", func(r *Request) { r.AvatarPath = b.audio }, "avatar", ""},
		{"missing avatar", func(r *Request) { r.AvatarPath = filepath.Join(b.dir, "nope.png") }, "avatar", ""},
		{"face box outside", func(r *Request) { r.Params.FaceBox = []int{50, 50, 120, 90} }, "params.face_box", ""},
		{"bad version", func(r *Request) { r.Params.Version = "v3" }, "params", ""},
		{"bad fps", func(r *Request) { r.Params.FPS = "-3" }, "params", ""},
		{"preview engine", func(r *Request) { r.Params.Engine = "preview" }, "params.engine", ""},
		// The face box given is the problem, not a missing one.
		{"flat face box", func(r *Request) { r.AvatarPath, r.Params.FaceBox = flat, []int{8, 8, 56, 56} }, "params.face_box", "flat colour"},
	} {
		req := b.request("out.mp4")
		tc.edit(&req)
		err := b.r.Render(context.Background(), req, nil)
		var ie *InputError
		if !errors.As(err, &ie) || ie.Input != tc.input || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: error %v, want an InputError naming %s (saying %q)", tc.name, err, tc.input, tc.says)
		}
		// A bad parameter carries its field, so a CLI can name its flag.
		var pe *protocol.ParamError
		if field, ok := strings.CutPrefix(tc.input, "params."); ok && (!errors.As(err, &pe) || pe.Field != field) {
			t.Errorf("%s: error %v carries no ParamError for %s", tc.name, err, field)
		}
		if _, serr := os.Stat(req.OutPath); serr == nil {
			t.Errorf("%s: output written", tc.name)
		}
	}
}

func TestRenderMissingWeights(t *testing.T) {
	t.Parallel()
	needFFmpeg(t)
	dir := t.TempDir()
	r, err := New(context.Background(), Options{WeightsDir: filepath.Join(dir, "weights"), CacheDir: filepath.Join(dir, "cache"), NewBackend: cpuBackend(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	writePNG(t, filepath.Join(dir, "a.png"), 32, 32)
	writeWAV(t, filepath.Join(dir, "a.wav"), 0.2)
	err = r.Render(context.Background(), Request{AvatarPath: filepath.Join(dir, "a.png"), AudioPath: filepath.Join(dir, "a.wav"),
		OutPath: filepath.Join(dir, "o.mp4")}, nil)
	var mw *MissingWeightsError
	if !errors.As(err, &mw) || !strings.Contains(err.Error(), "musetalk weights fetch") || !strings.Contains(err.Error(), "musetalkV15/") {
		t.Fatalf("Render without weights: %v, want a MissingWeightsError naming the files and the fetch command", err)
	}
}

func TestEngineWithoutWeights(t *testing.T) {
	t.Parallel()
	needFFmpeg(t)
	dir := t.TempDir()
	e := NewEngine(EngineOptions{Options: Options{WeightsDir: filepath.Join(dir, "w"), CacheDir: filepath.Join(dir, "c"), NewBackend: cpuBackend(1),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}})
	defer e.Close()
	res, err := e.Check(context.Background())
	var mw *MissingWeightsError
	if !errors.As(err, &mw) || !strings.Contains(err.Error(), "musetalk weights fetch") {
		t.Fatalf("Check without weights: %v, want a MissingWeightsError with the fetch command (the worker must not claim)", err)
	}
	if res.WeightsPresent || !strings.HasPrefix(res.Device, "cpu/") {
		t.Errorf("Check: %+v, want weights absent on cpu/<isa>", res)
	}
	writePNG(t, filepath.Join(dir, "a.png"), 32, 32)
	writeWAV(t, filepath.Join(dir, "a.wav"), 0.2)
	err = e.Run(context.Background(), &engine.Job{ID: "j", AvatarPath: filepath.Join(dir, "a.png"), AudioPath: filepath.Join(dir, "a.wav"),
		OutputPath: filepath.Join(dir, "o.mp4")}, nil)
	if retryable, classified := engine.Classify(err); err == nil || !retryable || !classified {
		t.Fatalf("Run without weights: %v, want a retryable error (another worker may have the weights)", err)
	}
	if !strings.Contains(err.Error(), "musetalk weights fetch") {
		t.Errorf("Run without weights: %v, want the fetch command", err)
	}
}

func TestEngineRunsAndReportsAvatars(t *testing.T) {
	t.Parallel()
	needFFmpeg(t)
	dir := t.TempDir()
	e := NewEngine(EngineOptions{Options: Options{WeightsDir: tinyWeights(t), CacheDir: filepath.Join(dir, "c"), NewBackend: cpuBackend(2), Preset: "ultrafast",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}})
	defer e.Close()
	res, err := e.Check(context.Background())
	if err != nil || !res.WeightsPresent {
		t.Fatalf("Check: %+v, %v", res, err)
	}
	if got := e.CachedAvatars(); len(got) != 0 {
		t.Errorf("fresh cache lists %v", got)
	}
	writePNG(t, filepath.Join(dir, "a.png"), 64, 64)
	writeWAV(t, filepath.Join(dir, "a.wav"), 0.3)
	job := &engine.Job{ID: "j", AvatarID: "avatar-1", AvatarPath: filepath.Join(dir, "a.png"), AudioPath: filepath.Join(dir, "a.wav"),
		OutputPath: filepath.Join(dir, "o.mp4"), Params: protocol.JobParams{FaceBox: []int{16, 16, 48, 48}, ParsingMode: "raw"}}
	if err := e.Run(context.Background(), job, nil); err != nil {
		t.Fatal(err)
	}
	if got := e.CachedAvatars(); !slices.Equal(got, []string{"avatar-1"}) {
		t.Errorf("CachedAvatars %v, want [avatar-1]", got)
	}
	// A restarted engine over the same cache reports it before any job.
	e2 := NewEngine(EngineOptions{Options: Options{WeightsDir: tinyWeights(t), CacheDir: filepath.Join(dir, "c"), NewBackend: cpuBackend(1),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}})
	defer e2.Close()
	if _, err := e2.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e2.CachedAvatars(); !slices.Equal(got, []string{"avatar-1"}) {
		t.Errorf("restarted engine: CachedAvatars %v, want [avatar-1]", got)
	}
	// Two engines sharing the cache directory (workers on one host) each
	// add an avatar: a third one started later sees all of them.
	for i, eng := range []*Engine{e, e2} {
		name := fmt.Sprintf("b%d", i)
		writePNG(t, filepath.Join(dir, name+".png"), 64+8*(i+1), 64)
		j := *job
		j.ID, j.AvatarID, j.AvatarPath, j.OutputPath = "j"+name, "avatar-"+name, filepath.Join(dir, name+".png"), filepath.Join(dir, name+".mp4")
		if err := eng.Run(context.Background(), &j, nil); err != nil {
			t.Fatal(err)
		}
	}
	e3 := NewEngine(EngineOptions{Options: Options{WeightsDir: tinyWeights(t), CacheDir: filepath.Join(dir, "c"), NewBackend: cpuBackend(1),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}})
	defer e3.Close()
	if _, err := e3.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := e3.CachedAvatars()
	slices.Sort(got)
	if want := []string{"avatar-1", "avatar-b0", "avatar-b1"}; !slices.Equal(got, want) {
		t.Errorf("an engine after two sharing the cache: CachedAvatars %v, want %v", got, want)
	}
	job.AudioPath = job.AvatarPath
	err = e.Run(context.Background(), job, nil)
	if retryable, classified := engine.Classify(err); err == nil || retryable || !classified || !strings.Contains(err.Error(), "audio") {
		t.Errorf("Run with an image as audio: %v, want a permanent error naming the audio", err)
	}
}

// TestRealNetworksBlendIntoTheMouth runs the generation loop with the tiny
// networks and real audio features through a full mask: the lower face
// box changes, everything else stays, and the result is deterministic.
func TestRealNetworksBlendIntoTheMouth(t *testing.T) {
	t.Parallel()
	b := setupRender(t)
	l, err := b.r.load(context.Background(), DefaultVersion)
	if err != nil {
		t.Fatal(err)
	}
	samples, err := b.r.opts.FFmpeg.DecodeAudio(context.Background(), b.audio)
	if err != nil {
		t.Fatal(err)
	}
	feats, err := computeFeatures(context.Background(), l.m.Whisper, l.logMel, samples, big.NewRat(25, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	src, pix := testAvatar(40, 36, 2)
	for i := range src {
		src[i].latent = make([]float32, l.net.latentLen())
		for j := range src[i].latent {
			src[i].latent[j] = float32(math.Sin(float64(j*(i+3)))) * 2
		}
		src[i].mask = media.NewImage8(src[i].mask.W, src[i].mask.H, 1)
		for p := range src[i].mask.Pix {
			src[i].mask.Pix[p] = 255
		}
	}
	run := func() [][]uint8 {
		var out [][]uint8
		g := &generation{src: src, pixels: func(i int) (*media.Image8, error) { return pix[i], nil }, audio: feats, net: l.net,
			frames: feats.frames, batch: 5, sink: sinkFunc(func(rgb []uint8) error { out = append(out, slices.Clone(rgb)); return nil })}
		if err := g.run(context.Background()); err != nil {
			t.Fatal(err)
		}
		return out
	}
	first, second := run(), run()
	if len(first) != feats.frames {
		t.Fatalf("%d frames, want %d", len(first), feats.frames)
	}
	for i, rgb := range first {
		if !slices.Equal(rgb, second[i]) {
			t.Fatalf("frame %d differs between two runs", i)
		}
		k := cycleIndex(i, 2)
		want := pix[k].SwapRB().Pix
		f := src[k].face
		changed := 0
		for y := range 36 {
			for x := range 40 {
				p := (y*40 + x) * 3
				inFace := x >= f[0] && x < f[2] && y >= f[1] && y < f[3]
				same := slices.Equal(rgb[p:p+3], want[p:p+3])
				if !inFace && !same {
					t.Fatalf("frame %d: pixel (%d,%d) outside the face box changed", i, x, y)
				}
				if inFace && !same {
					changed++
				}
			}
		}
		if changed < (f[2]-f[0])*(f[3]-f[1])/2 {
			t.Errorf("frame %d: only %d face-box pixels show the generated face", i, changed)
		}
	}
}

// TestRenderWithDetector runs the face detectors (random tiny weights, so
// S3FD's answer is arbitrary; the tiny DWPose draws a fixed face) instead
// of a face box, DWPose's landmark box (the default) and S3FD's box: the
// render either succeeds or says that the avatar has no face, and the
// stats count each detector's frames.
func TestRenderWithDetector(t *testing.T) {
	t.Parallel()
	for _, det := range []string{"", "s3fd"} {
		b := setupRender(t)
		req := b.request("out.mp4")
		req.Params.FaceBox = nil
		req.Params.ParsingMode = "raw"
		req.Params.FaceDetector = det
		var st Stats
		req.Stats = &st
		res, err := b.r.render(context.Background(), req, nil)
		var ie *InputError
		switch {
		case err == nil:
			if res.FaceFrames != 1 {
				t.Errorf("%q: render succeeded with %d face frames", det, res.FaceFrames)
			}
		case errors.As(err, &ie) && ie.Input == "avatar" && strings.Contains(err.Error(), "no face found"):
			if _, serr := os.Stat(req.OutPath); serr == nil {
				t.Error("output written for an avatar without a face")
			}
		default:
			t.Fatalf("render with the detector %q: %v", det, err)
		}
		// DWPose runs where S3FD found a face, and only with dwpose.
		wantDW := 0
		if det == "" && err == nil {
			wantDW = 1
		}
		if st.S3FDFrames != 1 || st.DWPoseFrames != wantDW || (wantDW > 0) != (st.DWPose > 0) {
			t.Errorf("%q: S3FD on %d frames, DWPose on %d (%v); want 1 and %d", det, st.S3FDFrames, st.DWPoseFrames, st.DWPose, wantDW)
		}
		t.Logf("detector %q on random weights: %v", det, err)
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// createdMode is the mode os.Create gives a new file in dir.
func createdMode(t *testing.T, dir string) os.FileMode {
	t.Helper()
	f, err := os.CreateTemp(dir, "mode-ref-")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.Remove(f.Name())
	ref, err := os.Create(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	ref.Close()
	defer os.Remove(ref.Name())
	return fileMode(t, ref.Name())
}
