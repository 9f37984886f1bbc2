package worker

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/controlblob"
	"github.com/avatargen/musetalk/worker/engine"
)

func TestTraceOfOneAttempt(t *testing.T) {
	t.Parallel()
	workerSpans := tracetest.NewInMemoryExporter()
	wtp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(workerSpans))
	ctp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewInMemoryExporter()))
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}, workerTracing: wtp, controlTracing: ctp})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	busy := func() int {
		n := 0
		for _, hb := range h.rec.heartbeats(t) {
			if hb.JobID == id {
				n++
			}
		}
		return n
	}
	// The second busy heartbeat is sent after the first one's event was added.
	waitFor(t, "two heartbeats during the job", func() bool { return busy() >= 2 })
	eng.release <- nil
	waitFor(t, "the attempt span", func() bool {
		for _, s := range workerSpans.GetSpans() {
			if s.Name == "worker.attempt" {
				return true
			}
		}
		return false
	})

	v := h.job(id)
	if v.State != protocol.JobSucceeded {
		t.Fatalf("job %s", v.State)
	}
	parent := trace.SpanContextFromContext(extractTraceContext(t, v.TraceContext))
	if !parent.IsValid() {
		t.Fatalf("the job carries no trace context: %v", v.TraceContext)
	}

	spans := map[string]tracetest.SpanStub{}
	for _, s := range workerSpans.GetSpans() {
		if _, dup := spans[s.Name]; dup {
			t.Errorf("two %q spans", s.Name)
		}
		spans[s.Name] = s
	}
	root, ok := spans["worker.attempt"]
	if !ok {
		t.Fatalf("no worker.attempt span in %v", names(workerSpans.GetSpans()))
	}
	if root.SpanContext.TraceID() != parent.TraceID() || root.Parent.SpanID() != parent.SpanID() {
		t.Errorf("the attempt span does not continue the job's trace: trace %s parent %s, want %s %s",
			root.SpanContext.TraceID(), root.Parent.SpanID(), parent.TraceID(), parent.SpanID())
	}
	for _, name := range []string{"claim", "download", "engine", "upload", "complete"} {
		s, ok := spans[name]
		if !ok {
			t.Errorf("no %q span in %v", name, names(workerSpans.GetSpans()))
			continue
		}
		if s.Parent.SpanID() != root.SpanContext.SpanID() || s.SpanContext.TraceID() != parent.TraceID() {
			t.Errorf("span %q is not a child of the attempt span", name)
		}
	}
	if len(spans) != 6 {
		t.Errorf("spans %v, want the attempt and its five steps", names(workerSpans.GetSpans()))
	}
	if !hasEvent(spans["engine"], "stage") {
		t.Errorf("the engine span has no stage event: %+v", spans["engine"].Events)
	}
	if !hasEvent(root, "heartbeat") {
		t.Errorf("the attempt span has no heartbeat event: %+v", root.Events)
	}
	if !spans["claim"].StartTime.Equal(root.StartTime) || spans["complete"].EndTime.After(root.EndTime) {
		t.Errorf("the steps do not sit inside the attempt span")
	}
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

func hasEvent(s tracetest.SpanStub, name string) bool {
	for _, e := range s.Events {
		if e.Name == name {
			return true
		}
	}
	return false
}

func extractTraceContext(t *testing.T, carrier map[string]string) context.Context {
	t.Helper()
	return propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier(carrier))
}

