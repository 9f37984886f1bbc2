package main

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/kernels"
)

// cpuFP16 is the refusal of --precision fp16 on the CPU device.
const cpuFP16 = "--precision fp16 needs --device cuda; the CPU backend computes in fp32"

func TestParsePrecision(t *testing.T) {
	if p, err := parsePrecision(""); p != nil || err != nil {
		t.Errorf(`parsePrecision(""): %v, %v; want nil (the device's default)`, p, err)
	}
	for s, want := range map[string]kernels.Precision{"fp16": kernels.F16, "fp32": kernels.F32} {
		if p, err := parsePrecision(s); err != nil || p == nil || *p != want {
			t.Errorf("parsePrecision(%q): %v, %v; want %v", s, p, err, want)
		}
	}
	for _, bad := range []string{"half", "FP16", "f16", "bf16"} {
		_, err := parsePrecision(bad)
		if want := `--precision "` + bad + `": want fp16 or fp32`; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parsePrecision(%q): %v, want an error containing %q", bad, err, want)
		}
	}
}

// TestDevicePrecision: the backend starts at --precision, else at its
// device's default (fp16 on cuda, fp32 on cpu); fp16 on the CPU, named or
// taken by auto, is refused saying why.
func TestDevicePrecision(t *testing.T) {
	noGPU := errors.New("no GPU on this machine")
	open := func(name, precision string, devices ...device) (kernels.Backend, error) {
		t.Helper()
		cfg, err := parseDevice(name, devices)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.precision, err = parsePrecision(precision); err != nil {
			t.Fatal(err)
		}
		cfg.cpu.Threads = 1
		cfg.log = slog.New(slog.DiscardHandler)
		if err := cfg.checkPrecision(); err != nil {
			// The early check and open agree.
			if _, oerr := cfg.open(); oerr == nil || oerr.Error() != err.Error() {
				t.Errorf("%s/%s: checkPrecision says %v but open %v", name, precision, err, oerr)
			}
			return nil, err
		}
		b, err := cfg.open()
		if err == nil {
			t.Cleanup(func() { b.Close() })
		}
		return b, err
	}
	gpu := fakeDevice(deviceCUDA, nil, nil)
	for _, tc := range []struct {
		device, precision string
		want              kernels.Precision
		wantBackend       string
	}{
		{"auto", "", kernels.F16, "cuda/test"},
		{"cuda", "", kernels.F16, "cuda/test"},
		{"auto", "fp32", kernels.F32, "cuda/test"},
		{"cuda", "fp16", kernels.F16, "cuda/test"},
		{"cpu", "", kernels.F32, "cpu/"},
		{"cpu", "fp32", kernels.F32, "cpu/"},
	} {
		b, err := open(tc.device, tc.precision, gpu, cpuDevice())
		if err != nil {
			t.Errorf("--device %s --precision %q: %v", tc.device, tc.precision, err)
			continue
		}
		if got := kernels.PrecisionOf(b); got != tc.want || !strings.HasPrefix(b.Name(), tc.wantBackend) {
			t.Errorf("--device %s --precision %q: %s at %v, want %s… at %v", tc.device, tc.precision, b.Name(), got, tc.wantBackend, tc.want)
		}
	}

	if _, err := open("cpu", "fp16", gpu, cpuDevice()); err == nil || err.Error() != cpuFP16 {
		t.Errorf("--device cpu --precision fp16: %v, want %q", err, cpuFP16)
	}
	_, err := open("auto", "fp16", fakeDevice(deviceCUDA, noGPU, nil), cpuDevice())
	if err == nil || !strings.HasPrefix(err.Error(), cpuFP16) || !strings.Contains(err.Error(), "auto took cpu") || !strings.Contains(err.Error(), noGPU.Error()) {
		t.Errorf("--precision fp16 where auto passes over the GPU: %v, want the refusal and why auto took the CPU", err)
	}
	_, err = open("auto", "fp16", cpuDevice())
	if err == nil || !strings.HasPrefix(err.Error(), cpuFP16) || !strings.Contains(err.Error(), "this build has no other device") {
		t.Errorf("--precision fp16 in a CPU-only build: %v, want the refusal", err)
	}
	// A GPU that is strict (the plain build's stand-in for its GPU
	// sibling) and unusable is open's error to report, not the precision's.
	strict := fakeDevice(deviceCUDA, noGPU, nil)
	strict.strict = true
	if _, err := open("auto", "fp16", strict, cpuDevice()); !errors.Is(err, noGPU) {
		t.Errorf("--precision fp16 with an unusable strict GPU: %v, want the GPU's error", err)
	}
}

