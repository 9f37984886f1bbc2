package worker_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker"
)

const (
	secretKey   = "sekret-internal-key-123"
	secretB2Key = "sekret-b2-app-key-456"
)

// seedEnv is the Salad deployment's environment from the seed.
func seedEnv() map[string]string {
	return map[string]string{
		"ORCHESTRATOR_BASE_URL": "https://orch.example.com",
		"INTERNAL_API_KEY":      secretKey,
		"WORKER_TYPE":           "main",
		"PROVIDER":              "salad",
		"GPU_CLASS_NAME":        "RTX_3060",
		"B2_KEY_ID":             "keyid",
		"B2_APP_KEY":            secretB2Key,
		"B2_BUCKET_NAME":        "talking-avatar",
		"POLL_INTERVAL_SEC":     "5",
		"SALAD_MACHINE_ID":      "5d0c3a4e-1111-2222-3333-444455556666",
	}
}

func getenv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigFromEnvSeed(t *testing.T) {
	t.Parallel()
	c, err := worker.ConfigFromEnv(getenv(seedEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if c.OrchestratorBaseURL != "https://orch.example.com" || c.InternalAPIKey.Reveal() != secretKey ||
		c.WorkerType != protocol.WorkerMain || c.Provider != "salad" || c.GPUClass != "RTX_3060" ||
		c.B2KeyID != "keyid" || c.B2AppKey.Reveal() != secretB2Key || c.B2BucketName != "talking-avatar" ||
		c.PollInterval != 5*time.Second || !c.HasB2() {
		t.Errorf("config %+v does not match the environment", c)
	}
	if c.WorkerID != "salad-5d0c3a4e-1111-2222-3333-444455556666" {
		t.Errorf("WorkerID = %q", c.WorkerID)
	}
	for _, s := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)} {
		if strings.Contains(s, secretKey) || strings.Contains(s, secretB2Key) {
			t.Errorf("formatting the config shows a secret: %s", s)
		}
	}
}

