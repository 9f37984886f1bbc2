package musetalk

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracerName is the instrumentation scope of the pipeline's spans.
const tracerName = "github.com/avatargen/musetalk/musetalk"

// Span names of a render, children of the span in Render's context (the
// worker's "engine" span): load, decode_audio, prepare, features, then
// generate with one unet, one vae_decode and one blend per batch (the
// networks run a batch ahead of compositing, so a batch's unet and
// vae_decode overlap the previous batch's blend), and encode (the
// encoder finishing the file).
const (
	SpanLoad        = "load"
	SpanDecodeAudio = "decode_audio"
	SpanPrepare     = "prepare"
	SpanFeatures    = "features"
	SpanGenerate    = "generate"
	SpanUNet        = "unet"
	SpanVAEDecode   = "vae_decode"
	SpanBlend       = "blend"
	SpanEncode      = "encode"
)

// startSpan starts a pipeline span under ctx's span, with the tracer
// provider that made it: the pipeline needs no configuration of its own,
// and without a span in ctx (musetalk render) it records nothing.
func startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(tracerName).Start(ctx, name, trace.WithAttributes(attrs...))
}

// endSpan ends span, marking it failed when err is not nil.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
