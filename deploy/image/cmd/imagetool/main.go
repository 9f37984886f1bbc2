// Command imagetool builds, pushes and loads the worker's container image
// (package deploy/image): a thin command line over the library.
//
//	imagetool debs lock  --packages deploy/image/packages.txt --out deploy/image/debs.lock
//	imagetool debs fetch --lock deploy/image/debs.lock --dir DIR
//	imagetool build --debs-lock deploy/image/debs.lock --debs-dir DIR \
//	    --bin musetalk=PATH --bin musetalk-cuda=PATH --out image.tar
//	imagetool with-weights --image image.tar --weights DIR --out image-weights.tar
//	imagetool push   --image image.tar [--repo NAME[:TAG]]
//	imagetool load   --image image.tar [--tag NAME[:TAG]]
//	imagetool digest --image image.tar
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/deploy/image"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp().RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "imagetool:", err)
		os.Exit(1)
	}
}

var digestFileFlag = &cli.StringFlag{Name: "digest-file", Usage: "also write the image's digest to this file"}

func newApp() *cli.App {
	imageFlag := &cli.StringFlag{Name: "image", Usage: "the image tarball (docker save format)", Required: true, EnvVars: []string{"MUSETALK_IMAGE_TAR"}}
	return &cli.App{
		Name:  "imagetool",
		Usage: "build, push and load the MuseTalk worker image (no Dockerfile, reproducible)",
		Commands: []*cli.Command{
			{
				Name:  "build",
				Usage: "assemble the image from the locked Debian packages and the musetalk binaries",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "debs-lock", Usage: "the lock of the Debian packages", Value: "deploy/image/debs.lock"},
					&cli.StringFlag{Name: "debs-dir", Usage: "directory of the .deb files (imagetool debs fetch)"},
					&cli.StringSliceFlag{Name: "deb", Usage: "a .deb file (repeatable; beside or instead of --debs-dir)"},
					&cli.StringSliceFlag{Name: "bin", Usage: "NAME=PATH: a program for /usr/local/bin (musetalk=..., musetalk-cuda=...)", Required: true},
					&cli.StringFlag{Name: "out", Usage: "the image tarball to write", Required: true},
					&cli.StringFlag{Name: "tag", Usage: "the name docker load gives the image, and push's default", Value: image.BaseRepository},
					&cli.Int64Flag{Name: "source-date-epoch", Usage: "the image's creation time, in seconds since 1970 (labels and config)", EnvVars: []string{"SOURCE_DATE_EPOCH"}},
					&cli.StringFlag{Name: "version", Usage: "org.opencontainers.image.version label", EnvVars: []string{"MUSETALK_VERSION"}},
					&cli.StringFlag{Name: "revision", Usage: "org.opencontainers.image.revision label (the commit)", EnvVars: []string{"MUSETALK_REVISION"}},
					&cli.StringFlag{Name: "source", Usage: "org.opencontainers.image.source label", Value: image.DefaultSource},
					&cli.IntFlag{Name: "level", Usage: "gzip level of the layers (1-9; 0: the default, 6)"},
					digestFileFlag,
				},
				Action: build,
			},
			{
				Name:  "with-weights",
				Usage: "add a layer with a weight directory (musetalk weights fetch --dir DIR) at " + image.WeightsDir,
				Flags: []cli.Flag{
					imageFlag,
					&cli.StringFlag{Name: "weights", Usage: "the weight directory", Required: true},
					&cli.StringFlag{Name: "out", Usage: "the image tarball to write", Required: true},
					&cli.StringFlag{Name: "tag", Usage: "the name docker load gives the image, and push's default", Value: image.DefaultRepository},
					&cli.IntFlag{Name: "level", Usage: "gzip level of the weights' layer (0: 1, fastest; weights barely compress)"},
					digestFileFlag,
				},
				Action: withWeights,
			},
			{
				Name:      "push",
				Usage:     "push the image (credentials from the Docker config: docker login) and print its digest",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					imageFlag,
					&cli.StringFlag{Name: "repo", Usage: "NAME[:TAG] to push to (default: the name the tarball carries: " + image.DefaultRepository + " with weights, " + image.BaseRepository + " without)", EnvVars: []string{"MUSETALK_IMAGE"}},
				},
				Action: push,
			},
			{
				Name:  "load",
				Usage: "load the image into the local Docker engine (docker load)",
				Flags: []cli.Flag{
					imageFlag,
					&cli.StringFlag{Name: "tag", Usage: "also tag the loaded image NAME[:TAG]", EnvVars: []string{"MUSETALK_IMAGE"}},
				},
				Action: load,
			},
			{
				Name:   "digest",
				Usage:  "print the image's digest (what a registry names it by) and its ID (its config's digest, what docker images shows)",
				Flags:  []cli.Flag{imageFlag},
				Action: digest,
			},
			{
				Name:  "debs",
				Usage: "the Debian packages of the image",
				Subcommands: []*cli.Command{
					{
						Name:  "lock",
						Usage: "resolve packages.txt with apt (on Debian bookworm amd64) and write the lock",
						Flags: []cli.Flag{
							&cli.StringFlag{Name: "packages", Value: "deploy/image/packages.txt", Usage: "the package list"},
							&cli.StringFlag{Name: "out", Value: "deploy/image/debs.lock", Usage: "the lock to write"},
						},
						Action: debsLock,
					},
					{
						Name:  "fetch",
						Usage: "download the locked packages with apt-get download and verify their SHA-256",
						Flags: []cli.Flag{
							&cli.StringFlag{Name: "lock", Value: "deploy/image/debs.lock", Usage: "the lock"},
							&cli.StringFlag{Name: "dir", Required: true, Usage: "where the .deb files go (kept: a second fetch downloads nothing)"},
						},
						Action: debsFetch,
					},
				},
			},
		},
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "imagetool: "+format+"\n", args...)
}

