package worker

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/avatargen/musetalk/protocol"
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
