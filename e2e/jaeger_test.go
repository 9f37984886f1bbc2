//go:build linux

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/avatargen/musetalk/internal/testenv"
	"github.com/avatargen/musetalk/protocol"
)

// Jaeger, built once per test binary from tools/jaeger (a module of its
// own: its dependencies stay out of ours).
var jaeger struct {
	once sync.Once
	bin  string
	err  error
	out  []byte
}

// jaegerBin returns the path of the Jaeger binary: `go tool -n jaeger` in
// tools/jaeger builds it (once; the go command caches the executable,
// and scripts/test builds it before the tests) and prints where it is.
func jaegerBin(t *testing.T) string {
	t.Helper()
	jaeger.once.Do(func() {
		root, err := repoRoot()
		if err != nil {
			jaeger.err = err
			return
		}
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "go"
		}
		cmd := exec.Command(goBin, "tool", "-n", "jaeger")
		cmd.Dir = filepath.Join(root, "tools", "jaeger")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		jaeger.out = stderr.Bytes()
		if err != nil {
			jaeger.err = err
			return
		}
		fields := strings.Fields(string(out))
		if len(fields) == 0 {
			jaeger.err = fmt.Errorf("go tool -n jaeger printed nothing")
			return
		}
		jaeger.bin = fields[0]
	})
	if jaeger.err != nil {
		testenv.Missing(t, "building Jaeger (cd tools/jaeger && go tool -n jaeger, which needs the Go module proxy the first time): %v\n%s", jaeger.err, jaeger.out)
	}
	return jaeger.bin
}

