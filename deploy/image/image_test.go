package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func TestReadDeb(t *testing.T) {
	t.Parallel()
	for _, comp := range []string{"gz", "xz"} {
		b := fakeDeb(t, "ffmpeg", "7:5.1.9", comp, []fakeFile{
			{name: "./usr/"},
			{name: "./usr/bin/ffmpeg", body: "program", mode: 0o4755},
			{name: "./usr/bin/ffprobe", hard: "./usr/bin/ffmpeg"},
			{name: "./usr/bin/avconv", link: "ffmpeg"},
		})
		d, err := ReadDeb(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", comp, err)
		}
		if d.Package != "ffmpeg" || d.Version != "7:5.1.9" || d.Architecture != "amd64" {
			t.Errorf("%s: control read as %q %q %q", comp, d.Package, d.Version, d.Architecture)
		}
		var got []string
		for _, f := range d.Files {
			got = append(got, f.Path)
			switch f.Path {
			case "usr/bin/ffmpeg":
				if f.Mode != 0o4755 || string(f.Data) != "program" {
					t.Errorf("%s: ffmpeg %o %q", comp, f.Mode, f.Data)
				}
			case "usr/bin/ffprobe":
				if f.Type != tar.TypeReg || string(f.Data) != "program" {
					t.Errorf("%s: the hard link became %q %q, want a copy of its target", comp, f.Type, f.Data)
				}
			case "usr/bin/avconv":
				if f.Type != tar.TypeSymlink || f.Link != "ffmpeg" {
					t.Errorf("%s: symlink %q -> %q", comp, f.Type, f.Link)
				}
			}
		}
		if want := []string{"usr", "usr/bin/ffmpeg", "usr/bin/ffprobe", "usr/bin/avconv"}; !slices.Equal(got, want) {
			t.Errorf("%s: paths %q, want %q", comp, got, want)
		}
	}
	if _, err := ReadDeb(strings.NewReader("PK\x03\x04 a zip")); err == nil {
		t.Error("a zip file read as a package")
	}
}

// buildFake builds the fake world's image and closes it with the test.
func buildFake(t *testing.T, opts Options) *Image {
	t.Helper()
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	img, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { img.Close() })
	if err := validate.Image(img); err != nil {
		t.Fatalf("the image does not validate: %v", err)
	}
	return img
}

func TestBuildIsReproducible(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t)
	a := buildFake(t, w.options())

	// The same inputs by other roads: the packages in another order, in
	// another directory under other names, the binaries elsewhere.
	opts := w.options()
	other := t.TempDir()
	opts.Debs = nil
	for i := len(w.debs) - 1; i >= 0; i-- {
		b, err := os.ReadFile(w.debs[i])
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(other, "pkg"+string(rune('a'+i))+".deb")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		opts.Debs = append(opts.Debs, f)
	}
	opts.Binaries = nil
	for _, bin := range w.bins {
		b, _ := os.ReadFile(bin.Path)
		f := filepath.Join(other, "copy-of-"+bin.Name)
		if err := os.WriteFile(f, b, 0o755); err != nil {
			t.Fatal(err)
		}
		opts.Binaries = append(opts.Binaries, Binary{Name: bin.Name, Path: f})
	}
	time.Sleep(1100 * time.Millisecond) // a clock that moved must not matter
	b := buildFake(t, opts)

	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("two builds of the same inputs: digests %s and %s", da, db)
	}
	ta, tb := filepath.Join(t.TempDir(), "a.tar"), filepath.Join(t.TempDir(), "b.tar")
	if err := WriteTarball(a, ta, ""); err != nil {
		t.Fatal(err)
	}
	if err := WriteTarball(b, tb, ""); err != nil {
		t.Fatal(err)
	}
	ba, _ := os.ReadFile(ta)
	bb, _ := os.ReadFile(tb)
	if !bytes.Equal(ba, bb) {
		t.Error("the two tarballs differ")
	}
	back, err := ReadTarball(ta)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := back.Digest(); d != da {
		t.Errorf("read back from its tarball the image has digest %s, built %s", d, da)
	}

	// Another creation time changes the config, never a layer.
	opts.Created = opts.Created.Add(time.Hour)
	c := buildFake(t, opts)
	if dc, _ := c.Digest(); dc == da {
		t.Error("another creation time, same digest")
	}
	la, _ := a.Layers()
	lc, _ := c.Layers()
	for i := range la {
		x, _ := la[i].Digest()
		y, _ := lc[i].Digest()
		if x != y {
			t.Errorf("layer %d changed with the creation time", i)
		}
	}
}

// entries reads a layer's tar headers and regular files' bytes.
func entries(t *testing.T, l v1.Layer) ([]*tar.Header, map[string]string) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var hs []*tar.Header
	data := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		data[h.Name] = string(b)
		hs = append(hs, h)
	}
	return hs, data
}

