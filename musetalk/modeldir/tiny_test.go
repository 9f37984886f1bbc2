package modeldir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"image/png"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/avatargen/musetalk/internal/goldendir"
	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/avatar"
	"github.com/avatargen/musetalk/musetalk/face"
	"github.com/avatargen/musetalk/musetalk/model"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// tinyDir writes one tiny directory per test binary and shares it; tests
// must not modify it (copy it with copyDir first).
var tinyDir = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "modeldir-tiny-")
	if err != nil {
		return "", err
	}
	return dir, WriteTiny(dir, 7)
})

func sharedTiny(t *testing.T) Dir {
	t.Helper()
	dir, err := tinyDir()
	if err != nil {
		t.Fatalf("WriteTiny: %v", err)
	}
	return Dir(dir)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if dir, err := tinyDir(); err == nil {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// linkCopy returns a new directory holding hard links to the shared tiny
// directory's files (copies where links fail). Tests may remove, rename or
// atomically replace its files, never write into them.
func linkCopy(t *testing.T) string {
	t.Helper()
	src := string(sharedTiny(t))
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if os.Link(p, target) == nil {
			return nil
		}
		data, err := os.ReadFile(p)
		if err == nil {
			err = os.WriteFile(target, data, 0o644)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func newBackend(t *testing.T) kernels.Backend {
	t.Helper()
	b, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func randomInput(seed uint64, n int, lo, hi float32) []float32 {
	rng := rand.New(rand.NewPCG(seed, 99))
	out := make([]float32, n)
	for i := range out {
		out[i] = lo + (hi-lo)*rng.Float32()
	}
	return out
}

func download(t *testing.T, b kernels.Backend, x *kernels.Tensor) []float32 {
	t.Helper()
	out := make([]float32, x.Len())
	if err := b.Download(out, x); err != nil {
		t.Fatal(err)
	}
	b.Free(x)
	return out
}

// checkFinite fails on NaN or Inf and on an all-constant output.
func checkFinite(t *testing.T, what string, v []float32) {
	t.Helper()
	if len(v) == 0 {
		t.Fatalf("%s: empty output", what)
	}
	lo, hi := v[0], v[0]
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("%s: element %d is %v", what, i, x)
		}
		lo, hi = min(lo, x), max(hi, x)
	}
	if lo == hi {
		t.Fatalf("%s: every element is %v", what, lo)
	}
}

func TestTinyLoadsAndRuns(t *testing.T) {
	d := sharedTiny(t)
	if err := d.Check(V15, V1); err != nil {
		t.Fatalf("Check: %v", err)
	}
	b := newBackend(t)
	m1, err := d.Load(context.Background(), b, V1)
	if err != nil {
		t.Fatalf("Load v1: %v", err)
	}
	m1.Close()
	m, err := d.Load(context.Background(), b, V15)
	if err != nil {
		t.Fatalf("Load v15: %v", err)
	}
	defer m.Close()
	if m.Version != V15 || len(m.ID) != 32 || m1.ID == m.ID {
		t.Errorf("Load: version %q, ID %q (v1's %q)", m.Version, m.ID, m1.ID)
	}

	// A 30 s window through the Whisper encoder.
	wc := m.Whisper.Config()
	if wc.NumMelBins != 80 || wc.MelFrames() != 3000 {
		t.Fatalf("tiny whisper: %d mel bins, %d frames; want 80 and 3000", wc.NumMelBins, wc.MelFrames())
	}
	mel := kernels.Upload(b, randomInput(1, 80*3000, -1, 1), 1, 80, 3000)
	states, err := m.Whisper.Forward(mel)
	b.Free(mel)
	if err != nil {
		t.Fatalf("whisper: %v", err)
	}
	if len(states) != wc.HiddenStates() {
		t.Fatalf("whisper: %d hidden states, want %d", len(states), wc.HiddenStates())
	}
	for _, s := range states {
		if got := s.Shape(); got[1] != 1500 || got[2] != wc.DModel {
			t.Fatalf("whisper hidden state %v", got)
		}
		checkFinite(t, "whisper", download(t, b, s))
	}

	// 256×256 crops → 32×32 latents → UNet → decoded 256×256 faces.
	const n = 2
	img := kernels.Upload(b, randomInput(2, n*3*256*256, -1, 1), n, 3, 256, 256)
	lat, err := m.VAE.Encode(img)
	b.Free(img)
	if err != nil {
		t.Fatalf("vae encode: %v", err)
	}
	if got := lat.Shape(); got[1] != 4 || got[2] != 32 || got[3] != 32 {
		t.Fatalf("latents %v, want [%d 4 32 32]", got, n)
	}
	latents := download(t, b, lat)
	checkFinite(t, "vae encode", latents)
	uc := m.UNet.Config()
	if uc.InChannels != 8 || uc.OutChannels != 4 || uc.CrossAttentionDim[0] != wc.DModel {
		t.Fatalf("tiny unet: in %d, out %d, cross-attention %v", uc.InChannels, uc.OutChannels, uc.CrossAttentionDim)
	}
	x8 := make([]float32, 0, 2*len(latents))
	for i := range n {
		one := latents[i*4*32*32 : (i+1)*4*32*32]
		x8 = append(append(x8, one...), one...)
	}
	sample := kernels.Upload(b, x8, n, 8, 32, 32)
	tokens := 10 * wc.HiddenStates()
	cond := kernels.Upload(b, randomInput(3, n*tokens*wc.DModel, -1, 1), n, tokens, wc.DModel)
	pred, err := m.UNet.Forward(sample, []float32{0}, cond)
	b.Free(sample)
	b.Free(cond)
	if err != nil {
		t.Fatalf("unet: %v", err)
	}
	z := download(t, b, pred)
	checkFinite(t, "unet", z)
	zt := kernels.Upload(b, z, n, 4, 32, 32)
	out, err := m.VAE.Decode(zt)
	b.Free(zt)
	if err != nil {
		t.Fatalf("vae decode: %v", err)
	}
	if got := out.Shape(); got[1] != 3 || got[2] != 256 || got[3] != 256 {
		t.Fatalf("decoded %v", got)
	}
	checkFinite(t, "vae decode", download(t, b, out))

	// S3FD on a small frame, BiSeNet on a small crop.
	frame := kernels.Upload(b, randomInput(4, 3*64*96, -123, 151), 1, 3, 64, 96)
	heads, err := m.S3FD.Forward(frame)
	b.Free(frame)
	if err != nil {
		t.Fatalf("s3fd: %v", err)
	}
	for i, l := range heads.Levels {
		if l.Stride != 4<<i || len(l.Cls) != 2*l.H*l.W || len(l.Reg) != 4*l.H*l.W {
			t.Fatalf("s3fd level %d: stride %d, %d×%d, %d cls, %d reg values", i, l.Stride, l.H, l.W, len(l.Cls), len(l.Reg))
		}
	}
	checkFinite(t, "s3fd level 0 classes", heads.Levels[0].Cls)
	face := kernels.Upload(b, randomInput(5, 3*64*64, -2, 2), 1, 3, 64, 64)
	logits, err := m.BiSeNet.Forward(face)
	b.Free(face)
	if err != nil {
		t.Fatalf("bisenet: %v", err)
	}
	if got := logits.Shape(); got[1] != 19 || got[2] != 64 || got[3] != 64 {
		t.Fatalf("bisenet logits %v", got)
	}
	checkFinite(t, "bisenet", download(t, b, logits))
}

func TestWriteTinyIsSeeded(t *testing.T) {
	d := sharedTiny(t)
	again := t.TempDir()
	if err := WriteTiny(again, 7); err != nil {
		t.Fatal(err)
	}
	files, err := Files(Versions()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		want, err := os.ReadFile(mustResolve(t, d, f))
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(mustResolve(t, Dir(again), f)); !bytes.Equal(got, want) {
			t.Errorf("%s differs between two writes with seed 7", f.Path)
		}
		if !f.Weights {
			continue
		}
		// Another seed draws other values.
		spec := TensorSpecFor(t, f)
		a, b := tinyTensor(f, spec, 7), tinyTensor(f, spec, 8)
		if slices.Equal(a, b) {
			t.Errorf("%s: tensor %s is the same for seeds 7 and 8", f.Path, spec.Name)
		}
	}
	idA, err := d.ID(V15)
	if err != nil {
		t.Fatal(err)
	}
	idB, err := Dir(again).ID(V15)
	if err != nil || idA != idB {
		t.Errorf("IDs of two writes with seed 7: %s and %s, %v", idA, idB, err)
	}
	// The two versions' UNets differ, so do their IDs.
	if id1, err := d.ID(V1); err != nil || id1 == idA {
		t.Errorf("ID(v1) = %s, %v; ID(v15) = %s", id1, err, idA)
	}
}

// TensorSpecFor returns the first tensor of f's network in the shared tiny
// directory.
func TensorSpecFor(t *testing.T, f File) model.TensorSpec {
	t.Helper()
	src, err := sharedTiny(t).Open(f.Kind, V15)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	info := src.r.Tensors()[0]
	return model.TensorSpec{Name: info.Name, Shape: info.Shape}
}

func mustResolve(t *testing.T, d Dir, f File) string {
	t.Helper()
	p, err := d.Resolve(f)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckNamesMissingFiles(t *testing.T) {
	dir := t.TempDir()
	err := Dir(dir).Check(V15, V1)
	var missing *MissingError
	if !errors.As(err, &missing) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Check on an empty dir: %v", err)
	}
	files, _ := Files(V15, V1)
	for _, f := range files {
		if !strings.Contains(err.Error(), f.Path) {
			t.Errorf("error does not name %s: %v", f.Path, err)
		}
	}
	if !strings.Contains(err.Error(), "musetalk weights fetch --dir "+dir+" --version v15,v1") {
		t.Errorf("error does not give the fetch command: %v", err)
	}
	if _, err := Dir(dir).Load(context.Background(), nil, V15); !errors.As(err, &missing) {
		t.Errorf("Load on an empty dir: %v", err)
	}
	if err := Dir(dir).Check("v2"); err == nil || !strings.Contains(err.Error(), `"v2"`) {
		t.Errorf("Check(v2): %v", err)
	}
}

func TestCheckOneMissingFile(t *testing.T) {
	dir := linkCopy(t)
	os.Remove(filepath.Join(dir, "whisper", "pytorch_model.safetensors"))
	err := Dir(dir).Check(V15)
	var missing *MissingError
	if !errors.As(err, &missing) || len(missing.Files) != 1 || missing.Files[0] != "whisper/pytorch_model.bin" {
		t.Fatalf("Check: %v", err)
	}
	// The official name serves as well as the safetensors one.
	if err := os.Rename(filepath.Join(dir, "musetalk", "pytorch_model.safetensors"), filepath.Join(dir, "whisper", "pytorch_model.bin")); err != nil {
		t.Fatal(err)
	}
	if err := Dir(dir).Check(V15); err != nil {
		t.Errorf("Check with whisper/pytorch_model.bin: %v", err)
	}
	if err := Dir(dir).Check(V1); err == nil || !strings.Contains(err.Error(), "musetalk/pytorch_model.bin") {
		t.Errorf("Check(v1) without the v1 UNet: %v", err)
	}
}

func TestLoadNamesBadTensor(t *testing.T) {
	dir := linkCopy(t)
	// The v1 UNet's file in the VAE's place: Load names the file and a
	// tensor the VAE lacks.
	vae := filepath.Join(dir, "sd-vae", "diffusion_pytorch_model.safetensors")
	if err := os.Rename(filepath.Join(dir, "musetalk", "pytorch_model.safetensors"), vae); err != nil {
		t.Fatal(err)
	}
	_, err := Dir(dir).Load(context.Background(), newBackend(t), V15)
	if err == nil || !strings.Contains(err.Error(), vae) || !strings.Contains(err.Error(), "encoder.conv_in.weight") {
		t.Fatalf("Load with a UNet as VAE: %v", err)
	}
}

func TestLoadStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := sharedTiny(t).Load(ctx, newBackend(t), V15); !errors.Is(err, context.Canceled) {
		t.Fatalf("Load with a cancelled context: %v", err)
	}
}

func TestResolvePrefersSafetensors(t *testing.T) {
	dir := t.TempDir()
	f := File{Path: "musetalkV15/unet.pth", Weights: true}
	if _, err := Dir(dir).Resolve(f); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Resolve in an empty dir: %v", err)
	}
	os.MkdirAll(filepath.Join(dir, "musetalkV15"), 0o755)
	pth := filepath.Join(dir, "musetalkV15", "unet.pth")
	os.WriteFile(pth, []byte("x"), 0o644)
	if p, err := Dir(dir).Resolve(f); err != nil || p != pth {
		t.Fatalf("Resolve = %s, %v; want %s", p, err, pth)
	}
	st := filepath.Join(dir, "musetalkV15", "unet.safetensors")
	os.WriteFile(st, []byte("x"), 0o644)
	if p, err := Dir(dir).Resolve(f); err != nil || p != st {
		t.Fatalf("Resolve = %s, %v; want %s", p, err, st)
	}
	// A config has no safetensors form.
	cfg := File{Path: "musetalkV15/musetalk.json"}
	if cfg.SafetensorsPath() != "" {
		t.Errorf("config SafetensorsPath = %q", cfg.SafetensorsPath())
	}
	// A directory in a file's place is an error, not "missing".
	os.MkdirAll(filepath.Join(dir, "musetalkV15", "musetalk.json"), 0o755)
	if _, err := Dir(dir).Resolve(cfg); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Resolve of a directory: %v", err)
	}
}

