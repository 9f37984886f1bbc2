// Package image assembles the worker's container image from layers,
// reproducibly and without a Dockerfile or a base image: a root file
// system made of pinned Debian bookworm packages (glibc, CA
// certificates, time zones, ffmpeg and the libraries it needs; see Lock
// and RootFS), a layer with the musetalk binaries, and optionally a
// layer with a weight directory (WithWeights). The same inputs give the
// same bytes, so the same digest: every tar entry is sorted and
// normalised (Tree.WriteTar) and every time in the image is fixed.
//
// The image runs `musetalk worker` when started with no command, and
// any other command line (`musetalk control …`, `ffmpeg …`) when given
// one: it has a default command and no entrypoint. It exposes the
// worker's port 8000, runs as the unprivileged user musetalk, and asks
// the NVIDIA container runtime for the driver (NVIDIA_VISIBLE_DEVICES,
// NVIDIA_DRIVER_CAPABILITIES).
//
// Images are written as docker-save tarballs (WriteTarball), which
// `docker load` reads, pushed with Push and loaded with Load.
package image

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// DefaultRepository is the image the deploy files run (Salad's
	// container group, Vast's on-start line): the image with the weights
	// (WithWeights), since a worker without them claims nothing and a
	// Salad container has no volume to mount them from.
	DefaultRepository = "explaindio/musetalk-worker:unified-v2"
	// BaseRepository is the image without weights (Build), for hosts
	// that mount a weight directory at WeightsDir.
	BaseRepository = "explaindio/musetalk-worker:unified-v2-base"
	// DefaultSource is the org.opencontainers.image.source label.
	DefaultSource = "https://github.com/avatargen/musetalk"
	// Port is the worker's /health port, exposed.
	Port = "8000/tcp"
)

// LayerTime is every file's modification time in every layer: fixed, so
// that a layer's digest depends on its contents alone and an unchanged
// layer is shared between builds (the packages' layer changes only with
// the lock).
var LayerTime = time.Unix(0, 0).UTC()

// Binary is a program installed in /usr/local/bin.
type Binary struct {
	Name string // "musetalk", "musetalk-cuda"
	Path string // the file on this machine
}

// Options are Build's inputs. Only Lock, Debs and Binaries are required.
type Options struct {
	// Binaries are installed in /usr/local/bin, mode 0755.
	Binaries []Binary
	// Created is the config's creation time and the
	// org.opencontainers.image.created label (SOURCE_DATE_EPOCH); the
	// zero time is the Unix epoch.
	Created time.Time
	// Debs are .deb files, matched to Lock's packages by SHA-256; every
	// locked package must be among them.
	Debs []string
	// Level is the gzip level of the layers; 0 means gzip.DefaultCompression.
	Level int
	// Lock pins the packages of the root file system.
	Lock *Lock
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
	// Revision and Version are the org.opencontainers.image.revision and
	// .version labels; empty, "unknown".
	Revision, Version string
	// Source is the org.opencontainers.image.source label; empty,
	// DefaultSource.
	Source string
	// TempDir holds the layers until the image is closed; empty, the
	// system's temporary directory.
	TempDir string
}

// Image is a built image whose layers live in temporary files until
// Close.
type Image struct {
	v1.Image
	dir string
}

// Close removes the layers' files; the image is unusable afterwards.
func (i *Image) Close() error {
	if i.dir == "" {
		return nil
	}
	return os.RemoveAll(i.dir)
}