func TestLayersAreNormalised(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t)
	img := buildFake(t, w.options())
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 2 {
		t.Fatalf("%d layers, want the packages' and the binaries'", len(layers))
	}
	var all []map[string]*tar.Header
	var files []map[string]string
	for i, l := range layers {
		hs, data := entries(t, l)
		byName := map[string]*tar.Header{}
		seen := map[string]bool{}
		for j, h := range hs {
			if j > 0 && hs[j-1].Name >= h.Name {
				t.Errorf("layer %d: %q after %q: entries not sorted", i, h.Name, hs[j-1].Name)
			}
			if parent := path.Dir(strings.TrimSuffix(h.Name, "/")); parent != "." && !seen[parent+"/"] {
				t.Errorf("layer %d: %q comes before its directory", i, h.Name)
			}
			seen[h.Name] = true
			if !h.ModTime.Equal(LayerTime) || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
				t.Errorf("layer %d: %s has times %v %v %v", i, h.Name, h.ModTime, h.AccessTime, h.ChangeTime)
			}
			if h.Uname != "" || h.Gname != "" || len(h.Xattrs) > 0 { //nolint:staticcheck // Xattrs: checking none slipped in
				t.Errorf("layer %d: %s has names %q %q or xattrs", i, h.Name, h.Uname, h.Gname)
			}
			for k := range h.PAXRecords {
				if k != "path" && k != "linkpath" {
					t.Errorf("layer %d: %s has PAX record %s", i, h.Name, k)
				}
			}
			if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeDir && h.Typeflag != tar.TypeSymlink {
				t.Errorf("layer %d: %s has type %q", i, h.Name, h.Typeflag)
			}
			if strings.HasPrefix(h.Name, "./") || strings.HasPrefix(h.Name, "/") {
				t.Errorf("layer %d: name %q", i, h.Name)
			}
			byName[h.Name] = h
		}
		all = append(all, byName)
		files = append(files, data)
	}
	root, rootData := all[0], files[0]
	for _, c := range []struct {
		name string
		typ  byte
		mode int64
		uid  int
	}{
		{"tmp/", tar.TypeDir, 0o1777, 0},
		{"home/musetalk/", tar.TypeDir, 0o755, UID},
		{"opt/musetalk/weights/", tar.TypeDir, 0o755, UID},
		{"etc/passwd", tar.TypeReg, 0o644, 0},
		{"usr/bin/ffprobe", tar.TypeReg, 0o644, 0},
		{"etc/localtime", tar.TypeSymlink, 0o777, 0},
		{"usr/lib/x86_64-linux-gnu/libblas.so.3", tar.TypeSymlink, 0o777, 0},
		{"usr/share/doc/ffmpeg/" + strings.Repeat("long-name-", 12) + "README", tar.TypeReg, 0o644, 0},
	} {
		h := root[c.name]
		if h == nil {
			t.Errorf("the packages' layer lacks %s", c.name)
			continue
		}
		if h.Typeflag != c.typ || h.Mode != c.mode || h.Uid != c.uid {
			t.Errorf("%s: type %q mode %o uid %d, want %q %o %d", c.name, h.Typeflag, h.Mode, h.Uid, c.typ, c.mode, c.uid)
		}
	}
	if !strings.Contains(rootData["etc/passwd"], "musetalk:x:1000:1000:") || !strings.Contains(rootData["etc/group"], "musetalk:x:1000:") {
		t.Errorf("passwd/group lack the user:\n%s%s", rootData["etc/passwd"], rootData["etc/group"])
	}
	if b := rootData["etc/ssl/certs/ca-certificates.crt"]; !strings.Contains(b, "AAAA") || strings.Index(b, "AAAA") > strings.Index(b, "BBBB") {
		t.Errorf("CA bundle %q: want A.crt then B.crt", b)
	}
	if rootData["usr/bin/ffprobe"] != rootData["usr/bin/ffmpeg"] {
		t.Error("ffprobe (a hard link) is not a copy of ffmpeg")
	}
	if l := root["usr/lib/x86_64-linux-gnu/libblas.so.3"]; l != nil && l.Linkname != "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3" {
		t.Errorf("libblas.so.3 links to %s", l.Linkname)
	}
	if root["etc/localtime"].Linkname != "/usr/share/zoneinfo/Etc/UTC" {
		t.Errorf("/etc/localtime -> %s", root["etc/localtime"].Linkname)
	}
	if !strings.Contains(rootData["var/lib/dpkg/status.d/ffmpeg"], "Package: ffmpeg\nVersion: 7:5.1.9-0+deb12u1") {
		t.Errorf("status.d/ffmpeg: %q", rootData["var/lib/dpkg/status.d/ffmpeg"])
	}
	for _, n := range []string{"usr/local/bin/musetalk", "usr/local/bin/musetalk-cuda"} {
		if h := all[1][n]; h == nil || h.Mode != 0o755 || h.Uid != 0 {
			t.Errorf("binaries' layer: %s is %+v, want root-owned 0755", n, h)
		}
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t)
	img := buildFake(t, w.options())
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.Entrypoint != nil {
		t.Errorf("Entrypoint %q: `docker run IMAGE musetalk control` would not run musetalk control", c.Entrypoint)
	}
	if !slices.Equal(c.Cmd, []string{"musetalk", "worker"}) {
		t.Errorf("Cmd %q", c.Cmd)
	}
	if c.User != "1000:1000" || c.WorkingDir != Home {
		t.Errorf("User %q WorkingDir %q", c.User, c.WorkingDir)
	}
	if _, ok := c.ExposedPorts["8000/tcp"]; !ok || len(c.ExposedPorts) != 1 {
		t.Errorf("ExposedPorts %v", c.ExposedPorts)
	}
	for _, e := range []string{"NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=compute,utility", "MUSETALK_WEIGHTS=/opt/musetalk/weights", "HOME=/home/musetalk"} {
		if !slices.Contains(c.Env, e) {
			t.Errorf("Env lacks %s: %q", e, c.Env)
		}
	}
	if !slices.ContainsFunc(c.Env, func(e string) bool { return strings.HasPrefix(e, "PATH=") && strings.Contains(e, "/usr/local/bin") }) {
		t.Errorf("PATH does not hold /usr/local/bin: %q", c.Env)
	}
	for k, v := range map[string]string{
		"org.opencontainers.image.created":  "2026-01-02T03:04:05Z",
		"org.opencontainers.image.revision": "0123456789abcdef",
		"org.opencontainers.image.version":  "v1.2.3",
		"org.opencontainers.image.source":   DefaultSource,
	} {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}
	if !cf.Created.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) || cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("created %v, platform %s/%s", cf.Created, cf.OS, cf.Architecture)
	}
	if len(cf.History) != 2 || !cf.History[0].Created.Equal(cf.Created.Time) {
		t.Errorf("history %+v", cf.History)
	}
}