func TestConfigFromEnvDefaults(t *testing.T) {
	t.Parallel()
	c, err := worker.ConfigFromEnv(getenv(map[string]string{
		"ORCHESTRATOR_BASE_URL": "http://127.0.0.1:8080",
		"INTERNAL_API_KEY":      secretKey,
		"WORKER_ID":             "w1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.WorkerType != protocol.WorkerMain || c.Provider != "other" || c.GPUClass != "unknown" ||
		c.PollInterval != worker.DefaultPollInterval || c.HasB2() || c.WorkerID != "w1" {
		t.Errorf("defaults: %+v", c)
	}
}

func TestConfigWorkerIDDefaults(t *testing.T) {
	t.Parallel()
	host := func() (string, error) { return "gpu-box.local", nil }
	for _, tc := range []struct {
		name string
		env  map[string]string
		host func() (string, error)
		want string
	}{
		{"salad machine", map[string]string{"SALAD_MACHINE_ID": "m-1"}, host, "salad-m-1"},
		{"salad group and machine", map[string]string{"SALAD_MACHINE_ID": "m-1", "SALAD_CONTAINER_GROUP_ID": "g-2"}, host, "salad-g-2-m-1"},
		{"vast", map[string]string{"VAST_CONTAINERLABEL": "C.12345"}, host, "vast-C.12345"},
		{"hostname", map[string]string{}, host, "gpu-box.local"},
		{"odd hostname", map[string]string{}, func() (string, error) { return "_my host/1", nil }, "my-host-1"},
		{"no hostname", map[string]string{}, func() (string, error) { return "", errors.New("none") }, "worker"},
	} {
		got := worker.DefaultWorkerID(getenv(tc.env), tc.host)
		if got != tc.want {
			t.Errorf("%s: DefaultWorkerID = %q, want %q", tc.name, got, tc.want)
		}
		if !protocol.ValidID(got) {
			t.Errorf("%s: %q is not a valid id", tc.name, got)
		}
	}
	// ConfigFromEnv falls back to the machine's host name.
	env := seedEnv()
	delete(env, "SALAD_MACHINE_ID")
	c, err := worker.ConfigFromEnv(getenv(env))
	if err != nil {
		t.Fatal(err)
	}
	if want := worker.DefaultWorkerID(getenv(nil), os.Hostname); c.WorkerID != want {
		t.Errorf("WorkerID = %q, want the host name %q", c.WorkerID, want)
	}
	// The seed's Vast command line sets WORKER_ID itself.
	env["WORKER_ID"] = "vast-C.777"
	env["VAST_CONTAINERLABEL"] = "C.888"
	if c, err = worker.ConfigFromEnv(getenv(env)); err != nil || c.WorkerID != "vast-C.777" {
		t.Errorf("explicit WORKER_ID: %q, %v", c.WorkerID, err)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		variable, value string
		want            string // the error names the variable and says this
	}{
		{"ORCHESTRATOR_BASE_URL", "", "required"},
		{"ORCHESTRATOR_BASE_URL", "orch.example.com", "http:// or https://"},
		{"ORCHESTRATOR_BASE_URL", "ftp://orch.example.com", "http:// or https://"},
		{"ORCHESTRATOR_BASE_URL", "https://user:" + secretKey + "@orch.example.com", "credentials"},
		{"INTERNAL_API_KEY", "", "required"},
		{"WORKER_TYPE", "gpu", `"gpu" is not one of main, transient`},
		{"PROVIDER", "aws", `"aws" is not one of salad, vast, other`},
		{"GPU_CLASS_NAME", strings.Repeat("X", 65), "longer than 64"},
		{"B2_KEY_ID", "", "B2_KEY_ID: required when"},
		{"B2_APP_KEY", "", "B2_APP_KEY: required when"},
		{"B2_BUCKET_NAME", "", "B2_BUCKET_NAME: required when"},
		{"POLL_INTERVAL_SEC", "five", `"five" is not a number`},
		{"POLL_INTERVAL_SEC", "0", "outside"},
		{"POLL_INTERVAL_SEC", "-1", "outside"},
		{"POLL_INTERVAL_SEC", "NaN", "outside"},
		{"WORKER_ID", "bad id!", `"bad id!" is not`},
		{"WORKER_ID", strings.Repeat("w", 129), "is not 1 to 128"},
	} {
		env := seedEnv()
		env[tc.variable] = tc.value
		_, err := worker.ConfigFromEnv(getenv(env))
		if err == nil {
			t.Errorf("%s=%q: no error", tc.variable, tc.value)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, tc.variable+":") && !strings.HasPrefix(msg, tc.variable+",") {
			t.Errorf("%s=%q: error %q does not start with the variable's name", tc.variable, tc.value, msg)
		}
		if !strings.Contains(msg, tc.want) {
			t.Errorf("%s=%q: error %q does not say %q", tc.variable, tc.value, msg, tc.want)
		}
		if strings.Contains(msg, secretKey) || strings.Contains(msg, secretB2Key) {
			t.Errorf("%s=%q: error %q shows a secret", tc.variable, tc.value, msg)
		}
	}
	// No B2 variable at all is fine: the caller brings the object store.
	env := seedEnv()
	delete(env, "B2_KEY_ID")
	delete(env, "B2_APP_KEY")
	delete(env, "B2_BUCKET_NAME")
	if c, err := worker.ConfigFromEnv(getenv(env)); err != nil || c.HasB2() {
		t.Errorf("without B2: %v, HasB2 %v", err, c.HasB2())
	}
}

// Every variable EnvVars names is one ConfigFromEnv asks for, and the other
// way round, so the deployment test's list cannot drift from the code.
func TestEnvVarsMatchesConfigFromEnv(t *testing.T) {
	asked := map[string]bool{}
	// Once with nothing set and once with everything set, so that variables
	// read only when others are present are asked for too.
	for _, v := range []string{"", "x"} {
		worker.ConfigFromEnv(func(k string) string {
			asked[k] = true
			switch {
			case k == "WORKER_ID" || v == "":
				return "" // so that the provider's variables are read
			case k == "POLL_INTERVAL_SEC":
				return "5"
			}
			return v
		})
	}
	listed := map[string]bool{}
	for _, k := range worker.EnvVars() {
		listed[k] = true
		if !asked[k] {
			t.Errorf("EnvVars lists %s, which ConfigFromEnv never reads", k)
		}
	}
	for k := range asked {
		if !listed[k] {
			t.Errorf("ConfigFromEnv reads %s, missing from EnvVars", k)
		}
	}
}

// TestConfigFromEnvNamesEveryProblem: a fresh deployment that misses
// several variables learns about all of them from one start, not one per
// restart.
func TestConfigFromEnvNamesEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := worker.ConfigFromEnv(getenv(map[string]string{
		"WORKER_TYPE": "gpu", "POLL_INTERVAL_SEC": "five", "B2_KEY_ID": "id",
	}))
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, v := range []string{"ORCHESTRATOR_BASE_URL: required", "INTERNAL_API_KEY: required", "WORKER_TYPE:", "POLL_INTERVAL_SEC:", "B2_APP_KEY, B2_BUCKET_NAME: required"} {
		if !strings.Contains(msg, v) {
			t.Errorf("the error does not name %s:\n%s", v, msg)
		}
	}
	if n := strings.Count(msg, "\n") + 1; n != 5 {
		t.Errorf("want one line per problem (5), got %d:\n%s", n, msg)
	}
}
