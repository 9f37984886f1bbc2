package protocol

import (
	"strings"
	"testing"
)

func TestPath(t *testing.T) {
	cases := map[string]string{
		Path(HeartbeatRoute, "w1"):   "/internal/main/workers/w1/heartbeat",
		Path(CompleteRoute, "job-9"): "/internal/main/jobs/job-9/complete",
		Path(ListJobsRoute):          "/v1/jobs",
		Path(GetJobRoute, "a"):       "/v1/jobs/a",
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestValidID(t *testing.T) {
	for _, id := range []string{"w1", "salad-abc_1.2:x", "01a21ea3-c6e0-739f-915c-a97c775366c3", strings.Repeat("a", 128)} {
		if !ValidID(id) {
			t.Errorf("%q rejected", id)
		}
	}
	for _, id := range []string{"", "-w", "a/b", "a b", "../x", "é", strings.Repeat("a", 129)} {
		if ValidID(id) {
			t.Errorf("%q accepted", id)
		}
	}
}

func TestHeartbeatValidate(t *testing.T) {
	ok := Heartbeat{Status: WorkerIdle, Provider: "salad", GPUClass: "RTX_3060", WorkerType: WorkerMain}
	if err := ok.Validate(); err != nil {
		t.Fatalf("seed heartbeat: %v", err)
	}
	bad := []struct {
		mutate func(*Heartbeat)
		names  string
	}{
		{func(h *Heartbeat) { h.Status = "offline" }, "status"},
		{func(h *Heartbeat) { h.WorkerType = "spot" }, "worker_type"},
		{func(h *Heartbeat) { h.JobID = "a/b" }, "job_id"},
		{func(h *Heartbeat) { h.Attempt = -1 }, "attempt"},
		{func(h *Heartbeat) { h.Progress = &Progress{FramesDone: 5, FramesTotal: 4} }, "frames_done"},
		{func(h *Heartbeat) { h.CachedAvatars = []string{"../etc"} }, "cached_avatars"},
	}
	for _, c := range bad {
		h := ok
		c.mutate(&h)
		err := h.Validate()
		if err == nil || !strings.Contains(err.Error(), c.names) {
			t.Errorf("want an error naming %s, got %v", c.names, err)
		}
	}
}

func TestJobParamsValidate(t *testing.T) {
	good := []JobParams{{}, {Version: "v1", BBoxShift: -7, FPS: "30000/1001", BatchSize: 8, FaceBox: []int{1, 2, 30, 40}}, {Engine: "preview", ParsingMode: "raw", FPS: "25"}, {FaceDetector: "s3fd"}, {FaceDetector: "dwpose"}}
	for _, p := range good {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
	bad := map[string]JobParams{
		"params.engine":        {Engine: "gan"},
		"params.version":       {Version: "v2"},
		"params.parsing_mode":  {ParsingMode: "neck"},
		"params.bbox_shift":    {BBoxShift: 1000},
		"params.extra_margin":  {ExtraMargin: -1},
		"params.batch_size":    {BatchSize: 1000},
		"params.fps":           {FPS: "fast"},
		"params.face_box":      {FaceBox: []int{10, 10, 5, 20}},
		"params.face_detector": {FaceDetector: "retinaface"},
	}
	for name, p := range bad {
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("want an error naming %s, got %v", name, err)
		}
	}
}

func TestParseFPS(t *testing.T) {
	r, err := ParseFPS("30000/1001")
	if err != nil || r.Num().Int64() != 30000 || r.Denom().Int64() != 1001 {
		t.Fatalf("30000/1001: %v %v", r, err)
	}
	if r, err := ParseFPS("29.97"); err != nil || r.FloatString(2) != "29.97" {
		t.Fatalf("29.97: %v %v", r, err)
	}
	for _, s := range []string{"0", "-25", "1/0", "x", "2000"} {
		if _, err := ParseFPS(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestStates(t *testing.T) {
	for _, s := range JobStates() {
		if !s.Valid() {
			t.Errorf("%s invalid", s)
		}
	}
	if JobQueued.Final() || JobRunning.Final() || !JobSucceeded.Final() || !JobFailed.Final() || !JobCancelled.Final() {
		t.Error("Final is wrong")
	}
	if JobState("paused").Valid() {
		t.Error("unknown state valid")
	}
}
