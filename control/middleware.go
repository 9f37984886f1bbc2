package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/avatargen/musetalk/control/dashboard"
	"github.com/avatargen/musetalk/protocol"
)

// reqInfo collects what a handler learns about a request (ids, the error
// behind a 5xx) for the request's log line and span.
type reqInfo struct {
	jobID    string
	workerID string
	attempt  int
	err      error // the error behind a 4xx or 5xx, for the log; a 5xx's is never sent
}

type reqInfoKey struct{}

// info returns the request's reqInfo; handlers outside observe get a
// throwaway one.
func info(ctx context.Context) *reqInfo {
	if ri, ok := ctx.Value(reqInfoKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{}
}

// statusRecorder remembers the status and size of an answer.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// quietRoute reports whether a route is logged at debug level when it
// succeeds: every worker calls these every few seconds.
func quietRoute(route string) bool {
	switch route {
	case protocol.HeartbeatRoute, protocol.ClaimRoute, protocol.HealthzRoute, protocol.MetricsRoute,
		dashboard.LiveRoute: // each open dashboard page polls it every 1.5 s
		return true
	}
	return false
}

// observe wraps the whole API: one span per request (continuing a W3C
// traceparent the caller sent), one log line, the request counter and
// recovery from panics. It never logs headers, so keys cannot leak.
func (s *Server) observe(next http.Handler) http.Handler {
	prop := propagation.TraceContext{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := s.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
		defer span.End()
		ri := &reqInfo{}
		ctx = context.WithValue(ctx, reqInfoKey{}, ri)
		rec := &statusRecorder{ResponseWriter: w}
		r = r.WithContext(ctx)

		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				ri.err = fmt.Errorf("panic: %v", p)
				if rec.status == 0 {
					writeError(rec, errorf(http.StatusInternalServerError, protocol.CodeInternal, "internal error"))
				}
			}
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			route := r.Pattern // set by the mux on this request
			if route == "" {
				route = "unmatched"
			}
			level := slog.LevelInfo
			// A HEAD answered 404 is an existence check answered "no"
			// (workers probe storage that way at start), not an error.
			probe := r.Method == http.MethodHead && status == http.StatusNotFound
			if status < 400 && quietRoute(route) || probe {
				level = slog.LevelDebug
			}
			if status >= 500 {
				level = slog.LevelError
			}
			// The span's attributes and the log line are built only when
			// they are kept: heartbeats are most requests and log at debug.
			if span.IsRecording() {
				span.SetName(route)
				span.SetAttributes(attribute.String("http.route", route), attribute.Int("http.response.status_code", status))
				if ri.jobID != "" {
					span.SetAttributes(attribute.String("musetalk.job.id", ri.jobID))
				}
				if ri.workerID != "" {
					span.SetAttributes(attribute.String("musetalk.worker.id", ri.workerID))
				}
				if ri.attempt != 0 {
					span.SetAttributes(attribute.Int("musetalk.attempt", ri.attempt))
				}
				if status >= 500 {
					span.SetStatus(codes.Error, http.StatusText(status))
					if ri.err != nil {
						span.RecordError(ri.err)
					}
				}
			}
			if s.log.Enabled(ctx, level) {
				attrs := []slog.Attr{
					slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("route", route),
					slog.Int("status", status), slog.Duration("duration", time.Since(start)), slog.Int64("bytes", rec.bytes),
				}
				if ri.jobID != "" {
					attrs = append(attrs, slog.String("job_id", ri.jobID))
				}
				if ri.workerID != "" {
					attrs = append(attrs, slog.String("worker_id", ri.workerID))
				}
				if ri.attempt != 0 {
					attrs = append(attrs, slog.Int("attempt", ri.attempt))
				}
				if ri.err != nil && !probe {
					attrs = append(attrs, slog.String("error", ri.err.Error()))
				}
				s.log.LogAttrs(ctx, level, "http request", attrs...)
			}
			s.metrics.httpRequests.WithLabelValues(r.Method, route, strconv.Itoa(status)).Inc()
			s.metrics.httpDuration.WithLabelValues(r.Method, route).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(rec, r)
	})
}

// handlerFunc is a handler that returns its error; serve writes it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// serve adapts h: an *apiError becomes its JSON answer; any other error
// is logged and answered with a bare 500 that reveals nothing.
func serve(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		var ae *apiError
		if errors.As(err, &ae) {
			info(r.Context()).err = ae // its message is safe to log: the caller sees it too
			writeError(w, ae)
			return
		}
		info(r.Context()).err = err
		if r.Context().Err() != nil {
			// The caller went away; nobody reads the answer.
			writeError(w, errorf(499, protocol.CodeUnavailable, "request cancelled"))
			return
		}
		writeError(w, errorf(http.StatusInternalServerError, protocol.CodeInternal, "internal error"))
	})
}
