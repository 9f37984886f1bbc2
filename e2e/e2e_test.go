//go:build linux

package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avatargen/musetalk/protocol"
)

// wantOutput is what the scripted engine writes for an attempt.
func wantOutput(jobID string, attempt int, workerID string) string {
	return fmt.Sprintf("scripted output job=%s attempt=%d worker=%s\n", jobID, attempt, workerID)
}

func outputKey(jobID string, attempt int) string {
	return fmt.Sprintf("outputs/%s/%d.mp4", jobID, attempt)
}

// (a) A 60-second job: its worker heartbeats on its own goroutine, so the
// registry shows it busy at every sample and no worker ever goes offline.
func TestLongJobWorkerStaysBusy(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{kind: scriptWorkers})
	const seconds = 60
	job := c.submitScript(scriptJob{Seconds: seconds, Frames: seconds})
	run := c.waitRunning(job.ID, 0)
	wid := run.WorkerID
	w := c.worker(wid)
	// The claim marks the worker busy, and so does its next heartbeat.
	eventually(t, 3*c.opts.poll, 50*time.Millisecond, wid+" busy", func() (bool, string) {
		ws, err := c.workerList()
		if err != nil {
			return false, err.Error()
		}
		return ws[wid].Status == protocol.WorkerBusy, fmt.Sprintf("%+v", ws[wid])
	})

	samples := 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	deadline := time.Now().Add(seconds*time.Second + 60*time.Second)
	for {
		// The registry first, then the job: if the job still runs the same
		// attempt afterwards, it ran when the registry was read.
		ws, err := c.workerList()
		if err != nil {
			t.Fatal(err)
		}
		code, body := c.health(w, "/health")
		j, err := c.job(job.ID)
		if err != nil {
			t.Fatal(err)
		}
		for id, v := range ws {
			if v.Status == protocol.WorkerOffline {
				t.Fatalf("sample %d: worker %s is offline (last seen %v): %+v", samples, id, v.LastSeen, v)
			}
		}
		if j.State != protocol.JobRunning || j.Attempt != run.Attempt {
			break
		}
		samples++
		if v := ws[wid]; v.Status != protocol.WorkerBusy || v.JobID != job.ID || v.Attempt != run.Attempt {
			t.Fatalf("sample %d (%s into the job): worker %s is %s (job %q attempt %d), want busy with %s/%d",
				samples, time.Since(run.Attempts[0].StartedAt).Round(time.Second), wid, v.Status, v.JobID, v.Attempt, job.ID, run.Attempt)
		}
		if code != http.StatusOK || !strings.Contains(body, `"state":"busy"`) {
			t.Fatalf("sample %d: %s /health: %d %s", samples, wid, code, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("job still running after %v: %s", time.Since(run.Attempts[0].StartedAt), describe(j))
		}
		<-tick.C
	}

	j := c.waitFinal(job.ID, 30*time.Second)
	if j.State != protocol.JobSucceeded || len(j.Attempts) != 1 || j.Interruptions != 0 {
		t.Fatalf("want one uninterrupted, succeeded attempt: %s", describe(j))
	}
	a := j.Attempts[0]
	if a.WorkerID != wid || a.Outcome != protocol.OutcomeSucceeded || a.EndedAt == nil {
		t.Fatalf("attempt: %+v", a)
	}
	if d := a.EndedAt.Sub(a.StartedAt); d < seconds*time.Second {
		t.Fatalf("the job took %v, want at least %ds: the scenario did not test a long job", d, seconds)
	}
	if samples < seconds-10 {
		t.Fatalf("only %d samples while the job ran", samples)
	}
	if got := string(c.result(job.ID)); got != wantOutput(job.ID, 1, wid) {
		t.Fatalf("result %q", got)
	}
	eventually(t, 3*c.opts.poll, 100*time.Millisecond, wid+" idle after the job", func() (bool, string) {
		ws, err := c.workerList()
		return err == nil && ws[wid].Status == protocol.WorkerIdle && ws[wid].JobID == "", fmt.Sprintf("%+v %v", ws[wid], err)
	})
	t.Logf("job ran %v on %s; %d samples, all busy, no worker offline", a.EndedAt.Sub(a.StartedAt).Round(time.Millisecond), wid, samples)
}

