package image_test

// The fleet as containers (issue 11): the control plane and three workers
// from the worker image that TestWorkerImage built and loaded, on a
// private Docker network, as the deploy files describe them. See
// e2e/README.md, "The fleet as containers".

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/blob/b2"
	"github.com/avatargen/musetalk/control/client"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/preview"
)

// The fleet's timing: every worker's POLL_INTERVAL_SEC and the control
// plane's --heartbeat-interval (the deploy files say 5 s; 1 s keeps the
// suite short). The sweeper runs once an interval. The lease and the
// offline limit are 6 intervals, not the default 3: with five fleets and
// other test packages sharing two cores, a rendering worker's heartbeats
// and progress calls were once late by over 3 s (CI, 2026-12-07), and
// these scenarios test the control plane's recovery, not the machine's
// scheduler. A lost worker is still found within 7 s.
const (
	fleetPoll  = time.Second
	fleetLease = 6 * fleetPoll
	// fleetRetryBackoff is the most the control plane waits before a job
	// whose attempt was interrupted once may be claimed again (its
	// BackoffBase; the wait is drawn from [base/2, base]).
	fleetRetryBackoff = 2 * time.Second
	// workerGrace is the worker's default --grace: a stopped worker's
	// job gets this long to finish before it is released.
	workerGrace = 25 * time.Second
	// schedSlack allows for a late tick of the sweeper (and a slow pass)
	// on a loaded 2-core machine.
	schedSlack = 500 * time.Millisecond
	// fleetStall is how long a job may stand still (the same state,
	// attempt and progress) before waitFinal calls it stuck.
	fleetStall = 2 * time.Minute
	// shmDefault is Docker's /dev/shm when nothing enlarges it.
	shmDefault = 64 << 20
)

// deployFiles are the two deploy files, relative to the repository root.
const (
	vastFile  = "deploy/vast/onstart.sh"
	saladFile = "deploy/salad/container-group.json"
)

// TestFleet runs the scenarios, each on a fleet of its own (a private
// network, an in-memory B2, the control plane, one worker as the Vast line
// starts it and two Salad replicas), all at once: they spend their time
// waiting on the containers. It runs the image builtImages made (by file
// order, this test asks first and the build happens here;
// TestWorkerImage then checks the same image).
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("the image suite is skipped in -short mode")
	}
	img := fleetImage(t)
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	deploy := readDeployFiles(t, root)
	media := writeFleetMedia(t)
	start := time.Now()
	t.Cleanup(func() { t.Logf("the fleet scenarios took %s", time.Since(start).Round(time.Second)) })

	run := func(name string, f func(t *testing.T, fl *fleet)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			begin := time.Now()
			fl := newFleet(t, img, deploy, media, name)
			f(t, fl)
			t.Logf("%s: %s", name, time.Since(begin).Round(100*time.Millisecond))
		})
	}
	run("completes", fleetCompletes)
	run("kill", fleetKill)
	run("disconnect", fleetDisconnect)
	run("stop", fleetStop)
	run("salad-probes", fleetSaladProbes)
}

// fleetImage is the image the fleet runs: the worker image with tiny
// weights baked in (the kind the deploy files name), as TestWorkerImage
// built it, or MUSETALK_FLEET_IMAGE (an image already in the engine, for
// working on this file without building one).
func fleetImage(t *testing.T) string {
	if tag := os.Getenv("MUSETALK_FLEET_IMAGE"); tag != "" {
		needDocker(t, context.Background())
		if out, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", tag).CombinedOutput(); err != nil {
			t.Fatalf("MUSETALK_FLEET_IMAGE=%s: not in the Docker engine: %s", tag, bytes.TrimSpace(out))
		}
		return tag
	}
	builtImages(t)
	return weightsTag
}

// --- Scenarios ---

// fleetCompletes: a preview job and a MuseTalk job (tiny weights, on the
// CPU) complete, each in one attempt; the MuseTalk job ran in a
// container whose /dev/shm is Docker's default 64 MiB (nothing in the
// deploy files enlarges it).
func fleetCompletes(t *testing.T, f *fleet) {
	ws := f.startWorkers("vast", "salad", "salad")
	f.waitReady(ws...)

	job := f.submit(f.media.short, protocol.JobParams{Engine: preview.Name}, "")
	j := f.waitFinal(job.ID, fleetStall)
	f.checkSucceeded(j, 1)
	f.checkPlays(j, f.media.shortSeconds)

	job = f.submit(f.media.short, musetalkParams(), "")
	j = f.waitFinal(job.ID, fleetStall)
	f.checkSucceeded(j, 1)
	f.checkPlays(j, f.media.shortSeconds)
	ran := f.worker(j.Attempts[0].WorkerID)
	if shm := f.shmSize(ran); shm != shmDefault {
		t.Errorf("%s ran with /dev/shm of %d bytes, want Docker's default %d", ran.name, shm, shmDefault)
	}
	t.Logf("MuseTalk job on %s (/dev/shm %d MiB): %s", ran.id, shmDefault>>20, j.FinishedAt.Sub(j.Attempts[0].StartedAt).Round(100*time.Millisecond))
}

// fleetKill: `docker kill` of the worker rendering a MuseTalk job. The
// control plane takes the attempt away once its lease (fleetLease) or
// the worker's offline limit (the same) has run out, at its next sweep, and another worker claims
// the job after the retry backoff and finishes it.
func fleetKill(t *testing.T, f *fleet) {
	ws := f.startWorkers("vast", "salad", "salad")
	f.waitReady(ws...)
	job := f.submit(f.media.short, musetalkParams(), "")
	victim := f.waitRendering(job.ID)

	f.docker("kill", victim.name)
	killed := time.Now()
	j := f.waitFinal(job.ID, fleetStall)
	f.checkSucceeded(j, 2)
	a1, a2 := j.Attempts[0], j.Attempts[1]
	if a1.WorkerID != victim.id || a1.Outcome != protocol.OutcomeInterrupted || a1.OutputKey != "" ||
		!strings.HasPrefix(a1.Error, "lease expired") && !strings.HasPrefix(a1.Error, "worker offline") {
		t.Fatalf("attempt 1: %+v, want interrupted on %s (lease expired or worker offline), no output", a1, victim.id)
	}
	if a2.WorkerID == victim.id {
		t.Fatalf("attempt 2 ran on the killed worker: %+v", a2)
	}
	// The last lease extension came before the kill, so the lease ran out
	// within fleetLease of it, and a sweep (one per interval) found it.
	taken := a1.EndedAt.Sub(killed)
	if taken > fleetLease+fleetPoll+schedSlack {
		t.Errorf("attempt 1 interrupted %v after the kill, want within the lease (%v) and one sweep (%v)", taken, fleetLease, fleetPoll)
	}
	// Then the job waits the retry backoff and the next claim of an idle
	// worker (they poll every interval, ±20%).
	claimed := a2.StartedAt.Sub(*a1.EndedAt)
	if claimed > fleetRetryBackoff+fleetPoll*6/5+schedSlack {
		t.Errorf("attempt 2 claimed %v after attempt 1 was interrupted, want within the retry backoff (%v) and a poll (%v +20%%)", claimed, fleetRetryBackoff, fleetPoll)
	}
	f.eventually(time.Minute, victim.id+" offline in the registry", func() (bool, string) {
		w, err := f.registry(victim.id)
		return err == nil && w.Status == protocol.WorkerOffline, fmt.Sprintf("%+v %v", w, err)
	})
	t.Logf("killed %s while it rendered: attempt 1 interrupted (%s) %v after the kill, attempt 2 claimed by %s %v after that (%v after the kill, %.1f heartbeat intervals)",
		victim.id, a1.Error, taken.Round(10*time.Millisecond), a2.WorkerID, claimed.Round(10*time.Millisecond),
		a2.StartedAt.Sub(killed).Round(10*time.Millisecond), a2.StartedAt.Sub(killed).Seconds()/fleetPoll.Seconds())
}

