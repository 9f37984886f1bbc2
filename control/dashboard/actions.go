package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/avatargen/musetalk/protocol"
)

// action is one operator action on a job or a worker.
type action struct {
	what   string // for messages: "cancel job"
	worker bool   // the path's {id} is a worker's, else a job's
	notice string // the notice code the page shows after it
	done   func(id string) string
	run    func(ctx context.Context, op Operator, id string) error
}

var (
	actionCancel = &action{what: "cancel job", notice: "cancelled",
		done: func(id string) string { return "Job " + id + " is cancelled." },
		run:  func(ctx context.Context, op Operator, id string) error { return op.CancelJob(ctx, id) }}
	actionRetry = &action{what: "retry job", notice: "retried",
		done: func(id string) string { return "Job " + id + " is queued again." },
		run:  func(ctx context.Context, op Operator, id string) error { return op.RetryJob(ctx, id) }}
	actionDrain = &action{what: "drain worker", worker: true, notice: "drained",
		done: func(id string) string { return "Worker " + id + " will claim no more jobs." },
		run:  func(ctx context.Context, op Operator, id string) error { return op.SetDrain(ctx, id, true) }}
	actionUndrain = &action{what: "undrain worker", worker: true, notice: "undrained",
		done: func(id string) string { return "Worker " + id + " may claim jobs again." },
		run:  func(ctx context.Context, op Operator, id string) error { return op.SetDrain(ctx, id, false) }}
)

// actionResult answers the script's POSTs.
type actionResult struct {
	OK       bool   `json:"ok"`
	Message  string `json:"message"`
	Location string `json:"location,omitempty"`
}

// action runs a through the Operator. The script gets JSON; a plain form
// POST is redirected back to the page with a notice, or shown the refusal.
func (d *Dashboard) action(a *action) func(http.ResponseWriter, *http.Request, *session) {
	return func(w http.ResponseWriter, r *http.Request, _ *session) {
		id := r.PathValue("id")
		if !protocol.ValidID(id) {
			d.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("%q is not a valid id.", id))
			return
		}
		back := Prefix + "jobs/" + id
		if a.worker {
			back = Prefix + "fleet"
		}
		err := a.run(r.Context(), d.op, id)
		var rf *Refusal
		switch {
		case errors.As(err, &rf):
			d.refuse(w, r, rf.Status, rf.Message)
			return
		case err != nil:
			d.internalError(w, r, fmt.Errorf("%s %s: %w", a.what, id, err))
			return
		}
		d.log.InfoContext(r.Context(), "dashboard: operator action", "action", a.what, "id", id)
		if wantsJSON(r) {
			writeJSON(w, http.StatusOK, actionResult{OK: true, Message: a.done(id)})
			return
		}
		http.Redirect(w, r, back+"?notice="+a.notice, http.StatusSeeOther)
	}
}