// (b) kill -9 of the worker mid-job: the control plane notices the silence,
// interrupts the attempt and the other worker completes the job; only the
// second attempt's output is published.
func TestWorkerKilledMidJob(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{kind: scriptWorkers})
	job := c.submitScript(scriptJob{Seconds: 6, Frames: 12})
	run := c.waitRunning(job.ID, 2)
	victim := c.worker(run.WorkerID)
	survivor := c.other(victim.id)
	victim.kill9()
	if code := victim.wait(t, 10*time.Second); code != -1 {
		t.Fatalf("victim exit code %d, want killed", code)
	}
	killed := time.Now()

	j := c.waitFinal(job.ID, 60*time.Second)
	if j.State != protocol.JobSucceeded || len(j.Attempts) != 2 {
		t.Fatalf("want success on the second attempt: %s", describe(j))
	}
	a1, a2 := j.Attempts[0], j.Attempts[1]
	if a1.WorkerID != victim.id || a1.Outcome != protocol.OutcomeInterrupted || a1.OutputKey != "" {
		t.Fatalf("first attempt %+v, want interrupted on %s with no output", a1, victim.id)
	}
	if a2.WorkerID != survivor.id || a2.Outcome != protocol.OutcomeSucceeded || a2.OutputKey != outputKey(job.ID, 2) {
		t.Fatalf("second attempt %+v, want succeeded on %s", a2, survivor.id)
	}
	if j.OutputKey != outputKey(job.ID, 2) || j.Interruptions != 1 || j.Failures != 0 {
		t.Fatalf("job: %s", describe(j))
	}
	if got := string(c.result(job.ID)); got != wantOutput(job.ID, 2, survivor.id) {
		t.Fatalf("published result %q, want the second attempt's", got)
	}
	if evs := c.events(job.ID, 1); !hasEvent(evs, "start") || hasEvent(evs, "done") {
		t.Fatalf("first attempt's engine events %+v: want started, never done", evs)
	}
	eventually(t, 5*c.opts.poll, 100*time.Millisecond, victim.id+" offline", func() (bool, string) {
		ws, err := c.workerList()
		return err == nil && ws[victim.id].Status == protocol.WorkerOffline, fmt.Sprintf("%+v %v", ws[victim.id], err)
	})
	t.Logf("attempt 1 interrupted %v after the kill (%q); job done %v after it",
		a1.EndedAt.Sub(killed).Round(time.Millisecond), a1.Error, j.FinishedAt.Sub(killed).Round(time.Millisecond))
}

// (c) The control plane restarted mid-job (SIGTERM, then started again on
// the same database and port): the worker rides it out and the job
// completes.
func TestControlRestartMidJob(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{kind: scriptWorkers})
	job := c.submitScript(scriptJob{Seconds: 10, Frames: 20})
	run := c.waitRunning(job.ID, 2)

	stopped := time.Now()
	if err := c.control.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := c.control.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("control plane exit code %d after SIGTERM, want 0", code)
	}
	// An outage longer than the lease (3 heartbeat intervals): every lease
	// runs out while the worker keeps rendering and retrying its heartbeats.
	time.Sleep(4 * c.opts.poll)
	if !c.startControl() {
		t.Fatalf("the control plane did not start again on %s:\n%s", c.controlAddr, tailFile(c.control.logPath, 20))
	}
	gap := time.Since(stopped)
	// The new process finds the running attempt in the database.
	j, err := c.job(job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != protocol.JobRunning || j.Attempt != run.Attempt || j.WorkerID != run.WorkerID {
		t.Fatalf("after a restart of %v the job is %s, want still attempt %d on %s", gap, describe(j), run.Attempt, run.WorkerID)
	}

	j = c.waitFinal(job.ID, 60*time.Second)
	if j.State != protocol.JobSucceeded {
		t.Fatalf("want success: %s", describe(j))
	}
	last := j.Attempts[len(j.Attempts)-1]
	if j.OutputKey != outputKey(job.ID, last.Attempt) || last.Outcome != protocol.OutcomeSucceeded {
		t.Fatalf("job: %s", describe(j))
	}
	if got := string(c.result(job.ID)); got != wantOutput(job.ID, last.Attempt, last.WorkerID) {
		t.Fatalf("result %q", got)
	}
	// The restarted sweeper waits a lease before its first pass, and the
	// worker's next heartbeat (retried at most 2 intervals apart) renews the
	// lease within it: the outage costs no work.
	if len(j.Attempts) != 1 || j.Attempts[0].WorkerID != run.WorkerID {
		t.Fatalf("the control plane was away %v and the attempt was lost: %s", gap, describe(j))
	}
	// Both workers are back in the registry and not offline.
	eventually(t, 5*c.opts.poll, 100*time.Millisecond, "workers idle after the restart", func() (bool, string) {
		ws, err := c.workerList()
		if err != nil {
			return false, err.Error()
		}
		for _, w := range c.workers {
			if ws[w.id].Status != protocol.WorkerIdle {
				return false, fmt.Sprintf("%+v", ws)
			}
		}
		return true, ""
	})
	t.Logf("control plane away %v; %s", gap.Round(time.Millisecond), describe(j))
}

