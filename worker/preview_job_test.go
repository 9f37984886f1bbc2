package worker

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/controlblob"
	"github.com/avatargen/musetalk/worker/engine"
	"github.com/avatargen/musetalk/worker/preview"
)

func makeMedia(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Fatalf("ffmpeg is needed (apt-get install ffmpeg): %v", err)
	}
	p := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("ffmpeg", append(append([]string{"-hide_banner", "-loglevel", "error", "-y"}, args...), p)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestPreviewJobThroughControlBlob runs the preview engine on real media,
// with the worker reading and writing objects through the control plane's
// blob routes (the worker has no B2 credentials).
func TestPreviewJobThroughControlBlob(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{
		engines: []engine.Engine{preview.New(preview.Options{})},
		blob: func(h *harness) blob.Store {
			s, err := controlblob.New(h.srv.URL, testKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	})
	h.put("inputs/p/face.png", makeMedia(t, "face.png", "-f", "lavfi", "-i", "testsrc=size=96x96:rate=1", "-frames:v", "1"))
	h.put("inputs/p/speech.wav", makeMedia(t, "speech.wav", "-f", "lavfi", "-i", "sine=frequency=440:duration=1"))
	h.put("inputs/p/corrupt.wav", []byte("RIFF....WAVEnot really audio"))
	h.start()

	id := h.submit(protocol.JobParams{Engine: "preview"}, "inputs/p/face.png", "inputs/p/speech.wav")
	waitFor(t, "the preview job to succeed", func() bool { return h.job(id).State == protocol.JobSucceeded })
	resp, err := http.Get(h.srv.URL + "/v1/jobs/" + id + "/result")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(data) < 8 || string(data[4:8]) != "ftyp" {
		t.Fatalf("result: HTTP %d, %d bytes; want an MP4", resp.StatusCode, len(data))
	}
	// Progress posts are rate-limited, so the last one seen may be any.
	if v := h.job(id); v.Progress == nil || v.Progress.FramesTotal != 25 {
		t.Errorf("last progress %+v, want some of 25 frames (1 s at 25 fps)", v.Progress)
	}
	var blobCalls int
	for _, c := range h.rec.calls("blob") {
		if c.method == http.MethodPut && c.path == protocol.InternalBlobPath+"outputs/"+id+"/1.mp4" {
			blobCalls++
		}
	}
	if blobCalls != 1 {
		t.Errorf("%d uploads of the output through the control plane, want 1", blobCalls)
	}

	// Corrupt audio fails the job for good, with ffprobe's own words.
	id = h.submit(protocol.JobParams{Engine: "preview"}, "inputs/p/face.png", "inputs/p/corrupt.wav")
	waitFor(t, "the corrupt job to fail", func() bool { return h.job(id).State == protocol.JobFailed })
	if v := h.job(id); !strings.Contains(v.Error, "audio: ") || v.Failures != 1 {
		t.Errorf("corrupt audio: error %q failures %d", v.Error, v.Failures)
	}
	if _, err := h.blobs.Stat(context.Background(), "outputs/"+id+"/1.mp4"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("a failed attempt left an output: %v", err)
	}
}