// fleetDisconnect: `docker network disconnect` of the worker rendering a
// MuseTalk job, for longer than its lease: the job is rescued and
// published by another worker. When the network comes back, the cut-off
// worker, which kept its render, uploads it (B2 cannot fence a direct
// upload) and calls complete: the control plane refuses it with 409, and
// the job's published output stays the rescuer's.
//
// While the worker rejoins, the control plane is paused (docker pause),
// so that no answer reaches the worker before its late complete is on
// its way: otherwise its heartbeat's answer, a cancel order, often ends
// the attempt first (also a refusal, but not of a completion).
func fleetDisconnect(t *testing.T, f *fleet) {
	ws := f.startWorkers("vast", "salad", "salad")
	f.waitReady(ws...)
	job := f.submit(f.media.short, musetalkParams(), "")
	victim := f.waitRendering(job.ID)

	f.docker("network", "disconnect", f.net, victim.name)
	cut := time.Now()
	j := f.waitFinal(job.ID, fleetStall)
	f.checkSucceeded(j, 2)
	a1, a2 := j.Attempts[0], j.Attempts[1]
	if a1.WorkerID != victim.id || a1.Outcome != protocol.OutcomeInterrupted || a1.OutputKey != "" {
		t.Fatalf("attempt 1: %+v, want interrupted on %s with no output", a1, victim.id)
	}
	if a2.WorkerID == victim.id {
		t.Fatalf("attempt 2 ran on the cut-off worker: %+v", a2)
	}
	if taken := a1.EndedAt.Sub(cut); taken > fleetLease+fleetPoll+schedSlack {
		t.Errorf("attempt 1 interrupted %v after the cut, want within the lease (%v) and one sweep (%v)", taken, fleetLease, fleetPoll)
	}
	published := f.checkPublished(j)

	f.docker("pause", f.control.name)
	paused := true
	defer func() {
		if paused {
			exec.Command("docker", "unpause", f.control.name).Run()
		}
	}()
	f.docker("network", "connect", f.net, victim.name)
	back := time.Now()
	// The victim's late upload lands in the bucket; right after it, the
	// victim sends complete, whose try waits up to 3 s (3 heartbeat
	// timeouts) for an answer. Give it one second to be sent, then let
	// the control plane answer.
	var late blob.Info
	f.eventually(5*time.Minute, victim.id+"'s late upload of "+outputKey(job.ID, 1), func() (bool, string) {
		info, err := f.store.Stat(f.ctx, outputKey(job.ID, 1))
		late = info
		return err == nil, fmt.Sprint(err) + "\n" + victim.tail(3)
	})
	uploaded := time.Now()
	time.Sleep(fleetPoll)
	f.docker("unpause", f.control.name)
	paused = false
	t.Logf("disconnected for %v; attempt 1 interrupted (%s) %v after the cut; the late upload landed %v after the network came back",
		back.Sub(cut).Round(100*time.Millisecond), a1.Error, a1.EndedAt.Sub(cut).Round(10*time.Millisecond),
		uploaded.Sub(back).Round(10*time.Millisecond))

	// The control plane refused the late complete (its request counter,
	// GET /metrics): in this fleet only attempt 1 can be refused, and
	// only attempt 2's complete succeeded.
	const complete = "POST /internal/main/jobs/{job_id}/complete"
	var refused float64
	f.eventually(time.Minute, "a refused complete", func() (bool, string) {
		refused = f.metric("musetalk_http_requests_total", "route", complete, "code", "409")
		return refused >= 1, fmt.Sprintf("%v × 409", refused)
	})
	// The victim gives the attempt up and goes back to work.
	f.eventually(time.Minute, victim.id+" idle again", func() (bool, string) {
		w, err := f.registry(victim.id)
		return err == nil && w.Status == protocol.WorkerIdle && w.JobID == "", fmt.Sprintf("%+v %v", w, err)
	})
	if ok := f.metric("musetalk_http_requests_total", "route", complete, "code", "200"); ok != 1 {
		t.Errorf("%v completes answered 200, want 1 (attempt 2's)", ok)
	}
	var abandoned string
	for _, l := range victim.logLines() {
		if l["job_id"] == job.ID && l["attempt"] == "1" && strings.HasPrefix(l["msg"], "attempt abandoned") {
			abandoned = l["msg"] + " " + l["err"]
		}
	}
	t.Logf("the late complete was refused (%v × 409); %s logged %q", refused, victim.id, abandoned)

	// Nothing changed: still attempt 2's output, byte for byte.
	again := f.job(job.ID)
	if again.State != protocol.JobSucceeded || again.OutputKey != j.OutputKey || len(again.Attempts) != 2 || again.Interruptions != 1 {
		t.Fatalf("after the victim came back: %s", describe(again))
	}
	if sha := f.resultSHA1(job.ID); sha != published.SHA1 {
		t.Fatalf("the published result now has SHA-1 %s, attempt 2's output %s", sha, published.SHA1)
	}
	t.Logf("the late upload %s (%d bytes, SHA-1 %s) stays unpublished; the result is %s (SHA-1 %s)",
		late.Key, late.Size, late.SHA1, published.Key, published.SHA1)
}

