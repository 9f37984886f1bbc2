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