// TestTraceCrossesTheWorkerAPI follows one job across both processes:
// the worker's calls carry the attempt's traceparent, so the control
// plane's spans for the downloads, the upload and the complete are
// children of the worker's; heartbeats and progress posts stay out of the
// job's trace. The worker's metrics record the attempt's stages and
// frames.
func TestTraceCrossesTheWorkerAPI(t *testing.T) {
	t.Parallel()
	workerSpans, controlSpans := tracetest.NewInMemoryExporter(), tracetest.NewInMemoryExporter()
	wtp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(workerSpans))
	ctp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(controlSpans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}, workerTracing: wtp, controlTracing: ctp,
		blob: func(h *harness) blob.Store {
			s, err := controlblob.New(h.srv.URL, testKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		before: func(w *Worker) {
			var err error
			if w.met, err = newWorkerMetrics(mp, w.cfg.Engines); err != nil {
				t.Fatal(err)
			}
		},
	})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	waitFor(t, "a progress post", func() bool { return len(h.rec.calls("progress")) > 0 })
	eng.release <- nil
	waitFor(t, "the job's last span", func() bool {
		for _, s := range controlSpans.GetSpans() {
			if s.Name == "job.succeeded" {
				return true
			}
		}
		return false
	})
	waitFor(t, "the attempt span", func() bool { return len(byName(workerSpans.GetSpans(), "worker.attempt")) == 1 })

	v := h.job(id)
	if v.State != protocol.JobSucceeded {
		t.Fatalf("job %s", v.State)
	}
	if len(v.TraceID) != 32 || v.TraceID != trace.SpanContextFromContext(extractTraceContext(t, v.TraceContext)).TraceID().String() {
		t.Fatalf("trace_id %q does not match trace_context %v", v.TraceID, v.TraceContext)
	}
	var inTrace tracetest.SpanStubs
	for _, s := range append(workerSpans.GetSpans(), controlSpans.GetSpans()...) {
		if s.SpanContext.TraceID().String() == v.TraceID {
			inTrace = append(inTrace, s)
		}
	}
	one := func(name string) tracetest.SpanStub {
		t.Helper()
		got := byName(inTrace, name)
		if len(got) != 1 {
			t.Fatalf("%d %q spans in the job's trace, want 1; the trace: %v", len(got), name, names(inTrace))
		}
		return got[0]
	}
	childOf := func(child, parent tracetest.SpanStub) {
		t.Helper()
		if child.Parent.SpanID() != parent.SpanContext.SpanID() {
			t.Errorf("%q is not a child of %q", child.Name, parent.Name)
		}
	}
	submit := one(protocol.SubmitRoute)
	if submit.Parent.IsValid() {
		t.Errorf("the submission span has a parent (%s); it should be the trace's root", submit.Parent.SpanID())
	}
	attempt := one("worker.attempt")
	childOf(attempt, submit)
	childOf(one("job.submitted"), submit)
	childOf(one("job.claimed"), submit)
	for _, n := range []string{"claim", "download", "engine", "upload", "complete"} {
		childOf(one(n), attempt)
	}
	complete := one(protocol.CompleteRoute)
	childOf(complete, one("complete"))
	childOf(one("job.succeeded"), complete)
	var gets, puts int
	for _, s := range inTrace {
		switch {
		case strings.HasPrefix(s.Name, "GET "+protocol.InternalBlobPath):
			gets++
			childOf(s, one("download"))
		case strings.HasPrefix(s.Name, "PUT "+protocol.InternalBlobPath):
			puts++
			childOf(s, one("upload"))
		case s.Name == protocol.ProgressRoute || s.Name == protocol.HeartbeatRoute || s.Name == protocol.ClaimRoute:
			t.Errorf("%q is in the job's trace", s.Name)
		}
	}
	if gets != 2 || puts != 1 {
		t.Errorf("%d blob GETs and %d PUTs in the job's trace, want 2 and 1: %v", gets, puts, names(inTrace))
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	stages := map[string]uint64{}
	var frames int64
	var fps float64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				if m.Name == MetricStageDuration {
					for _, p := range d.DataPoints {
						st, _ := p.Attributes.Value("musetalk.stage")
						stages[st.AsString()] += p.Count
					}
				}
			case metricdata.Sum[int64]:
				if m.Name == MetricFrames {
					for _, p := range d.DataPoints {
						frames += p.Value
					}
				}
			case metricdata.Gauge[float64]:
				if m.Name == MetricFramesPerSecond {
					for _, p := range d.DataPoints {
						fps = p.Value
					}
				}
			}
		}
	}
	for _, st := range []string{"download", "engine", "upload"} {
		if stages[st] != 1 {
			t.Errorf("stage %q recorded %d times, want once: %v", st, stages[st], stages)
		}
	}
	if frames != 10 || fps <= 0 {
		t.Errorf("frames %d, frames/s %v; want the engine's 10 and a rate", frames, fps)
	}
}

func byName(spans tracetest.SpanStubs, name string) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}
