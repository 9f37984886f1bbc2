package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/internal/testenv"
	"github.com/avatargen/musetalk/musetalk/modeldir"
)

// runRender runs `musetalk render args...` in-process.
func runRenderCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	registered := false
	for _, c := range app.Commands {
		registered = registered || c.Name == "render"
	}
	if !registered {
		app.Commands = append(app.Commands, renderCommand())
	}
	return runAppCLI(t, app, append([]string{"render"}, args...)...)
}

// runAppCLI runs app with args after the global flags, capturing its output.
func runAppCLI(t *testing.T, app *cli.App, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	app.ExitErrHandler = func(*cli.Context, error) {}
	err := app.Run(append([]string{"musetalk", "--log-level", "warn"}, args...))
	return out.String(), err
}

func needFFmpegCLI(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, "%s not installed (Debian package ffmpeg)", tool)
		}
	}
}

// renderInputs makes a small still and a short tone with ffmpeg.
func renderInputs(t *testing.T, dir string) (avatar, audio string) {
	t.Helper()
	avatar, audio = filepath.Join(dir, "face.png"), filepath.Join(dir, "speech.wav")
	for _, args := range [][]string{
		{"-f", "lavfi", "-i", "testsrc=size=64x64:rate=1", "-frames:v", "1", avatar},
		{"-f", "lavfi", "-i", "sine=frequency=300:duration=0.3", "-ac", "1", "-ar", "16000", audio},
	} {
		if out, err := exec.Command("ffmpeg", append([]string{"-hide_banner", "-loglevel", "error", "-y"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg %v: %v\n%s", args, err, out)
		}
	}
	return avatar, audio
}

func TestRenderFlagErrors(t *testing.T) {
	dir := t.TempDir()
	png := filepath.Join(dir, "a.png")
	if err := os.WriteFile(png, []byte("not really"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"--avatar", png, "--audio", png, "--out", filepath.Join(dir, "o.mp4"), "--avatar-cache", filepath.Join(dir, "c")}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--avatar", png, "--audio", png}, "out"},
		{append(base, "--face-box", "1,2,3"), "--face-box"},
		{append(base, "--face-box", "1,2,x,4"), "--face-box"},
		{append(base, "--face-box", "10,10,5,20"), "--face-box: [10 10 5 20]"},
		{append(base, "--version", "v9"), "--version"},
		{append(base, "--batch-size", "0"), "--batch-size"},
		{append(base, "--fps", "fast"), "--fps"},
		{append(base, "--parsing-mode", "nose"), "--parsing-mode"},
		{append(base, "--face-detector", "retinaface"), "--face-detector"},
		{[]string{"--avatar", filepath.Join(dir, "none.png"), "--audio", png, "--out", filepath.Join(dir, "o.mp4")}, "--avatar"},
		{[]string{"--avatar", png, "--audio", png, "--out", filepath.Join(dir, "no", "o.mp4")}, "--out"},
	} {
		_, err := runRenderCLI(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("render %v: error %v, want one naming %s", tc.args, err, tc.want)
		}
	}
}

func TestRenderNamesBadInput(t *testing.T) {
	needFFmpegCLI(t)
	dir := t.TempDir()
	avatar, _ := renderInputs(t, dir)
	out := filepath.Join(dir, "o.mp4")
	_, err := runRenderCLI(t, "--avatar", avatar, "--audio", avatar, "--out", out, "--weights", filepath.Join(dir, "w"),
		"--avatar-cache", filepath.Join(dir, "c"))
	if err == nil || !strings.Contains(err.Error(), "bad input: audio") {
		t.Fatalf("an image as the audio: %v, want a bad-input error naming the audio", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("output written")
	}
}

func TestRenderTinyWeights(t *testing.T) {
	needFFmpegCLI(t)
	dir := t.TempDir()
	weights := filepath.Join(dir, "weights")
	if err := modeldir.WriteTiny(weights, 7); err != nil {
		t.Fatal(err)
	}
	avatar, audio := renderInputs(t, dir)
	out := filepath.Join(dir, "out.mp4")
	stdout, err := runRenderCLI(t, "--avatar", avatar, "--audio", audio, "--out", out, "--weights", weights,
		"--avatar-cache", filepath.Join(dir, "cache"), "--face-box", "16,16,48,48", "--threads", "2", "--batch-size", "4", "--parsing-mode", "raw")
	if err != nil {
		t.Fatalf("render: %v\n%s", err, stdout)
	}
	if st, err := os.Stat(out); err != nil || st.Size() == 0 {
		t.Fatalf("no output: %v", err)
	}
	if !strings.Contains(stdout, "wrote "+out) || !strings.Contains(stdout, "generate") {
		t.Errorf("output does not show progress and the result:\n%s", stdout)
	}
}

// TestWorkerEngines: the worker runs musetalk first and preview second by
// default, and newEngine builds both.
func TestWorkerEngines(t *testing.T) {
	var def []string
	for _, f := range workerCommand().Flags {
		if sf, ok := f.(*cli.StringSliceFlag); ok && sf.Name == "engine" {
			def = sf.Value.Value()
		}
	}
	if strings.Join(def, ",") != "musetalk,preview" {
		t.Errorf("--engine default %v, want musetalk,preview", def)
	}
	for _, name := range []string{"musetalk", "preview"} {
		e, err := newEngineWith(name, engineSettings{weightsDir: t.TempDir(), cacheDir: t.TempDir()})
		if err != nil || e.Name() != name {
			t.Errorf("newEngineWith(%q): %v, %v", name, e, err)
		}
	}
	if _, err := newEngine("sora"); err == nil || !strings.Contains(err.Error(), "musetalk, preview") {
		t.Errorf("unknown engine: %v, want the available ones listed", err)
	}
}
