// Package nix checks the repository's flake.nix offline, the way CI can:
// nixpkgs cannot be fetched here (no GitHub, no cache.nixos.org), so the
// flake is parsed, then evaluated with its two nixpkgs inputs replaced by
// the stubs in stub-nixpkgs and stub-nixpkgs-2505 (`nix flake check
// --no-build` in a throwaway chroot store, never /nix), and vendor-hash
// is recomputed from go.sum. `nix develop` and building the checks need
// the real nixpkgs and are not run here (README.md, "Nix").
//
// Nix comes from Debian's nix-bin (scripts/test installs it); without it
// these tests skip, and fail under CI.
package nix

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite vendor-hash from go.sum")

// The systems the flake declares and what each must provide.
var (
	systems = []string{"aarch64-linux", "x86_64-linux"}
	// The dev shell's packages, as "<release>:<nixpkgs attribute>": the
	// stubs name each package after the attribute and release it comes from.
	wantShell = []string{
		"nixos-26.05:go_1_26",
		"nixos-25.05:bazel_5",
		"nixos-26.05:ffmpeg",
		"nixos-26.05:espeak-ng",
		"nixos-26.05:postgresql",
		"nixos-25.05:cudaPackages_11_8.cuda_nvcc",
		"nixos-26.05:gcc",
		"nixos-26.05:git",
		"nixos-25.05:cudaPackages_11_8.cuda_cudart",
	}
	wantChecks   = []string{"gofmt", "musetalk", "unit", "vet"}
	wantPackages = []string{"default", "musetalk"}
)

// root is the repository root: this package's parent, holding flake.nix.
func root(t *testing.T) string {
	t.Helper()
	r, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r, "flake.nix")); err != nil {
		// Under Bazel the test runs in a sandbox without the sources.
		t.Skipf("no flake.nix beside this package (%v): not a source checkout", err)
	}
	return r
}

// needNix skips the test (fails it under CI) when Nix is not installed.
func needNix(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"nix", "nix-instantiate"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, "%s is not installed (Debian: apt-get install nix-bin; scripts/test installs it)", tool)
		}
	}
}

// nixEnv is the environment for every nix command: flakes on, no build
// users, no daemon, no binary cache (nothing may be fetched), and no
// configuration or cache from the machine or the user.
func nixEnv(tmp string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "NIX_")
	})
	return append(env,
		"NIX_CONFIG=experimental-features = nix-command flakes\nbuild-users-group =\nsubstituters =\n",
		"NIX_CONF_DIR="+filepath.Join(tmp, "etc"),
		"XDG_CONFIG_HOME="+filepath.Join(tmp, "config"),
		"XDG_CACHE_HOME="+filepath.Join(tmp, "cache"),
	)
}