// fleetStop: `docker stop` of the Vast worker while it delivers a
// finished preview (its output upload slowed by the object store): the
// worker drains, keeps the job for its 25 s grace, then releases it and
// exits 0, all within the Vast line's --stop-timeout 30; a Salad replica
// finishes the job.
func fleetStop(t *testing.T, f *fleet) {
	ws := f.startWorkers("vast", "salad", "salad")
	victim, others := ws[0], ws[1:]
	f.waitReady(ws...)
	// The job goes to the Vast worker: the Salad replicas are drained
	// until it has it.
	for _, w := range others {
		f.setDrain(w, true)
	}
	// The submission makes two uploads (the inputs); the third is the
	// victim's output, which B2 then reads at 200 bytes/s.
	f.fault(map[string]any{"op": "b2_upload_file", "skip": 2, "count": 1, "bytes_per_second": 200})
	job := f.submit(f.media.short, protocol.JobParams{Engine: preview.Name}, "")
	f.eventually(time.Minute, victim.id+" uploading its output", func() (bool, string) {
		calls := f.b2Calls()
		j := f.job(job.ID)
		return calls["b2_upload_file"] >= 3 && j.WorkerID == victim.id && j.State == protocol.JobRunning,
			fmt.Sprintf("uploads %d, %s", calls["b2_upload_file"], describe(j))
	})
	for _, w := range others {
		f.setDrain(w, false)
	}
	f.waitReady(others...)

	stopped := time.Now()
	f.docker("stop", victim.name) // the Vast line's --stop-timeout 30
	took := time.Since(stopped)
	if took >= 30*time.Second {
		t.Errorf("docker stop took %v: Docker killed the worker at the stop timeout", took)
	}
	// --rm removed the container: its exit code is in Docker's events.
	code := strings.TrimSpace(f.docker("events", "--since", strconv.FormatInt(stopped.Add(-time.Second).Unix(), 10),
		"--until", strconv.FormatInt(time.Now().Add(time.Second).Unix(), 10), "--filter", "container="+victim.name,
		"--filter", "event=die", "--format", `{{index .Actor.Attributes "exitCode"}}`))
	if code != "0" {
		t.Errorf("the stopped worker exited with %q, want 0", code)
	}

	j := f.waitFinal(job.ID, fleetStall)
	f.checkSucceeded(j, 2)
	a1, a2 := j.Attempts[0], j.Attempts[1]
	if a1.WorkerID != victim.id || a1.Outcome != protocol.OutcomeReleased || a1.OutputKey != "" ||
		!strings.Contains(a1.Error, "grace period over") {
		t.Fatalf("attempt 1: %+v, want released by %s when its grace ran out, no output", a1, victim.id)
	}
	if a2.WorkerID == victim.id {
		t.Fatalf("attempt 2 ran on the stopped worker: %+v", a2)
	}
	if rel := a1.EndedAt.Sub(stopped); rel < workerGrace || rel >= 30*time.Second {
		t.Errorf("attempt 1 released %v after docker stop, want after the grace (%v) and within the stop timeout (30s)", rel, workerGrace)
	}
	var reported, kept bool
	for _, l := range victim.logLines() {
		reported = reported || l["msg"] == "attempt reported" && l["outcome"] == "release" && l["job_id"] == job.ID
		kept = kept || strings.HasPrefix(l["msg"], "stopped before the output could be delivered")
	}
	if !reported || !kept {
		t.Errorf("the stopped worker's log lacks the release (%v) or the kept output (%v):\n%s", reported, kept, victim.tail(15))
	}
	t.Logf("docker stop took %v (exit %s); attempt 1 released %v after it; attempt 2 on %s",
		took.Round(100*time.Millisecond), code, a1.EndedAt.Sub(stopped).Round(100*time.Millisecond), a2.WorkerID)
}

// fleetSaladProbes: Salad's three probes, as the container group
// declares them (path, port, initial delay, period, timeout), sent to the
// two Salad replicas from their start, through a MuseTalk job of 12 s of
// speech that renders on one of them while its liveness probes begin
// (30 s after the start): the startup probe succeeds, every liveness
// probe is answered 200 within its timeout, readiness is 200 from the
// end of the self-check on, and the probes during the job see the
// replica busy on it.
func fleetSaladProbes(t *testing.T, f *fleet) {
	ws := f.startWorkers("salad", "salad", "vast")
	probers := map[string]*prober{}
	for _, w := range ws[:2] {
		probers[w.id] = f.probe(w)
	}
	f.waitReady(ws...)
	// The job starts 6 s before the later replica's first liveness probe
	// and renders for longer than a liveness period, so that liveness
	// probes come while it renders on either replica; worker_type main is
	// the Salad pool.
	var last time.Time
	for _, p := range probers {
		if p.started.After(last) {
			last = p.started
		}
	}
	time.Sleep(time.Until(last.Add(time.Duration(f.deploy.salad.Liveness.InitialDelaySeconds)*time.Second - 6*time.Second)))
	job := f.submit(f.media.long, musetalkParams(), protocol.WorkerMain)
	j := f.waitFinal(job.ID, fleetStall)
	for _, p := range probers {
		p.stop()
	}
	f.checkSucceeded(j, 1)
	a := j.Attempts[0]
	p := probers[a.WorkerID]
	if p == nil {
		t.Fatalf("the job ran on %s, not a Salad replica", a.WorkerID)
	}
	for id, p := range probers {
		if !p.startedUp() {
			t.Errorf("%s: the startup probe never succeeded", id)
		}
		ready := false
		for _, r := range p.results() {
			switch {
			case r.kind == "readiness" && !ready && r.status == http.StatusServiceUnavailable && r.state == "starting":
				// Not ready while the self-check runs: right.
			case !r.ok():
				t.Errorf("%s: %s probe at +%v: %s", id, r.kind, r.at.Sub(p.started).Round(time.Millisecond), r)
			case r.kind == "readiness":
				ready = true
			}
		}
	}
	// During the job, on its replica: liveness and readiness probes, and
	// the worker busy on the job.
	during := map[string]int{}
	busy := false
	for _, r := range p.results() {
		if r.at.After(a.StartedAt) && r.at.Before(*a.EndedAt) {
			during[r.kind]++
			busy = busy || r.state == "busy" && r.jobID == job.ID
		}
	}
	if during["liveness"] == 0 || during["readiness"] == 0 || !busy {
		t.Errorf("probes of %s during the job (+%v to +%v): %v, busy seen %v; want liveness and readiness probes while it rendered",
			a.WorkerID, a.StartedAt.Sub(p.started).Round(time.Second), a.EndedAt.Sub(p.started).Round(time.Second), during, busy)
	}
	t.Logf("job of %.0f s speech on %s from +%v to +%v; probes answered during it: %v (all: %d)",
		f.media.longSeconds, a.WorkerID, a.StartedAt.Sub(p.started).Round(100*time.Millisecond),
		a.EndedAt.Sub(p.started).Round(100*time.Millisecond), during, len(p.results()))
}

// --- The fleet ---

// fleet is one scenario's cluster. Every container and the network carry
// the fleet's unique prefix and are removed when the test ends.
type fleet struct {
	t      *testing.T
	ctx    context.Context
	image  string
	deploy *deployFiles
	media  *fleetMedia
	prefix string
	net    string
	key    string // INTERNAL_API_KEY

	b2KeyID, b2AppKey string
	b2Addr            string // the B2 server's port on the host's loopback
	store             *b2.B2 // the test's own client of it
	control           *container
	api               *client.Client

	mu      sync.Mutex
	conts   []*container
	workers []*fleetWorker
	vast    int
	salad   int
}

// container is one container started with docker run -d, its output
// followed (docker logs -f) from the start, so that it outlives --rm.
type container struct {
	name   string
	follow *exec.Cmd
	logs   *lockedBuffer
}

type fleetWorker struct {
	*container
	id     string // the id it registers under
	style  string // vast or salad
	health string // host:port of its :8000 on the host's loopback
}

