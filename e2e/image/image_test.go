// Package image_test builds the real worker image (deploy/image) from the
// locked Debian packages and freshly built musetalk binaries, loads it
// into the local Docker engine and runs it: the image the deploy files
// name, checked as a container. TestFleet (fleet_test.go) then runs the
// control plane and three workers from it on a private Docker network,
// as the deploy files describe them, through crashes, a network
// partition, a stop and Salad's probes. The images are built once, by
// whichever test asks first, and shared. It needs a Docker engine
// (`docker info`), apt (the packages are fetched with `apt-get download`
// into the user's cache, ~/.cache/musetalk/debs, or MUSETALK_DEBS_DIR)
// and the CUDA toolkit's cuda.h (for musetalk-cuda); without one it
// skips, and under CI it fails. -short skips it. About 4 minutes on 2
// cores for the image, most of it compressing layers, and 1 to 2 for the
// fleet; see e2e/README.md.
package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/deploy/image"
	"github.com/avatargen/musetalk/internal/goldendir"
	"github.com/avatargen/musetalk/internal/testenv"
)

// The tags the test loads and removes; never the deployed name. They
// carry the test process's id: several runs may share one Docker engine.
var (
	baseTag    = fmt.Sprintf("%s:base-%d", e2eRepo, os.Getpid())
	weightsTag = fmt.Sprintf("%s:tiny-weights-%d", e2eRepo, os.Getpid())
)

const e2eRepo = "musetalk-worker-e2e"