// jaegerConfig is a Jaeger v2 (OpenTelemetry collector) configuration:
// memory storage, the OTLP receiver over gRPC and HTTP, the query
// service, and nothing on a fixed port.
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 1000
  jaeger_query:
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: %s
    grpc:
      endpoint: %s
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// jaegerSpan is a span as Jaeger's query API (/api/traces/{id}) shows it.
type jaegerSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Logs []struct {
		Fields []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"fields"`
	} `json:"logs"`
	ProcessID string `json:"processID"`
}

type jaegerTrace struct {
	TraceID   string       `json:"traceID"`
	Spans     []jaegerSpan `json:"spans"`
	Processes map[string]struct {
		Service string `json:"serviceName"`
	} `json:"processes"`
}

// TestJobTraceInJaeger runs a job through a real control plane and a real
// MuseTalk worker (tiny weights), both exporting spans by OTLP/HTTP to a
// real Jaeger (memory storage), then reads the job's trace back from
// Jaeger's query API by the trace_id in the job's JSON: every step from the
// submission to the complete, each pipeline stage, the parent of each, the
// two services, and the attempt's heartbeats as its span's logs.
func TestJobTraceInJaeger(t *testing.T) {
	needSuite(t)
	if avatarPNG == "" {
		testenv.Missing(t, "ffmpeg is not installed")
	}
	bin := jaegerBin(t)
	t.Parallel()
	dir := t.TempDir()

	queryAddr, queryGRPC, otlpGRPC, otlpHTTP := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	cfg := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(jaegerConfig, queryAddr, queryGRPC, otlpGRPC, otlpHTTP)), 0o644); err != nil {
		t.Fatal(err)
	}
	jp := startProc(t, dir, "jaeger", bin, []string{"--config", cfg}, nil, "")
	hc := &http.Client{Timeout: 10 * time.Second}
	eventually(t, 60*time.Second, 100*time.Millisecond, "Jaeger answers", func() (bool, string) {
		if jp.exited() {
			t.Fatalf("jaeger exited:\n%s", tailFile(jp.logPath, 30))
		}
		resp, err := hc.Get("http://" + queryAddr + "/api/services")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})

	weights := filepath.Join(dir, "weights")
	if out, err := exec.Command(musetalkBin, "weights", "tiny", "--out", weights).CombinedOutput(); err != nil {
		t.Fatalf("musetalk weights tiny: %v\n%s", err, out)
	}
	// A textured still (the suite's avatar is one flat colour: no face to
	// animate).
	avatar := filepath.Join(dir, "face.png")
	if out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
		"-i", "testsrc=size=64x64:rate=1", "-frames:v", "1", avatar).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	otel := []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + otlpHTTP,
		"OTEL_BSP_SCHEDULE_DELAY=200", // ms: spans reach Jaeger soon after they end
	}
	controlAddr := freeAddr(t)
	control := startProc(t, dir, "control", musetalkBin, []string{"control", "--addr", controlAddr,
		"--data-dir", filepath.Join(dir, "control-data"), "--heartbeat-interval", "250ms"},
		append([]string{"INTERNAL_API_KEY=" + internalKey}, otel...), "")
	eventually(t, 30*time.Second, 50*time.Millisecond, "the control plane answers", func() (bool, string) {
		if control.exited() {
			t.Fatalf("control exited:\n%s", tailFile(control.logPath, 20))
		}
		resp, err := hc.Get("http://" + controlAddr + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	// No B2: the worker moves its objects through the control plane, so
	// those calls are in the trace too.
	worker := startProc(t, dir, "worker", musetalkBin, []string{"worker", "--engine", "musetalk", "--weights", weights,
		"--avatar-cache", filepath.Join(dir, "cache"), "--device", "cpu", "--threads", "2",
		"--health-addr", freeAddr(t), "--work-dir", filepath.Join(dir, "work")},
		append([]string{"ORCHESTRATOR_BASE_URL=http://" + controlAddr, "INTERNAL_API_KEY=" + internalKey,
			"WORKER_ID=jaeger-w1", "WORKER_TYPE=main", "PROVIDER=other", "GPU_CLASS_NAME=E2E_CPU", "POLL_INTERVAL_SEC=0.25"}, otel...), "")

	// Submit: two seconds of speech at 25 fps, 50 frames in batches of 8.
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, f := range []struct{ field, path string }{{"avatar", avatar}, {"audio", speechWAV}} {
		data, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		fw, _ := mw.CreateFormFile(f.field, filepath.Base(f.path))
		fw.Write(data)
	}
	mw.WriteField("params", `{"engine":"musetalk","face_box":[16,16,48,48],"batch_size":8,"parsing_mode":"raw"}`)
	mw.Close()
	resp, err := hc.Post("http://"+controlAddr+"/v1/jobs", mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	var job protocol.JobView
	err = json.NewDecoder(resp.Body).Decode(&job)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated || len(job.TraceID) != 32 {
		t.Fatalf("submit: HTTP %d, %v, job %+v", resp.StatusCode, err, job)
	}
	eventually(t, 2*time.Minute, 200*time.Millisecond, "the job succeeds", func() (bool, string) {
		if worker.exited() {
			t.Fatalf("worker exited:\n%s", tailFile(worker.logPath, 20))
		}
		r, err := hc.Get("http://" + controlAddr + "/v1/jobs/" + job.ID)
		if err != nil {
			return false, err.Error()
		}
		defer r.Body.Close()
		var v protocol.JobView
		if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
			return false, err.Error()
		}
		if v.State.Final() && v.State != protocol.JobSucceeded {
			t.Fatalf("job ended %s: %s", v.State, v.Error)
		}
		if v.TraceID != job.TraceID {
			t.Fatalf("trace_id went from %s to %s", job.TraceID, v.TraceID)
		}
		return v.State == protocol.JobSucceeded, string(v.State)
	})
	// A stopping process flushes its spans.
	for _, p := range []*proc{worker, control} {
		if err := p.signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("%s exited %d:\n%s", p.name, code, tailFile(p.logPath, 20))
		}
	}

	// The trace as Jaeger stores it.
	var tr jaegerTrace
	want := []string{protocol.SubmitRoute, "job.claimed", "worker.attempt", "engine", "generate", "job.succeeded"}
	eventually(t, 30*time.Second, 200*time.Millisecond, "Jaeger has the job's trace", func() (bool, string) {
		r, err := hc.Get("http://" + queryAddr + "/api/traces/" + job.TraceID)
		if err != nil {
			return false, err.Error()
		}
		defer r.Body.Close()
		var got struct {
			Data []jaegerTrace `json:"data"`
		}
		if r.StatusCode != http.StatusOK || json.NewDecoder(r.Body).Decode(&got) != nil || len(got.Data) != 1 {
			return false, r.Status
		}
		tr = got.Data[0]
		have := map[string]bool{}
		for _, s := range tr.Spans {
			have[s.OperationName] = true
		}
		for _, n := range want {
			if !have[n] {
				return false, fmt.Sprintf("no %q span yet among %d", n, len(tr.Spans))
			}
		}
		return true, ""
	})

	byID := map[string]jaegerSpan{}
	for _, s := range tr.Spans {
		byID[s.SpanID] = s
	}
	parentOf := func(s jaegerSpan) (jaegerSpan, bool) {
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" && r.TraceID == tr.TraceID {
				p, ok := byID[r.SpanID]
				return p, ok
			}
		}
		return jaegerSpan{}, false
	}
	count := map[string]int{}
	var roots []string
	for _, s := range tr.Spans {
		count[s.OperationName]++
		if _, ok := parentOf(s); !ok {
			roots = append(roots, s.OperationName)
		}
	}
	if len(roots) != 1 || roots[0] != protocol.SubmitRoute {
		t.Errorf("roots of the trace %v, want only %q", roots, protocol.SubmitRoute)
	}
	batches := 7 // 50 frames in batches of 8
	blobGet, blobPut := "GET "+protocol.InternalBlobPath+"{key...}", "PUT "+protocol.InternalBlobPath+"{key...}"
	for _, c := range []struct {
		span, parent, service string
		n                     int
	}{
		{"job.submitted", protocol.SubmitRoute, "musetalk-control", 1},
		{"job.claimed", protocol.SubmitRoute, "musetalk-control", 1},
		{"worker.attempt", protocol.SubmitRoute, "musetalk-worker", 1},
		{"claim", "worker.attempt", "musetalk-worker", 1},
		{"download", "worker.attempt", "musetalk-worker", 1},
		{blobGet, "download", "musetalk-control", 2},
		{"engine", "worker.attempt", "musetalk-worker", 1},
		{"load", "engine", "musetalk-worker", 1},
		{"decode_audio", "engine", "musetalk-worker", 1},
		{"prepare", "engine", "musetalk-worker", 1},
		{"features", "engine", "musetalk-worker", 1},
		{"generate", "engine", "musetalk-worker", 1},
		{"unet", "generate", "musetalk-worker", batches},
		{"vae_decode", "generate", "musetalk-worker", batches},
		{"blend", "generate", "musetalk-worker", batches},
		{"encode", "engine", "musetalk-worker", 1},
		{"upload", "worker.attempt", "musetalk-worker", 1},
		{blobPut, "upload", "musetalk-control", 1},
		{"complete", "worker.attempt", "musetalk-worker", 1},
		{protocol.CompleteRoute, "complete", "musetalk-control", 1},
		{"job.succeeded", protocol.CompleteRoute, "musetalk-control", 1},
	} {
		if count[c.span] != c.n {
			t.Errorf("%d %q spans in Jaeger, want %d", count[c.span], c.span, c.n)
		}
		for _, s := range tr.Spans {
			if s.OperationName != c.span {
				continue
			}
			if p, ok := parentOf(s); !ok || p.OperationName != c.parent {
				t.Errorf("%q: parent %q, want %q", c.span, p.OperationName, c.parent)
			}
			if svc := tr.Processes[s.ProcessID].Service; svc != c.service {
				t.Errorf("%q comes from service %q, want %q", c.span, svc, c.service)
			}
		}
	}
	for _, s := range tr.Spans {
		if s.OperationName != "worker.attempt" {
			continue
		}
		beats := 0
		for _, l := range s.Logs {
			for _, f := range l.Fields {
				if f.Key == "event" && f.Value == "heartbeat" {
					beats++
				}
			}
		}
		if beats == 0 {
			t.Errorf("the attempt span has no heartbeat logs (%d logs)", len(s.Logs))
		}
		t.Logf("trace %s in Jaeger: %d spans; the attempt span has %d heartbeat logs", tr.TraceID, len(tr.Spans), beats)
	}
}