func newFleet(t *testing.T, img string, deploy *deployFiles, media *fleetMedia, name string) *fleet {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	t.Cleanup(cancel)
	f := &fleet{
		t: t, ctx: ctx, image: img, deploy: deploy, media: media,
		prefix: fmt.Sprintf("%s%d-%s", fleetPrefix, os.Getpid(), name),
		key:    "ik-" + randomHex(16), b2KeyID: "fleet-key-id", b2AppKey: "K" + randomHex(16),
	}
	f.net = f.prefix
	t.Cleanup(f.cleanup)
	f.docker("network", "create", f.net)

	// B2: the in-memory B2 server, named b2 on the network. The bucket is
	// the deploy files' own.
	b2c := f.run("b2", "--network", f.net, "--network-alias", "b2", "-p", "127.0.0.1::9000", f.image,
		"musetalk", "dev", "b2-server", "--addr", ":9000", "--key-id", f.b2KeyID, "--app-key", f.b2AppKey,
		"--bucket", deploy.bucket)
	f.b2Addr = f.port(b2c, "9000")
	f.eventually(time.Minute, "B2 answers", func() (bool, string) {
		resp, err := http.Get("http://" + f.b2Addr + "/_b2test/calls")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})

	// The control plane, from the same image, at http://control:8080.
	f.control = f.run("control", "--network", f.net, "--network-alias", "control", "-p", "127.0.0.1::8080",
		"-e", "INTERNAL_API_KEY="+f.key, "-e", "B2_KEY_ID="+f.b2KeyID, "-e", "B2_APP_KEY="+f.b2AppKey,
		"-e", "B2_BUCKET_NAME="+deploy.bucket, "-e", "B2_ENDPOINT=http://b2:9000",
		f.image, "musetalk", "control", "--addr", ":8080", "--data-dir", "/tmp/control",
		"--heartbeat-interval", fleetPoll.String(), "--lease", fleetLease.String(), "--offline-after", fleetLease.String())
	base := "http://" + f.port(f.control, "8080")
	api, err := client.New(base, "")
	if err != nil {
		t.Fatal(err)
	}
	f.api = api
	f.eventually(time.Minute, "the control plane answers /healthz", func() (bool, string) {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	f.store, err = b2.New(ctx, b2.Config{KeyID: f.b2KeyID, AppKey: f.b2AppKey, Bucket: deploy.bucket,
		Endpoint: "http://" + f.b2Addr, MaxRetries: 2})
	if err != nil {
		t.Fatalf("the test's client of the fleet's B2: %v", err)
	}
	return f
}

// startWorkers starts workers of the given styles ("vast": the Vast
// on-start line; "salad": a replica of the Salad container group).
func (f *fleet) startWorkers(styles ...string) []*fleetWorker {
	f.t.Helper()
	var ws []*fleetWorker
	for _, s := range styles {
		var w *fleetWorker
		switch s {
		case "vast":
			w = f.startVast()
		case "salad":
			w = f.startSalad()
		default:
			f.t.Fatalf("no worker style %q", s)
		}
		ws = append(ws, w)
	}
	return ws
}

// fill are the values the deploy files leave to the operator, filled in
// for this fleet, and the poll interval shortened.
func (f *fleet) fill() map[string]string {
	return map[string]string{
		"ORCHESTRATOR_BASE_URL": "http://control:8080",
		"INTERNAL_API_KEY":      f.key,
		"B2_KEY_ID":             f.b2KeyID,
		"B2_APP_KEY":            f.b2AppKey,
		"POLL_INTERVAL_SEC":     strconv.Itoa(int(fleetPoll / time.Second)),
	}
}

// standIns are what this machine needs beyond the deploy files: the
// object store is the in-network B2 (Backblaze is not reachable, and must
// not be), and there is no GPU (`--gpus all` is dropped), so the networks
// run on the CPU (with --device auto a GPU image without a GPU is not
// ready, by design).
var standIns = []string{"B2_ENDPOINT=http://b2:9000", "MUSETALK_DEVICE=cpu"}

// startVast runs deploy/vast/onstart.sh's docker run line as written,
// with its values filled in: the secrets and URL, VAST_CONTAINERLABEL
// (Vast sets it), the image; `--network host` becomes the fleet's
// network (its :8000 published on loopback, where host networking would
// put it); `--gpus all` is dropped; --name is made unique.
func (f *fleet) startVast() *fleetWorker {
	f.t.Helper()
	f.mu.Lock()
	f.vast++
	n := f.vast
	f.mu.Unlock()
	label := fmt.Sprintf("C.%d%d", os.Getpid()%10000, n)
	words, err := shellWords(f.deploy.vastLine, map[string]string{"VAST_CONTAINERLABEL": label})
	if err != nil {
		f.t.Fatalf("%s: %v", vastFile, err)
	}
	name := fmt.Sprintf("vast-%d", n)
	args, err := translateVast(words, f.deploy.image, f.image, f.net, f.prefix+"-"+name, f.fill())
	if err != nil {
		f.t.Fatalf("%s: %v (update the fleet test's translation of the Vast line)", vastFile, err)
	}
	c := f.start(f.prefix+"-"+name, append([]string{"run"}, args...))
	w := &fleetWorker{container: c, id: "vast-" + label, style: "vast", health: f.port(c, "8000")}
	f.mu.Lock()
	f.workers = append(f.workers, w)
	f.mu.Unlock()
	return w
}

// translateVast turns the Vast line's words (after shell expansion) into
// docker run's arguments for this machine.
func translateVast(words []string, deployImage, img, network, name string, fill map[string]string) ([]string, error) {
	if len(words) < 3 || words[0] != "docker" || words[1] != "run" {
		return nil, fmt.Errorf("the line is not a docker run command: %q", words)
	}
	var args []string
	seen := map[string]bool{}
	filled := map[string]bool{}
	for i := 2; i < len(words); i++ {
		w := words[i]
		next := func() (string, error) {
			if i+1 >= len(words) {
				return "", fmt.Errorf("%s has no value", w)
			}
			i++
			return words[i], nil
		}
		switch {
		case w == "--gpus":
			if _, err := next(); err != nil {
				return nil, err
			}
			seen[w] = true
		case w == "--network":
			v, err := next()
			if err != nil {
				return nil, err
			}
			if v != "host" {
				return nil, fmt.Errorf("--network %s, want host", v)
			}
			seen[w] = true
			args = append(args, "--network", network, "-p", "127.0.0.1::8000")
		case w == "--name":
			if _, err := next(); err != nil {
				return nil, err
			}
			seen[w] = true
			args = append(args, "--name", name)
		case w == "-e":
			v, err := next()
			if err != nil {
				return nil, err
			}
			k, val, _ := strings.Cut(v, "=")
			if nv, ok := fill[k]; ok {
				val = nv
				filled[k] = true
			}
			args = append(args, "-e", k+"="+val)
		case w == deployImage:
			seen["image"] = true
			for _, s := range standIns {
				args = append(args, "-e", s)
			}
			args = append(args, img)
			args = append(args, words[i+1:]...) // the command
			i = len(words)
		default:
			args = append(args, w)
		}
	}
	for _, want := range []string{"--gpus", "--network", "--name", "image"} {
		if !seen[want] {
			return nil, fmt.Errorf("no %s in the docker run line (image %s)", want, deployImage)
		}
	}
	for k := range fill {
		if !filled[k] {
			return nil, fmt.Errorf("the docker run line does not set %s", k)
		}
	}
	return args, nil
}

// startSalad runs one replica of the Salad container group: its image
// (ours) and command, its environment with the values filled in, and
// SALAD_MACHINE_ID as Salad sets it; the probes' port published on
// loopback. Its resources (CPU, memory, GPU classes) and restart policy
// are Salad's to apply and not copied.
func (f *fleet) startSalad() *fleetWorker {
	f.t.Helper()
	g := f.deploy.salad
	f.mu.Lock()
	f.salad++
	n := f.salad
	f.mu.Unlock()
	machine := fmt.Sprintf("m%d-%d", os.Getpid()%10000, n)
	name := f.prefix + fmt.Sprintf("-salad-%d", n)
	args := []string{"--name", name, "--network", f.net, "-p", fmt.Sprintf("127.0.0.1::%d", g.probePort)}
	fill := f.fill()
	var keys []string
	for k := range g.Container.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := g.Container.Env[k]
		if nv, ok := fill[k]; ok {
			v = nv
		}
		args = append(args, "-e", k+"="+v)
	}
	args = append(args, "-e", "SALAD_MACHINE_ID="+machine)
	for _, s := range standIns {
		args = append(args, "-e", s)
	}
	args = append(args, f.image)
	args = append(args, g.Container.Command...)
	c := f.start(name, append([]string{"run", "-d"}, args...))
	w := &fleetWorker{container: c, id: "salad-" + machine, style: "salad", health: f.port(c, strconv.Itoa(g.probePort))}
	f.mu.Lock()
	f.workers = append(f.workers, w)
	f.mu.Unlock()
	return w
}

// run starts a helper container (B2, the control plane).
func (f *fleet) run(role string, args ...string) *container {
	f.t.Helper()
	return f.start(f.prefix+"-"+role, append([]string{"run", "-d", "--name", f.prefix + "-" + role}, args...))
}

// start runs docker with args (a docker run -d command naming the
// container name), then follows the container's output.
func (f *fleet) start(name string, args []string) *container {
	f.t.Helper()
	c := &container{name: name, logs: &lockedBuffer{}}
	f.mu.Lock()
	f.conts = append(f.conts, c) // removed at the end even if docker run fails halfway
	f.mu.Unlock()
	f.docker(args...)
	c.follow = exec.Command("docker", "logs", "-f", name)
	c.follow.Stdout, c.follow.Stderr = c.logs, c.logs
	if err := c.follow.Start(); err != nil {
		f.t.Fatal(err)
	}
	return c
}

// cleanup removes the fleet's containers and network, and on failure
// shows the end of every container's output.
func (f *fleet) cleanup() {
	f.mu.Lock()
	conts := slices.Clone(f.conts)
	f.mu.Unlock()
	if f.t.Failed() {
		for _, c := range conts {
			f.t.Logf("--- %s ---\n%s", c.name, c.quietTail(40))
		}
	}
	if f.store != nil {
		f.store.Close()
	}
	var names []string
	for _, c := range conts {
		names = append(names, c.name)
	}
	if len(names) > 0 {
		if out, err := exec.Command("docker", append([]string{"rm", "-f"}, names...)...).CombinedOutput(); err != nil &&
			!strings.Contains(string(out), "No such container") {
			f.t.Errorf("removing the containers: %v: %s", err, out)
		}
	}
	for _, c := range conts {
		if c.follow != nil && c.follow.Process != nil {
			c.follow.Process.Kill()
			c.follow.Wait()
		}
	}
	if out, err := exec.Command("docker", "network", "rm", f.net).CombinedOutput(); err != nil &&
		!strings.Contains(string(out), "not found") {
		f.t.Errorf("removing the network: %v: %s", err, out)
	}
}

// docker runs a docker command that must succeed.
func (f *fleet) docker(args ...string) string {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		f.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// port is where a container's port is published on the host.
func (f *fleet) port(c *container, port string) string {
	f.t.Helper()
	out := strings.TrimSpace(f.docker("port", c.name, port+"/tcp"))
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "127.0.0.1:") {
			return l
		}
	}
	f.t.Fatalf("docker port %s %s: %q", c.name, port, out)
	return ""
}

