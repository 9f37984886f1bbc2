package control

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/avatargen/musetalk/protocol"
)

// TestJobTraceIDAndEventParents: the job's JSON names its trace; a job
// event caused by a request in the job's trace (a worker's complete with
// the attempt's traceparent) is that request's child, one caused by a
// request outside it (the claim) hangs under the submission and links to
// the request.
func TestJobTraceIDAndEventParents(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	b := setup(t, func(c *Config) { c.TracerProvider = tp })
	avatarKey, audioKey := b.inputs()
	v := b.submit(protocol.SubmitRequest{AvatarKey: avatarKey, AudioKey: audioKey})
	stored := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier(v.TraceContext)))
	if !stored.IsValid() || v.TraceID != stored.TraceID().String() {
		t.Fatalf("trace_id %q, trace_context %v", v.TraceID, v.TraceContext)
	}
	if got := b.getJob(v.ID).TraceID; got != v.TraceID {
		t.Fatalf("GET shows trace_id %q, the submission %q", got, v.TraceID)
	}

	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	a := b.claim("w1")
	b.upload(a, []byte("video"))
	// The worker's complete span, in the job's trace.
	wctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier(a.TraceContext))
	wctx, wspan := tp.Tracer("worker").Start(wctx, "complete")
	hdr := http.Header{}
	propagation.TraceContext{}.Inject(wctx, propagation.HeaderCarrier(hdr))
	req, _ := http.NewRequest("POST", b.ts.URL+protocol.Path(protocol.CompleteRoute, a.JobID),
		bytes.NewReader(mustJSON(t, b.completeRequest(a))))
	req.Header = hdr
	req.Header.Set("Authorization", "Bearer "+testInternalKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.ts.Client().Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("complete: %v %v", resp, err)
	}
	resp.Body.Close()
	wspan.End()

	spans := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		spans[s.Name] = s
	}
	sub, done, claimed, completeReq := spans[protocol.SubmitRoute], spans["job.succeeded"], spans["job.claimed"], spans[protocol.CompleteRoute]
	if completeReq.Parent.SpanID() != wspan.SpanContext().SpanID() || completeReq.SpanContext.TraceID() != stored.TraceID() {
		t.Errorf("the complete request's span does not continue the worker's traceparent")
	}
	if done.Parent.SpanID() != completeReq.SpanContext.SpanID() || len(done.Links) != 0 {
		t.Errorf("job.succeeded: parent %s, %d links; want the complete request's span %s and no link",
			done.Parent.SpanID(), len(done.Links), completeReq.SpanContext.SpanID())
	}
	if claimed.Parent.SpanID() != sub.SpanContext.SpanID() || len(claimed.Links) != 1 ||
		claimed.Links[0].SpanContext.SpanID() != spans[protocol.ClaimRoute].SpanContext.SpanID() {
		t.Errorf("job.claimed: parent %s, links %v; want the submission %s and a link to the claim request",
			claimed.Parent.SpanID(), claimed.Links, sub.SpanContext.SpanID())
	}
}
