package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control"
	"github.com/avatargen/musetalk/control/client"
	"github.com/avatargen/musetalk/control/store/sqlite"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/musetalk"
	"github.com/avatargen/musetalk/musetalk/modeldir"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/telemetry"
	"github.com/avatargen/musetalk/worker"
	"github.com/avatargen/musetalk/worker/controlblob"
	"github.com/avatargen/musetalk/worker/engine"
)

// TestJobTraceEndToEnd runs one job through the real control plane and a
// real worker with the MuseTalk engine on tiny weights, in this process,
// each with its own SDK tracer provider (as two processes would have),
// and checks the job's one trace: the tree from the submission through
// the claim, the downloads, every pipeline stage, the upload and the
// complete, joined across the worker API by traceparent, with the
// attempt's heartbeats as events; and the worker's metrics.
func TestJobTraceEndToEnd(t *testing.T) {
	needFFmpegCLI(t)
	ctx := context.Background()
	dir := t.TempDir()
	weights := filepath.Join(dir, "weights")
	if err := modeldir.WriteTiny(weights, 7); err != nil {
		t.Fatal(err)
	}
	avatar, audio := renderInputs(t, dir)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	controlSpans, workerSpans := tracetest.NewInMemoryExporter(), tracetest.NewInMemoryExporter()
	ctp := telemetry.NewProvider(sdktrace.NewSimpleSpanProcessor(controlSpans), nil, "musetalk-control", "test")
	wtp := telemetry.NewProvider(sdktrace.NewSimpleSpanProcessor(workerSpans), nil, "musetalk-worker", "test")
	reader := sdkmetric.NewManualReader()
	mp := telemetry.NewMeterProvider(reader, nil, telemetry.Service{Name: "musetalk-worker", Instance: "w1"})

	st, err := sqlite.Open(ctx, filepath.Join(dir, "control.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	blobs, err := blob.NewDir(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	defer blobs.Close()
	const key = "trace-test-internal-key-0123"
	poll := 100 * time.Millisecond
	cp, err := control.New(control.Config{Store: st, Blob: blobs, Logger: quiet, TracerProvider: ctp,
		InternalAPIKey: key, HeartbeatInterval: poll})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(cp.Handler())
	defer srv.Close()

	wblob, err := controlblob.New(srv.URL, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := newEngineWith(musetalk.EngineName, engineSettings{weightsDir: weights, cacheDir: filepath.Join(dir, "cache"),
		device: deviceConfig{name: "cpu", cpu: cpu.Options{Threads: 2}, log: quiet}, logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	healthLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{
		OrchestratorBaseURL: srv.URL, InternalAPIKey: telemetry.Secret(key), WorkerType: protocol.WorkerMain,
		Provider: worker.ProviderOther, GPUClass: "cpu", PollInterval: poll, WorkerID: "w1", Blob: wblob,
		Engines: []engine.Engine{eng}, HealthListener: healthLn, WorkDir: filepath.Join(dir, "work"), Version: "test",
		Logger: quiet, TracerProvider: wtp, MeterProvider: mp,
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(wctx) }()
	defer func() {
		stop()
		if err := <-ran; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()

	c, err := client.New(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	job, err := c.Submit(ctx, client.SubmitRequest{AvatarPath: avatar, AudioPath: audio, Params: protocol.JobParams{
		Engine: musetalk.EngineName, FaceBox: []int{16, 16, 48, 48}, BatchSize: 4, ParsingMode: "raw"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(job.TraceID) != 32 {
		t.Fatalf("the submitted job's trace_id is %q", job.TraceID)
	}
	wctx2, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	final, err := c.Wait(wctx2, job.ID, nil)
	if err != nil {
		t.Fatalf("job %s: %v", final.State, err)
	}
	if final.TraceID != job.TraceID {
		t.Fatalf("trace_id changed from %s to %s", job.TraceID, final.TraceID)
	}
	// The complete's spans end as its answer is written: wait for them.
	deadline := time.Now().Add(30 * time.Second)
	for !hasSpan(controlSpans.GetSpans(), "job.succeeded") || !hasSpan(workerSpans.GetSpans(), "worker.attempt") {
		if time.Now().After(deadline) {
			t.Fatal("the job's last spans never ended")
		}
		time.Sleep(10 * time.Millisecond)
	}

	tree := newSpanTree(t, job.TraceID, controlSpans.GetSpans(), workerSpans.GetSpans())
	tree.root(protocol.SubmitRoute)
	for child, parent := range map[string]string{
		"job.submitted":          protocol.SubmitRoute,
		"job.claimed":            protocol.SubmitRoute,
		"worker.attempt":         protocol.SubmitRoute,
		"claim":                  "worker.attempt",
		"download":               "worker.attempt",
		"engine":                 "worker.attempt",
		"upload":                 "worker.attempt",
		"complete":               "worker.attempt",
		protocol.CompleteRoute:   "complete",
		"job.succeeded":          protocol.CompleteRoute,
		musetalk.SpanLoad:        "engine",
		musetalk.SpanDecodeAudio: "engine",
		musetalk.SpanPrepare:     "engine",
		musetalk.SpanFeatures:    "engine",
		musetalk.SpanGenerate:    "engine",
		musetalk.SpanEncode:      "engine",
	} {
		tree.parentIs(child, parent, 1)
	}
	frames := 8 // 0.3 s of speech at 25 fps
	batches := (frames + 3) / 4
	for _, n := range []string{musetalk.SpanUNet, musetalk.SpanVAEDecode, musetalk.SpanBlend} {
		tree.parentIs(n, musetalk.SpanGenerate, batches)
	}
	tree.parentIs("GET "+protocol.InternalBlobPath+"{key...}", "download", 2)
	tree.parentIs("PUT "+protocol.InternalBlobPath+"{key...}", "upload", 1)
	attempt := tree.one("worker.attempt")
	if n := countEvents(attempt, "heartbeat"); n < 1 {
		t.Errorf("the attempt span has %d heartbeat events", n)
	}
	if n := countEvents(tree.one("engine"), "stage"); n < 5 {
		t.Errorf("the engine span has %d stage events, want one per stage (load, prepare, features, generate, encode)", n)
	}
	if got := tree.services(); got["musetalk-control"] == 0 || got["musetalk-worker"] == 0 {
		t.Errorf("spans by service %v, want both", got)
	}
	t.Logf("the job's trace: %d spans", len(tree.spans))

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	stages := map[string]bool{}
	var frameCount int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					if v, ok := p.Attributes.Value("musetalk.stage"); ok && m.Name == worker.MetricStageDuration {
						stages[v.AsString()] = true
					}
				}
			case metricdata.Sum[int64]:
				if m.Name == worker.MetricFrames {
					for _, p := range d.DataPoints {
						frameCount += p.Value
					}
				}
			}
		}
	}
	for _, s := range []string{"download", "engine", "upload", musetalk.SpanLoad, musetalk.SpanPrepare, musetalk.SpanFeatures,
		musetalk.SpanUNet, musetalk.SpanVAEDecode, musetalk.SpanBlend, musetalk.SpanEncode} {
		if !stages[s] {
			t.Errorf("no %s time in %s (have %v)", s, worker.MetricStageDuration, stages)
		}
	}
	if frameCount != int64(frames) {
		t.Errorf("%s = %d, want %d", worker.MetricFrames, frameCount, frames)
	}
}

// spanTree is one trace's spans, from any number of exporters.
type spanTree struct {
	t     *testing.T
	spans tracetest.SpanStubs
	byID  map[string]tracetest.SpanStub
}

func newSpanTree(t *testing.T, traceID string, exported ...tracetest.SpanStubs) *spanTree {
	tr := &spanTree{t: t, byID: map[string]tracetest.SpanStub{}}
	for _, spans := range exported {
		for _, s := range spans {
			if s.SpanContext.TraceID().String() == traceID {
				tr.spans = append(tr.spans, s)
				tr.byID[s.SpanContext.SpanID().String()] = s
			}
		}
	}
	return tr
}

func (tr *spanTree) names() []string {
	var out []string
	for _, s := range tr.spans {
		out = append(out, s.Name)
	}
	return out
}

// one returns the one span named name.
func (tr *spanTree) one(name string) tracetest.SpanStub {
	tr.t.Helper()
	var got []tracetest.SpanStub
	for _, s := range tr.spans {
		if s.Name == name {
			got = append(got, s)
		}
	}
	if len(got) != 1 {
		tr.t.Fatalf("%d %q spans in the trace, want 1: %v", len(got), name, tr.names())
	}
	return got[0]
}

// root checks that name is the trace's one root.
func (tr *spanTree) root(name string) {
	tr.t.Helper()
	for _, s := range tr.spans {
		if _, ok := tr.byID[s.Parent.SpanID().String()]; !ok && s.Name != name {
			tr.t.Errorf("span %q has no parent in the trace", s.Name)
		}
	}
	if s := tr.one(name); s.Parent.IsValid() {
		tr.t.Errorf("the root %q has a parent", name)
	}
}

// parentIs checks that there are n spans named child, each a child of a
// span named parent.
func (tr *spanTree) parentIs(child, parent string, n int) {
	tr.t.Helper()
	count := 0
	for _, s := range tr.spans {
		if s.Name != child {
			continue
		}
		count++
		if p, ok := tr.byID[s.Parent.SpanID().String()]; !ok || p.Name != parent {
			tr.t.Errorf("span %q's parent is %q, want %q", child, p.Name, parent)
		}
	}
	if count != n {
		tr.t.Errorf("%d %q spans, want %d; the trace: %v", count, child, n, tr.names())
	}
}

// services counts the spans by service.name.
func (tr *spanTree) services() map[string]int {
	out := map[string]int{}
	for _, s := range tr.spans {
		if v, ok := s.Resource.Set().Value("service.name"); ok {
			out[v.AsString()]++
		}
	}
	return out
}

func hasSpan(spans tracetest.SpanStubs, name string) bool {
	for _, s := range spans {
		if s.Name == name {
			return true
		}
	}
	return false
}

func countEvents(s tracetest.SpanStub, name string) int {
	n := 0
	for _, e := range s.Events {
		if e.Name == name {
			n++
		}
	}
	return n
}
