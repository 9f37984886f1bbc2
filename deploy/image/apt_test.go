package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeApt answers apt-get -s, apt-cache show, apt-get download and dpkg
// like a bookworm machine whose lists hold the given packages.
type fakeApt struct {
	calls    []string
	debs     map[string][]byte // name → .deb bytes apt-get download writes
	inst     string            // apt-get -s output
	osrel    string
	packages string // apt-cache show output
}

func (f *fakeApt) apt(t *testing.T) Apt {
	osr := filepath.Join(t.TempDir(), "os-release")
	if err := os.WriteFile(osr, []byte(f.osrel), 0o644); err != nil {
		t.Fatal(err)
	}
	return Apt{OSRelease: osr, Run: func(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
		f.calls = append(f.calls, name+" "+strings.Join(args, " "))
		switch {
		case name == "dpkg":
			return []byte("amd64\n"), nil
		case name == "apt-get" && args[0] == "-s":
			return []byte(f.inst), nil
		case name == "apt-cache":
			return []byte(f.packages), nil
		case name == "apt-get" && args[0] == "download":
			for _, a := range args[2:] {
				n, v, _ := strings.Cut(a, "=")
				p := LockedPackage{Name: n, Version: v, Arch: "amd64"}
				if err := os.WriteFile(filepath.Join(dir, p.DebFile()), f.debs[n], 0o644); err != nil {
					return nil, err
				}
			}
			return nil, nil
		}
		return nil, fmt.Errorf("unexpected command %s %q", name, args)
	}}
}

const aptInst = `NOTE: This is only a simulation!
Reading package lists...
Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []
Inst debconf (1.5.82 Debian:12.15/oldstable [all])
Inst libssl3 (3.0.22-1~deb12u2 Debian-Security:12/oldstable-security [amd64])
Inst openssl (3.0.22-1~deb12u2 Debian-Security:12/oldstable-security [amd64])
Inst ca-certificates (20250419~deb12u2 Debian-Security:12/oldstable-security [all])
Inst ffmpeg (7:5.1.9-0+deb12u1 Debian:12.15/oldstable [amd64])
Conf libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])
`

func aptPara(name, version, arch, deps, provides string) string {
	h := sha256.Sum256([]byte(name))
	s := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: %s\n", name, version, arch)
	if deps != "" {
		s += "Depends: " + deps + "\n"
	}
	if provides != "" {
		s += "Provides: " + provides + "\n"
	}
	return s + fmt.Sprintf("Description: %s\n more text\nFilename: pool/main/%s_%s.deb\nSize: 100\nSHA256: %s\n", name, name, version, hex.EncodeToString(h[:]))
}