func build(c *cli.Context) error {
	lock, err := image.ReadLockFile(c.String("debs-lock"))
	if err != nil {
		return err
	}
	debs := c.StringSlice("deb")
	if d := c.String("debs-dir"); d != "" {
		more, err := image.DebsIn(d)
		if err != nil {
			return err
		}
		debs = append(debs, more...)
	}
	var bins []image.Binary
	for _, b := range c.StringSlice("bin") {
		n, p, ok := strings.Cut(b, "=")
		if !ok {
			return fmt.Errorf("--bin %q: want NAME=PATH", b)
		}
		bins = append(bins, image.Binary{Name: n, Path: p})
	}
	img, err := image.Build(c.Context, image.Options{
		Binaries: bins,
		Created:  time.Unix(c.Int64("source-date-epoch"), 0),
		Debs:     debs,
		Level:    c.Int("level"),
		Lock:     lock,
		Logf:     logf,
		Revision: c.String("revision"),
		Source:   c.String("source"),
		Version:  c.String("version"),
	})
	if err != nil {
		return err
	}
	defer img.Close()
	return write(img, c.String("out"), c.String("tag"), c.String("digest-file"))
}

func write(img *image.Image, out, tag, digestFile string) error {
	if err := image.WriteTarball(img, out, tag); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	logf("wrote %s (%.1f MB), tagged %s", out, float64(st.Size())/1e6, tag)
	fmt.Println(d)
	if digestFile != "" {
		return os.WriteFile(digestFile, []byte(d.String()+"\n"), 0o644)
	}
	return nil
}

func withWeights(c *cli.Context) error {
	base, err := image.ReadTarball(c.String("image"))
	if err != nil {
		return err
	}
	img, err := image.WithWeights(c.Context, base, c.String("weights"), c.Int("level"), "")
	if err != nil {
		return err
	}
	defer img.Close()
	return write(img, c.String("out"), c.String("tag"), c.String("digest-file"))
}

func push(c *cli.Context) error {
	img, err := image.ReadTarball(c.String("image"))
	if err != nil {
		return err
	}
	repo := c.String("repo")
	if repo == "" {
		if repo, err = image.TarballTag(c.String("image")); err != nil {
			return err
		}
	}
	if repo == "" {
		repo = image.DefaultRepository
	}
	ref, err := image.Push(c.Context, img, repo, nil)
	if err != nil {
		return err
	}
	logf("pushed %s", repo)
	fmt.Println(ref)
	return nil
}

func load(c *cli.Context) error {
	out, err := image.Load(c.Context, c.String("image"))
	if err != nil {
		return err
	}
	fmt.Println(out)
	if tag := c.String("tag"); tag != "" {
		img, err := image.ReadTarball(c.String("image"))
		if err != nil {
			return err
		}
		id, err := img.ConfigName()
		if err != nil {
			return err
		}
		if b, err := exec.CommandContext(c.Context, "docker", "tag", id.String(), tag).CombinedOutput(); err != nil {
			return fmt.Errorf("docker tag %s %s: %v: %s", id, tag, err, strings.TrimSpace(string(b)))
		}
		fmt.Println("Tagged:", tag)
	}
	return nil
}

func digest(c *cli.Context) error {
	img, err := image.ReadTarball(c.String("image"))
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	id, err := img.ConfigName()
	if err != nil {
		return err
	}
	size := int64(0)
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return err
		}
		size += n
	}
	fmt.Printf("digest %s\nid %s\nlayers %d, %s compressed\n", d, id, len(layers), strconv.FormatFloat(float64(size)/1e6, 'f', 1, 64)+" MB")
	return nil
}

func debsLock(c *cli.Context) error {
	spec, err := image.ReadSpec(c.String("packages"))
	if err != nil {
		return err
	}
	lock, err := image.Apt{Logf: logf}.Resolve(c.Context, spec)
	if err != nil {
		return err
	}
	f, err := os.Create(c.String("out"))
	if err != nil {
		return err
	}
	if _, err := lock.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func debsFetch(c *cli.Context) error {
	lock, err := image.ReadLockFile(c.String("lock"))
	if err != nil {
		return err
	}
	return image.Apt{Logf: logf}.Fetch(c.Context, lock, c.String("dir"))
}
