package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Spec is what the image's root file system asks for: packages.txt.
type Spec struct {
	// Drop are files removed from the root file system: plugins whose
	// libraries no package depends on, which nothing can load.
	Drop []string
	// Exclude leaves packages out of the closure, and with them what only
	// they pulled in: packages that only maintainer scripts use (they never
	// run in the image) and drivers nothing links (the GL stack).
	Exclude []string
	// Request are the packages wanted; their dependencies come along.
	Request []string
}

// ReadSpec reads a package list: one name per line, "-NAME" to exclude,
// "!/PATH" to drop a file, "#" starts a comment.
func ReadSpec(file string) (Spec, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return Spec{}, err
	}
	var s Spec
	for _, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, f := range strings.Fields(line) {
			if n, ok := strings.CutPrefix(f, "-"); ok {
				s.Exclude = append(s.Exclude, n)
			} else if p, ok := strings.CutPrefix(f, "!"); ok {
				s.Drop = append(s.Drop, p)
			} else {
				s.Request = append(s.Request, f)
			}
		}
	}
	if len(s.Request) == 0 {
		return Spec{}, fmt.Errorf("%s names no packages", file)
	}
	return s, nil
}

// Apt resolves and fetches packages with the host's apt, which must be
// Debian's for the lock's suite and architecture (bookworm, amd64): the
// lock pins what apt's package lists offer.
type Apt struct {
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
	// OSRelease is the os-release file naming the host's suite; empty,
	// /etc/os-release.
	OSRelease string
	// Run runs a command in dir and returns its standard output; nil runs
	// it for real. Tests replace it.
	Run func(ctx context.Context, dir, name string, args ...string) ([]byte, error)
}

func (a Apt) logf(format string, args ...any) {
	if a.Logf != nil {
		a.Logf(format, args...)
	}
}