func TestWorkerImage(t *testing.T) {
	if testing.Short() {
		t.Skip("the image suite is skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	b := builtImages(t)
	img, digest := b.img, b.digest

	t.Run("reproducible", func(t *testing.T) {
		again, err := image.Build(ctx, b.opts)
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		if d, _ := again.Digest(); d.String() != digest {
			t.Errorf("a second build of the same inputs: %s, first %s", d, digest)
		}
	})

	t.Run("ca-bundle", func(t *testing.T) {
		layers, _ := img.Layers()
		b := fileInLayer(t, layers[0], "etc/ssl/certs/ca-certificates.crt")
		n := 0
		for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
			if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
				t.Fatalf("certificate %d: %v", n, err)
			}
			n++
		}
		if n < 100 {
			t.Errorf("the CA bundle holds %d certificates", n)
		}
	})

	t.Run("musetalk --help", func(t *testing.T) {
		out := docker(t, ctx, 0, "run", "--rm", baseTag, "musetalk", "--help")
		if !strings.Contains(out, "musetalk - MuseTalk lip-sync as a service") || !strings.Contains(out, "worker") {
			t.Errorf("musetalk --help:\n%s", out)
		}
	})
	t.Run("ffmpeg -version", func(t *testing.T) {
		for _, tool := range []string{"ffmpeg", "ffprobe"} {
			if out := docker(t, ctx, 0, "run", "--rm", baseTag, tool, "-version"); !strings.HasPrefix(out, tool+" version 5.1") {
				t.Errorf("%s -version:\n%s", tool, out)
			}
		}
	})
	t.Run("encode as the worker's user", func(t *testing.T) {
		// What the preview engine and the renderer do: H.264 and AAC into
		// a file under /tmp, as uid 1000.
		docker(t, ctx, 0, "run", "--rm", baseTag, "ffmpeg", "-hide_banner", "-loglevel", "error",
			"-f", "lavfi", "-i", "testsrc=duration=1:size=128x128:rate=25", "-f", "lavfi", "-i", "sine=duration=1",
			"-c:v", "libx264", "-c:a", "aac", "-shortest", "/tmp/out.mp4")
	})
	t.Run("no command runs the worker", func(t *testing.T) {
		out := docker(t, ctx, 1, "run", "--rm", baseTag)
		if !strings.Contains(out, "ORCHESTRATOR_BASE_URL: required") {
			t.Errorf("docker run IMAGE with no settings:\n%s", out)
		}
	})
	t.Run("health on 8000", func(t *testing.T) {
		name := fmt.Sprintf("musetalk-e2e-health-%d", os.Getpid())
		docker(t, ctx, 0, "run", "-d", "--name", name, "-p", "127.0.0.1::8000",
			"-e", "ORCHESTRATOR_BASE_URL=http://127.0.0.1:9", "-e", "INTERNAL_API_KEY=k", "-e", "WORKER_ID=e2e-image", baseTag)
		defer exec.Command("docker", "rm", "-f", name).Run()
		port := strings.TrimSpace(docker(t, ctx, 0, "port", name, "8000/tcp"))
		deadline := time.Now().Add(60 * time.Second)
		for {
			resp, err := http.Get("http://" + port + "/health")
			if err == nil {
				var h struct {
					Live     bool   `json:"live"`
					WorkerID string `json:"worker_id"`
					Reason   string `json:"reason"`
				}
				err = json.NewDecoder(resp.Body).Decode(&h)
				resp.Body.Close()
				if err == nil && h.Live && h.WorkerID == "e2e-image" {
					// No GPU here: the reason names the missing driver.
					t.Logf("/health: %d, reason %q", resp.StatusCode, h.Reason)
					return
				}
			}
			if time.Now().After(deadline) {
				logs, _ := exec.Command("docker", "logs", name).CombinedOutput()
				t.Fatalf("/health did not answer live: %v\n%s", err, logs)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})

	t.Run("with tiny weights renders", func(t *testing.T) {
		work := t.TempDir()
		if err := os.Chmod(work, 0o777); err != nil { // the container writes as uid 1000
			t.Fatal(err)
		}
		golden, err := goldendir.Dir()
		if err != nil {
			testenv.Missing(t, "%v", err)
		}
		face, err := os.ReadFile(filepath.Join(filepath.Dir(golden), "media", "astronaut.png"))
		if err != nil {
			testenv.Missing(t, "test media: %v", err)
		}
		if err := os.WriteFile(filepath.Join(work, "face.png"), face, 0o644); err != nil {
			t.Fatal(err)
		}
		mount := work + ":/work"
		docker(t, ctx, 0, "run", "--rm", "-v", mount, weightsTag, "ffmpeg", "-hide_banner", "-loglevel", "error",
			"-f", "lavfi", "-i", "sine=frequency=220:duration=1", "-ac", "1", "-ar", "16000", "/work/speech.wav")
		docker(t, ctx, 0, "run", "--rm", "-v", mount, weightsTag, "musetalk", "render", "--device", "cpu",
			"--avatar", "/work/face.png", "--audio", "/work/speech.wav", "--face-box", "168,64,280,184", "--out", "/work/out.mp4")
		probe := docker(t, ctx, 0, "run", "--rm", "-v", mount, weightsTag, "ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", "/work/out.mp4")
		if !strings.Contains(probe, "h264") || !strings.Contains(probe, "aac") {
			t.Errorf("the render's streams: %q, want h264 and aac", probe)
		}
	})
}

// images is what builtImages made: the worker image (loaded as baseTag)
// and the same image with `weights tiny` baked in (loaded as weightsTag),
// built once per test binary and shared by TestWorkerImage and the fleet
// (fleet_test.go). TestMain removes the tags and files at the end.
type images struct {
	img    *image.Image
	opts   image.Options
	digest string
	// musetalk is the pure-Go binary the image carries, built for this
	// machine (it writes tiny weights).
	musetalk string
}

var (
	imagesOnce sync.Once
	imagesRes  *images
	imagesErr  error
	// imagesMissing: what this machine lacks to build the image (the
	// test skips, or fails under CI), rather than a failure.
	imagesMissing bool
	imagesDir     string // temporary files, removed by TestMain
	imagesLoaded  []string
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The fleet's scenarios (fleet_test.go) spend their time waiting on
	// containers: run them all at once unless -parallel was given.
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "8")
	}
	if _, err := exec.LookPath("docker"); err == nil && !testing.Short() {
		removeStaleFleets()
	}
	code := m.Run()
	for _, tag := range imagesLoaded {
		exec.Command("docker", "rmi", "-f", tag).Run()
	}
	if imagesRes != nil {
		imagesRes.img.Close()
	}
	if imagesDir != "" {
		os.RemoveAll(imagesDir)
	}
	os.Exit(code)
}

