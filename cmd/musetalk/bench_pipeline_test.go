package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/musetalk/modeldir"
)

// TestBenchPipeline runs `bench pipeline` on tiny weights and checks that
// it reports every stage and the memory.
func TestBenchPipeline(t *testing.T) {
	needFFmpegCLI(t)
	dir := t.TempDir()
	avatar, _ := renderInputs(t, dir)
	weights := filepath.Join(dir, "weights")
	if err := modeldir.WriteTiny(weights, 3); err != nil {
		t.Fatal(err)
	}
	out, err := runAppCLI(t, newApp(), "bench", "pipeline", "--avatar", avatar, "--face-box", "8,8,56,56",
		"--weights", weights, "--seconds", "0.4", "--fps", "10", "--batch-size", "2", "--parsing-mode", "raw", "--work-dir", dir)
	if err != nil {
		t.Fatalf("bench pipeline: %v\n%s", err, out)
	}
	for _, want := range []string{"-> 4 frames", "avatar of 1 frame", "prepare", "s/avatar frame", "features", "unet",
		"vae-decoder", "blend", "encode", "wall", "peak resident memory"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := runAppCLI(t, newApp(), "bench", "pipeline", "--avatar", avatar, "--seconds", "0", "--weights", weights); err == nil || !strings.Contains(err.Error(), "--seconds") {
		t.Errorf("--seconds 0: err %v, want one naming --seconds", err)
	}
}