// Build assembles the image: the root file system from opts.Debs (see
// RootFS) and the binaries, as two layers, with the worker's config (see
// Config). It checks that every ELF program and library in the image
// finds the shared libraries it needs (libcuda.so.1 comes from the host).
// ctx is checked between steps.
func Build(ctx context.Context, opts Options) (*Image, error) {
	if opts.Lock == nil {
		return nil, errors.New("no lock")
	}
	if len(opts.Binaries) == 0 {
		return nil, errors.New("no binaries")
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	files, err := opts.Lock.Match(opts.Debs)
	if err != nil {
		return nil, err
	}
	debs, err := readDebs(ctx, opts.Lock.Packages, files)
	if err != nil {
		return nil, err
	}
	logf("read %d packages", len(debs))
	root, err := RootFS(debs, opts.Lock.Drop)
	if err != nil {
		return nil, err
	}
	bins := NewTree()
	for _, b := range opts.Binaries {
		if b.Name == "" || strings.Contains(b.Name, "/") {
			return nil, fmt.Errorf("binary name %q", b.Name)
		}
		if st, err := os.Stat(b.Path); err != nil {
			return nil, err
		} else if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a file", b.Path)
		}
		p := strings.TrimPrefix(BinDir, "/") + "/" + b.Name
		if err := bins.Add(&File{Path: p, Type: tar.TypeReg, Mode: 0o755, Source: b.Path}, b.Path); err != nil {
			return nil, err
		}
	}
	if err := checkLibraries(root, bins); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(opts.TempDir, "musetalk-image-")
	if err != nil {
		return nil, err
	}
	img := &Image{dir: dir}
	ok := false
	defer func() {
		if !ok {
			img.Close()
		}
	}()
	level := opts.Level
	if level == 0 {
		level = gzip.DefaultCompression
	}
	// The two layers are compressed side by side.
	var binLayer *fileLayer
	binErr := make(chan error, 1)
	go func() {
		var err error
		binLayer, err = writeLayer(dir, bins, LayerTime, level)
		binErr <- err
	}()
	rootLayer, err := writeLayer(dir, root, LayerTime, level)
	if bErr := <-binErr; err == nil && bErr != nil {
		return nil, fmt.Errorf("writing the binaries' layer: %w", bErr)
	}
	if err != nil {
		return nil, fmt.Errorf("writing the packages' layer: %w", err)
	}
	logf("packages' layer: %d entries, %s compressed; binaries' layer: %s compressed", root.Len(), size(rootLayer.size), size(binLayer.size))

	created := opts.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC().Truncate(time.Second)
	var names []string
	for _, b := range opts.Binaries {
		names = append(names, b.Name)
	}
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: created},
		Config:       Config(opts, created),
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	img.Image, err = mutate.Append(base,
		mutate.Addendum{Layer: rootLayer, MediaType: types.DockerLayer, History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: fmt.Sprintf("imagetool: %d Debian %s packages (debs.lock)", len(debs), opts.Lock.Suite),
		}},
		mutate.Addendum{Layer: binLayer, MediaType: types.DockerLayer, History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "imagetool: " + strings.Join(names, ", ") + " in " + BinDir,
		}},
	)
	if err != nil {
		return nil, err
	}
	ok = true
	return img, nil
}

// Config is the image's run configuration: Cmd ["musetalk", "worker"]
// and no Entrypoint, so `docker run IMAGE` runs the worker and `docker
// run IMAGE musetalk control …` runs that instead; the musetalk user;
// port 8000; the environment (PATH, HOME, the NVIDIA runtime's variables,
// MUSETALK_WEIGHTS=/opt/musetalk/weights); the OCI labels.
func Config(opts Options, created time.Time) v1.Config {
	or := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	return v1.Config{
		Cmd: []string{"musetalk", "worker"},
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"HOME=" + Home,
			// The NVIDIA container runtime mounts every GPU and the driver's
			// compute libraries (libcuda.so.1) and nvidia-smi.
			"NVIDIA_VISIBLE_DEVICES=all",
			"NVIDIA_DRIVER_CAPABILITIES=compute,utility",
			"MUSETALK_WEIGHTS=" + WeightsDir,
		},
		ExposedPorts: map[string]struct{}{Port: {}},
		User:         strconv.Itoa(UID) + ":" + strconv.Itoa(GID),
		WorkingDir:   Home,
		Labels: map[string]string{
			"org.opencontainers.image.created":     created.UTC().Format(time.RFC3339),
			"org.opencontainers.image.description": "MuseTalk lip-sync worker: musetalk worker, with ffmpeg, on Debian " + or(opts.Lock.Suite, "bookworm") + " packages",
			"org.opencontainers.image.revision":    or(opts.Revision, "unknown"),
			"org.opencontainers.image.source":      or(opts.Source, DefaultSource),
			"org.opencontainers.image.title":       "musetalk-worker",
			"org.opencontainers.image.version":     or(opts.Version, "unknown"),
		},
	}
}

