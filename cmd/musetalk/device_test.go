package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
)

// cudaBuilt reports whether this test binary was built with the CUDA
// device.
func cudaBuilt() bool {
	return slices.ContainsFunc(builtDevices(), func(d device) bool { return d.name == deviceCUDA })
}

// renamedBackend is a CPU backend under another name, reporting the
// precision it was started with.
type renamedBackend struct {
	kernels.Backend
	name string
	p    kernels.Precision
}

func (b renamedBackend) Name() string                 { return b.name }
func (b renamedBackend) Precision() kernels.Precision { return b.p }

// fakeDevice is a device named name that is usable unless unusable is
// set and whose backend, when started, is a renamed CPU backend, or
// openErr. A fake cuda offers the CUDA device's precisions.
func fakeDevice(name string, unusable, openErr error) device {
	d := device{
		name:   name,
		usable: func() error { return unusable },
		open: func(cfg deviceConfig, p kernels.Precision) (kernels.Backend, error) {
			if openErr != nil {
				return nil, openErr
			}
			b, err := cpu.New(cfg.cpu)
			if err != nil {
				return nil, err
			}
			return renamedBackend{Backend: b, name: name + "/test", p: p}, nil
		},
	}
	if name == deviceCUDA {
		d.precisions = cudaPrecisions
	}
	return d
}

func TestBuiltDevices(t *testing.T) {
	names := []string{}
	for _, d := range builtDevices() {
		names = append(names, d.name)
	}
	want := []string{deviceCPU}
	if cudaBuilt() {
		want = []string{deviceCUDA, deviceCPU}
	}
	if !slices.Equal(names, want) {
		t.Errorf("this build's devices are %v, want %v (the GPU first, the CPU last)", names, want)
	}
}

func TestParseDevice(t *testing.T) {
	cpuOnly := []device{cpuDevice()}
	for name, want := range map[string]string{"auto": "auto", "cpu": "cpu", "": "auto"} {
		if cfg, err := parseDevice(name, cpuOnly); err != nil || cfg.name != want {
			t.Errorf("parseDevice(%q): %+v, %v; want %s", name, cfg, err, want)
		}
	}
	_, err := parseDevice("cuda", cpuOnly)
	if want := "--device cuda: this musetalk was built without CUDA support (build with -tags cuda; see README)"; err == nil || err.Error() != want {
		t.Errorf("cuda in a build without it: %v, want %q", err, want)
	}
	if _, err := parseDevice("cuda", []device{fakeDevice("cuda", nil, nil), cpuDevice()}); err != nil {
		t.Errorf("cuda in a build with it: %v", err)
	}
	for _, bad := range []string{"gpu", "CPU", "cuda:0"} {
		if _, err := parseDevice(bad, cpuOnly); err == nil || !strings.Contains(err.Error(), "want auto, cuda or cpu") {
			t.Errorf("parseDevice(%q): %v, want an error naming the choices", bad, err)
		}
	}
}

func TestDeviceOpen(t *testing.T) {
	noGPU := errors.New("no GPU on this machine")
	var logs bytes.Buffer
	open := func(name string, devices ...device) (string, error) {
		t.Helper()
		cfg, err := parseDevice(name, devices)
		if err != nil {
			t.Fatal(err)
		}
		cfg.cpu.Threads = 1
		cfg.log = slog.New(slog.NewTextHandler(&logs, nil))
		b, err := cfg.open()
		if err != nil {
			return "", err
		}
		defer b.Close()
		return b.Name(), nil
	}
	gpu := fakeDevice("cuda", nil, nil)
	if got, err := open("auto", gpu, cpuDevice()); err != nil || got != "cuda/test" {
		t.Errorf("auto with a usable GPU: %q, %v; want the GPU", got, err)
	}
	if got, err := open("cpu", gpu, cpuDevice()); err != nil || !strings.HasPrefix(got, "cpu/") {
		t.Errorf("cpu with a usable GPU: %q, %v; want the CPU", got, err)
	}
	logs.Reset()
	gone := fakeDevice("cuda", noGPU, nil)
	if got, err := open("auto", gone, cpuDevice()); err != nil || !strings.HasPrefix(got, "cpu/") {
		t.Errorf("auto without a usable GPU: %q, %v; want the CPU", got, err)
	}
	if !strings.Contains(logs.String(), "passing over cuda") || !strings.Contains(logs.String(), noGPU.Error()) {
		t.Errorf("auto passed over the GPU without saying why; log:\n%s", logs.String())
	}
	if _, err := open("cuda", gone, cpuDevice()); !errors.Is(err, noGPU) || !strings.Contains(err.Error(), "--device cuda") {
		t.Errorf("cuda without a usable GPU: %v, want the reason", err)
	}
	// A GPU that is there but fails to start is an error, not a quiet
	// fall back to the CPU.
	broken := errors.New("out of device memory")
	if got, err := open("auto", fakeDevice("cuda", nil, broken), cpuDevice()); !errors.Is(err, broken) || !strings.Contains(err.Error(), "starting the cuda device") {
		t.Errorf("auto with a GPU that fails to start: %q, %v; want the failure", got, err)
	}
	// The zero deviceConfig (but for its log) is auto over this build's devices.
	b, err := deviceConfig{log: slog.New(slog.DiscardHandler)}.open()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !cudaBuilt() && !strings.HasPrefix(b.Name(), "cpu/") {
		t.Errorf("the zero deviceConfig opened %s, want the CPU in a build without CUDA", b.Name())
	}
}

