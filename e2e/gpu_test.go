//go:build linux

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/avatargen/musetalk/internal/testenv"
)

// TestGPUImageWithoutGPU lays out a GPU image's two builds side by side,
// musetalk and musetalk-cuda (-tags cuda, linked to libcuda.so.1), on this
// machine, which has no GPU: the CUDA build cannot even start here
// (gorgonia.org/cu exits from its init), yet `musetalk` starts. `render
// --device cuda` says why there is no GPU; `up` (auto) serves /health,
// its worker is not ready and says why, and `--device cpu` renders.
func TestGPUImageWithoutGPU(t *testing.T) {
	needSuite(t)
	needTools(t, "ffmpeg", "ffprobe", "go")
	if _, err := os.Stat("/usr/include/cuda.h"); err != nil {
		testenv.Missing(t, "cuda.h not installed (Debian package nvidia-cuda-toolkit, non-free)")
	}
	face := testMedia(t, "astronaut.png")
	box := fmt.Sprintf("%d,%d,%d,%d", renderFaceBox[0], renderFaceBox[1], renderFaceBox[2], renderFaceBox[3])
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	image := filepath.Join(dir, "image")
	if err := os.Mkdir(image, 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(image, "musetalk")
	data, err := os.ReadFile(musetalkBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(plain, data, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.CommandContext(ctx, "go", "build", "-tags", "cuda", "-o", filepath.Join(image, "musetalk-cuda"), "./cmd/musetalk")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags cuda: %v\n%s", err, out)
	}
	weights := filepath.Join(dir, "weights")
	runTool(t, ctx, plain, "weights", "tiny", "--out", weights)

	// Named: the reason, from the probe.
	out, err := exec.CommandContext(ctx, plain, "render", "--device", "cuda", "--weights", weights,
		"--avatar", face, "--audio", speechWAV, "--out", filepath.Join(dir, "gpu.mp4"), "--face-box", box).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no usable GPU") || !strings.Contains(string(out), "gpu-probe") {
		t.Fatalf("render --device cuda without a GPU: %v\n%s", err, out)
	}
	// The CPU is still there when asked for.
	runTool(t, ctx, plain, "render", "--device", "cpu", "--weights", weights, "--avatar-cache", filepath.Join(dir, "cache"),
		"--avatar", face, "--audio", speechWAV, "--out", filepath.Join(dir, "cpu.mp4"), "--face-box", box)

	// The service starts; its worker is alive, not ready, and says why.
	health := freeAddr(t)
	up := startProc(t, dir, "up", plain, []string{"up", "--data-dir", filepath.Join(dir, "data"), "--addr", "127.0.0.1:0",
		"--health-addr", health, "--weights", weights, "--avatar-cache", filepath.Join(dir, "cache")}, nil, filepath.Join(dir, "up.out"))
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + health + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually(t, time.Minute, 100*time.Millisecond, "the worker reports that there is no GPU", func() (bool, string) {
		if up.exited() {
			t.Fatalf("up exited:\n%s", tailFile(up.logPath, 20))
		}
		live, body := get("/health")
		ready, _ := get("/ready")
		return live == http.StatusOK && ready == http.StatusServiceUnavailable && strings.Contains(body, "no usable GPU"),
			fmt.Sprintf("/health %d %s; /ready %d", live, body, ready)
	})
}
