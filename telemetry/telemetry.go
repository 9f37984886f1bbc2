// Package telemetry sets up the process's structured logger and its
// OpenTelemetry tracer and meter providers. Nothing here is global: callers
// pass the logger and providers into the packages that use them.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
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
	return tracingFromEnv(ctx, getenv, Service{Name: service, Version: version})
}

func tracingFromEnv(ctx context.Context, getenv func(string) string, svc Service) (*Tracing, error) {
	noopT := &Tracing{Provider: noop.NewTracerProvider(), Shutdown: func(context.Context) error { return nil }}
	endpoint, err := otlpEndpoint(getenv, "TRACES", "/v1/traces")
	if err != nil {
		return nil, err
	}
	if endpoint == "" {
		return noopT, nil
	}
	// The exporter reads its other OTEL_EXPORTER_OTLP_* variables (headers,
	// timeout, compression) from the process environment itself; the
	// endpoint is taken from getenv so that callers decide where it comes from.
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("creating the OTLP/HTTP trace exporter: %w", err)
	}
	tp := newTracerProvider(sdktrace.NewBatchSpanProcessor(exp), getenv, svc)
	return &Tracing{Provider: tp, Shutdown: tp.Shutdown, Exporting: true}, nil
}

// otlpEndpoint returns the OTLP/HTTP URL for one signal (TRACES or
// METRICS, whose default path is path), or "" when that signal is not to
// be exported: OTEL_SDK_DISABLED=true, OTEL_<signal>_EXPORTER=none, or
// neither OTEL_EXPORTER_OTLP_ENDPOINT nor OTEL_EXPORTER_OTLP_<signal>_ENDPOINT
// set. Only the http/protobuf protocol is supported.
func otlpEndpoint(getenv func(string) string, signal, path string) (string, error) {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(getenv("OTEL_"+signal+"_EXPORTER"), "none") {
		return "", nil
	}
	endpoint := getenv("OTEL_EXPORTER_OTLP_" + signal + "_ENDPOINT")
	if endpoint == "" {
		base := getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
		if base == "" {
			return "", nil
		}
		endpoint = strings.TrimRight(base, "/") + path
	}
	for _, v := range []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL"} {
		if p := getenv(v); p != "" && p != "http/protobuf" {
			return "", fmt.Errorf("%s %q: only http/protobuf is supported", v, p)
		}
	}
	return endpoint, nil
}

// Service names the process in the resource of its spans and metrics.
type Service struct {
	Name    string // service.name; OTEL_SERVICE_NAME overrides it
	Version string // service.version
	// Instance is service.instance.id, e.g. the worker's id; empty leaves
	// it out (OTEL_RESOURCE_ATTRIBUTES may still set it).
	Instance string
}

// resourceOf is svc's resource merged over the SDK's default one (which
// reads OTEL_RESOURCE_ATTRIBUTES).
func resourceOf(getenv func(string) string, svc Service) *resource.Resource {
	if getenv == nil {
		getenv = os.Getenv
	}
	if name := getenv("OTEL_SERVICE_NAME"); name != "" {
		svc.Name = name
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(svc.Name), semconv.ServiceVersion(svc.Version)}
	if svc.Instance != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(svc.Instance))
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		res = resource.Default()
	}
	return res
}

// DefaultSpanEventLimit is the events a span keeps when
// OTEL_SPAN_EVENT_COUNT_LIMIT is not set (the SDK's own default is 128).
// An attempt's span carries a heartbeat event every poll interval: 4096
// covers more than five hours at 5 s.
const DefaultSpanEventLimit = 4096

// NewProvider returns an SDK tracer provider sending spans to sp, with the
// service's resource. Tests pass a span processor over an in-memory
// exporter.
func NewProvider(sp sdktrace.SpanProcessor, getenv func(string) string, service, version string) *sdktrace.TracerProvider {
	return newTracerProvider(sp, getenv, Service{Name: service, Version: version})
}

func newTracerProvider(sp sdktrace.SpanProcessor, getenv func(string) string, svc Service) *sdktrace.TracerProvider {
	if getenv == nil {
		getenv = os.Getenv
	}
	limits := sdktrace.NewSpanLimits() // the OTEL_SPAN_* variables of the process
	if getenv("OTEL_SPAN_EVENT_COUNT_LIMIT") == "" {
		limits.EventCountLimit = DefaultSpanEventLimit
	}
	return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sp), sdktrace.WithResource(resourceOf(getenv, svc)),
		sdktrace.WithRawSpanLimits(limits))
}
