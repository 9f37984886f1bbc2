package worker

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/avatargen/musetalk/protocol"
)

// Worker states shown by /health.
const (
	StateStarting  = "starting"  // the self-check has not finished
	StateReady     = "ready"     // idle and able to claim
	StateBusy      = "busy"      // running a job
	StateDraining  = "draining"  // told to stop claiming
	StateUnhealthy = "unhealthy" // heartbeat loop wedged, or the self-check failed
)

// Health is the JSON body of /health, /live and /ready. It never carries
// a secret.
type Health struct {
	State      string              `json:"state"`
	Live       bool                `json:"live"`
	Ready      bool                `json:"ready"`
	Reason     string              `json:"reason,omitempty"` // why not live or not ready
	WorkerID   string              `json:"worker_id"`
	WorkerType protocol.WorkerType `json:"worker_type"`
	Provider   string              `json:"provider"`
	GPUClass   string              `json:"gpu_class"`
	Version    string              `json:"version,omitempty"`
	JobID      string              `json:"job_id,omitempty"`
	Attempt    int                 `json:"attempt,omitempty"`
	Progress   *protocol.Progress  `json:"progress,omitempty"`
	// LastHeartbeatAgeSec is the age of the last acknowledged heartbeat;
	// null before the first.
	LastHeartbeatAgeSec *float64            `json:"last_heartbeat_age_sec"`
	HeartbeatFailures   int                 `json:"heartbeat_failures"`
	StorageReachable    bool                `json:"storage_reachable"`
	SelfCheck           *protocol.SelfCheck `json:"self_check,omitempty"`
}

// Health reports the worker's state as /health shows it.
//
// Live is liveness, the meaning the deployed probes give /health: true
// while the process and its heartbeat loop are alive, also through long
// inference and while the control plane is unreachable; false only when
// no heartbeat attempt has finished for three poll intervals plus the
// heartbeat timeout (the loop is wedged). Ready additionally needs a
// passed self-check, a reachable object store and no drain.
func (w *Worker) Health() Health {
	now := w.now()
	w.mu.Lock()
	st := w.st
	var progress *protocol.Progress
	if st.job != nil && st.job.progress != nil {
		p := *st.job.progress
		progress = &p
	}
	w.mu.Unlock()

	h := Health{
		WorkerID: w.cfg.WorkerID, WorkerType: w.cfg.WorkerType, Provider: w.cfg.Provider,
		GPUClass: w.cfg.GPUClass, Version: w.cfg.Version, HeartbeatFailures: st.beatFailures,
		StorageReachable: st.storageOK, SelfCheck: st.selfCheck, Progress: progress, Live: true,
	}
	if st.job != nil {
		h.JobID, h.Attempt = st.job.a.JobID, st.job.a.Attempt
	}
	if !st.lastAck.IsZero() {
		age := now.Sub(st.lastAck).Seconds()
		h.LastHeartbeatAgeSec = &age
	}
	window := 3*w.cfg.PollInterval + w.cfg.HeartbeatTimeout
	wedged := !st.beatLoopStarted.IsZero() && now.Sub(st.lastBeatDone) > window
	draining := st.shuttingDown || st.drainOrdered
	switch {
	case wedged:
		h.State, h.Live = StateUnhealthy, false
		h.Reason = "heartbeat loop wedged: no heartbeat attempt finished for " + now.Sub(st.lastBeatDone).Round(time.Millisecond).String()
	case !st.checked:
		h.State, h.Reason = StateStarting, "self-check running"
	case st.selfCheck.Error != "":
		h.State, h.Reason = StateUnhealthy, "self-check failed: "+st.selfCheck.Error
	case draining:
		h.State, h.Reason = StateDraining, "draining"
	case !st.storageOK:
		h.State, h.Reason = StateReady, "object store unreachable"
		if st.job != nil {
			h.State = StateBusy
		}
	case st.job != nil:
		h.State = StateBusy
	default:
		h.State = StateReady
	}
	h.Ready = h.Live && st.checked && st.selfCheck.Error == "" && !draining && st.storageOK
	return h
}

// Handler serves GET /health and /live (liveness: 200, or 503 when the
// heartbeat loop is wedged) and GET /ready (readiness: 200 only when ready).
// Run serves it on Config.HealthAddr; it is exported for embedding.
func (w *Worker) Handler() http.Handler {
	mux := http.NewServeMux()
	live := func(rw http.ResponseWriter, r *http.Request) {
		h := w.Health()
		writeHealth(rw, h, h.Live)
	}
	mux.HandleFunc("GET /health", live)
	mux.HandleFunc("GET /live", live)
	mux.HandleFunc("GET /ready", func(rw http.ResponseWriter, r *http.Request) {
		h := w.Health()
		writeHealth(rw, h, h.Ready)
	})
	return mux
}

func writeHealth(rw http.ResponseWriter, h Health, ok bool) {
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Cache-Control", "no-store")
	if ok {
		rw.WriteHeader(http.StatusOK)
	} else {
		rw.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(rw).Encode(h)
}
