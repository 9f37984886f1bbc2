package emu

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/avatargen/musetalk/kernels/cuda/internal/kernelgen"
)

// TestGeneratedFilesAreCurrent checks that the committed trampolines and
// kernel table are what `go generate` writes from ../src: a kernel added,
// removed or changed without regenerating fails here.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	want, err := kernelgen.Generate("../src", "../src")
	if err != nil {
		t.Fatal(err)
	}
	have, err := filepath.Glob("*_cu.c")
	if err != nil {
		t.Fatal(err)
	}
	have = append(have, kernelgen.TableFile)
	for _, f := range have {
		if _, ok := want[f]; !ok {
			t.Errorf("%s has no kernel source: run `go generate ./kernels/cuda/emu` and commit", f)
		}
	}
	for name, w := range want {
		got, err := os.ReadFile(name)
		if err != nil || !bytes.Equal(got, w) {
			t.Errorf("%s differs from what the generator writes (a kernel source changed?): run `go generate ./kernels/cuda/emu` and commit", name)
		}
	}
}