// TestNetworkCommandsHaveDevice: every command that runs the networks
// takes --device (MUSETALK_DEVICE, default auto) and --threads.
func TestNetworkCommandsHaveDevice(t *testing.T) {
	want := map[string]bool{"render": true, "worker": true, "up": true, "bench model": true, "bench pipeline": true}
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			name := strings.TrimSpace(path + " " + c.Name)
			walk(name, c.Subcommands)
			var dev *cli.StringFlag
			threads := false
			for _, f := range c.Flags {
				if sf, ok := f.(*cli.StringFlag); ok && sf.Name == "device" {
					dev = sf
				}
				threads = threads || f.Names()[0] == "threads"
			}
			switch {
			case !want[name] && dev != nil:
				t.Errorf("%s has --device but runs no network", name)
			case !want[name]:
			case dev == nil || !threads:
				t.Errorf("%s lacks --device or --threads", name)
			case dev.Value != deviceAuto || !slices.Equal(dev.EnvVars, []string{"MUSETALK_DEVICE"}):
				t.Errorf("%s: --device defaults to %q from %v, want auto from MUSETALK_DEVICE", name, dev.Value, dev.EnvVars)
			}
			delete(want, name)
		}
	}
	walk("", newApp().Commands)
	for name := range want {
		t.Errorf("no command %q", name)
	}
}

// TestDeviceFlagErrors: each command that runs the networks refuses a bad
// --device (or MUSETALK_DEVICE) and a negative --threads before doing any
// work, with a message naming the flag.
func TestDeviceFlagErrors(t *testing.T) {
	// Not parallel: it sets the environment (an empty MUSETALK_DEVICE is
	// auto).
	for _, k := range []string{"WORKER_TYPE", "B2_BUCKET_NAME", "B2_KEY_ID", "B2_APP_KEY", "MUSETALK_DEVICE", "MUSETALK_THREADS"} {
		t.Setenv(k, "")
	}
	t.Setenv("INTERNAL_API_KEY", "k")
	t.Setenv("ORCHESTRATOR_BASE_URL", "http://127.0.0.1:1")
	dir := t.TempDir()
	file := filepath.Join(dir, "a.png")
	if err := os.WriteFile(file, []byte("not really"), 0o644); err != nil {
		t.Fatal(err)
	}
	commands := map[string][]string{
		"render":         {"render", "--avatar", file, "--audio", file, "--out", filepath.Join(dir, "o.mp4"), "--avatar-cache", filepath.Join(dir, "c")},
		"bench model":    {"bench", "model", "--batch", "1", "--iters", "1"},
		"bench pipeline": {"bench", "pipeline", "--avatar", file, "--work-dir", dir},
		"worker":         {"worker", "--health-addr", "127.0.0.1:0", "--work-dir", dir, "--weights", dir, "--avatar-cache", filepath.Join(dir, "c")},
	}
	type flagCase struct {
		args []string
		want string
	}
	cases := []flagCase{
		{[]string{"--device", "gpu"}, `--device "gpu": want auto, cuda or cpu`},
		{[]string{"--threads", "-2"}, "--threads -2"},
	}
	if !cudaBuilt() {
		cases = append(cases, flagCase{[]string{"--device", "cuda"}, "--device cuda: this musetalk was built without CUDA support (build with -tags cuda; see README)"})
	}
	for name, args := range commands {
		for _, tc := range cases {
			out, err := run(t, append(slices.Clone(args), tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s %v: %v, want an error containing %q\n%s", name, tc.args, err, tc.want, out)
			}
		}
	}
	t.Setenv("MUSETALK_DEVICE", "tpu")
	if _, err := run(t, commands["worker"]...); err == nil || !strings.Contains(err.Error(), `--device "tpu"`) {
		t.Errorf("worker with MUSETALK_DEVICE=tpu: %v, want an error naming the value", err)
	}
}

// TestWorkerEngineNamesItsDevice: the musetalk engine's self-check
// reports the backend --device started, even without weights.
func TestWorkerEngineNamesItsDevice(t *testing.T) {
	cfg, err := parseDevice(deviceCPU, builtDevices())
	if err != nil {
		t.Fatal(err)
	}
	cfg.cpu.Threads = 1
	cfg.log = slog.New(slog.DiscardHandler)
	e, err := newEngineWith("musetalk", engineSettings{weightsDir: t.TempDir(), cacheDir: t.TempDir(), device: cfg, logger: cfg.log})
	if err != nil {
		t.Fatal(err)
	}
	defer e.(io.Closer).Close()
	res, err := e.Check(context.Background())
	if err == nil || !strings.Contains(err.Error(), "musetalk weights fetch") {
		t.Errorf("Check without weights: %v, want the missing weights", err)
	}
	if want := "cpu/" + cpu.BestISA().String() + " (fp32)"; res.Device != want {
		t.Errorf("self-check device %q, want the backend's name and precision %q", res.Device, want)
	}
}