// (d) SIGTERM to the worker mid-job with --grace 1s: it drains, releases
// the attempt when the grace runs out and exits 0; the other worker
// completes the job.
func TestWorkerSIGTERMReleasesJob(t *testing.T) {
	t.Parallel()
	const grace = time.Second
	c := newCluster(t, clusterOptions{kind: scriptWorkers, grace: grace})
	job := c.submitScript(scriptJob{Seconds: 6, Frames: 12})
	run := c.waitRunning(job.ID, 1)
	victim := c.worker(run.WorkerID)
	survivor := c.other(victim.id)

	termed := time.Now()
	if err := victim.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := victim.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("worker exit code %d after SIGTERM, want 0", code)
	}
	exited := time.Since(termed)

	// The engine's context ended with the grace period, not before.
	ev := c.waitEvent(job.ID, 1, "ctx_done", 5*time.Second)
	if d := ev.time().Sub(termed); d < grace-50*time.Millisecond || d > grace+time.Second {
		t.Fatalf("the engine was cancelled %v after SIGTERM, want about the grace %v", d, grace)
	}
	if !strings.Contains(ev.Cause, "grace") {
		t.Fatalf("engine cancelled by %q, want the end of the grace period", ev.Cause)
	}

	j := c.waitFinal(job.ID, 60*time.Second)
	if j.State != protocol.JobSucceeded || len(j.Attempts) != 2 {
		t.Fatalf("want success on the second attempt: %s", describe(j))
	}
	a1, a2 := j.Attempts[0], j.Attempts[1]
	if a1.WorkerID != victim.id || a1.Outcome != protocol.OutcomeReleased || a1.OutputKey != "" {
		t.Fatalf("first attempt %+v, want released by %s", a1, victim.id)
	}
	if a1.EndedAt == nil || a1.EndedAt.After(termed.Add(exited)) {
		t.Fatalf("first attempt ended at %v, after the worker exited (%v)", a1.EndedAt, termed.Add(exited))
	}
	if a2.WorkerID != survivor.id || a2.Outcome != protocol.OutcomeSucceeded || j.OutputKey != outputKey(job.ID, 2) {
		t.Fatalf("job %s, want the second attempt on %s published", describe(j), survivor.id)
	}
	if got := string(c.result(job.ID)); got != wantOutput(job.ID, 2, survivor.id) {
		t.Fatalf("result %q", got)
	}
	ws, err := c.workerList()
	if err != nil {
		t.Fatal(err)
	}
	if st := ws[victim.id].Status; st != protocol.WorkerDraining && st != protocol.WorkerOffline {
		t.Fatalf("the stopped worker is %s in the registry, want draining (its last heartbeat) or offline", st)
	}
	t.Logf("engine cancelled %v after SIGTERM (%s); worker exited 0 after %v; attempt 1 %q",
		ev.time().Sub(termed).Round(time.Millisecond), ev.Cause, exited.Round(time.Millisecond), a1.Error)
}