// builtImages builds both images and loads them into Docker, once; later
// calls return the first result. It skips (fails under CI) where the
// machine lacks Docker, apt-get or cuda.h.
func builtImages(t *testing.T) *images {
	t.Helper()
	needDocker(t, context.Background())
	imagesOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		imagesRes, imagesErr = buildImages(ctx, t.Logf)
	})
	if imagesErr != nil {
		if imagesMissing {
			testenv.Missing(t, "%v", imagesErr)
		}
		t.Fatalf("building the worker image: %v", imagesErr)
	}
	return imagesRes
}

func buildImages(ctx context.Context, logf func(string, ...any)) (*images, error) {
	missing := func(format string, args ...any) error {
		imagesMissing = true
		return fmt.Errorf(format, args...)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return nil, missing("apt-get not installed: the image's Debian packages are fetched with apt-get download")
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	if err := touchSources(root); err != nil {
		return nil, err
	}
	lock, err := image.ReadLockFile(filepath.Join(root, "deploy/image/debs.lock"))
	if err != nil {
		return nil, err
	}
	debs := os.Getenv("MUSETALK_DEBS_DIR")
	if debs == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return nil, err
		}
		debs = filepath.Join(cache, "musetalk", "debs")
	}
	if err := (image.Apt{Logf: logf}).Fetch(ctx, lock, debs); err != nil {
		return nil, fmt.Errorf("fetching the locked packages: %w", err)
	}
	files, err := image.DebsIn(debs)
	if err != nil {
		return nil, err
	}
	if imagesDir, err = os.MkdirTemp("", "musetalk-e2e-image-"); err != nil {
		return nil, err
	}
	dir := func(name string) (string, error) {
		d := filepath.Join(imagesDir, name)
		return d, os.Mkdir(d, 0o755)
	}
	bin, err := dir("bin")
	if err != nil {
		return nil, err
	}
	bins := []image.Binary{{Name: "musetalk", Path: filepath.Join(bin, "musetalk")}, {Name: "musetalk-cuda", Path: filepath.Join(bin, "musetalk-cuda")}}
	if err := goBuild(ctx, root, bins[0].Path); err != nil {
		return nil, err
	}
	if err := goBuild(ctx, root, bins[1].Path, "-tags", "cuda"); err != nil {
		if strings.Contains(err.Error(), "cuda.h") {
			return nil, missing("the CUDA toolkit is not installed (musetalk-cuda needs cuda.h): %v", err)
		}
		return nil, err
	}
	tmp, err := dir("tmp")
	if err != nil {
		return nil, err
	}
	opts := image.Options{
		Binaries: bins,
		Created:  time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Debs:     files,
		Lock:     lock,
		Revision: "e2e",
		Version:  "e2e",
		TempDir:  tmp,
	}
	start := time.Now()
	img, err := image.Build(ctx, opts)
	if err != nil {
		return nil, err
	}
	res := &images{img: img, opts: opts, musetalk: bins[0].Path}
	d, _ := img.Digest()
	res.digest = d.String()
	baseTar := filepath.Join(imagesDir, "image.tar")
	if err := image.WriteTarball(img, baseTar, baseTag); err != nil {
		img.Close()
		return nil, err
	}
	logf("built %s in %s: %s", res.digest, time.Since(start).Round(time.Second), sizes(img))
	if err := load(ctx, logf, baseTar, baseTag); err != nil {
		img.Close()
		return nil, err
	}

	weights := filepath.Join(imagesDir, "weights")
	if out, err := exec.CommandContext(ctx, bins[0].Path, "weights", "tiny", "--out", weights).CombinedOutput(); err != nil {
		img.Close()
		return nil, fmt.Errorf("musetalk weights tiny: %v\n%s", err, out)
	}
	wtmp, err := dir("wtmp")
	if err != nil {
		img.Close()
		return nil, err
	}
	wimg, err := image.WithWeights(ctx, img, weights, 0, wtmp)
	if err != nil {
		img.Close()
		return nil, err
	}
	defer wimg.Close()
	wtar := filepath.Join(imagesDir, "image-weights.tar")
	if err := image.WriteTarball(wimg, wtar, weightsTag); err != nil {
		img.Close()
		return nil, err
	}
	logf("with tiny weights: %s", sizes(wimg))
	if err := load(ctx, logf, wtar, weightsTag); err != nil {
		img.Close()
		return nil, err
	}
	return res, nil
}