func TestBuildChecksSharedLibraries(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t)
	opts := w.options()
	// A binary that needs a library no package ships.
	f := filepath.Join(t.TempDir(), "musetalk")
	if err := os.WriteFile(f, fakeELF("", "libc.so.6", "libfoo.so.9"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts.Binaries = []Binary{{Name: "musetalk", Path: f}}
	_, err := Build(context.Background(), opts)
	if err == nil || !strings.Contains(err.Error(), "libfoo.so.9 (needed by /usr/local/bin/musetalk)") {
		t.Errorf("err %v, want one naming libfoo.so.9 and the binary", err)
	}

	// Without libblas3 in the lock, ffmpeg misses libblas.so.3.
	opts = w.options()
	lock := *w.lock
	lock.Packages = slices.DeleteFunc(slices.Clone(lock.Packages), func(p LockedPackage) bool { return p.Name == "libblas3" })
	opts.Lock = &lock
	_, err = Build(context.Background(), opts)
	if err == nil || !strings.Contains(err.Error(), "libblas.so.3 (needed by /usr/bin/ffmpeg") {
		t.Errorf("err %v, want one naming libblas.so.3 and ffmpeg", err)
	}
}

func TestBuildVerifiesPackages(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t)
	// A tampered package under its own name.
	opts := w.options()
	opts.Debs = slices.Clone(w.debs)
	dir := t.TempDir()
	tampered := filepath.Join(dir, filepath.Base(w.debs[0]))
	b, _ := os.ReadFile(w.debs[0])
	b[len(b)-3] ^= 0xff
	if err := os.WriteFile(tampered, b, 0o644); err != nil {
		t.Fatal(err)
	}
	opts.Debs[0] = tampered
	_, err := Build(context.Background(), opts)
	var mm *MismatchError
	if !errors.As(err, &mm) || mm.Package != w.lock.Packages[0].Name+" "+w.lock.Packages[0].Version {
		t.Errorf("err %v, want a *MismatchError for %s", err, w.lock.Packages[0].Name)
	}
	// A package missing.
	opts.Debs = w.debs[1:]
	_, err = Build(context.Background(), opts)
	if err == nil || !strings.Contains(err.Error(), w.lock.Packages[0].Name+"="+w.lock.Packages[0].Version) {
		t.Errorf("err %v, want one naming the missing package", err)
	}
	// A file the lock drops that no package ships.
	opts = w.options()
	lock := *w.lock
	lock.Drop = []string{"/usr/lib/nothing.so"}
	opts.Lock = &lock
	if _, err := Build(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "/usr/lib/nothing.so") {
		t.Errorf("err %v, want one naming the dropped path", err)
	}
}