// (e) Random bytes as audio, with the real preview engine: the job fails at
// once with an error naming the audio, and the worker stays ready and
// completes the next, good job.
func TestCorruptAudioFailsCleanly(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{kind: previewWorkers})
	junk := make([]byte, 64<<10)
	rand.Read(junk)
	job := c.submit(avatarPNG, "speech.wav", junk)
	j := c.waitFinal(job.ID, 60*time.Second)
	if j.State != protocol.JobFailed || len(j.Attempts) != 1 || j.Failures != 1 {
		t.Fatalf("want failed after one attempt (a permanent error): %s", describe(j))
	}
	a := j.Attempts[0]
	if a.Outcome != protocol.OutcomeFailed {
		t.Fatalf("attempt %+v", a)
	}
	for _, msg := range []string{j.Error, a.Error} {
		if !strings.Contains(msg, "audio") || !strings.Contains(msg, "ffprobe") {
			t.Fatalf("error %q does not name the audio problem", msg)
		}
	}
	w := c.worker(a.WorkerID)
	eventually(t, 5*c.opts.poll, 100*time.Millisecond, w.id+" ready and idle", func() (bool, string) {
		code, body := c.health(w, "/ready")
		ws, err := c.workerList()
		if err != nil {
			return false, err.Error()
		}
		v := ws[w.id]
		return code == http.StatusOK && v.Status == protocol.WorkerIdle && v.JobID == "",
			fmt.Sprintf("/ready %d %s; registry %+v", code, body, v)
	})

	// The next job must go to the same worker: drain the other one.
	other := c.other(w.id)
	if err := c.do(http.MethodPost, "/v1/workers/"+other.id+"/drain", nil, "", http.StatusOK, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*c.opts.poll, 100*time.Millisecond, other.id+" draining", func() (bool, string) {
		code, body := c.health(other, "/health")
		return strings.Contains(body, `"state":"draining"`), fmt.Sprintf("%d %s", code, body)
	})
	good := c.submit(avatarPNG, "speech.wav", mustRead(t, speechWAV))
	g := c.waitFinal(good.ID, 60*time.Second)
	if g.State != protocol.JobSucceeded || len(g.Attempts) != 1 || g.Attempts[0].WorkerID != w.id {
		t.Fatalf("want the good job done by %s: %s", w.id, describe(g))
	}
	out := filepath.Join(c.dir, "good.mp4")
	if err := os.WriteFile(out, c.result(good.ID), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s := ffprobeStreams(ctx, t, out); s != "h264,video aac,audio" {
		t.Fatalf("result streams %q, want h264 video and aac audio", s)
	}
	t.Logf("corrupt audio: %q", j.Error)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// (f) B2 answers 503 to the output upload for a while: the upload is
// retried and the job succeeds on its first attempt.
func TestB2UploadOutage(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{kind: scriptWorkers})
	job := c.submitScript(scriptJob{Seconds: 2, Frames: 4})
	// The inputs are stored; from now on the only uploads are the output's.
	before := c.b2Calls()
	const failUpload, failURL = 3, 1
	c.b2Admin(http.MethodPost, "/_b2test/faults", map[string]any{"op": "b2_upload_file", "status": 503, "count": failUpload}, nil)
	c.b2Admin(http.MethodPost, "/_b2test/faults", map[string]any{"op": "b2_get_upload_url", "status": 503, "count": failURL}, nil)

	j := c.waitFinal(job.ID, 90*time.Second)
	if j.State != protocol.JobSucceeded {
		t.Fatalf("want success: %s", describe(j))
	}
	if len(j.Attempts) != 1 || j.OutputKey != outputKey(job.ID, 1) {
		t.Fatalf("want the first attempt's upload retried to success: %s", describe(j))
	}
	after := c.b2Calls()
	uploads := after["b2_upload_file"] - before["b2_upload_file"]
	urls := after["b2_get_upload_url"] - before["b2_get_upload_url"]
	if uploads < failUpload+1 || urls < failURL+1 {
		t.Fatalf("b2_upload_file calls %d (want >= %d), b2_get_upload_url calls %d (want >= %d): the faults did not happen",
			uploads, failUpload+1, urls, failURL+1)
	}
	if got := string(c.result(job.ID)); got != wantOutput(job.ID, 1, j.WorkerID) {
		t.Fatalf("result %q", got)
	}
	t.Logf("b2_upload_file calls %d (%d answered 503), b2_get_upload_url calls %d (%d answered 503)", uploads, failUpload, urls, failURL)
}

// (g) A cancel while running reaches the engine within one heartbeat
// interval; the job ends cancelled and the worker goes back to idle.
func TestCancelRunningJob(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{kind: scriptWorkers})
	job := c.submitScript(scriptJob{Seconds: 30, Frames: 60})
	run := c.waitRunning(job.ID, 1)
	w := c.worker(run.WorkerID)

	cancelled := time.Now()
	var cv protocol.JobView
	if err := c.do(http.MethodPost, "/v1/jobs/"+job.ID+"/cancel", nil, "", http.StatusOK, &cv); err != nil {
		t.Fatal(err)
	}
	if cv.State != protocol.JobCancelled {
		t.Fatalf("cancel answered %s", describe(cv))
	}
	ev := c.waitEvent(job.ID, 1, "ctx_done", 5*c.opts.poll)
	// The worker heartbeats every poll interval, jittered by up to 20%.
	limit := c.opts.poll*6/5 + 300*time.Millisecond
	delay := ev.time().Sub(cancelled)
	if delay > limit {
		t.Fatalf("the engine saw the cancel %v after it was made, want within %v (one heartbeat interval of %v, jittered, plus a margin)",
			delay, limit, c.opts.poll)
	}
	if strings.Contains(ev.Cause, "grace") || strings.Contains(ev.Cause, "stopped") {
		t.Fatalf("engine cancelled by %q", ev.Cause)
	}

	eventually(t, 5*c.opts.poll, 100*time.Millisecond, w.id+" idle after the cancel", func() (bool, string) {
		ws, err := c.workerList()
		if err != nil {
			return false, err.Error()
		}
		v := ws[w.id]
		code, body := c.health(w, "/ready")
		return v.Status == protocol.WorkerIdle && v.JobID == "" && code == http.StatusOK, fmt.Sprintf("registry %+v; /ready %d %s", v, code, body)
	})
	j, err := c.job(job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != protocol.JobCancelled || len(j.Attempts) != 1 || j.Attempts[0].Outcome != protocol.OutcomeCancelled {
		t.Fatalf("job: %s", describe(j))
	}
	if evs := c.events(job.ID, 1); hasEvent(evs, "done") {
		t.Fatalf("the engine finished a cancelled job: %+v", evs)
	}
	t.Logf("engine cancelled %v after the cancel call (%s)", delay.Round(time.Millisecond), ev.Cause)
}