func (f *fleet) shmSize(w *fleetWorker) int64 {
	f.t.Helper()
	n, err := strconv.ParseInt(strings.TrimSpace(f.docker("inspect", "--format", "{{.HostConfig.ShmSize}}", w.name)), 10, 64)
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

func (f *fleet) worker(id string) *fleetWorker {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.workers {
		if w.id == id {
			return w
		}
	}
	f.t.Fatalf("no worker %s in the fleet", id)
	return nil
}

// waitReady waits until each worker is registered idle with a passed
// self-check.
func (f *fleet) waitReady(ws ...*fleetWorker) {
	f.t.Helper()
	for _, w := range ws {
		f.eventually(2*time.Minute, w.id+" registered and ready", func() (bool, string) {
			v, err := f.registry(w.id)
			if err != nil {
				return false, err.Error() + "\n" + w.tail(5)
			}
			return v.Status == protocol.WorkerIdle && v.SelfCheck != nil && v.SelfCheck.Error == "", fmt.Sprintf("%+v", v)
		})
	}
}

func (f *fleet) registry(id string) (protocol.WorkerView, error) {
	ws, err := f.api.Workers(f.ctx)
	if err != nil {
		return protocol.WorkerView{}, err
	}
	for _, w := range ws {
		if w.ID == id {
			return w, nil
		}
	}
	return protocol.WorkerView{}, fmt.Errorf("worker %s not registered", id)
}

func musetalkParams() protocol.JobParams {
	return protocol.JobParams{Engine: "musetalk", FaceBox: fleetFaceBox[:]}
}

func (f *fleet) submit(audio string, params protocol.JobParams, pool protocol.WorkerType) protocol.JobView {
	f.t.Helper()
	j, err := f.api.Submit(f.ctx, client.SubmitRequest{AvatarPath: f.media.face, AudioPath: audio, Params: params, WorkerType: pool})
	if err != nil {
		f.t.Fatal(err)
	}
	return j
}

func (f *fleet) job(id string) protocol.JobView {
	f.t.Helper()
	j, err := f.api.Get(f.ctx, id)
	if err != nil {
		f.t.Fatal(err)
	}
	return j
}

// waitRendering waits until the job runs with its engine under way
// (MuseTalk's generate stage: frames being made) and returns its worker.
func (f *fleet) waitRendering(id string) *fleetWorker {
	f.t.Helper()
	var j protocol.JobView
	f.eventually(2*time.Minute, "job "+id+" rendering", func() (bool, string) {
		j = f.job(id)
		if j.State.Final() {
			f.t.Fatalf("the job ended before the test could act: %s", describe(j))
		}
		return j.State == protocol.JobRunning && j.Progress != nil && j.Progress.Stage == "generate", describe(j)
	})
	return f.worker(j.WorkerID)
}

// setDrain sets or clears an operator's drain request on w (POST
// /v1/workers/{id}/drain or undrain); once set, the control plane gives
// w nothing to do.
func (f *fleet) setDrain(w *fleetWorker, drain bool) {
	f.t.Helper()
	op := "undrain"
	if drain {
		op = "drain"
	}
	resp, err := http.Post(f.api.BaseURL()+"/v1/workers/"+w.id+"/"+op, "application/json", nil)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		f.t.Fatalf("%s %s: %s %s", op, w.id, resp.Status, body)
	}
}