func TestWithWeights(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t)
	base := buildFake(t, w.options())
	weights := t.TempDir()
	for n, body := range map[string]string{"musetalkV15/unet.safetensors": "unet", "sd-vae/config.json": "{}", "whisper/model.safetensors": "w"} {
		p := filepath.Join(weights, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	build := func(b v1.Image) v1.Image {
		img, err := WithWeights(context.Background(), b, weights, 0, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { img.Close() })
		if err := validate.Image(img); err != nil {
			t.Fatal(err)
		}
		return img
	}
	a := build(base)
	// The same from the base's tarball, as the Bazel rule does it.
	tb := filepath.Join(t.TempDir(), "base.tar")
	if err := WriteTarball(base, tb, ""); err != nil {
		t.Fatal(err)
	}
	fromTar, err := ReadTarball(tb)
	if err != nil {
		t.Fatal(err)
	}
	b := build(fromTar)
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("with weights: %s from the built base, %s from its tarball", da, db)
	}
	layers, _ := a.Layers()
	if len(layers) != 3 {
		t.Fatalf("%d layers, want 3", len(layers))
	}
	hs, data := entries(t, layers[2])
	byName := map[string]*tar.Header{}
	for _, h := range hs {
		byName[h.Name] = h
	}
	if h := byName["opt/musetalk/weights/musetalkV15/unet.safetensors"]; h == nil || h.Mode != 0o644 || h.Uid != 0 || data[h.Name] != "unet" {
		t.Errorf("unet.safetensors: %+v", h)
	}
	if h := byName["opt/musetalk/weights/"]; h == nil || h.Uid != UID {
		t.Errorf("the weights directory: %+v, want it as in the base image (uid %d)", h, UID)
	}
	cb, _ := base.ConfigFile()
	ca, _ := a.ConfigFile()
	if !reflect.DeepEqual(cb.Config, ca.Config) || !ca.Created.Equal(cb.Created.Time) {
		t.Error("adding the weights changed the run configuration")
	}
}

func TestLockRoundTrip(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t)
	w.lock.Exclude = []string{"debconf"}
	w.lock.Drop = []string{"/usr/lib/x.so"}
	var b bytes.Buffer
	if _, err := w.lock.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	back, err := ReadLock(&b)
	if err != nil {
		t.Fatal(err)
	}
	want := *w.lock
	want.Packages = slices.Clone(w.lock.Packages)
	slices.SortFunc(want.Packages, func(a, b LockedPackage) int { return strings.Compare(a.Name, b.Name) })
	if !reflect.DeepEqual(back, &want) {
		t.Errorf("read back:\n%+v\nwant\n%+v", back, &want)
	}
	if p := (LockedPackage{Name: "ffmpeg", Version: "7:5.1.9-0+deb12u1", Arch: "amd64"}); p.DebFile() != "ffmpeg_7%3a5.1.9-0+deb12u1_amd64.deb" {
		t.Errorf("DebFile %s", p.DebFile())
	}
}

// TestCommittedLock keeps debs.lock in step with packages.txt and the
// image's needs.
func TestCommittedLock(t *testing.T) {
	t.Parallel()
	lock, err := ReadLockFile("debs.lock")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ReadSpec("packages.txt")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lock.Request, spec.Request) || !slices.Equal(lock.Exclude, spec.Exclude) || !slices.Equal(lock.Drop, spec.Drop) {
		t.Errorf("debs.lock was made from another packages.txt: regenerate it (README.md)\nlock: %q %q %q\nspec: %q %q %q",
			lock.Request, lock.Exclude, lock.Drop, spec.Request, spec.Exclude, spec.Drop)
	}
	if lock.Suite != "bookworm" || lock.Arch != "amd64" {
		t.Errorf("lock for %s %s", lock.Suite, lock.Arch)
	}
	names := lock.Names()
	if len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Error("a package is locked twice")
	}
	for _, n := range append([]string{"libc6", "ffmpeg", "ca-certificates", "tzdata"}, spec.Request...) {
		if !slices.Contains(names, n) {
			t.Errorf("the lock lacks %s", n)
		}
	}
	for _, n := range spec.Exclude {
		if slices.Contains(names, n) {
			t.Errorf("the lock holds the excluded %s", n)
		}
	}
}

// TestDeployFilesRunThisImage: the deploy files name the image push
// writes by default.
func TestDeployFilesRunThisImage(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"../salad/container-group.json", "../vast/onstart.sh"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), DefaultRepository) {
			t.Errorf("%s does not run %s", f, DefaultRepository)
		}
	}
}