func TestIDFollowsContent(t *testing.T) {
	dir := linkCopy(t)
	id1, err := Dir(dir).ID(V15)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "sd-vae", "config.json")
	data, _ := os.ReadFile(cfg)
	if err := writeFileAtomic(cfg, bytes.Replace(data, []byte("0.18215"), []byte("0.18216"), 1)); err != nil {
		t.Fatal(err)
	}
	id2, err := Dir(dir).ID(V15)
	if err != nil || id2 == id1 {
		t.Fatalf("ID after editing the VAE config: %s, %v (before %s)", id2, err, id1)
	}
}

func TestDefault(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	home := func() (string, error) { return "/home/u", nil }
	if got := defaultDir(getenv, home); got != filepath.Join("/home/u", ".cache", "musetalk", "weights") {
		t.Errorf("default = %s", got)
	}
	env["XDG_CACHE_HOME"] = "/xdg"
	if got := defaultDir(getenv, home); got != filepath.Join("/xdg", "musetalk", "weights") {
		t.Errorf("with XDG_CACHE_HOME = %s", got)
	}
	env["MUSETALK_WEIGHTS"] = "/w"
	if got := defaultDir(getenv, home); got != "/w" {
		t.Errorf("with MUSETALK_WEIGHTS = %s", got)
	}
}

