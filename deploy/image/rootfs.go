package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"path"
	"slices"
	"strings"
)

// The image's user and the places the worker uses.
const (
	// UID and GID are the worker's user, musetalk (not root).
	UID, GID = 1000, 1000
	// UserName is the user's name in /etc/passwd.
	UserName = "musetalk"
	// Home is the user's home and the image's working directory; the
	// avatar cache lives under it (~/.cache/musetalk/avatars).
	Home = "/home/musetalk"
	// WeightsDir is where MUSETALK_WEIGHTS points: empty in the base
	// image (owned by the user, so a volume mounted there is writable),
	// filled by WithWeights.
	WeightsDir = "/opt/musetalk/weights"
	// BinDir holds musetalk and musetalk-cuda.
	BinDir = "/usr/local/bin"
)

// RootFS assembles the root file system from the packages' data
// archives, taken in the order given, then adds what their maintainer
// scripts would have made and what the image needs: /etc/passwd and
// /etc/group with the musetalk user, /etc/nsswitch.conf, the CA bundle
// /etc/ssl/certs/ca-certificates.crt (update-ca-certificates), UTC as
// /etc/localtime, /tmp (1777), the user's home, the weights directory,
// one /var/lib/dpkg/status.d/<package> per package (for image scanners),
// and the library links that update-alternatives would make (see
// linkAlternatives). The files named in drop ("/usr/lib/…") are left
// out. It fails when two packages ship different files at one path, or
// when a file to drop is not there.
func RootFS(debs []*Deb, drop []string) (*Tree, error) {
	t := NewTree()
	for _, d := range debs {
		for _, f := range d.Files {
			if err := t.Add(f, d.Package); err != nil {
				return nil, err
			}
		}
	}
	for _, p := range drop {
		if !t.Remove(strings.TrimPrefix(p, "/")) {
			return nil, fmt.Errorf("the lock drops %s, which no package ships", p)
		}
	}
	const me = "image"
	reg := func(p string, mode int64, data string) {
		t.Put(&File{Path: p, Type: tar.TypeReg, Mode: mode, Data: []byte(data)}, me)
	}
	dir := func(p string, mode int64, uid, gid int) {
		t.Put(&File{Path: p, Type: tar.TypeDir, Mode: mode, UID: uid, GID: gid}, me)
	}
	reg("etc/passwd", 0o644, fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"+
		"%s:x:%d:%d:MuseTalk worker:%s:/usr/sbin/nologin\n", UserName, UID, GID, Home))
	reg("etc/group", 0o644, fmt.Sprintf("root:x:0:\nnogroup:x:65534:\n%s:x:%d:\n", UserName, GID))
	if t.Get("etc/nsswitch.conf") == nil {
		reg("etc/nsswitch.conf", 0o644, "passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n")
	}
	dir("tmp", 0o1777, 0, 0)
	dir("root", 0o700, 0, 0)
	dir(strings.TrimPrefix(Home, "/"), 0o755, UID, GID)
	dir(strings.TrimPrefix(WeightsDir, "/"), 0o755, UID, GID)
	if t.Get("usr/share/zoneinfo/Etc/UTC") != nil {
		t.Put(&File{Path: "etc/localtime", Type: tar.TypeSymlink, Link: "/usr/share/zoneinfo/Etc/UTC", Mode: 0o777}, me)
		reg("etc/timezone", 0o644, "Etc/UTC\n")
	}
	if bundle := caBundle(t); bundle != nil {
		reg("etc/ssl/certs/ca-certificates.crt", 0o644, string(bundle))
	}
	for _, d := range debs {
		reg("var/lib/dpkg/status.d/"+d.Package, 0o644, strings.TrimSpace(string(d.Control))+"\n")
	}
	if err := linkAlternatives(t); err != nil {
		return nil, err
	}
	return t, nil
}

// caBundle concatenates the certificates the ca-certificates package
// ships (/usr/share/ca-certificates/**.crt), sorted by path as
// update-ca-certificates orders them; nil when there are none.
func caBundle(t *Tree) []byte {
	var b bytes.Buffer
	for _, p := range t.Paths() {
		f := t.Get(p)
		if !strings.HasPrefix(p, "usr/share/ca-certificates/") || path.Ext(p) != ".crt" || f.Type != tar.TypeReg {
			continue
		}
		b.Write(bytes.TrimSpace(f.Data))
		b.WriteByte('\n')
	}
	if b.Len() == 0 {
		return nil
	}
	return b.Bytes()
}

// linkAlternatives gives every shared library that a program or library
// of t needs but that the loader would not find (Debian puts some, such
// as libblas.so.3, in a subdirectory and links them into place with
// update-alternatives from a maintainer script) a symbolic link in
// /usr/lib/x86_64-linux-gnu to the file of that name under the library
// directories (the first by path when there are several).
func linkAlternatives(t *Tree) error {
	missing, err := missingLibraries(t, nil)
	if err != nil {
		return err
	}
	var names []string
	for n := range missing {
		names = append(names, n)
	}
	slices.Sort(names)
	paths := t.Paths()
	for _, n := range names {
		for _, p := range paths {
			if path.Base(p) != n || !(strings.HasPrefix(p, "usr/lib/x86_64-linux-gnu/") || strings.HasPrefix(p, "lib/x86_64-linux-gnu/")) {
				continue
			}
			if f, _ := t.Resolve(p); f == nil || f.Type != tar.TypeReg {
				continue
			}
			t.Put(&File{Path: "usr/lib/x86_64-linux-gnu/" + n, Type: tar.TypeSymlink, Link: "/" + p, Mode: 0o777}, "image")
			break
		}
	}
	return nil
}
