package telemetry

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestSecretNeverFormats(t *testing.T) {
	s := Secret("hunter2")
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("start", "key", s)
	out := buf.String() + fmt.Sprintf("%v %s %+v %#v", s, s, s, s) + fmt.Errorf("auth with %v", s).Error()
	if strings.Contains(out, "hunter2") {
		t.Fatalf("secret leaked: %s", out)
	}
	if s.Reveal() != "hunter2" {
		t.Fatal("Reveal lost the value")
	}
}

func TestNewLoggerRejectsBadSettings(t *testing.T) {
	if _, err := NewLogger(&bytes.Buffer{}, "xml", "info"); err == nil || !strings.Contains(err.Error(), "xml") {
		t.Fatalf("bad format: got %v", err)
	}
	if _, err := NewLogger(&bytes.Buffer{}, "text", "loud"); err == nil || !strings.Contains(err.Error(), "loud") {
		t.Fatalf("bad level: got %v", err)
	}
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "text", "warn")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), "shown") {
		t.Fatalf("level not applied: %q", buf.String())
	}
	_ = slog.LevelWarn
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestTracingNoopWithoutEndpoint(t *testing.T) {
	tr, err := TracingFromEnv(context.Background(), env(nil), "svc", "v0")
	if err != nil {
		t.Fatal(err)
	}
	if tr.Exporting {
		t.Fatal("exporting without an endpoint")
	}
	_, span := tr.Provider.Tracer("t").Start(context.Background(), "x")
	if span.SpanContext().IsValid() {
		t.Fatal("noop provider made a real span")
	}
}

func TestTracingExportsOverOTLPHTTP(t *testing.T) {
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/traces" && r.Method == http.MethodPost {
			posts.Add(1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	tr, err := TracingFromEnv(context.Background(), env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL,
		"OTEL_SERVICE_NAME":           "musetalk-test",
	}), "svc", "v0")
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Exporting {
		t.Fatal("not exporting with an endpoint set")
	}
	_, span := tr.Provider.Tracer("t").Start(context.Background(), "job")
	span.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if posts.Load() == 0 {
		t.Fatal("no OTLP export reached the collector")
	}
}

func TestTracingDisabledAndBadProtocol(t *testing.T) {
	tr, err := TracingFromEnv(context.Background(), env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"}), "s", "v")
	if err != nil || tr.Exporting {
		t.Fatalf("disabled SDK still exports: %v", err)
	}
	_, err = TracingFromEnv(context.Background(), env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}), "s", "v")
	if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Fatalf("want an error naming the protocol variable, got %v", err)
	}
}

func TestFromEnvExportsMetricsOverOTLPHTTP(t *testing.T) {
	var traces, metrics atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/traces":
			traces.Add(1)
		case "/v1/metrics":
			metrics.Add(1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	tel, err := FromEnv(context.Background(), env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL + "/"}),
		Service{Name: "musetalk-worker", Version: "v0", Instance: "salad-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !tel.Exporting() || !tel.Metrics.Exporting {
		t.Fatal("metrics not exported with an endpoint set")
	}
	c, err := tel.Metrics.Provider.Meter("t").Int64Counter("frames")
	if err != nil {
		t.Fatal(err)
	}
	c.Add(context.Background(), 3)
	_, span := tel.Tracing.Provider.Tracer("t").Start(context.Background(), "job")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if metrics.Load() == 0 || traces.Load() == 0 {
		t.Fatalf("%d metric and %d trace exports reached the collector, want both", metrics.Load(), traces.Load())
	}
}

func TestMetricsOffWithoutEndpointOrWhenDisabled(t *testing.T) {
	for _, e := range []map[string]string{
		nil,
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_METRICS_EXPORTER": "none"},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"},
	} {
		m, err := MetricsFromEnv(context.Background(), env(e), Service{Name: "s"})
		if err != nil || m.Exporting {
			t.Errorf("%v: exporting %v, err %v", e, m != nil && m.Exporting, err)
		}
	}
	_, err := MetricsFromEnv(context.Background(), env(map[string]string{
		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"}), Service{})
	if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") {
		t.Fatalf("want an error naming the protocol variable, got %v", err)
	}
}

func TestProviderResourceAndEventLimit(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := newTracerProvider(sdktrace.NewSimpleSpanProcessor(exp), env(nil), Service{Name: "w", Version: "v1", Instance: "salad-7"})
	_, span := tp.Tracer("t").Start(context.Background(), "attempt")
	for i := range 1000 {
		span.AddEvent("heartbeat", trace.WithAttributes(attribute.Int("i", i)))
	}
	span.End()
	s := exp.GetSpans()[0]
	if len(s.Events) != 1000 || s.DroppedEvents != 0 {
		t.Errorf("%d events kept, %d dropped; want all 1000 (the SDK's default keeps 128)", len(s.Events), s.DroppedEvents)
	}
	got := map[string]string{}
	for _, kv := range s.Resource.Attributes() {
		got[string(kv.Key)] = kv.Value.Emit()
	}
	if got["service.name"] != "w" || got["service.version"] != "v1" || got["service.instance.id"] != "salad-7" {
		t.Errorf("resource %v", got)
	}
}