// waitFinal waits for the job to finish for as long as it moves: it fails
// when the job's state, attempt and progress stay the same for stall, or
// when the fleet's time is up. A fixed deadline would fail a job that
// renders slowly on a loaded 2-core machine (tiny weights on the CPU, the
// other scenarios and test packages beside it) while it is still working.
func (f *fleet) waitFinal(id string, stall time.Duration) protocol.JobView {
	f.t.Helper()
	var j protocol.JobView
	var seen string
	since := time.Now()
	for {
		j = f.job(id)
		if j.State.Final() {
			return j
		}
		now := fmt.Sprintf("%s %d %d", j.State, j.Attempt, len(j.Attempts))
		if j.Progress != nil {
			now += fmt.Sprintf(" %s %d", j.Progress.Stage, j.Progress.FramesDone)
		}
		if now != seen {
			seen, since = now, time.Now()
		}
		if time.Since(since) > stall || f.ctx.Err() != nil {
			f.t.Fatalf("job %s did not finish: no change for %v (or the fleet's time ran out: %v); last: %s",
				id, time.Since(since).Round(time.Second), f.ctx.Err(), describe(j))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkSucceeded checks a succeeded job's history: n attempts, the last
// one succeeded with its own output key, which is the job's, and
// checkPublished's checks.
func (f *fleet) checkSucceeded(j protocol.JobView, n int) {
	f.t.Helper()
	if j.State != protocol.JobSucceeded || len(j.Attempts) != n || j.Attempt != n {
		f.t.Fatalf("want success in attempt %d: %s", n, describe(j))
	}
	last := j.Attempts[n-1]
	if last.Outcome != protocol.OutcomeSucceeded || last.OutputKey != outputKey(j.ID, n) || j.OutputKey != last.OutputKey ||
		j.WorkerID != last.WorkerID || j.Failures != 0 || j.Interruptions != n-1 {
		f.t.Fatalf("job: %s", describe(j))
	}
	f.checkPublished(j)
}

// checkPublished checks that the result the control plane serves is the
// object under the job's output key, as B2 records it.
func (f *fleet) checkPublished(j protocol.JobView) blob.Info {
	f.t.Helper()
	info, err := f.store.Stat(f.ctx, j.OutputKey)
	if err != nil {
		f.t.Fatalf("the published output %s: %v", j.OutputKey, err)
	}
	if sha := f.resultSHA1(j.ID); sha != info.SHA1 {
		f.t.Fatalf("the result's SHA-1 %s, the object %s has %s", sha, j.OutputKey, info.SHA1)
	}
	return info
}

func (f *fleet) resultSHA1(id string) string {
	f.t.Helper()
	h := sha1.New()
	if _, err := f.api.Download(f.ctx, id, h); err != nil {
		f.t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkPlays runs the image's ffprobe on the result: H.264 and AAC,
// lasting the speech within a frame or two.
func (f *fleet) checkPlays(j protocol.JobView, seconds float64) {
	f.t.Helper()
	var buf bytes.Buffer
	if _, err := f.api.Download(f.ctx, j.ID, &buf); err != nil {
		f.t.Fatal(err)
	}
	cmd := exec.CommandContext(f.ctx, "docker", "run", "--rm", "-i", f.image, "ffprobe", "-v", "error",
		"-show_entries", "stream=codec_name:format=duration", "-of", "json", "-i", "pipe:0")
	cmd.Stdin = &buf
	out, err := cmd.Output()
	if err != nil {
		f.t.Fatalf("ffprobe of the result: %v", err)
	}
	var probe struct {
		Streams []struct {
			Codec string `json:"codec_name"`
		} `json:"streams"`
		Format struct {
			Duration string `json:"duration"`
		} `json:"format"`
	}
	if err := json.Unmarshal(out, &probe); err != nil {
		f.t.Fatalf("ffprobe: %v: %s", err, out)
	}
	var codecs []string
	for _, s := range probe.Streams {
		codecs = append(codecs, s.Codec)
	}
	slices.Sort(codecs)
	d, _ := strconv.ParseFloat(probe.Format.Duration, 64)
	if !slices.Equal(codecs, []string{"aac", "h264"}) || math.Abs(d-seconds) > 0.1 {
		f.t.Fatalf("the result: streams %v, %.3f s; want aac and h264, %.1f s", codecs, d, seconds)
	}
}

// fault adds a fault to the fleet's B2 (b2test's admin API).
func (f *fleet) fault(spec map[string]any) {
	f.t.Helper()
	b, _ := json.Marshal(spec)
	resp, err := http.Post("http://"+f.b2Addr+"/_b2test/faults", "application/json", bytes.NewReader(b))
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		f.t.Fatalf("adding the fault %s: %s %s", b, resp.Status, body)
	}
}

// b2Calls counts the fleet's B2 calls by operation.
func (f *fleet) b2Calls() map[string]int {
	f.t.Helper()
	resp, err := http.Get("http://" + f.b2Addr + "/_b2test/calls")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	calls := map[string]int{}
	if err := json.NewDecoder(resp.Body).Decode(&calls); err != nil {
		f.t.Fatal(err)
	}
	return calls
}

// metric reads one sample of the control plane's /metrics: the series
// named with the given label pairs (others may be present); 0 when
// absent.
func (f *fleet) metric(name string, labels ...string) float64 {
	f.t.Helper()
	resp, err := http.Get(f.api.BaseURL() + "/metrics")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name+"{") {
			continue
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && strings.Contains(l, labels[i]+"="+strconv.Quote(labels[i+1]))
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		if err != nil {
			f.t.Fatalf("/metrics: %q: %v", l, err)
		}
		return v
	}
	if err := sc.Err(); err != nil {
		f.t.Fatal(err)
	}
	return 0
}

// eventually polls cond every 100 ms until it holds, failing the test
// with what it last said after d.
func (f *fleet) eventually(d time.Duration, what string, cond func() (bool, string)) {
	f.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) || f.ctx.Err() != nil {
			f.t.Fatalf("%s: not within %v; last: %s", what, d, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// --- Salad's probes ---

// prober sends one worker the container group's three probes as Salad
// does: the startup probe from its initial delay every period until it
// succeeds, then liveness and readiness, each from its own initial delay
// (counted from the container's start) every period, each request bounded
// by the probe's timeout.
type prober struct {
	started time.Time
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	res     []probeResult
	up      chan struct{}
}

type probeResult struct {
	kind   string // startup, liveness, readiness
	at     time.Time
	status int
	err    error
	state  string // the worker's state in the body
	jobID  string
}

func (r probeResult) ok() bool { return r.err == nil && r.status == http.StatusOK }

func (r probeResult) String() string {
	if r.err != nil {
		return r.err.Error()
	}
	return fmt.Sprintf("HTTP %d, state %s", r.status, r.state)
}

func (f *fleet) probe(w *fleetWorker) *prober {
	ctx, cancel := context.WithCancel(f.ctx)
	p := &prober{started: time.Now(), cancel: cancel, up: make(chan struct{})}
	g := f.deploy.salad
	one := func(kind string, pr *saladProbe) bool {
		c, cancel := context.WithTimeout(ctx, time.Duration(pr.TimeoutSeconds)*time.Second)
		defer cancel()
		r := probeResult{kind: kind, at: time.Now()}
		req, _ := http.NewRequestWithContext(c, http.MethodGet, "http://"+w.health+pr.HTTP.Path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return false // stopped
			}
			r.err = err
		} else {
			r.status = resp.StatusCode
			var h struct {
				State string `json:"state"`
				JobID string `json:"job_id"`
			}
			json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			r.state, r.jobID = h.State, h.JobID
		}
		p.mu.Lock()
		p.res = append(p.res, r)
		p.mu.Unlock()
		return r.ok()
	}
	every := func(kind string, pr *saladProbe, after <-chan struct{}, untilOK bool) {
		defer p.wg.Done()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(p.started.Add(time.Duration(pr.InitialDelaySeconds) * time.Second))):
		}
		if after != nil {
			select {
			case <-ctx.Done():
				return
			case <-after:
			}
		}
		t := time.NewTicker(time.Duration(pr.PeriodSeconds) * time.Second)
		defer t.Stop()
		for failures := 0; ; {
			if one(kind, pr) {
				if untilOK {
					close(p.up)
					return
				}
			} else if failures++; untilOK && failures >= pr.FailureThreshold {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
	p.wg.Add(3)
	go every("startup", g.Startup, nil, true)
	go every("liveness", g.Liveness, p.up, false)
	go every("readiness", g.Readiness, p.up, false)
	return p
}

func (p *prober) stop() {
	p.cancel()
	p.wg.Wait()
}

func (p *prober) results() []probeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.res)
}

func (p *prober) startedUp() bool {
	select {
	case <-p.up:
		return true
	default:
		return false
	}
}

// --- The deploy files ---

type saladProbe struct {
	HTTP *struct {
		Path string `json:"path"`
		Port int    `json:"port"`
	} `json:"http"`
	InitialDelaySeconds int `json:"initial_delay_seconds"`
	PeriodSeconds       int `json:"period_seconds"`
	TimeoutSeconds      int `json:"timeout_seconds"`
	SuccessThreshold    int `json:"success_threshold"`
	FailureThreshold    int `json:"failure_threshold"`
}

type saladGroup struct {
	Container struct {
		Image   string            `json:"image"`
		Command []string          `json:"command"`
		Env     map[string]string `json:"environment_variables"`
	} `json:"container"`
	Startup   *saladProbe `json:"startup_probe"`
	Liveness  *saladProbe `json:"liveness_probe"`
	Readiness *saladProbe `json:"readiness_probe"`
	probePort int
}

type deployFiles struct {
	vastLine string // the docker run command, continuation lines joined
	salad    *saladGroup
	image    string // the image both name
	bucket   string // B2_BUCKET_NAME, which both set alike
}

func readDeployFiles(t *testing.T, root string) *deployFiles {
	t.Helper()
	d := &deployFiles{}
	raw, err := os.ReadFile(filepath.Join(root, saladFile))
	if err != nil {
		t.Fatal(err)
	}
	g := &saladGroup{}
	if err := json.Unmarshal(raw, g); err != nil {
		t.Fatalf("%s: %v", saladFile, err)
	}
	for name, p := range map[string]*saladProbe{"startup": g.Startup, "liveness": g.Liveness, "readiness": g.Readiness} {
		if p == nil || p.HTTP == nil || p.PeriodSeconds <= 0 || p.TimeoutSeconds <= 0 || p.FailureThreshold <= 0 {
			t.Fatalf("%s: the %s probe is not an HTTP probe with a period, timeout and failure threshold: %+v", saladFile, name, p)
		}
		if g.probePort != 0 && p.HTTP.Port != g.probePort {
			t.Fatalf("%s: the probes use ports %d and %d", saladFile, g.probePort, p.HTTP.Port)
		}
		g.probePort = p.HTTP.Port
	}
	if g.Container.Image == "" || len(g.Container.Command) == 0 || g.Container.Env["B2_BUCKET_NAME"] == "" {
		t.Fatalf("%s: no image, command or B2_BUCKET_NAME", saladFile)
	}
	d.salad, d.image, d.bucket = g, g.Container.Image, g.Container.Env["B2_BUCKET_NAME"]

	raw, err = os.ReadFile(filepath.Join(root, vastFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.ReplaceAll(string(raw), "\\\n", " "), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "docker run ") {
			if d.vastLine != "" {
				t.Fatalf("%s: more than one docker run line", vastFile)
			}
			d.vastLine = l
		}
	}
	if d.vastLine == "" {
		t.Fatalf("%s: no docker run line", vastFile)
	}
	if !strings.Contains(d.vastLine, "B2_BUCKET_NAME="+d.bucket+" ") {
		t.Fatalf("%s and %s name different buckets", vastFile, saladFile)
	}
	return d
}

// shellWords splits a command line as the shell would: blanks separate
// words, single quotes keep everything, double quotes and bare words
// expand $NAME and ${NAME} from vars (an unknown variable is an error:
// the test fills in every value), backslash escapes the next character.
func shellWords(line string, vars map[string]string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	expand := func(i int) (int, error) {
		j := i + 1
		var name string
		if j < len(line) && line[j] == '{' {
			end := strings.IndexByte(line[j:], '}')
			if end < 0 {
				return 0, fmt.Errorf("unterminated ${ at %d", i)
			}
			name, j = line[j+1:j+end], j+end+1
		} else {
			k := j
			for k < len(line) && (line[k] == '_' || line[k] >= 'A' && line[k] <= 'Z' || line[k] >= 'a' && line[k] <= 'z' || line[k] >= '0' && line[k] <= '9') {
				k++
			}
			name, j = line[j:k], k
		}
		v, ok := vars[name]
		if !ok {
			return 0, fmt.Errorf("$%s is not filled in", name)
		}
		cur.WriteString(v)
		return j, nil
	}
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
			i++
		case c == '\'':
			end := strings.IndexByte(line[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unterminated '")
			}
			cur.WriteString(line[i+1 : i+1+end])
			inWord, i = true, i+end+2
		case c == '"':
			inWord = true
			i++
			for {
				if i >= len(line) {
					return nil, errors.New(`unterminated "`)
				}
				if line[i] == '"' {
					i++
					break
				}
				if line[i] == '$' {
					j, err := expand(i)
					if err != nil {
						return nil, err
					}
					i = j
					continue
				}
				if line[i] == '\\' && i+1 < len(line) {
					i++
				}
				cur.WriteByte(line[i])
				i++
			}
		case c == '$':
			j, err := expand(i)
			if err != nil {
				return nil, err
			}
			inWord, i = true, j
		case c == '\\' && i+1 < len(line):
			cur.WriteByte(line[i+1])
			inWord, i = true, i+2
		case c == ';' || c == '|' || c == '&' || c == '#' || c == '`' || c == '(' || c == '>' || c == '<':
			return nil, fmt.Errorf("%q at %d: only a simple command is understood", c, i)
		default:
			cur.WriteByte(c)
			inWord, i = true, i+1
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// --- Media ---

// fleetFaceBox is where the test face sits in fleetMedia's image: the
// MuseTalk jobs pass it, so no face detector runs on the drawing.
var fleetFaceBox = [4]int{64, 64, 192, 192}

type fleetMedia struct {
	face                      string // 256×256 PNG
	short, long               string // WAVs of 16 kHz speech-band tones
	shortSeconds, longSeconds float64
}

func writeFleetMedia(t *testing.T) *fleetMedia {
	t.Helper()
	dir := t.TempDir()
	m := &fleetMedia{face: filepath.Join(dir, "face.png"), short: filepath.Join(dir, "short.wav"),
		long: filepath.Join(dir, "long.wav"), shortSeconds: 3, longSeconds: 12}
	img := image.NewRGBA(image.Rect(0, 0, 256, 256))
	for y := 0; y < 256; y++ {
		for x := 0; x < 256; x++ {
			c := color.RGBA{uint8(x), uint8(y), 128, 255}
			dx, dy := x-128, y-128
			if dx*dx+dy*dy*3/2 < 60*60 { // a face-coloured oval inside the face box
				c = color.RGBA{224, 172, 140, 255}
			}
			img.Set(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.face, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for file, secs := range map[string]float64{m.short: m.shortSeconds, m.long: m.longSeconds} {
		if err := os.WriteFile(file, wav(secs), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// wav is secs of 16 kHz mono 16-bit PCM: a tone gliding through the
// speech band, loud and soft by turns.
func wav(secs float64) []byte {
	const rate = 16000
	n := int(secs * rate)
	var b bytes.Buffer
	b.WriteString("RIFF")
	binary.Write(&b, binary.LittleEndian, uint32(36+2*n))
	b.WriteString("WAVEfmt ")
	for _, v := range []any{uint32(16), uint16(1), uint16(1), uint32(rate), uint32(2 * rate), uint16(2), uint16(16)} {
		binary.Write(&b, binary.LittleEndian, v)
	}
	b.WriteString("data")
	binary.Write(&b, binary.LittleEndian, uint32(2*n))
	phase := 0.0
	for i := 0; i < n; i++ {
		t := float64(i) / rate
		freq := 200 + 150*math.Sin(2*math.Pi*0.7*t)
		phase += 2 * math.Pi * freq / rate
		amp := 0.2 + 0.6*math.Abs(math.Sin(2*math.Pi*2*t))
		binary.Write(&b, binary.LittleEndian, int16(amp*math.Sin(phase)*20000))
	}
	return b.Bytes()
}

// --- Small things ---

// fleetPrefix begins every container and network name of a fleet,
// followed by the test process's id.
const fleetPrefix = "musetalk-fleet-"

// removeStaleFleets removes the containers, networks and image tags of
// test processes that are gone (killed, say by go test's timeout, before
// their cleanups ran). Those of running processes are left alone.
func removeStaleFleets() {
	stale := func(name string) bool {
		rest, ok := strings.CutPrefix(name, fleetPrefix)
		if !ok {
			return false
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		return err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH
	}
	list := func(args ...string) []string {
		out, err := exec.Command("docker", args...).Output()
		if err != nil {
			return nil
		}
		var names []string
		for _, n := range strings.Fields(string(out)) {
			if stale(n) {
				names = append(names, n)
			}
		}
		return names
	}
	if names := list("ps", "-a", "--filter", "name="+fleetPrefix, "--format", "{{.Names}}"); len(names) > 0 {
		exec.Command("docker", append([]string{"rm", "-f"}, names...)...).Run()
	}
	if names := list("network", "ls", "--filter", "name="+fleetPrefix, "--format", "{{.Name}}"); len(names) > 0 {
		exec.Command("docker", append([]string{"network", "rm"}, names...)...).Run()
	}
	// And the image tags such a process loaded (REPO:KIND-PID).
	out, _ := exec.Command("docker", "images", "--filter", "reference="+e2eRepo, "--format", "{{.Tag}}").Output()
	var tags []string
	for _, tag := range strings.Fields(string(out)) {
		if i := strings.LastIndexByte(tag, '-'); i > 0 && stale(fleetPrefix+tag[i+1:]+"-") {
			tags = append(tags, e2eRepo+":"+tag)
		}
	}
	if len(tags) > 0 {
		exec.Command("docker", append([]string{"rmi", "-f"}, tags...)...).Run()
	}
}

func outputKey(jobID string, attempt int) string {
	return fmt.Sprintf("outputs/%s/%d.mp4", jobID, attempt)
}

func describe(j protocol.JobView) string {
	s := fmt.Sprintf("job %s %s attempt %d on %q (interruptions %d, failures %d, output %q, error %q)",
		j.ID, j.State, j.Attempt, j.WorkerID, j.Interruptions, j.Failures, j.OutputKey, j.Error)
	if j.Progress != nil {
		s += fmt.Sprintf(" progress %s %d/%d", j.Progress.Stage, j.Progress.FramesDone, j.Progress.FramesTotal)
	}
	for _, a := range j.Attempts {
		s += fmt.Sprintf("; #%d %s %s %q", a.Attempt, a.WorkerID, a.Outcome, a.Error)
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// lockedBuffer collects a container's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (c *container) tail(n int) string {
	lines := strings.Split(strings.TrimRight(c.logs.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// quietTail is the last n lines of the container's output, leaving out
// the control plane's lines for successful GETs: the test polls its jobs
// every 100 ms, and those lines would push out what explains a failure.
func (c *container) quietTail(n int) string {
	var kept []string
	skipped := 0
	for _, l := range strings.Split(strings.TrimRight(c.logs.String(), "\n"), "\n") {
		if strings.Contains(l, `msg="http request" method=GET`) && strings.Contains(l, " status=200 ") {
			skipped++
			continue
		}
		kept = append(kept, l)
	}
	out := strings.Join(kept[max(0, len(kept)-n):], "\n")
	if skipped > 0 {
		out = fmt.Sprintf("(%d lines of successful GETs left out)\n%s", skipped, out)
	}
	return out
}

// logLine is one line of slog's text format as key → value.
type logLine map[string]string

// logLines parses the container's output so far.
func (c *container) logLines() []logLine {
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(c.logs.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := parseLogfmt(sc.Text()); len(l) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// parseLogfmt reads key=value pairs; values are bare or Go-quoted.
func parseLogfmt(s string) logLine {
	l := logLine{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || strings.ContainsAny(s[:eq], " \"") {
			return l
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return l
			}
			val, _ = strconv.Unquote(q)
			s = s[len(q):]
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
		}
		l[key] = val
	}
	return l
}
