package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// keepGC undoes the GOGC that bench control sets for the process.
func keepGC(t *testing.T) {
	old := debug.SetGCPercent(100)
	debug.SetGCPercent(old)
	t.Cleanup(func() { debug.SetGCPercent(old) })
}

func TestBenchControlInProcess(t *testing.T) {
	keepGC(t)
	out, err := run(t, "bench", "control", "--workers", "4", "--duration", "1s", "--heartbeat-interval", "50ms",
		"--submitters", "2", "--idle-wait", "20ms", "--work-dir", t.TempDir())
	if err != nil {
		t.Fatalf("bench control: %v\n%s", err, out)
	}
	for _, want := range []string{"in-process, SQLite", "heartbeat", "claim → upload → complete:", "; 0 violations", "this process:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestBenchControlObjectsDir: --objects-dir puts the object store in a new
// directory under the one given (the run names it, and nothing is stored
// under the work directory) and removes it afterwards.
func TestBenchControlObjectsDir(t *testing.T) {
	keepGC(t)
	dir, objects := t.TempDir(), t.TempDir()
	out, err := run(t, "bench", "control", "--upload", "direct", "--workers", "4", "--duration", "1s",
		"--heartbeat-interval", "50ms", "--submitters", "2", "--idle-wait", "20ms", "--work-dir", dir, "--objects-dir", objects)
	if err != nil {
		t.Fatalf("bench control: %v\n%s", err, out)
	}
	if !strings.Contains(out, "; 0 violations") || !strings.Contains(out, "objects in "+objects+"/musetalk-bench-objects-") {
		t.Errorf("output:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "blobs")); !os.IsNotExist(err) {
		t.Errorf("objects under the work directory too (%v)", err)
	}
	if left, _ := os.ReadDir(objects); len(left) != 0 {
		t.Errorf("%s after the run: %v, want it empty", objects, left)
	}
}

// TestBenchControlDirectUpload: with --upload direct the workers write
// their outputs into the object store themselves and the control plane's
// complete finds and checks them there; nothing goes through its upload
// route, and every job still completes exactly once.
func TestBenchControlDirectUpload(t *testing.T) {
	keepGC(t)
	dir := t.TempDir()
	out, err := run(t, "bench", "control", "--upload", "direct", "--workers", "4", "--duration", "1s",
		"--heartbeat-interval", "50ms", "--submitters", "2", "--idle-wait", "20ms", "--work-dir", dir)
	if err != nil {
		t.Fatalf("bench control: %v\n%s", err, out)
	}
	if !strings.Contains(out, "; 0 violations") || strings.Contains(out, " 0 completed") {
		t.Errorf("output:\n%s", out)
	}
	outputs, err := filepath.Glob(filepath.Join(dir, "blobs", "outputs", "*", "*.mp4"))
	if err != nil || len(outputs) == 0 {
		t.Errorf("no outputs in the object store (%v)", err)
	}
	log, err := os.ReadFile(filepath.Join(dir, "control.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), "/internal/main/blobs/") {
		t.Errorf("an output went through the control plane's upload route:\n%s", log)
	}
	if !strings.Contains(string(log), "job succeeded") {
		t.Errorf("the control plane's log has no completed job")
	}
}

func TestBenchControlPostgresReplicas(t *testing.T) {
	url := os.Getenv("MUSETALK_TEST_POSTGRES_URL")
	if url == "" {
		t.Skip("MUSETALK_TEST_POSTGRES_URL is not set")
	}
	keepGC(t)
	out, err := run(t, "bench", "control", "--db", url, "--replicas", "2", "--workers", "6", "--duration", "1s",
		"--heartbeat-interval", "50ms", "--submitters", "2", "--idle-wait", "20ms", "--work-dir", t.TempDir())
	if err != nil {
		t.Fatalf("bench control: %v\n%s", err, out)
	}
	if !strings.Contains(out, "2 replica(s)") || !strings.Contains(out, "; 0 violations") {
		t.Errorf("output:\n%s", out)
	}
}

func TestBenchControlFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--url", "http://127.0.0.1:1", "--work-dir", "x"}, "do not go with --url"},
		{[]string{"--url", "http://127.0.0.1:1", "--objects-dir", "x"}, "do not go with --url"},
		{[]string{"--objects-dir", "/nonexistent/objects"}, "--objects-dir"},
		{[]string{"--url", "http://127.0.0.1:1", "--internal-api-key", ""}, "worker key"},
		{[]string{"--replicas", "2"}, "--replicas needs a postgres://"},
		{[]string{"--workers", "0"}, "--workers 0"},
		{[]string{"--upload", "b2"}, "want control or direct"},
		{[]string{"--upload", "direct", "--url", "http://127.0.0.1:1", "--internal-api-key", "k"}, "in-process"},
	} {
		t.Setenv("INTERNAL_API_KEY", "")
		_, err := run(t, append([]string{"bench", "control"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("bench control %v: %v; want an error saying %q", c.args, err, c.want)
		}
	}
}

func TestBenchControlFailsOnErrors(t *testing.T) {
	keepGC(t)
	// A control plane that refuses every call: the wrong worker key.
	c := startControl(t)
	out, err := run(t, "bench", "control", "--url", c.url, "--internal-api-key", "wrong",
		"--workers", "2", "--duration", "300ms", "--cycles=false", "--heartbeat-interval", "50ms")
	if err == nil || !strings.Contains(err.Error(), "calls failed") || !strings.Contains(out, "401") {
		t.Fatalf("bench control against a refusing control plane: %v\n%s", err, out)
	}
}
