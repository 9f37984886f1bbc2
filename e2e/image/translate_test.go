package image_test

import (
	"slices"
	"strings"
	"testing"
)

// TestVastLineTranslation checks, without Docker, how the fleet turns the
// Vast on-start line into a docker run for this machine, and that a line
// it does not expect fails naming what is missing.
func TestVastLineTranslation(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	d := readDeployFiles(t, root)
	fill := map[string]string{"ORCHESTRATOR_BASE_URL": "http://control:8080", "INTERNAL_API_KEY": "ik",
		"B2_KEY_ID": "kid", "B2_APP_KEY": "key", "POLL_INTERVAL_SEC": "1"}
	translate := func(line string) ([]string, error) {
		words, err := shellWords(line, map[string]string{"VAST_CONTAINERLABEL": "C.7"})
		if err != nil {
			return nil, err
		}
		return translateVast(words, d.image, "test-image", "net", "fleet-vast-1", fill)
	}

	args, err := translate(d.vastLine)
	if err != nil {
		t.Fatalf("%s: %v", vastFile, err)
	}
	got := strings.Join(args, " ")
	for _, want := range []string{"-d", "--rm", "--stop-timeout 30", "--network net -p 127.0.0.1::8000", "--name fleet-vast-1",
		"-e WORKER_ID=vast-C.7", "-e WORKER_TYPE=transient", "-e PROVIDER=vast", "-e ORCHESTRATOR_BASE_URL=http://control:8080",
		"-e INTERNAL_API_KEY=ik", "-e B2_KEY_ID=kid", "-e B2_APP_KEY=key", "-e B2_BUCKET_NAME=" + d.bucket, "-e POLL_INTERVAL_SEC=1",
		"-e B2_ENDPOINT=http://b2:9000 -e MUSETALK_DEVICE=cpu test-image musetalk worker"} {
		if !strings.Contains(" "+got+" ", " "+want+" ") {
			t.Errorf("translated line lacks %q:\n%s", want, got)
		}
	}
	if slices.Contains(args, "--gpus") || slices.Contains(args, "host") || slices.Contains(args, d.image) || strings.HasSuffix(got, "all") {
		t.Errorf("translated line keeps what this machine cannot run:\n%s", got)
	}
	if !strings.HasSuffix(got, "test-image musetalk worker") {
		t.Errorf("translated line does not end with the image and command:\n%s", got)
	}

	for _, c := range []struct{ line, want string }{
		{strings.Replace(d.vastLine, "--gpus all ", "", 1), "no --gpus"},
		{strings.Replace(d.vastLine, "--network host", "--network bridge", 1), "--network bridge, want host"},
		{strings.Replace(d.vastLine, d.image, "other/image:tag", 1), "no image"},
		{strings.Replace(d.vastLine, "-e POLL_INTERVAL_SEC=5 ", "", 1), "does not set POLL_INTERVAL_SEC"},
		{strings.Replace(d.vastLine, "${VAST_CONTAINERLABEL}", "${VAST_LABEL}", 1), "$VAST_LABEL is not filled in"},
		{"podman run -d " + d.image, "not a docker run command"},
		{d.vastLine + " && echo done", "only a simple command"},
		{strings.Replace(d.vastLine, `"vast-`, `"vast-unterminated`, 1) + ` "`, `unterminated "`},
	} {
		if _, err := translate(c.line); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one saying %q", c.line, err, c.want)
		}
	}
}