func TestFilesLayout(t *testing.T) {
	files, err := Files(V15, V1, V15)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		if seen[f.Path] {
			t.Errorf("%s listed twice", f.Path)
		}
		seen[f.Path] = true
		if (f.Repo == "") == (f.URL == "") {
			t.Errorf("%s: repo %q, url %q: want exactly one source", f.Path, f.Repo, f.URL)
		}
		// A pinned digest of a file whose name carries one must agree.
		if f.Kind == weights.KindS3FD && (!strings.HasPrefix(f.SHA256, "619a316812") || len(f.SHA256) != 64) {
			t.Errorf("%s: pinned sha256 %q", f.Path, f.SHA256)
		}
	}
	for _, p := range []string{"musetalk/pytorch_model.bin", "musetalkV15/unet.pth", "sd-vae/config.json",
		"whisper/preprocessor_config.json", "face-parse-bisent/79999_iter.pth", "s3fd/s3fd-619a316812.pth", "dwpose/dw-ll_ucoco_384.pth"} {
		if !seen[p] {
			t.Errorf("layout lacks %s", p)
		}
	}
	if len(files) != 12 {
		t.Errorf("%d files for both versions, want 12", len(files))
	}
}

// BenchmarkTinyGenerate times one batch of 4 through the tiny UNet and VAE
// decoder at MuseTalk's shapes (32×32 latents → 256×256 faces): the cost of
// a generation step in tests that use tiny weights.
func BenchmarkTinyGenerate(b *testing.B) {
	dir, err := tinyDir()
	if err != nil {
		b.Fatal(err)
	}
	be, err := cpu.New(cpu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	m, err := Dir(dir).Load(context.Background(), be, V15)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	const n = 4
	dim := m.Whisper.Config().DModel
	tokens := 10 * m.Whisper.Config().HiddenStates()
	sample := kernels.Upload(be, randomInput(1, n*8*32*32, -1, 1), n, 8, 32, 32)
	cond := kernels.Upload(be, randomInput(2, n*tokens*dim, -1, 1), n, tokens, dim)
	b.ResetTimer()
	for range b.N {
		pred, err := m.UNet.Forward(sample, []float32{0}, cond)
		if err != nil {
			b.Fatal(err)
		}
		img, err := m.VAE.Decode(pred)
		be.Free(pred)
		if err != nil {
			b.Fatal(err)
		}
		if err := be.Sync(); err != nil {
			b.Fatal(err)
		}
		be.Free(img)
	}
}

// TestFullSizeConfigs checks that WriteFullSize's configs are the real
// networks' (writing the 1.9 GB of weights is left to the benchmark).
func TestFullSizeConfigs(t *testing.T) {
	configs, err := fullSizeConfigs()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for path, v := range configs {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeFileAtomic(filepath.Join(dir, filepath.FromSlash(path)), data); err != nil {
			t.Fatal(err)
		}
	}
	d := Dir(dir)
	u, err := d.UNetConfig(V15)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := model.UNetSpec(u)
	if err != nil {
		t.Fatal(err)
	}
	if got := model.SpecParams(spec); got != 849_947_844 {
		t.Errorf("full-size UNet has %d parameters, want 849,947,844", got)
	}
	v, err := d.VAEConfig()
	if err != nil {
		t.Fatal(err)
	}
	vspec, err := model.VAESpec(v)
	if err != nil {
		t.Fatal(err)
	}
	if got := model.SpecParams(vspec); got != 83_653_863 {
		t.Errorf("full-size VAE has %d parameters, want 83,653,863", got)
	}
	w, err := d.WhisperConfig()
	if err != nil {
		t.Fatal(err)
	}
	if w != weights.DefaultWhisperConfig() {
		t.Errorf("full-size Whisper config %+v, want whisper-tiny's %+v", w, weights.DefaultWhisperConfig())
	}
}

// TestTinyParserMasksTheLowerFace runs the tiny BiSeNet as preparation
// does (the face crop through face.Parser, the class map through MuseTalk's
// raw and jaw masks and the blend mask's cut to the face box's lower half)
// on the astronaut photo, where the shared media have it, and on a drawn
// face: the mask must cover the mouth region (else a tiny render leaves
// every frame unchanged) and nothing above the crop's middle or outside
// the face box.
func TestTinyParserMasksTheLowerFace(t *testing.T) {
	d := sharedTiny(t)
	b := newBackend(t)
	m, err := d.Load(context.Background(), b, V15)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	parser := face.NewParser(m.BiSeNet, b)

	type picture struct {
		name string
		rgb  *media.Image8
		face media.Box // the face box, v1.5's extra margin included
	}
	pics := []picture{{"drawn", drawnFace(), media.Box{176, 120, 336, 330}}}
	if rgb := astronautRGB(t); rgb != nil {
		// e2e's --face-box, plus the default 10 px margin.
		pics = append(pics, picture{"astronaut", rgb, media.Box{168, 64, 280, 194}})
	}
	for _, pic := range pics {
		crop, _ := media.CropBox(pic.face, 1.5)
		classes, err := parser.Parse(context.Background(), pic.rgb.Crop(crop[0], crop[1], crop[2], crop[3]), face.ParseSize)
		if err != nil {
			t.Fatal(err)
		}
		skin := 0
		for _, c := range classes.Pix {
			if c == 1 {
				skin++
			}
		}
		t.Logf("%s: %.1f%% of the parse is skin", pic.name, 100*float64(skin)/float64(len(classes.Pix)))
		for _, mode := range []struct {
			name string
			mode media.ParsingMode
		}{{"raw", media.ParsingRaw}, {"jaw", media.ParsingJaw}} {
			pm, _ := media.ParsingMask(classes, mode.mode, avatar.DefaultCheekWidth, avatar.DefaultCheekWidth)
			// MuseTalk's realtime mask: rows from the crop's middle on,
			// blurred with a kernel of 0.1 of the crop's side.
			mask := media.BlendMask(pm, pic.face, crop, 0.5, 0.1)
			checkLowerFaceMask(t, fmt.Sprintf("%s, %s mask", pic.name, mode.name), mask, pic.face, crop)
		}
	}
}

// checkLowerFaceMask checks a crop-sized blend mask: on average at least
// half opaque over the face box's part below the crop's middle (the mouth
// region), fully opaque at the mouth, and zero above the crop's middle and
// outside the face box beyond the blur's reach.
func checkLowerFaceMask(t *testing.T, what string, mask *media.Image8, faceBox, crop media.Box) {
	t.Helper()
	k := media.BlurKSize(mask.W, 0.1)
	mid := mask.H / 2
	var lower, lowerN, opaque, leaks int
	for y := range mask.H {
		for x := range mask.W {
			v := int(mask.Pix[y*mask.W+x])
			fx, fy := x+crop[0], y+crop[1]
			inFace := fx >= faceBox[0] && fx < faceBox[2] && fy >= faceBox[1] && fy < faceBox[3]
			if inFace && y >= mid {
				lower += v
				lowerN++
			}
			if v == 255 {
				opaque++
			}
			near := fx >= faceBox[0]-k && fx < faceBox[2]+k && fy < faceBox[3]+k && y >= mid-k
			if v != 0 && !near {
				leaks++
			}
		}
	}
	mean := float64(lower) / float64(max(lowerN, 1)) / 255
	// The mouth: the face box's centre column, three quarters down.
	mx, my := (faceBox[0]+faceBox[2])/2-crop[0], faceBox[1]+3*(faceBox[3]-faceBox[1])/4-crop[1]
	t.Logf("%s: %.2f opaque on average in the face box's lower half, %.1f%% of the crop fully opaque",
		what, mean, 100*float64(opaque)/float64(len(mask.Pix)))
	if mean < 0.5 {
		t.Errorf("%s: the face box's lower half is %.2f opaque on average, want at least 0.5: a tiny render would not show the generated mouth", what, mean)
	}
	if v := mask.Pix[my*mask.W+mx]; v != 255 {
		t.Errorf("%s: the mask is %d at the mouth (%d,%d of the crop), want 255", what, v, mx, my)
	}
	if leaks > 0 {
		t.Errorf("%s: %d pixels above the crop's middle or outside the face box are in the mask", what, leaks)
	}
	if opaque > len(mask.Pix)/2 {
		t.Errorf("%s: %d of %d pixels fully opaque: the mask is not confined to the lower face", what, opaque, len(mask.Pix))
	}
}

// astronautRGB reads the shared astronaut photo (512×512), or returns nil
// where the shared media are absent.
func astronautRGB(t *testing.T) *media.Image8 {
	t.Helper()
	golden, err := goldendir.Dir()
	if err != nil {
		t.Logf("no shared media: %v", err)
		return nil
	}
	f, err := os.Open(filepath.Join(filepath.Dir(golden), "media", "astronaut.png"))
	if err != nil {
		t.Logf("no astronaut photo: %v", err)
		return nil
	}
	defer f.Close()
	im, err := png.Decode(f)
	if err != nil {
		t.Fatalf("decoding the astronaut photo: %v", err)
	}
	r := im.Bounds()
	out := media.NewImage8(r.Dx(), r.Dy(), 3)
	for y := range r.Dy() {
		for x := range r.Dx() {
			c := color.RGBAModel.Convert(im.At(r.Min.X+x, r.Min.Y+y)).(color.RGBA)
			copy(out.Pix[(y*out.W+x)*3:], []uint8{c.R, c.G, c.B})
		}
	}
	return out
}

// drawnFace is a 512×512 RGB cartoon face: a skin-coloured ellipse
// (centre 256,224, radii 80×100) with hair, eyes and a red mouth, on a
// blue-grey wall above a dark shirt.
func drawnFace() *media.Image8 {
	im := media.NewImage8(512, 512, 3)
	in := func(x, y int, cx, cy, rx, ry float64) bool {
		dx, dy := (float64(x)-cx)/rx, (float64(y)-cy)/ry
		return dx*dx+dy*dy <= 1
	}
	for y := range 512 {
		for x := range 512 {
			c := [3]uint8{120, 135, 150} // wall
			switch {
			case in(x, y, 256, 224, 80, 100):
				c = [3]uint8{224, 172, 140} // skin
				switch {
				case y < 160:
					c = [3]uint8{90, 60, 30} // hair
				case in(x, y, 226, 205, 12, 6) || in(x, y, 286, 205, 12, 6):
					c = [3]uint8{40, 30, 30} // eyes
				case in(x, y, 256, 280, 28, 9):
					c = [3]uint8{180, 60, 70} // mouth
				}
			case y > 340 && math.Abs(float64(x)-256) < 40:
				c = [3]uint8{210, 160, 130} // neck
			case y > 390:
				c = [3]uint8{40, 45, 60} // shirt
			}
			copy(im.Pix[(y*512+x)*3:], c[:])
		}
	}
	return im
}
