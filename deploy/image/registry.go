package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// WriteTarball writes img to file as a `docker save` tarball (what
// `docker load` reads) tagged tag (BaseRepository when empty). It writes
// a temporary file beside file and renames it, so file is never half
// written. The tag is not part of the image's digest.
func WriteTarball(img v1.Image, file, tag string) error {
	if tag == "" {
		tag = BaseRepository
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("parsing tag %q: %w", tag, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tarball.Write(ref, img, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", file, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// ReadTarball opens a tarball that WriteTarball (or `docker save` of one
// image) wrote. Its digest is the one the image had when written.
func ReadTarball(file string) (v1.Image, error) {
	img, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	return img, nil
}

// TarballTag returns the name a tarball that WriteTarball wrote carries
// (what `docker load` tags the image), or "" when it has none.
func TarballTag(file string) (string, error) {
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(file) })
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", file, err)
	}
	if len(m) != 1 {
		return "", fmt.Errorf("%s holds %d images, not one", file, len(m))
	}
	if len(m[0].RepoTags) == 0 {
		return "", nil
	}
	return m[0].RepoTags[0], nil
}

// AuthError says that a registry refused the credentials of a push (or
// that it needs some and none were found).
type AuthError struct {
	Err        error
	Registry   string
	Repository string
	Status     int
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("pushing to %s: the registry %s refused the credentials (%d %s): log in with `docker login %s` (credentials come from the Docker config, $DOCKER_CONFIG or ~/.docker/config.json): %v",
		e.Repository, e.Registry, e.Status, http.StatusText(e.Status), e.Registry, e.Err)
}

func (e *AuthError) Unwrap() error { return e.Err }

// Push uploads img to repo ("NAME[:TAG]", a registry host first when it
// is not Docker Hub) with the credentials keys finds (nil:
// authn.DefaultKeychain, the Docker config's, as `docker login` stores
// them), and returns the pushed manifest's reference by digest. A
// registry refusing the credentials gives an *AuthError.
func Push(ctx context.Context, img v1.Image, repo string, keys authn.Keychain, opts ...remote.Option) (name.Digest, error) {
	ref, err := name.ParseReference(repo)
	if err != nil {
		return name.Digest{}, fmt.Errorf("parsing repository %q: %w", repo, err)
	}
	if keys == nil {
		keys = authn.DefaultKeychain
	}
	opts = append(opts, remote.WithAuthFromKeychain(keys), remote.WithContext(ctx))
	if err := remote.Write(ref, img, opts...); err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
			return name.Digest{}, &AuthError{Repository: ref.Context().Name(), Registry: ref.Context().RegistryStr(), Status: te.StatusCode, Err: err}
		}
		return name.Digest{}, fmt.Errorf("pushing to %s: %w", ref.Context().Name(), err)
	}
	d, err := img.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return ref.Context().Digest(d.String()), nil
}

// Load loads a tarball that WriteTarball wrote into the local Docker
// engine with `docker load` (the docker command on PATH, talking to
// whatever engine it is configured for) and returns what it printed
// ("Loaded image: explaindio/musetalk-worker:unified-v2").
func Load(ctx context.Context, file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := exec.LookPath("docker"); err != nil {
		return "", errors.New("docker load: the docker command is not installed")
	}
	cmd := exec.CommandContext(ctx, "docker", "load")
	cmd.Stdin = f
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker load < %s: %v: %s", file, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(out.String()), nil
}
