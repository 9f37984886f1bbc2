package image

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// testRegistry is an in-process registry; with a user it wants HTTP
// basic authentication (what Docker Hub's token service boils down to
// for a client: a 401 challenge, then credentials).
func testRegistry(t *testing.T, user, password string) string {
	t.Helper()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if user != "" {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != password {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
			inner.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// dockerConfig points DOCKER_CONFIG at a config.json holding these
// credentials for host, as `docker login` writes it.
func dockerConfig(t *testing.T, host, user, password string) {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	cfg := fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
}

// TestPushThenPull pushes the image read back from its tarball (as
// `imagetool push` does) and pulls it: the registry's manifest digest is
// the built image's.
func TestPushThenPull(t *testing.T) {
	w := newFakeWorld(t)
	img := buildFake(t, w.options())
	file := filepath.Join(t.TempDir(), "image.tar")
	if err := WriteTarball(img, file, ""); err != nil {
		t.Fatal(err)
	}
	fromTar, err := ReadTarball(file)
	if err != nil {
		t.Fatal(err)
	}
	if tag, err := TarballTag(file); err != nil || tag != BaseRepository {
		t.Errorf("the tarball carries %q (%v), want %s", tag, err, BaseRepository)
	}
	host := testRegistry(t, "", "")
	dockerConfig(t, "elsewhere.example", "u", "p")
	repo := host + "/explaindio/musetalk-worker:unified-v2"
	ref, err := Push(context.Background(), fromTar, repo, nil)
	if err != nil {
		t.Fatal(err)
	}
	built, _ := img.Digest()
	if ref.DigestStr() != built.String() || ref.Context().Name() != host+"/explaindio/musetalk-worker" {
		t.Errorf("Push returned %s, built %s", ref, built)
	}
	tag, err := name.ParseReference(repo)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(tag)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != built {
		t.Errorf("the registry serves %s as %s, built %s", repo, desc.Digest, built)
	}
	pulled, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(pulled); err != nil {
		t.Errorf("pulled image: %v", err)
	}
	if d, _ := pulled.Digest(); d != built {
		t.Errorf("pulled %s, built %s", d, built)
	}
}

// TestPushCredentials: the Docker config's credentials are used; wrong
// ones fail with a message naming the repository and the refusal.
func TestPushCredentials(t *testing.T) {
	w := newFakeWorld(t)
	img := buildFake(t, w.options())
	host := testRegistry(t, "ci", "s3cret")
	repo := host + "/explaindio/musetalk-worker:unified-v2"

	dockerConfig(t, host, "ci", "wrong")
	_, err := Push(context.Background(), img, repo, nil)
	var ae *AuthError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("push with a wrong password: %v, want an *AuthError with 401", err)
	}
	msg := err.Error()
	for _, want := range []string{host + "/explaindio/musetalk-worker", "refused the credentials", "401 Unauthorized", "docker login " + host} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q:\n%s", want, msg)
		}
	}
	t.Log(msg)
	if strings.Contains(msg, "wrong") {
		t.Errorf("the error shows the password: %s", msg)
	}

	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no credentials at all
	if _, err := Push(context.Background(), img, repo, nil); !errors.As(err, &ae) {
		t.Errorf("push without credentials: %v, want an *AuthError", err)
	}

	dockerConfig(t, host, "ci", "s3cret")
	ref, err := Push(context.Background(), img, repo, nil)
	if err != nil {
		t.Fatalf("push with the right credentials: %v", err)
	}
	if d, _ := img.Digest(); ref.DigestStr() != d.String() {
		t.Errorf("pushed %s, built %s", ref, d)
	}
}
