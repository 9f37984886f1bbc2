package main

import (
	"path/filepath"
	"regexp"
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
	// With a face box neither detector runs: their rows have no per-frame time.
	for _, net := range []string{"s3fd", "dwpose"} {
		if !regexp.MustCompile(`(?m)^\s+` + net + `\s+0\.00 s\s+-$`).MatchString(out) {
			t.Errorf("output lacks an empty %s row:\n%s", net, out)
		}
	}
	// Without one, S3FD and DWPose run on the avatar's frame (the tiny
	// DWPose draws its face whatever the picture, so S3FD decides).
	out, err = runAppCLI(t, newApp(), "bench", "pipeline", "--avatar", avatar,
		"--weights", weights, "--seconds", "0.4", "--fps", "10", "--batch-size", "2", "--parsing-mode", "raw", "--work-dir", dir)
	switch {
	case err == nil:
		for _, net := range []string{"s3fd", "dwpose"} {
			if !regexp.MustCompile(`(?m)^\s+` + net + `\s+\d+\.\d\d s\s+\d+\.\d{3} s/avatar frame$`).MatchString(out) {
				t.Errorf("output lacks the %s time per avatar frame:\n%s", net, out)
			}
		}
	case strings.Contains(err.Error(), "no face found"): // the random S3FD found nothing
		t.Logf("no face: %v", err)
	default:
		t.Fatalf("bench pipeline without a face box: %v\n%s", err, out)
	}
	if _, err := runAppCLI(t, newApp(), "bench", "pipeline", "--avatar", avatar, "--seconds", "0", "--weights", weights); err == nil || !strings.Contains(err.Error(), "--seconds") {
		t.Errorf("--seconds 0: err %v, want one naming --seconds", err)
	}
}