// WithWeights returns base with one more layer: the weight directory dir
// (what `musetalk weights fetch --dir` fills) at WeightsDir, its files
// root-owned and read-only to the worker (0644, directories 0755). The
// layer is gzipped at level (0: gzip.BestSpeed; weights barely compress)
// into a file in tempDir, removed by Close. The config is base's with
// the layer's history entry.
func WithWeights(ctx context.Context, base v1.Image, dir string, level int, tempDir string) (*Image, error) {
	t := NewTree()
	root := strings.TrimPrefix(WeightsDir, "/")
	for d := path.Dir(root); d != "."; d = path.Dir(d) {
		t.Put(&File{Path: d, Type: tar.TypeDir, Mode: 0o755}, "image")
	}
	// The directory itself as in the base image.
	t.Put(&File{Path: root, Type: tar.TypeDir, Mode: 0o755, UID: UID, GID: GID}, "image")
	n := 0
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		st, err := os.Stat(p) // follows links: their targets go in
		if err != nil {
			return err
		}
		dst := root + "/" + filepath.ToSlash(rel)
		switch {
		case st.IsDir():
			if e.Type()&fs.ModeSymlink != 0 {
				return fmt.Errorf("%s: a link to a directory", p)
			}
			t.Put(&File{Path: dst, Type: tar.TypeDir, Mode: 0o755}, dir)
		case st.Mode().IsRegular():
			t.Put(&File{Path: dst, Type: tar.TypeReg, Mode: 0o644, Source: p}, dir)
			n++
		default:
			return fmt.Errorf("%s: neither a file nor a directory", p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the weights: %w", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%s holds no files", dir)
	}
	cf, err := base.ConfigFile()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(tempDir, "musetalk-image-")
	if err != nil {
		return nil, err
	}
	if level == 0 {
		level = gzip.BestSpeed
	}
	l, err := writeLayer(tmp, t, LayerTime, level)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("writing the weights' layer: %w", err)
	}
	img, err := mutate.Append(base, mutate.Addendum{Layer: l, MediaType: types.DockerLayer, History: v1.History{
		Created:   cf.Created,
		CreatedBy: fmt.Sprintf("imagetool: weights (%d files) in %s", n, WeightsDir),
	}})
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	return &Image{Image: img, dir: tmp}, nil
}

// readDebs reads the locked packages from their files (by name) on every
// CPU (xz decompression is most of a build's time), in the lock's order.
func readDebs(ctx context.Context, pkgs []LockedPackage, files map[string]string) ([]*Deb, error) {
	debs := make([]*Deb, len(pkgs))
	errs := make([]error, len(pkgs))
	next := make(chan int)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				p := pkgs[i]
				d, err := readDebFile(files[p.Name])
				if err == nil && (d.Package != p.Name || d.Version != p.Version) {
					err = fmt.Errorf("%s holds %s %s, not %s %s", files[p.Name], d.Package, d.Version, p.Name, p.Version)
				}
				debs[i], errs[i] = d, err
			}
		}()
	}
	for i := range pkgs {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return debs, nil
}

func readDebFile(name string) (*Deb, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := ReadDeb(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

func size(n int64) string {
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}

// Names lists the locked packages' names, sorted.
func (l *Lock) Names() []string {
	var ns []string
	for _, p := range l.Packages {
		ns = append(ns, p.Name)
	}
	slices.Sort(ns)
	return ns
}
