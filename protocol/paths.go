package protocol

import "strings"

// Internal (worker-facing) routes, in net/http ServeMux pattern syntax.
// Workers authenticate with "Authorization: Bearer <INTERNAL_API_KEY>".
const (
	HeartbeatRoute   = "POST /internal/main/workers/{id}/heartbeat"
	ClaimRoute       = "POST /internal/main/workers/{id}/claim"
	ProgressRoute    = "POST /internal/main/jobs/{job_id}/progress"
	CompleteRoute    = "POST /internal/main/jobs/{job_id}/complete"
	FailRoute        = "POST /internal/main/jobs/{job_id}/fail"
	ReleaseRoute     = "POST /internal/main/jobs/{job_id}/release"
	InternalBlobPath = "/internal/main/blobs/" // GET/PUT of objects by key, for workers without B2
)

// Headers of a PUT under InternalBlobPath: the upload is fenced like the
// attempt calls, by the attempt it belongs to and that attempt's fencing
// token (kept out of the URL, which proxies log).
const (
	AttemptHeader = "Musetalk-Attempt"
	TokenHeader   = "Musetalk-Token"
)

// Public routes. Clients authenticate with "Authorization: Bearer <key>" where
// key is one of MUSETALK_API_KEYS (when set).
const (
	SubmitRoute      = "POST /v1/jobs"
	GetJobRoute      = "GET /v1/jobs/{id}"
	ListJobsRoute    = "GET /v1/jobs"
	CancelJobRoute   = "POST /v1/jobs/{id}/cancel"
	JobResultRoute   = "GET /v1/jobs/{id}/result"
	ListWorkersRoute = "GET /v1/workers"
	HealthzRoute     = "GET /healthz"
	MetricsRoute     = "GET /metrics"
	// Operator routes: ask a worker to stop claiming (it finishes or
	// releases what it holds), or take the request back.
	DrainWorkerRoute   = "POST /v1/workers/{id}/drain"
	UndrainWorkerRoute = "POST /v1/workers/{id}/undrain"
	// Operator route: queue a failed job again with fresh budgets.
	RetryJobRoute = "POST /v1/jobs/{id}/retry"
)

// Path fills a route's {name} wildcards, in order, and drops the method.
// Path(HeartbeatRoute, "w1") == "/internal/main/workers/w1/heartbeat".
// Values must already be valid IDs (see ValidID); they are not escaped.
func Path(route string, values ...string) string {
	if i := strings.IndexByte(route, ' '); i >= 0 {
		route = route[i+1:]
	}
	var b strings.Builder
	for {
		open := strings.IndexByte(route, '{')
		if open < 0 || len(values) == 0 {
			b.WriteString(route)
			return b.String()
		}
		end := strings.IndexByte(route[open:], '}')
		if end < 0 {
			b.WriteString(route)
			return b.String()
		}
		b.WriteString(route[:open])
		b.WriteString(values[0])
		values = values[1:]
		route = route[open+end+1:]
	}
}
