//go:build !cuda

package cudrv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/avatargen/musetalk/internal/testenv"
)

// TestCUDATaggedBuild vets every package with the cuda build tag and links
// this package's GPU test binary: code behind the tag compiles and links
// against libcuda on a machine without a GPU (it cannot run here:
// gorgonia.org/cu exits at start without one).
func TestCUDATaggedBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the module with -tags cuda")
	}
	if _, err := os.Stat("/usr/include/cuda.h"); err != nil {
		testenv.Missing(t, "cuda.h not installed (Debian package nvidia-cuda-toolkit, non-free)")
	}
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"vet", "-tags", "cuda", "./..."},
		{"test", "-tags", "cuda", "-c", "-o", filepath.Join(t.TempDir(), "cudrv.test"), "./kernels/cuda/cudrv/"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("go %v: %v\n%s", args, err, out)
		}
	}
}
