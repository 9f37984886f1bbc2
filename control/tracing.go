package control

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/avatargen/musetalk/control/store"
)

// traceContext returns the W3C trace context of ctx's span as a map, to
// be stored on a job so that workers continue the submission's trace.
func traceContext(ctx context.Context) map[string]string {
	m := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, m)
	if len(m) == 0 {
		return nil
	}
	return m
}

// traceID returns the trace id of a stored trace context, or "" when it
// holds none.
func traceID(tc map[string]string) string {
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier(tc)))
	if !sc.IsValid() {
		return ""
	}
	return sc.TraceID().String()
}

// jobEvent records a job transition as a short span in the job's own
// trace (the one started at submission). When the request that caused it
// is in that trace already (a worker's complete, fail or release carries
// the attempt's traceparent), the span is the request's child; otherwise
// (a claim, the sweeper, a cancel) it hangs under the submission and
// links to the request.
func (s *Server) jobEvent(ctx context.Context, j *store.Job, name string) {
	parent := propagation.TraceContext{}.Extract(context.WithoutCancel(ctx), propagation.MapCarrier(j.TraceContext))
	stored := trace.SpanContextFromContext(parent)
	if !stored.IsValid() || trace.SpanContextFromContext(ctx).TraceID() == stored.TraceID() {
		parent = ctx
	}
	attrs := []attribute.KeyValue{
		attribute.String("musetalk.job.id", j.ID), attribute.String("musetalk.job.state", string(j.State)),
		attribute.Int("musetalk.attempt", j.Attempt),
	}
	if j.WorkerID != "" {
		attrs = append(attrs, attribute.String("musetalk.worker.id", j.WorkerID))
	}
	if j.Error != "" {
		attrs = append(attrs, attribute.String("musetalk.job.error", j.Error))
	}
	opts := []trace.SpanStartOption{trace.WithAttributes(attrs...)}
	if parent != ctx {
		opts = append(opts, trace.WithLinks(trace.LinkFromContext(ctx)))
	}
	_, span := s.tracer.Start(parent, name, opts...)
	span.End()
}
