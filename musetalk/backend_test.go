package musetalk

import (
	"context"
	"errors"
	"go/build"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
)

// cpuBackend is an Options.NewBackend that starts a CPU backend with
// threads threads: the pipeline's tests run on the CPU.
func cpuBackend(threads int) func() (kernels.Backend, error) {
	return func() (kernels.Backend, error) {
		b, err := cpu.New(cpu.Options{Threads: threads})
		if err != nil {
			return nil, err
		}
		return b, nil
	}
}

// namedBackend is a CPU backend under another name that counts its Close
// calls (and does not close the CPU backend, which the test does).
type namedBackend struct {
	kernels.Backend
	name   string
	closed atomic.Int32
}

func newNamedBackend(t *testing.T, name string) *namedBackend {
	t.Helper()
	cb, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cb.Close() })
	return &namedBackend{Backend: cb, name: name}
}

func (b *namedBackend) Name() string { return b.name }

func (b *namedBackend) Close() error {
	b.closed.Add(1)
	return nil
}

// TestPipelineNamesNoBackend: package musetalk and the packages of this
// module it imports (outside tests) reach package kernels but no backend
// (kernels/cpu, a CUDA backend): the binary picks the device. Checked
// with and without the cuda build tag.
func TestPipelineNamesNoBackend(t *testing.T) {
	const module = "github.com/avatargen/musetalk"
	for _, tags := range [][]string{nil, {"cuda"}} {
		bc := build.Default
		bc.BuildTags = tags
		from := map[string]string{module + "/musetalk": ""} // package → the package that imports it
		queue := []string{module + "/musetalk"}
		for len(queue) > 0 {
			path := queue[0]
			queue = queue[1:]
			pkg, err := bc.ImportDir(filepath.Join("..", strings.TrimPrefix(path, module)), 0)
			if err != nil {
				t.Fatalf("tags %v: reading %s: %v", tags, path, err)
			}
			for _, imp := range pkg.Imports {
				if _, seen := from[imp]; seen || !strings.HasPrefix(imp, module+"/") {
					continue
				}
				from[imp] = path
				queue = append(queue, imp)
			}
		}
		if _, ok := from[module+"/kernels"]; !ok {
			t.Fatalf("tags %v: the walk never reached package kernels: %v", tags, from)
		}
		for path := range from {
			if !strings.HasPrefix(path, module+"/kernels/") {
				continue
			}
			chain := []string{path}
			for p := from[path]; p != ""; p = from[p] {
				chain = append(chain, p)
			}
			slices.Reverse(chain)
			t.Errorf("tags %v: the pipeline imports backend %s: %s", tags, path, strings.Join(chain, " → "))
		}
	}
}

func TestNewBackendOwnership(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := func() Options {
		return Options{WeightsDir: filepath.Join(dir, "w"), CacheDir: filepath.Join(dir, "c"),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	}
	ctx := context.Background()

	given := newNamedBackend(t, "test/given")
	o := opts()
	o.Backend = given
	r, err := New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Device() != "test/given (fp32)" {
		t.Errorf("Device %q, want the backend's name and precision, test/given (fp32)", r.Device())
	}
	if err := r.Close(); err != nil || given.closed.Load() != 0 {
		t.Errorf("Close: %v; a given backend closed %d times, want 0 (it is the caller's)", err, given.closed.Load())
	}

	made := newNamedBackend(t, "test/made")
	o = opts()
	o.NewBackend = func() (kernels.Backend, error) { return made, nil }
	if r, err = New(ctx, o); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil || made.closed.Load() != 1 {
		t.Errorf("Close: %v; the backend NewBackend made closed %d times, want 1", err, made.closed.Load())
	}

	noDevice := errors.New("no device here")
	o = opts()
	o.NewBackend = func() (kernels.Backend, error) { return nil, noDevice }
	if _, err := New(ctx, o); !errors.Is(err, noDevice) || !strings.Contains(err.Error(), "starting the backend") {
		t.Errorf("New with a failing NewBackend: %v, want it wrapped as starting the backend", err)
	}
	for name, o := range map[string]Options{"neither": opts(), "both": {Backend: given, NewBackend: o.NewBackend}} {
		if _, err := New(ctx, o); err == nil || !strings.Contains(err.Error(), "exactly one of Options.Backend and Options.NewBackend") {
			t.Errorf("New with %s of Backend and NewBackend: %v, want an error naming both", name, err)
		}
	}
}

// TestEngineChecksTheBackendsDevice: the engine starts its backend at the
// first Check, reports a failure to start with no device, tries again at
// the next Check, and then reports the backend's own name.
func TestEngineChecksTheBackendsDevice(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	be := newNamedBackend(t, "test/gpu0")
	var calls atomic.Int32
	noDevice := errors.New("the device is busy")
	e := NewEngine(EngineOptions{Options: Options{WeightsDir: filepath.Join(dir, "w"), CacheDir: filepath.Join(dir, "c"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		NewBackend: func() (kernels.Backend, error) {
			if calls.Add(1) == 1 {
				return nil, noDevice
			}
			return be, nil
		}}})
	if calls.Load() != 0 {
		t.Fatal("NewEngine started the backend")
	}
	res, err := e.Check(context.Background())
	if !errors.Is(err, noDevice) || res.Device != "" {
		t.Fatalf("Check with a backend that does not start: %+v, %v; want no device and the backend's error", res, err)
	}
	res, err = e.Check(context.Background())
	var mw *MissingWeightsError
	if !errors.As(err, &mw) || res.Device != "test/gpu0 (fp32)" || calls.Load() != 2 {
		t.Fatalf("second Check: %+v, %v after %d starts; want device test/gpu0 (fp32) and missing weights", res, err, calls.Load())
	}
	if err := e.Close(); err != nil || be.closed.Load() != 1 {
		t.Errorf("engine Close: %v; backend closed %d times, want 1", err, be.closed.Load())
	}
}
