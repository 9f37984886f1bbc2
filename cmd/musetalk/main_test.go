package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/goldendir"
	"github.com/avatargen/musetalk/internal/testenv"
	"github.com/avatargen/musetalk/musetalk"
	"github.com/avatargen/musetalk/worker/preview"

	"github.com/urfave/cli/v2"
)

// run runs the CLI in-process with args and returns its error and output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	app.ExitErrHandler = func(*cli.Context, error) {}
	err := app.Run(append([]string{"musetalk"}, args...))
	return out.String(), err
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, cmd := range newApp().Commands {
		out, err := run(t, cmd.Name, "--help")
		if err != nil {
			t.Fatalf("%s --help: %v", cmd.Name, err)
		}
		if !strings.Contains(out, "musetalk "+cmd.Name) || !strings.Contains(out, "OPTIONS") {
			t.Errorf("%s --help says:\n%s", cmd.Name, out)
		}
	}
}

func TestControlNeedsInternalKey(t *testing.T) {
	t.Setenv("INTERNAL_API_KEY", "")
	_, err := run(t, "control", "--data-dir", t.TempDir(), "--addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "INTERNAL_API_KEY") {
		t.Fatalf("want an error naming INTERNAL_API_KEY, got %v", err)
	}
}

func TestWorkerNamesBadVariable(t *testing.T) {
	for _, k := range []string{"ORCHESTRATOR_BASE_URL", "INTERNAL_API_KEY", "WORKER_TYPE", "B2_BUCKET_NAME", "B2_KEY_ID", "B2_APP_KEY"} {
		t.Setenv(k, "")
	}
	t.Setenv("INTERNAL_API_KEY", "very-secret-value")
	t.Setenv("ORCHESTRATOR_BASE_URL", "http://127.0.0.1:1")
	_, err := run(t, "worker", "--worker-type", "gpu")
	if err == nil || !strings.Contains(err.Error(), "WORKER_TYPE") || strings.Contains(err.Error(), "very-secret-value") {
		t.Fatalf("want an error naming WORKER_TYPE without the key, got %v", err)
	}
	_, err = run(t, "--log-level", "loud", "worker")
	if err == nil || !strings.Contains(err.Error(), "loud") {
		t.Fatalf("want an error naming the log level, got %v", err)
	}
}

func TestUnknownEngine(t *testing.T) {
	if _, err := newEngine("sora"); err == nil || !strings.Contains(err.Error(), "sora") {
		t.Fatalf("got %v", err)
	}
}

func TestWeightsConvert(t *testing.T) {
	dir, err := goldendir.Dir()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "b_autoencoder_kl.safetensors")
	if _, err := os.Stat(src); err != nil {
		testenv.Missing(t, "no %s: %v", src, err)
	}
	dst := filepath.Join(t.TempDir(), "vae.safetensors")
	// The golden VAE is tiny: the full-size check names what does not fit
	// and writes nothing.
	misshapen := regexp.MustCompile(`"[a-z0-9_.]+" is \[[0-9 ]+\], want \[[0-9 ]+\]`)
	if _, err := run(t, "weights", "convert", src, dst); err == nil || !misshapen.MatchString(err.Error()) {
		t.Fatalf("want a misshapen-tensor error, got %v", err)
	}
	if _, err := os.Stat(dst); err == nil {
		t.Fatal("a failed conversion left its output")
	}
	out, err := run(t, "weights", "convert", "--no-check", "--drop-unexpected", "--fp16", src, dst)
	if err != nil || !strings.Contains(out, "vae tensors") {
		t.Fatalf("convert: %v\n%s", err, out)
	}
	if _, err := run(t, "weights", "convert", src); err == nil || !strings.Contains(err.Error(), "SRC and DST") {
		t.Fatalf("one argument: %v", err)
	}
}

// TestHelpStatesEachDefaultOnce catches a flag whose usage text names a
// default while the library appends another one (often "(default: 0)",
// contradicting it): every flag line of every command's help says
// "default" at most once.
func TestHelpStatesEachDefaultOnce(t *testing.T) {
	var walk func(path string, flags []cli.Flag, cmds []*cli.Command)
	walk = func(path string, flags []cli.Flag, cmds []*cli.Command) {
		for _, f := range flags {
			line := f.String()
			if n := strings.Count(strings.ToLower(line), "default"); n > 1 {
				t.Errorf("%s: %s", path, line)
			}
		}
		for _, c := range cmds {
			walk(path+" "+c.Name, c.Flags, c.Subcommands)
		}
	}
	app := newApp()
	walk("musetalk", app.Flags, app.Commands)
}

func TestBuildVersion(t *testing.T) {
	settings := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	for _, c := range []struct {
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{nil, false, "devel"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, true, "v1.2.3"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261207031500-2ff5c6d1a2b3+dirty"}}, true, "v0.0.0-20261207031500-2ff5c6d1a2b3+dirty"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: settings("vcs.revision", "2ff5c6d1a2b3c4d5e6f7", "vcs.modified", "true")}, true, "devel-2ff5c6d1a2b3+dirty"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: settings("vcs.revision", "2ff5c6d1a2b3c4d5e6f7", "vcs.modified", "false")}, true, "devel-2ff5c6d1a2b3"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "devel"},
	} {
		if got := buildVersion(c.info, c.ok); got != c.want {
			t.Errorf("buildVersion(%+v) = %q, want %q", c.info, got, c.want)
		}
	}
}

// TestAPIDocNamesRealStages: every progress stage docs/API.md shows is one
// that an engine sends.
func TestAPIDocNamesRealStages(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "API.md"))
	if err != nil {
		t.Fatal(err)
	}
	real := map[string]bool{}
	for _, s := range []string{musetalk.StageLoad, musetalk.StagePrepare, musetalk.StageFeatures, musetalk.StageGenerate,
		musetalk.StageEncode, preview.StageProbe, preview.StageRender} {
		real[s] = true
	}
	re := regexp.MustCompile("\"stage\": ?\"([^\"]*)\"|`([a-z]+)`")
	seen := 0
	for _, m := range re.FindAllStringSubmatch(string(doc), -1) {
		if m[1] == "" {
			continue
		}
		seen++
		if !real[m[1]] {
			t.Errorf("docs/API.md shows stage %q, which no engine sends", m[1])
		}
	}
	if seen == 0 {
		t.Fatal("docs/API.md shows no stage")
	}
	for s := range real {
		if !strings.Contains(string(doc), "`"+s+"`") {
			t.Errorf("docs/API.md does not list stage %q", s)
		}
	}
}
