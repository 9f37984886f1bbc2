package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
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
	for done := int64(0); done <= total; done += 100 {
		d.update(modeldir.FetchProgress{File: "b.bin", Phase: modeldir.FetchDownload, Done: done, Total: total})
	}
	d.update(modeldir.FetchProgress{File: "b.bin", Phase: modeldir.FetchVerify, Done: total, Total: total})
	d.update(modeldir.FetchProgress{File: "b.bin", Phase: modeldir.FetchDone, Done: total, Total: total, Verified: "sha256"})
	d.finish()
	want := "a.json: present\n" +
		"b.bin: downloading 1000 B\n" +
		"b.bin: 300 B of 1000 B (30%)\n" +
		"b.bin: 500 B of 1000 B (50%)\n" +
		"b.bin: 800 B of 1000 B (80%)\n" +
		"b.bin: 1000 B, sha256 verified\n"
	if plain.String() != want {
		t.Errorf("plain display:\n%s\nwant:\n%s", plain.String(), want)
	}

	var tty bytes.Buffer
	now := time.Unix(0, 0)
	d = newFetchDisplay(&tty, true, func() time.Time { return now })
	for done := int64(0); done <= 3<<20; done += 1 << 20 {
		now = now.Add(time.Second)
		d.update(modeldir.FetchProgress{File: "c.bin", Phase: modeldir.FetchDownload, Done: done, Total: 3 << 20})
	}
	d.update(modeldir.FetchProgress{File: "c.bin", Phase: modeldir.FetchDone, Done: 3 << 20, Total: 3 << 20})
	s := tty.String()
	if !strings.Contains(s, "\r\x1b[Kc.bin  2.0 MiB / 3.0 MiB (66%)") || !strings.HasSuffix(s, "\nc.bin: 3.0 MiB, no checksum known\n") {
		t.Errorf("terminal display: %q", s)
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
