// Package deploy holds the Salad and Vast deployment files. This test keeps
// them honest: every variable they set is one the worker reads, and the
// probes point at what the worker serves.
package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/worker"
)

type probe struct {
	HTTP *struct {
		Path string `json:"path"`
		Port int    `json:"port"`
	} `json:"http"`
	InitialDelaySeconds int `json:"initial_delay_seconds"`
	PeriodSeconds       int `json:"period_seconds"`
	TimeoutSeconds      int `json:"timeout_seconds"`
	FailureThreshold    int `json:"failure_threshold"`
}

type containerGroup struct {
	Container struct {
		Image     string            `json:"image"`
		Command   []string          `json:"command"`
		Env       map[string]string `json:"environment_variables"`
		Resources struct {
			CPU    int   `json:"cpu"`
			Memory int   `json:"memory"`
			SHM    *int  `json:"shm_size"`
			GPUs   []any `json:"gpu_classes"`
		} `json:"resources"`
	} `json:"container"`
	Startup   *probe `json:"startup_probe"`
	Liveness  *probe `json:"liveness_probe"`
	Readiness *probe `json:"readiness_probe"`
}

func TestSaladContainerGroup(t *testing.T) {
	raw, err := os.ReadFile("salad/container-group.json")
	if err != nil {
		t.Fatal(err)
	}
	var g containerGroup
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&g); err != nil {
		t.Fatalf("salad/container-group.json: %v", err)
	}
	checkVars(t, "salad/container-group.json", keys(g.Container.Env))
	if g.Container.Env["WORKER_TYPE"] != "main" || g.Container.Env["PROVIDER"] != "salad" {
		t.Errorf("the Salad group is the main pool on provider salad: %v", g.Container.Env)
	}
	if g.Container.Resources.SHM != nil || strings.Contains(string(raw), "shm") {
		t.Error("the worker needs no enlarged /dev/shm; the file must not ask for one")
	}
	if !slices.Equal(g.Container.Command, []string{"musetalk", "worker"}) {
		t.Errorf("command %v, want musetalk worker", g.Container.Command)
	}
	for name, p := range map[string]*probe{"startup": g.Startup, "liveness": g.Liveness, "readiness": g.Readiness} {
		if p == nil || p.HTTP == nil || p.HTTP.Port != 8000 {
			t.Fatalf("%s probe must be HTTP on port 8000: %+v", name, p)
		}
	}
	if g.Liveness.HTTP.Path != "/health" || g.Startup.HTTP.Path != "/health" || g.Readiness.HTTP.Path != "/ready" {
		t.Errorf("probe paths: startup %s, liveness %s, readiness %s", g.Startup.HTTP.Path, g.Liveness.HTTP.Path, g.Readiness.HTTP.Path)
	}
	// Liveness must tolerate the worker's own unhealthy window (3 heartbeat
	// intervals of 5 s) before Salad reallocates the container.
	if g.Liveness.PeriodSeconds*g.Liveness.FailureThreshold < 15 {
		t.Errorf("liveness gives up after %d s, less than 3 heartbeat intervals", g.Liveness.PeriodSeconds*g.Liveness.FailureThreshold)
	}
}

var dockerEnv = regexp.MustCompile(`-e\s+([A-Z_][A-Z0-9_]*)=`)

func TestVastOnStart(t *testing.T) {
	raw, err := os.ReadFile("vast/onstart.sh")
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	var vars []string
	for _, m := range dockerEnv.FindAllStringSubmatch(s, -1) {
		vars = append(vars, m[1])
	}
	if len(vars) < 10 {
		t.Fatalf("found only %d -e variables in vast/onstart.sh", len(vars))
	}
	checkVars(t, "vast/onstart.sh", vars)
	if strings.Contains(s, "--shm-size") {
		t.Error("vast/onstart.sh still asks for --shm-size; the worker does not need it")
	}
	for _, want := range []string{"WORKER_TYPE=transient", "PROVIDER=vast", `WORKER_ID="vast-${VAST_CONTAINERLABEL}"`, "musetalk worker"} {
		if !strings.Contains(s, want) {
			t.Errorf("vast/onstart.sh lacks %s", want)
		}
	}
}

// checkVars fails for any variable the worker does not read, and for any
// of the seed's required ones that the file leaves out.
func checkVars(t *testing.T, file string, vars []string) {
	t.Helper()
	read := worker.EnvVars()
	for _, v := range vars {
		if !slices.Contains(read, v) {
			t.Errorf("%s sets %s, which the worker does not read", file, v)
		}
	}
	for _, need := range []string{"ORCHESTRATOR_BASE_URL", "INTERNAL_API_KEY", "WORKER_TYPE", "PROVIDER", "GPU_CLASS_NAME",
		"B2_KEY_ID", "B2_APP_KEY", "B2_BUCKET_NAME", "POLL_INTERVAL_SEC"} {
		if !slices.Contains(vars, need) {
			t.Errorf("%s does not set %s", file, need)
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