// needDocker skips (fails under CI) without a Docker engine.
func needDocker(t *testing.T, ctx context.Context) {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		testenv.Missing(t, "docker not installed")
	}
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(c, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		testenv.Missing(t, "no Docker engine answers (docker info: %v: %s)", err, bytes.TrimSpace(out))
	}
}

// goBuild builds ./cmd/musetalk as the image carries it: -trimpath.
func goBuild(ctx context.Context, root, out string, args ...string) error {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.CommandContext(ctx, goBin, append(append([]string{"build", "-trimpath"}, args...), "-o", out, "./cmd/musetalk")...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %v\n%s", args, err, b)
	}
	return nil
}

// load loads a tarball into the engine; TestMain removes the tag.
func load(ctx context.Context, logf func(string, ...any), file, tag string) error {
	out, err := image.Load(ctx, file)
	if err != nil {
		return err
	}
	if !strings.Contains(out, tag) {
		return fmt.Errorf("docker load: %s, want %s", out, tag)
	}
	imagesLoaded = append(imagesLoaded, tag)
	if size, err := exec.CommandContext(ctx, "docker", "image", "inspect", "--format", "{{.Size}}", tag).Output(); err == nil {
		var n int64
		fmt.Sscan(strings.TrimSpace(string(size)), &n)
		logf("%s: %.0f MB in the engine", tag, float64(n)/1e6)
	}
	return nil
}

// docker runs the docker command and returns its output (stdout and
// stderr), failing the test unless it exits with status want.
func docker(t *testing.T, ctx context.Context, want int, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "docker", args...)
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("docker %s: %v", strings.Join(args, " "), err)
	}
	if code != want {
		t.Fatalf("docker %s: exit status %d, want %d\n%s", strings.Join(args, " "), code, want, out)
	}
	return string(out)
}

// sizes describes an image's layers: compressed (what a registry stores
// and a host pulls) and unpacked.
func sizes(img *image.Image) string {
	layers, err := img.Layers()
	if err != nil {
		return err.Error()
	}
	var parts []string
	var total int64
	for _, l := range layers {
		n, _ := l.Size()
		total += n
		parts = append(parts, fmt.Sprintf("%.1f", float64(n)/1e6))
	}
	return fmt.Sprintf("%.1f MB compressed (layers %s MB)", float64(total)/1e6, strings.Join(parts, " + "))
}

// fileInLayer returns one file's bytes from a layer.
func fileInLayer(t *testing.T, l interface{ Uncompressed() (io.ReadCloser, error) }, name string) []byte {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the layer: %v", name, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// repoRoot finds the module root above the working directory.
func repoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("no go.mod above the working directory")
		}
		d = parent
	}
}

// touchSources opens every Go source and module file of the repository:
// the binaries are built by a subprocess the test cache cannot see, and
// files the test process opens become part of its cache key (as in the
// e2e suite).
func touchSources(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || strings.HasPrefix(name, "bazel-")) {
				return filepath.SkipDir
			}
			return nil
		}
		if name := d.Name(); strings.HasSuffix(name, ".go") || strings.HasSuffix(name, ".s") || strings.HasSuffix(name, ".c") ||
			strings.HasSuffix(name, ".h") || strings.HasSuffix(name, ".ptx") || name == "go.mod" || name == "go.sum" {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			f.Close()
		}
		return nil
	})
}