func (a Apt) run(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	if a.Run != nil {
		return a.Run(ctx, dir, name, args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// host returns the host's Debian suite and architecture.
func (a Apt) host(ctx context.Context) (suite, arch string, err error) {
	f := a.OSRelease
	if f == "" {
		f = "/etc/os-release"
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return "", "", fmt.Errorf("reading the host's suite: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VERSION_CODENAME="); ok {
			suite = strings.Trim(v, `"'`)
		}
	}
	out, err := a.run(ctx, "", "dpkg", "--print-architecture")
	if err != nil {
		return "", "", err
	}
	return suite, strings.TrimSpace(string(out)), nil
}

var instLine = regexp.MustCompile(`^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) .*\[([a-z0-9]+)\]\)`)

// Resolve computes the closure of spec's packages with apt's own solver,
// as an install on an empty system (no Recommends), leaves out the
// excluded packages and whatever only they needed, and pins each
// remaining package's version and SHA-256 from apt's package lists.
func (a Apt) Resolve(ctx context.Context, spec Spec) (*Lock, error) {
	suite, arch, err := a.host(ctx)
	if err != nil {
		return nil, err
	}
	if suite != "bookworm" || arch != "amd64" {
		return nil, fmt.Errorf("the lock is for Debian bookworm amd64 and apt here is Debian %q %q: resolve on a bookworm amd64 machine", suite, arch)
	}
	args := []string{"-s", "-q", "-o", "Dir::State::status=/dev/null", "-o", "APT::Install-Recommends=false", "-o", "APT::Install-Suggests=false", "install"}
	out, err := a.run(ctx, "", "apt-get", append(args, spec.Request...)...)
	if err != nil {
		return nil, err
	}
	version := map[string]string{}
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := instLine.FindStringSubmatch(sc.Text()); m != nil {
			version[m[1]] = m[2]
			names = append(names, m[1])
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("apt-get install -s chose no packages:\n%s", out)
	}
	slices.Sort(names)
	var show []string
	for _, n := range names {
		show = append(show, n+"="+version[n])
	}
	out, err = a.run(ctx, "", "apt-cache", append([]string{"show"}, show...)...)
	if err != nil {
		return nil, err
	}
	fields := map[string]map[string]string{}
	for _, para := range strings.Split(string(out), "\n\n") {
		f := ParseControl([]byte(para))
		if n := f["Package"]; n != "" && f["Version"] == version[n] && fields[n] == nil {
			fields[n] = f
		}
	}
	for _, n := range names {
		if fields[n] == nil {
			return nil, fmt.Errorf("apt-cache show %s=%s gave nothing", n, version[n])
		}
	}
	keep, err := closure(spec, names, fields)
	if err != nil {
		return nil, err
	}
	l := &Lock{Suite: suite, Arch: arch, Request: spec.Request, Exclude: spec.Exclude, Drop: spec.Drop}
	for _, n := range names {
		if !keep[n] {
			a.logf("left out %s", n)
			continue
		}
		f := fields[n]
		p := LockedPackage{Name: n, Version: f["Version"], Arch: f["Architecture"], SHA256: f["SHA256"], Filename: f["Filename"]}
		if _, err := fmt.Sscan(f["Size"], &p.Size); err != nil || len(p.SHA256) != 64 || p.Filename == "" {
			return nil, fmt.Errorf("apt-cache show %s=%s lacks Size, SHA256 or Filename", n, p.Version)
		}
		l.Packages = append(l.Packages, p)
	}
	a.logf("%d packages (%d left out)", len(l.Packages), len(names)-len(l.Packages))
	return l, nil
}

// closure walks the dependencies (Pre-Depends, Depends) of the requested
// packages among apt's chosen names, never entering an excluded one.
func closure(spec Spec, names []string, fields map[string]map[string]string) (map[string]bool, error) {
	provided := map[string][]string{} // a name → the chosen packages that are or provide it
	for _, n := range names {
		provided[n] = append(provided[n], n)
		for _, v := range splitList(fields[n]["Provides"]) {
			provided[v] = append(provided[v], n)
		}
	}
	for _, x := range spec.Exclude {
		if !slices.Contains(names, x) {
			return nil, fmt.Errorf("packages.txt excludes %s, which the closure does not hold: drop the line", x)
		}
	}
	keep := map[string]bool{}
	var visit func(n string) error
	visit = func(n string) error {
		if keep[n] || slices.Contains(spec.Exclude, n) {
			return nil
		}
		keep[n] = true
		for _, field := range []string{"Pre-Depends", "Depends"} {
			for _, clause := range strings.Split(fields[n][field], ",") {
				if strings.TrimSpace(clause) == "" {
					continue
				}
				var found []string
				for _, alt := range splitList(strings.ReplaceAll(clause, "|", ",")) {
					found = append(found, provided[alt]...)
				}
				if len(found) == 0 {
					return fmt.Errorf("%s needs %q, which apt did not choose", n, strings.TrimSpace(clause))
				}
				for _, d := range found {
					if err := visit(d); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	for _, r := range spec.Request {
		if !slices.Contains(names, r) {
			return nil, fmt.Errorf("apt did not choose the requested %s", r)
		}
		if err := visit(r); err != nil {
			return nil, err
		}
	}
	return keep, nil
}

// splitList returns the package names of a comma-separated relation
// field, without versions, architecture qualifiers or restrictions.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		f := strings.Fields(strings.TrimSpace(item))
		if len(f) == 0 {
			continue
		}
		n, _, _ := strings.Cut(f[0], ":")
		n, _, _ = strings.Cut(n, "(")
		out = append(out, n)
	}
	return out
}

// Fetch puts every locked package's .deb in dir (as apt names it,
// LockedPackage.DebFile), downloading with `apt-get download
// NAME=VERSION` the ones not already there with the right SHA-256, and
// verifies each download against the lock; a file whose bytes differ is
// removed and reported as a *MismatchError.
func (a Apt) Fetch(ctx context.Context, l *Lock, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var want []LockedPackage
	for _, p := range l.Packages {
		if h, err := fileSHA256(filepath.Join(dir, p.DebFile())); err == nil && h == p.SHA256 {
			continue
		}
		want = append(want, p)
	}
	if len(want) == 0 {
		a.logf("all %d packages are in %s", len(l.Packages), dir)
		return nil
	}
	a.logf("downloading %d packages into %s", len(want), dir)
	var args []string
	for _, p := range want {
		args = append(args, p.Name+"="+p.Version)
	}
	if _, err := a.run(ctx, dir, "apt-get", append([]string{"download", "-q"}, args...)...); err != nil {
		return fmt.Errorf("%w\n(apt can only fetch the versions its package lists name: run `apt-get update`; when the archive has replaced a locked version, update the lock as deploy/image/README.md says)", err)
	}
	var errs []error
	for _, p := range want {
		f := filepath.Join(dir, p.DebFile())
		h, err := fileSHA256(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("apt-get download %s=%s: %w", p.Name, p.Version, err))
			continue
		}
		if h != p.SHA256 {
			os.Remove(f)
			errs = append(errs, &MismatchError{File: f, Package: p.Name + " " + p.Version, Got: h, Want: p.SHA256})
		}
	}
	return errors.Join(errs...)
}
