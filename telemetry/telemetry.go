// Package telemetry sets up the process's structured logger and its
// OpenTelemetry tracer provider. Nothing here is global: callers pass the
// logger and provider into the packages that use them.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// NewLogger returns a slog logger writing to w. format is "json" or "text";
// level is debug, info, warn or error.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want json or text", format)
	}
}

// Secret holds a credential. It formats and logs as "[redacted]" so it
// cannot leak through a log line or an error by accident; Reveal returns
// the value for the one place that needs it.
type Secret string

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString implements fmt.GoStringer (%#v).
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Tracing is a configured tracer provider and how to flush it.
type Tracing struct {
	Provider trace.TracerProvider
	// Shutdown flushes pending spans; call it before the process exits.
	Shutdown func(context.Context) error
	// Exporting reports whether spans leave the process.
	Exporting bool
}

// Propagator is the W3C trace-context propagator used on every boundary
// (request headers, the job's stored trace context).
func Propagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// TracingFromEnv builds the tracer provider from the standard OTEL_*
// variables: when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (and OTEL_TRACES_EXPORTER is
// not "none" and OTEL_SDK_DISABLED is not "true"), spans go by OTLP over
// HTTP, configured by the exporter's own OTEL_EXPORTER_OTLP_* variables;
// otherwise tracing is a no-op. OTEL_SERVICE_NAME overrides service.
func TracingFromEnv(ctx context.Context, getenv func(string) string, service, version string) (*Tracing, error) {
	noopT := &Tracing{Provider: noop.NewTracerProvider(), Shutdown: func(context.Context) error { return nil }}
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(getenv("OTEL_TRACES_EXPORTER"), "none") {
		return noopT, nil
	}
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return noopT, nil
	}
	if p := getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "http/protobuf" {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: only http/protobuf is supported", p)
	}
	// The exporter reads its other OTEL_EXPORTER_OTLP_* variables (headers,
	// timeout, compression) from the process environment itself; the
	// endpoint is taken from getenv so that callers decide where it comes from.
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		endpoint = strings.TrimRight(getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "/") + "/v1/traces"
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("creating the OTLP/HTTP trace exporter: %w", err)
	}
	tp := NewProvider(sdktrace.NewBatchSpanProcessor(exp), getenv, service, version)
	return &Tracing{Provider: tp, Shutdown: tp.Shutdown, Exporting: true}, nil
}

// NewProvider returns an SDK tracer provider sending spans to sp, with the
// service's resource. Tests pass a span processor over an in-memory
// exporter.
func NewProvider(sp sdktrace.SpanProcessor, getenv func(string) string, service, version string) *sdktrace.TracerProvider {
	if getenv == nil {
		getenv = os.Getenv
	}
	if name := getenv("OTEL_SERVICE_NAME"); name != "" {
		service = name
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(service), semconv.ServiceVersion(version)))
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		res = resource.Default()
	}
	return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sp), sdktrace.WithResource(res))
}
