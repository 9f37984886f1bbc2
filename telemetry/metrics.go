package telemetry

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Metrics is a configured meter provider and how to flush it.
type Metrics struct {
	Provider metric.MeterProvider
	// Shutdown exports what is pending; call it before the process exits.
	Shutdown func(context.Context) error
	// Exporting reports whether metrics leave the process.
	Exporting bool
}

// MetricsFromEnv builds the meter provider from the standard OTEL_*
// variables, as [TracingFromEnv] does for spans: when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is
// set (and OTEL_METRICS_EXPORTER is not "none" and OTEL_SDK_DISABLED is
// not "true"), metrics go by OTLP over HTTP every
// OTEL_METRIC_EXPORT_INTERVAL (default 60 s); otherwise they are a no-op.
func MetricsFromEnv(ctx context.Context, getenv func(string) string, svc Service) (*Metrics, error) {
	endpoint, err := otlpEndpoint(getenv, "METRICS", "/v1/metrics")
	if err != nil {
		return nil, err
	}
	if endpoint == "" {
		return &Metrics{Provider: metricnoop.NewMeterProvider(), Shutdown: func(context.Context) error { return nil }}, nil
	}
	exp, err := otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("creating the OTLP/HTTP metric exporter: %w", err)
	}
	mp := NewMeterProvider(sdkmetric.NewPeriodicReader(exp), getenv, svc)
	return &Metrics{Provider: mp, Shutdown: mp.Shutdown, Exporting: true}, nil
}

// NewMeterProvider returns an SDK meter provider read by r, with the
// service's resource. Tests pass a manual reader.
func NewMeterProvider(r sdkmetric.Reader, getenv func(string) string, svc Service) *sdkmetric.MeterProvider {
	return sdkmetric.NewMeterProvider(sdkmetric.WithReader(r), sdkmetric.WithResource(resourceOf(getenv, svc)))
}

// Telemetry is a process's tracing and metrics together.
type Telemetry struct {
	Tracing *Tracing
	Metrics *Metrics
}

// FromEnv builds both providers from the OTEL_* variables (see
// [TracingFromEnv] and [MetricsFromEnv]) for one service.
func FromEnv(ctx context.Context, getenv func(string) string, svc Service) (*Telemetry, error) {
	tr, err := tracingFromEnv(ctx, getenv, svc)
	if err != nil {
		return nil, err
	}
	m, err := MetricsFromEnv(ctx, getenv, svc)
	if err != nil {
		_ = tr.Shutdown(ctx)
		return nil, err
	}
	return &Telemetry{Tracing: tr, Metrics: m}, nil
}

// Shutdown flushes and stops both providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return errors.Join(t.Tracing.Shutdown(ctx), t.Metrics.Shutdown(ctx))
}

// Exporting reports whether spans or metrics leave the process.
func (t *Telemetry) Exporting() bool { return t.Tracing.Exporting || t.Metrics.Exporting }
