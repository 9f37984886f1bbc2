package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/avatargen/musetalk/musetalk/modeldir"
)

func TestWeightsSubcommandsHaveHelp(t *testing.T) {
	for _, sub := range []string{"convert", "fetch", "tiny"} {
		out, err := run(t, "weights", sub, "--help")
		if err != nil {
			t.Fatalf("weights %s --help: %v", sub, err)
		}
		if !strings.Contains(out, "musetalk weights "+sub) || !strings.Contains(out, "OPTIONS") {
			t.Errorf("weights %s --help says:\n%s", sub, out)
		}
	}
}

func TestWeightsTiny(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "w")
	out, err := run(t, "weights", "tiny", "--out", dir, "--seed", "5")
	if err != nil {
		t.Fatalf("weights tiny: %v\n%s", err, out)
	}
	d := modeldir.Dir(dir)
	if err := d.Check(modeldir.V15, modeldir.V1); err != nil {
		t.Fatalf("Check after weights tiny: %v", err)
	}
	id, err := d.ID(modeldir.Versions()...)
	if err != nil || !strings.Contains(out, id) {
		t.Errorf("output %q does not give the ID %s (%v)", out, id, err)
	}
	if _, err := run(t, "weights", "tiny"); err == nil || !strings.Contains(err.Error(), "out") {
		t.Errorf("weights tiny without --out: %v", err)
	}
}

// gitBlobID is the git blob id the hub sends as a small file's ETag.
func gitBlobID(b []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

func TestWeightsFetch(t *testing.T) {
	// A tiny directory lacking the Whisper configs, which a fake hub serves.
	dir := t.TempDir()
	if err := modeldir.WriteTiny(dir, 1); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for _, name := range []string{"config.json", "preprocessor_config.json"} {
		p := filepath.Join(dir, "whisper", name)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		want["/openai/whisper-tiny/resolve/main/"+name] = data
		os.Remove(p)
	}
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, ok := want[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"`+gitBlobID(data)+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	defer hub.Close()

	out, err := run(t, "weights", "fetch", "--dir", dir, "--version", "v15,v1", "--endpoint", hub.URL)
	if err != nil {
		t.Fatalf("weights fetch: %v\n%s", err, out)
	}
	for _, s := range []string{"whisper/config.json: ", "git-sha1 verified", "musetalkV15/unet.pth: present", "ready in " + dir} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	if err := modeldir.Dir(dir).Check(modeldir.V15, modeldir.V1); err != nil {
		t.Fatal(err)
	}

	// A file the hub does not have: the error names its URL.
	os.Remove(filepath.Join(dir, "sd-vae", "config.json"))
	_, err = run(t, "weights", "fetch", "--dir", dir, "--endpoint", hub.URL)
	if err == nil || !strings.Contains(err.Error(), hub.URL+"/stabilityai/sd-vae-ft-mse/resolve/main/config.json") || !strings.Contains(err.Error(), "404") {
		t.Fatalf("fetch of a missing file: %v", err)
	}
	if _, err := run(t, "weights", "fetch", "--dir", dir, "--version", "v2"); err == nil || !strings.Contains(err.Error(), "v2") {
		t.Fatalf("--version v2: %v", err)
	}
}

func TestFetchDisplay(t *testing.T) {
	var plain bytes.Buffer
	d := newFetchDisplay(&plain, false, time.Now)
	const total = 1000
	d.update(modeldir.FetchProgress{File: "a.json", Phase: modeldir.FetchPresent})
	d.update(modeldir.FetchProgress{File: "b.bin", Phase: modeldir.FetchStart, URL: "https://hub.example/b.bin", Done: -1, Total: total})
	d.update(modeldir.FetchProgress{File: "b.bin", Phase: modeldir.FetchDownload, Done: 0, Total: total})
	d.update(modeldir.FetchProgress{File: "b.bin", Phase: modeldir.FetchRetry, Attempt: 1, Err: errors.New("connection reset"), Done: -1, Total: total})
	for done := int64(0); done <= total; done += 100 {
		d.update(modeldir.FetchProgress{File: "b.bin", Phase: modeldir.FetchDownload, Done: done, Total: total})
	}
	d.update(modeldir.FetchProgress{File: "b.bin", Phase: modeldir.FetchVerify, Done: total, Total: total})
	d.update(modeldir.FetchProgress{File: "b.bin", Phase: modeldir.FetchDone, Done: total, Total: total, Verified: "sha256"})
	d.update(modeldir.FetchProgress{File: "c.bin", Phase: modeldir.FetchStart, URL: "https://hub.example/c.bin", Done: -1, Total: -1})
	d.update(modeldir.FetchProgress{File: "c.bin", Phase: modeldir.FetchFailed, Err: errors.New("404"), Done: -1, Total: -1})
	d.finish()
	want := "a.json: present\n" +
		"b.bin: fetching https://hub.example/b.bin\n" +
		"b.bin: downloading 1000 B\n" +
		"b.bin: attempt 1 failed (connection reset); trying again\n" +
		"b.bin: downloading 1000 B\n" +
		"b.bin: 300 B of 1000 B (30%)\n" +
		"b.bin: 500 B of 1000 B (50%)\n" +
		"b.bin: 800 B of 1000 B (80%)\n" +
		"b.bin: 1000 B, sha256 verified\n" +
		"c.bin: fetching https://hub.example/c.bin\n" +
		"c.bin: failed\n"
	if plain.String() != want {
		t.Errorf("plain display:\n%s\nwant:\n%s", plain.String(), want)
	}

	var tty bytes.Buffer
	now := time.Unix(0, 0)
	d = newFetchDisplay(&tty, true, func() time.Time { return now })
	d.update(modeldir.FetchProgress{File: "c.bin", Phase: modeldir.FetchStart, URL: "https://hub.example/c.bin", Done: -1, Total: -1})
	for done := int64(0); done <= 3<<20; done += 1 << 20 {
		now = now.Add(time.Second)
		d.update(modeldir.FetchProgress{File: "c.bin", Phase: modeldir.FetchDownload, Done: done, Total: 3 << 20})
	}
	d.update(modeldir.FetchProgress{File: "c.bin", Phase: modeldir.FetchDone, Done: 3 << 20, Total: 3 << 20})
	d.update(modeldir.FetchProgress{File: "d.bin", Phase: modeldir.FetchStart, URL: "https://hub.example/d.bin", Done: -1, Total: -1})
	d.update(modeldir.FetchProgress{File: "d.bin", Phase: modeldir.FetchFailed, Err: errors.New("404"), Done: -1, Total: -1})
	d.finish()
	s := tty.String()
	for _, want := range []string{
		"\r\x1b[Kc.bin  connecting to hub.example",
		"\r\x1b[Kc.bin [################........] 2.0 MiB / 3.0 MiB (66%)",
		"\nc.bin: 3.0 MiB, no checksum known\n",
		"\r\x1b[Kd.bin  connecting to hub.example\r\x1b[Kd.bin: failed\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("terminal display lacks %q:\n%q", want, s)
		}
	}
	if !strings.HasSuffix(s, "\n") {
		t.Errorf("terminal display does not end its line: %q", s)
	}
}

// TestWeightsFetchOffline: a hub whose name does not resolve (.invalid
// never does) fails at once, leaves nothing behind and says what to do
// instead.
func TestWeightsFetchOffline(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "w")
	out, err := run(t, "weights", "fetch", "--dir", dir, "--endpoint", "http://hub.invalid", "--s3fd-url", "http://s3fd.invalid/s3fd.pth")
	if err == nil {
		t.Fatalf("weights fetch from hub.invalid succeeded:\n%s", out)
	}
	msg := err.Error()
	if n := strings.Count(msg, "cannot reach hub.invalid"); n != 1 {
		t.Errorf("the unreachable hub is reported %d times, want once:\n%s", n, msg)
	}
	for _, s := range []string{"cannot reach s3fd.invalid", "--endpoint URL", "HF_ENDPOINT", "--s3fd-url", "musetalk weights tiny --out DIR", "musetalk up --engine preview"} {
		if !strings.Contains(msg, s) {
			t.Errorf("the error does not say %q:\n%s", s, msg)
		}
	}
	// The progress shows what was being fetched.
	for _, s := range []string{"sd-vae/config.json: fetching http://hub.invalid/stabilityai/sd-vae-ft-mse/resolve/main/config.json\n", "sd-vae/config.json: failed\n"} {
		if !strings.Contains(out, s) {
			t.Errorf("the output lacks %q:\n%s", s, out)
		}
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		t.Errorf("left %d entries in %s", len(entries), dir)
	}
}