func newFakeApt() *fakeApt {
	return &fakeApt{
		osrel: "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_CODENAME=bookworm\n",
		inst:  aptInst,
		packages: strings.Join([]string{
			aptPara("gcc-12-base", "12.2.0-14+deb12u1", "amd64", "", ""),
			aptPara("libc6", "2.36-9+deb12u14", "amd64", "libgcc-s1 | gcc-12-base", ""),
			aptPara("libc6", "2.36-9+deb12u14", "amd64", "libgcc-s1 | gcc-12-base", ""), // a second source
			aptPara("debconf", "1.5.82", "all", "perl-base (>= 5.20.1-3~)", "debconf-2.0"),
			aptPara("libssl3", "3.0.22-1~deb12u2", "amd64", "libc6 (>= 2.34)", ""),
			aptPara("openssl", "3.0.22-1~deb12u2", "amd64", "libc6 (>= 2.34), libssl3 (>= 3.0.9)", ""),
			aptPara("ca-certificates", "20250419~deb12u2", "all", "openssl (>= 1.1.1), debconf (>= 0.5) | debconf-2.0", ""),
			aptPara("ffmpeg", "7:5.1.9-0+deb12u1", "amd64", "libc6 (>= 2.34), libssl3:amd64 (>= 3)", ""),
		}, "\n"),
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	f := newFakeApt()
	// debconf's perl-base is Essential: apt leaves it out of an install and
	// the walk must not ask for it, since debconf is excluded.
	spec := Spec{Request: []string{"ca-certificates", "ffmpeg"}, Exclude: []string{"debconf", "openssl"}, Drop: []string{"/x"}}
	lock, err := f.apt(t).Resolve(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	// libssl3 stays: ffmpeg needs it too; debconf and openssl go.
	if got, want := lock.Names(), []string{"ca-certificates", "ffmpeg", "gcc-12-base", "libc6", "libssl3"}; !slices.Equal(got, want) {
		t.Errorf("locked %q, want %q", got, want)
	}
	for _, p := range lock.Packages {
		h := sha256.Sum256([]byte(p.Name))
		if p.SHA256 != hex.EncodeToString(h[:]) || p.Size != 100 || !strings.HasPrefix(p.Filename, "pool/main/"+p.Name) {
			t.Errorf("%+v", p)
		}
		if p.Name == "ffmpeg" && (p.Version != "7:5.1.9-0+deb12u1" || p.Arch != "amd64") {
			t.Errorf("ffmpeg pinned as %+v", p)
		}
	}
	if !slices.Equal(lock.Drop, spec.Drop) || lock.Suite != "bookworm" || lock.Arch != "amd64" {
		t.Errorf("lock %+v", lock)
	}
	if !strings.Contains(f.calls[1], "Dir::State::status=/dev/null") || !strings.Contains(f.calls[1], "install ca-certificates ffmpeg") {
		t.Errorf("apt-get call %q", f.calls[1])
	}

	// An exclusion the closure does not hold is stale.
	spec.Exclude = []string{"mawk"}
	if _, err := f.apt(t).Resolve(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "mawk") {
		t.Errorf("stale exclusion: %v", err)
	}
	// Another suite is refused.
	f.osrel = "VERSION_CODENAME=trixie\n"
	if _, err := f.apt(t).Resolve(context.Background(), Spec{Request: []string{"ffmpeg"}}); err == nil || !strings.Contains(err.Error(), "trixie") {
		t.Errorf("on trixie: %v", err)
	}
}

func TestFetch(t *testing.T) {
	t.Parallel()
	good, bad := []byte("good deb"), []byte("bad deb")
	hash := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	lock := &Lock{Packages: []LockedPackage{
		{Name: "ffmpeg", Version: "7:5.1.9", Arch: "amd64", SHA256: hash(good)},
		{Name: "libc6", Version: "2.36", Arch: "amd64", SHA256: hash(good)},
	}}
	f := newFakeApt()
	f.debs = map[string][]byte{"ffmpeg": good, "libc6": bad}
	dir := t.TempDir()
	err := f.apt(t).Fetch(context.Background(), lock, dir)
	var mm *MismatchError
	if !errors.As(err, &mm) || mm.Package != "libc6 2.36" {
		t.Fatalf("err %v, want a mismatch for libc6", err)
	}
	if _, err := os.Stat(filepath.Join(dir, lock.Packages[1].DebFile())); !os.IsNotExist(err) {
		t.Error("the mismatching download was kept")
	}
	// The next fetch downloads only what is missing, and then nothing.
	f.debs["libc6"] = good
	f.calls = nil
	if err := f.apt(t).Fetch(context.Background(), lock, dir); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 1 || !strings.HasSuffix(f.calls[0], "download -q libc6=2.36") {
		t.Errorf("calls %q", f.calls)
	}
	f.calls = nil
	if err := f.apt(t).Fetch(context.Background(), lock, dir); err != nil || len(f.calls) != 0 {
		t.Errorf("a complete directory: err %v, calls %q", err, f.calls)
	}
	files, _ := DebsIn(dir)
	if m, err := lock.Match(files); err != nil || len(m) != 2 {
		t.Errorf("Match: %v %v", m, err)
	}
}

func TestReadSpec(t *testing.T) {
	t.Parallel()
	f := filepath.Join(t.TempDir(), "packages.txt")
	os.WriteFile(f, []byte("# comment\nffmpeg   # media\nlibc6\n-debconf # scripts only\n!/usr/lib/x.so\n"), 0o644)
	s, err := ReadSpec(f)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Request, []string{"ffmpeg", "libc6"}) || !slices.Equal(s.Exclude, []string{"debconf"}) || !slices.Equal(s.Drop, []string{"/usr/lib/x.so"}) {
		t.Errorf("%+v", s)
	}
}
