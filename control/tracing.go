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

// jobEvent records a job transition as a short span in the job's own
// trace (the one started at submission), linked to the request that
// caused it.
func (s *Server) jobEvent(ctx context.Context, j *store.Job, name string) {
	parent := propagation.TraceContext{}.Extract(context.WithoutCancel(ctx), propagation.MapCarrier(j.TraceContext))
	if !trace.SpanContextFromContext(parent).IsValid() {
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
	_, span := s.tracer.Start(parent, name, trace.WithAttributes(attrs...),
		trace.WithLinks(trace.LinkFromContext(ctx)))
	span.End()
}