// TestWeightsFetchS3FDURL: --s3fd-url moves S3FD's download, and the
// pinned digest still applies to it.
func TestWeightsFetchS3FDURL(t *testing.T) {
	dir := t.TempDir()
	if err := modeldir.WriteTiny(dir, 1); err != nil {
		t.Fatal(err)
	}
	st := filepath.Join(dir, "s3fd", "s3fd-619a316812.safetensors")
	data, err := os.ReadFile(st)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(st)
	requests := 0
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	defer mirror.Close()
	t.Setenv("MUSETALK_S3FD_URL", mirror.URL+"/s3fd.pth")
	_, err = run(t, "weights", "fetch", "--dir", dir, "--endpoint", "http://hub.invalid")
	var ce *modeldir.ChecksumError
	if !errors.As(err, &ce) || ce.URL != mirror.URL+"/s3fd.pth" || ce.Algorithm != "size" && ce.Algorithm != "sha256" {
		t.Fatalf("tiny S3FD weights from the mirror: %v; want the pinned checksum to refuse them", err)
	}
	if requests != 1 {
		t.Errorf("%d requests to the mirror", requests)
	}
}

func TestParseVersions(t *testing.T) {
	got, err := parseVersions([]string{"v15,v1", "v15"})
	if err != nil || strings.Join(got, ",") != "v15,v1" {
		t.Errorf("parseVersions = %v, %v", got, err)
	}
	if _, err := parseVersions([]string{","}); err == nil {
		t.Error("an empty version list was accepted")
	}
}