// TestNetworkCommandsHavePrecision: every command that takes --device
// takes --precision (MUSETALK_PRECISION, default empty: the device's).
func TestNetworkCommandsHavePrecision(t *testing.T) {
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			name := strings.TrimSpace(path + " " + c.Name)
			walk(name, c.Subcommands)
			var dev, prec *cli.StringFlag
			for _, f := range c.Flags {
				if sf, ok := f.(*cli.StringFlag); ok {
					switch sf.Name {
					case "device":
						dev = sf
					case "precision":
						prec = sf
					}
				}
			}
			switch {
			case (dev == nil) != (prec == nil):
				t.Errorf("%s: --device %v but --precision %v; want both or neither", name, dev != nil, prec != nil)
			case prec == nil:
			case prec.Value != "" || !slices.Equal(prec.EnvVars, []string{"MUSETALK_PRECISION"}):
				t.Errorf("%s: --precision defaults to %q from %v, want empty from MUSETALK_PRECISION", name, prec.Value, prec.EnvVars)
			}
		}
	}
	walk("", newApp().Commands)
	out, err := run(t, "render", "--help")
	if err != nil || !strings.Contains(out, "--precision") || !strings.Contains(out, "fp16 on cuda, fp32 on cpu") {
		t.Errorf("render --help does not document --precision (%v):\n%s", err, out)
	}
}

// TestPrecisionFlagErrors: each command that runs the networks refuses
// --precision fp16 on the CPU device, and a bad --precision, from the flag
// or MUSETALK_PRECISION, before doing any work. Every command's other
// arguments would fail fast if the refusal did not come (no weights, no
// bench that runs).
func TestPrecisionFlagErrors(t *testing.T) {
	// Not parallel: it sets the environment.
	for _, k := range []string{"WORKER_TYPE", "B2_BUCKET_NAME", "B2_KEY_ID", "B2_APP_KEY", "MUSETALK_DEVICE", "MUSETALK_THREADS", "MUSETALK_PRECISION"} {
		t.Setenv(k, "")
	}
	t.Setenv("INTERNAL_API_KEY", "k")
	t.Setenv("ORCHESTRATOR_BASE_URL", "http://127.0.0.1:1")
	dir := t.TempDir()
	empty := filepath.Join(dir, "no-weights")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "a.png")
	if err := os.WriteFile(file, []byte("not really"), 0o644); err != nil {
		t.Fatal(err)
	}
	commands := map[string][]string{
		"render":         {"render", "--avatar", file, "--audio", file, "--out", filepath.Join(dir, "o.mp4"), "--avatar-cache", filepath.Join(dir, "c"), "--weights", empty},
		"bench model":    {"bench", "model", "--batch", "0", "--iters", "1"},
		"bench pipeline": {"bench", "pipeline", "--avatar", file, "--work-dir", dir, "--weights", empty},
		"worker":         {"worker", "--health-addr", "127.0.0.1:0", "--work-dir", dir, "--weights", empty, "--avatar-cache", filepath.Join(dir, "c")},
		"up":             {"up", "--no-fetch", "--weights", empty, "--data-dir", filepath.Join(dir, "up"), "--addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0"},
	}
	type flagCase struct {
		args []string
		want string
	}
	cases := []flagCase{
		{[]string{"--device", "cpu", "--precision", "fp16"}, cpuFP16},
		{[]string{"--precision", "half"}, `--precision "half": want fp16 or fp32`},
	}
	if !cudaBuilt() {
		cases = append(cases, flagCase{[]string{"--precision", "fp16"}, cpuFP16 + " (--device auto took cpu: this build has no other device)"})
	}
	for name, args := range commands {
		for _, tc := range cases {
			out, err := run(t, append(slices.Clone(args), tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s %v: %v, want an error containing %q\n%s", name, tc.args, err, tc.want, out)
			}
		}
	}
	t.Setenv("MUSETALK_PRECISION", "fp16")
	t.Setenv("MUSETALK_DEVICE", "cpu")
	if _, err := run(t, commands["worker"]...); err == nil || !strings.Contains(err.Error(), cpuFP16) {
		t.Errorf("worker with MUSETALK_PRECISION=fp16 MUSETALK_DEVICE=cpu: %v, want %q", err, cpuFP16)
	}
	t.Setenv("MUSETALK_PRECISION", "fp64")
	t.Setenv("MUSETALK_DEVICE", "")
	if _, err := run(t, commands["render"]...); err == nil || !strings.Contains(err.Error(), `--precision "fp64"`) {
		t.Errorf("render with MUSETALK_PRECISION=fp64: %v, want an error naming the value", err)
	}
	// An empty MUSETALK_PRECISION is the device's default: the command
	// gets past the flags (and fails for want of weights).
	t.Setenv("MUSETALK_PRECISION", "")
	if _, err := run(t, commands["render"]...); err == nil || strings.Contains(err.Error(), "--precision") {
		t.Errorf("render with an empty MUSETALK_PRECISION: %v, want it past the flags", err)
	}
}
