package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/avatargen/musetalk/deploy/image"
)

// These tests run the command line as `bazel run //worker:image -- push`
// runs it (imagetool push --image TARBALL ...), against go-containerregistry's
// in-process registry: what push prints is what the registry serves and
// what `imagetool digest` says the tarball holds, and wrong credentials
// fail with a message that says what to do.

// registryWithLogin is an in-process registry that wants HTTP basic
// authentication as user:password, and returns its host:port.
func registryWithLogin(t *testing.T, user, password string) string {
	t.Helper()
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// login writes a Docker config holding user:password for host, as
// `docker login` does, and points DOCKER_CONFIG at it.
func login(t *testing.T, host, user, password string) {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	cfg := fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
}

// run runs imagetool with args and returns what it printed on stdout.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	err = newApp().Run(append([]string{"imagetool"}, args...))
	os.Stdout = stdout
	w.Close()
	return <-done, err
}

// tarball writes a small random image as the build does (tagged
// image.BaseRepository) and returns the file and the image's digest.
func tarball(t *testing.T) (string, string) {
	t.Helper()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "image.tar")
	if err := image.WriteTarball(img, file, ""); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return file, d.String()
}

func TestPushPrintsTheBuiltDigest(t *testing.T) {
	file, built := tarball(t)
	out, err := run(t, "digest", "--image", file)
	if err != nil || !strings.Contains(out, "digest "+built+"\n") {
		t.Fatalf("imagetool digest: %v\n%s\nwant digest %s", err, out, built)
	}

	host := registryWithLogin(t, "ci", "s3cret")
	login(t, host, "ci", "s3cret")
	for _, tc := range []struct {
		how  string
		args []string
		env  string
	}{
		{how: "--repo", args: []string{"--repo", host + "/team/worker:flag"}},
		{how: "MUSETALK_IMAGE", env: host + "/team/worker:env"},
	} {
		t.Run(tc.how, func(t *testing.T) {
			t.Setenv("MUSETALK_IMAGE", tc.env)
			out, err := run(t, append([]string{"push", "--image", file}, tc.args...)...)
			if err != nil {
				t.Fatalf("imagetool push: %v", err)
			}
			want := host + "/team/worker@" + built
			if got := strings.TrimSpace(out); got != want {
				t.Errorf("push printed %q, want %q", got, want)
			}
			tag := tc.env
			if tag == "" {
				tag = tc.args[1]
			}
			ref, err := name.ParseReference(tag)
			if err != nil {
				t.Fatal(err)
			}
			desc, err := remote.Get(ref, remote.WithAuth(&authn.Basic{Username: "ci", Password: "s3cret"}))
			if err != nil {
				t.Fatalf("pulling %s: %v", tag, err)
			}
			if desc.Digest.String() != built {
				t.Errorf("the registry serves %s as %s, built %s", tag, desc.Digest, built)
			}
		})
	}
}

func TestPushWithBadCredentials(t *testing.T) {
	file, _ := tarball(t)
	host := registryWithLogin(t, "ci", "s3cret")
	repo := host + "/team/worker:v1"

	login(t, host, "ci", "wrong-password")
	_, err := run(t, "push", "--image", file, "--repo", repo)
	if err == nil {
		t.Fatal("push with a wrong password succeeded")
	}
	msg := err.Error()
	t.Log(msg)
	for _, want := range []string{
		"pushing to " + host + "/team/worker",
		"the registry " + host + " refused the credentials (401 Unauthorized)",
		"docker login " + host,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "wrong-password") {
		t.Errorf("the error shows the password: %s", msg)
	}

	t.Setenv("DOCKER_CONFIG", t.TempDir()) // logged in nowhere
	if _, err := run(t, "push", "--image", file, "--repo", repo); err == nil || !strings.Contains(err.Error(), "refused the credentials") {
		t.Errorf("push without credentials: %v, want a refusal", err)
	}
}
