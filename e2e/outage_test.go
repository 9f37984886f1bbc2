//go:build linux

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/avatargen/musetalk/protocol"
)

// The control plane crashes (kill -9) when a render is at 95 % and comes
// back after an outage of 7 s or 60 s: the worker finishes the render
// during the outage, keeps the output, keeps retrying the upload (through
// the control plane, for workers without B2) or the complete (workers
// writing to B2), and heartbeating; the same attempt completes, and the job
// spends no failure or interruption credit. Before, the worker tried the
// upload 3 times in 3 s and reported the attempt failed.
//
// The heartbeat interval is 1 s, so a lease is 3 s: the 60 s outage is 20
// leases long, the 7 s one more than 2. The restarted control plane waits
// a lease before its sweeper's first pass, and the worker's heartbeat
// (retried at most 2 intervals apart) renews the lease within it.
func TestControlOutageAtFinish(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		outage     time.Duration
		viaControl bool
	}{
		{"7s-upload-through-control", 7 * time.Second, true},
		{"60s-upload-through-control", 60 * time.Second, true},
		{"60s-upload-to-b2", 60 * time.Second, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			testOutageAtFinish(t, c.outage, c.viaControl)
		})
	}
}

func testOutageAtFinish(t *testing.T, outage time.Duration, viaControl bool) {
	c := newCluster(t, clusterOptions{kind: scriptWorkers, viaControl: viaControl})
	// 19 of 20 frames in 4 s, then the last one 3 s later: the job is seen
	// at 95 % within that window.
	const frames = 20
	job := c.submitScript(scriptJob{Seconds: 4, Frames: frames, Tail: 3})
	run := c.waitJob(job.ID, 30*time.Second, "at 95 %", func(j protocol.JobView) bool {
		if j.State.Final() {
			t.Fatalf("job ended before it was seen at 95 %%: %s", describe(j))
		}
		return j.State == protocol.JobRunning && j.Progress != nil && j.Progress.FramesDone >= frames-1
	})
	c.control.kill9()
	c.control.wait(t, 10*time.Second)
	down := time.Now()
	if evs := c.events(job.ID, run.Attempt); hasEvent(evs, "done") {
		t.Fatalf("the render finished before the outage began: %+v", evs)
	}
	done := c.waitEvent(job.ID, run.Attempt, "done", 10*time.Second)
	t.Logf("render finished %v into the outage", done.time().Sub(down).Round(time.Millisecond))
	time.Sleep(time.Until(down.Add(outage)))
	if !c.startControl() {
		t.Fatalf("the control plane did not start again on %s:\n%s", c.controlAddr, tailFile(c.control.logPath, 20))
	}
	back := time.Now()

	j := c.waitFinal(job.ID, 60*time.Second)
	if j.State != protocol.JobSucceeded || len(j.Attempts) != 1 || j.Failures != 0 || j.Interruptions != 0 {
		t.Fatalf("want the same attempt to succeed, no failure or interruption: %s", describe(j))
	}
	if a := j.Attempts[0]; a.Attempt != run.Attempt || a.WorkerID != run.WorkerID || j.OutputKey != outputKey(job.ID, run.Attempt) {
		t.Fatalf("attempt %+v, output %s: want attempt %d on %s", a, j.OutputKey, run.Attempt, run.WorkerID)
	}
	if got := string(c.result(job.ID)); got != wantOutput(job.ID, run.Attempt, run.WorkerID) {
		t.Fatalf("result %q", got)
	}
	// The worker said why it kept retrying, and never reported a failure.
	log := tailFile(c.worker(run.WorkerID).logPath, 100000)
	call := "call=complete"
	if viaControl {
		call = "call=upload"
	}
	if !strings.Contains(log, call) {
		t.Errorf("the worker's log shows no retried %s:\n%s", strings.TrimPrefix(call, "call="), tailFile(c.worker(run.WorkerID).logPath, 30))
	}
	if strings.Contains(log, "attempt failed") {
		t.Errorf("the worker reported the attempt failed")
	}
	t.Logf("outage %v (%s); job done %v after the control plane came back",
		back.Sub(down).Round(time.Millisecond), fmt.Sprintf("%.0f leases", back.Sub(down).Seconds()/(3*c.opts.poll.Seconds())),
		j.FinishedAt.Sub(back).Round(time.Millisecond))
}