// run runs a command in dir with env and returns its stdout; it fails the
// test with stderr unless wantErr, in which case it returns stderr.
func run(t *testing.T, dir string, env []string, wantErr bool, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	switch {
	case wantErr && err == nil:
		t.Fatalf("%s %s succeeded, want an error; stdout:\n%s", name, strings.Join(args, " "), stdout.String())
	case wantErr:
		return stderr.String()
	case err != nil:
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// scratch is a temporary directory that is also writable when removed:
// a Nix store makes its files read-only.
func scratch(t *testing.T) string {
	dir := t.TempDir()
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	return dir
}

// TestParse: flake.nix and the stubs are valid Nix (no store needed).
func TestParse(t *testing.T) {
	r := root(t)
	needNix(t)
	files := []string{filepath.Join(r, "flake.nix")}
	stubs, _ := filepath.Glob(filepath.Join(r, "nix", "stub-nixpkgs*", "*.nix"))
	files = append(files, stubs...)
	run(t, r, nixEnv(scratch(t)), false, "nix-instantiate", append([]string{"--parse"}, files...)...)
}

// copyCheckout copies the files git knows of (tracked, and untracked but
// not ignored: the flake as a fresh clone would have it once committed)
// into dst. Without git it copies what the flake reads.
func copyCheckout(t *testing.T, src, dst string) {
	t.Helper()
	var files []string
	out, err := exec.Command("git", "-C", src, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err == nil {
		for _, f := range strings.Split(string(out), "\x00") {
			if f != "" {
				files = append(files, f)
			}
		}
	} else {
		files = []string{"flake.nix", "flake.lock", "go.mod", "go.sum", "nix/vendor-hash"}
		for _, dir := range []string{"nix/stub-nixpkgs", "nix/stub-nixpkgs-2505"} {
			stubs, _ := filepath.Glob(filepath.Join(src, dir, "*.nix"))
			for _, s := range stubs {
				rel, _ := filepath.Rel(src, s)
				files = append(files, rel)
			}
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(src, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted but not yet committed, or flake.lock not there
		}
		if err != nil {
			t.Fatal(err)
		}
		info, err := os.Stat(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFlakeCheck evaluates the flake against the stub nixpkgs in a chroot
// store under a temporary directory: every output of every system has the
// right type (nix flake check --no-build writes each derivation's .drv),
// the dev shell holds the toolchain, each package from the release the
// flake means to take it from, and the shell hook and check scripts are
// valid shell.
func TestFlakeCheck(t *testing.T) {
	r := root(t)
	needNix(t)
	tmp := scratch(t)
	src := filepath.Join(tmp, "src")
	copyCheckout(t, r, src)
	env := nixEnv(tmp)
	flake := "path:" + src
	nix := func(t *testing.T, wantErr bool, args ...string) string {
		t.Helper()
		return run(t, src, env, wantErr, "nix", append([]string{"--store", filepath.Join(tmp, "store")}, args...)...)
	}
	stub := func(input, dir string) []string {
		return []string{"--override-input", input, "path:" + filepath.Join(src, "nix", dir)}
	}
	// The copy's flake.lock points both inputs at the stubs (the
	// repository's own flake.lock, if any, is not touched).
	nix(t, false, append(append([]string{"flake", "lock", flake},
		stub("nixpkgs", "stub-nixpkgs")...), stub("nixpkgs-2505", "stub-nixpkgs-2505")...)...)

	t.Run("check", func(t *testing.T) {
		nix(t, false, "flake", "check", "--no-build", flake)
	})

	// One evaluation gathers what the subtests below compare.
	var got struct {
		Checks, Packages, DevShells map[string][]string
		Formatter                   map[string]string
		Shell                       map[string][]string
		Scripts                     map[string]map[string]string
	}
	out := nix(t, false, "eval", "--json", "--impure", "--expr", `
		let
		  f = builtins.getFlake "`+flake+`";
		  names = builtins.mapAttrs (s: builtins.attrNames);
		in {
		  checks = names f.checks;
		  packages = names f.packages;
		  devShells = names f.devShells;
		  formatter = builtins.mapAttrs (s: p: p.stubAttr) f.formatter;
		  shell = builtins.mapAttrs (s: v: map (p: p.stubAttr)
		    (v.default.nativeBuildInputs ++ v.default.buildInputs)) f.devShells;
		  scripts = builtins.mapAttrs (s: c: {
		    shellHook = f.devShells.${s}.default.shellHook;
		    gofmt = c.gofmt.drvAttrs.buildCommand;
		    vet = c.vet.drvAttrs.buildPhase;
		    unit = c.unit.drvAttrs.buildPhase;
		  }) f.checks;
		}`)
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("nix eval: %v\n%s", err, out)
	}

	t.Run("outputs", func(t *testing.T) {
		if n := len(got.Checks); n != len(systems) {
			t.Errorf("checks for %d systems, want %v", n, systems)
		}
		for _, s := range systems {
			if g := got.Checks[s]; !slices.Equal(g, wantChecks) {
				t.Errorf("checks.%s: %v, want %v", s, g, wantChecks)
			}
			if g := got.Packages[s]; !slices.Equal(g, wantPackages) {
				t.Errorf("packages.%s: %v, want %v", s, g, wantPackages)
			}
			if g := got.DevShells[s]; !slices.Equal(g, []string{"default"}) {
				t.Errorf("devShells.%s: %v, want [default]", s, g)
			}
			if g := got.Formatter[s]; g != "nixos-26.05:alejandra" {
				t.Errorf("formatter.%s is %q, want nixos-26.05:alejandra", s, g)
			}
		}
	})

	t.Run("shell", func(t *testing.T) {
		for _, s := range systems {
			if g := got.Shell[s]; !slices.Equal(g, wantShell) {
				t.Errorf("devShells.%s.default packages:\n got %v\nwant %v", s, g, wantShell)
			}
		}
	})

	t.Run("scripts", func(t *testing.T) {
		for _, s := range systems {
			if len(got.Scripts[s]) != 4 {
				t.Errorf("%s: scripts %v", s, got.Scripts[s])
			}
			for name, script := range got.Scripts[s] {
				if strings.TrimSpace(script) == "" {
					t.Errorf("%s %s: empty script", s, name)
					continue
				}
				cmd := exec.Command("bash", "-n")
				cmd.Stdin = strings.NewReader(script)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("%s %s is not valid shell: %v\n%s\n%s", s, name, err, out, script)
				}
			}
		}
	})

	// The stubs have teeth: taking bazel_5 and CUDA 11.8 from nixos-26.05,
	// which no longer has them, fails evaluation with nixpkgs' message.
	t.Run("stale-release", func(t *testing.T) {
		msg := nix(t, true, append([]string{"flake", "check", "--no-build", "--no-write-lock-file", flake},
			stub("nixpkgs-2505", "stub-nixpkgs")...)...)
		if !strings.Contains(msg, "stub nixpkgs (nixos-26.05)") || !strings.Contains(msg, "has been removed") {
			t.Errorf("flake check with nixos-26.05 for both inputs: want a removal, got:\n%s", msg)
		}
	})
}

// TestVendorHash: vendor-hash, the flake's buildGoModule vendorHash, is
// the NAR hash of what `go mod vendor` makes of go.mod and go.sum, which
// is what buildGoModule's go-modules derivation stores (proxyVendor off).
// After a dependency changes, `go test ./nix -run VendorHash -update`
// rewrites it. Computed here from the Go module proxy, not yet confirmed
// by a real nixpkgs build: should the first one report a hash mismatch,
// its "got:" value is the truth and this recipe needs mending.
func TestVendorHash(t *testing.T) {
	r := root(t)
	needNix(t)
	tmp := scratch(t)
	vendor := filepath.Join(tmp, "vendor")
	cmd := exec.Command("go", "mod", "vendor", "-o", vendor)
	cmd.Dir = r
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor: %v\n%s", err, out)
	}
	got := strings.TrimSpace(run(t, r, nixEnv(tmp), false, "nix", "hash", "path", "--type", "sha256", vendor))
	file := filepath.Join(r, "nix", "vendor-hash")
	if *update {
		if err := os.WriteFile(file, []byte(got+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(string(b)); got != want {
		t.Errorf("nix/vendor-hash is %s, go.sum gives %s: run `go test ./nix -run VendorHash -update` and commit nix/vendor-hash", want, got)
	}
}
