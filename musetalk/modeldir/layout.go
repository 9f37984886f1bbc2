package modeldir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// The MuseTalk versions a directory can hold a UNet for, spelled as
// protocol.JobParams spells them.
const (
	V1  = "v1"
	V15 = "v15"
)

// Versions lists the known versions, newest first.
func Versions() []string { return []string{V15, V1} }

// CheckVersion returns an error unless v is a known version.
func CheckVersion(v string) error {
	if !slices.Contains(Versions(), v) {
		return fmt.Errorf("unknown MuseTalk version %q (want %s)", v, strings.Join(Versions(), " or "))
	}
	return nil
}

// File is one file of the layout.
type File struct {
	// Path is the file's place in the directory, slash-separated, e.g.
	// "musetalkV15/unet.pth".
	Path string
	// Kind is the network the file belongs to.
	Kind weights.Kind
	// Weights marks a weight file, which a .safetensors file of the same
	// base name may replace (see [Dir.Resolve]); the others are configs.
	Weights bool
	// Repo and RepoPath locate the file on a Hugging Face hub
	// ("TMElyralab/MuseTalk", "musetalkV15/unet.pth"); both are empty for
	// files published elsewhere.
	Repo, RepoPath string
	// URL is the download address of a file published outside the hub.
	URL string
	// SHA256 is the file's pinned hex digest (or a prefix of it), or ""
	// when none is pinned; [Fetch] then trusts the digest the hub
	// declares.
	SHA256 string
	// Size is the file's pinned size in bytes, or 0 when unknown.
	Size int64
}

// SafetensorsPath returns where the safetensors replacement of a weight
// file lives ("musetalkV15/unet.safetensors"), or "" for a config.
func (f File) SafetensorsPath() string {
	if !f.Weights {
		return ""
	}
	return strings.TrimSuffix(f.Path, path.Ext(f.Path)) + ".safetensors"
}

// The download sources.
const (
	repoMuseTalk = "TMElyralab/MuseTalk"
	repoVAE      = "stabilityai/sd-vae-ft-mse"
	repoWhisper  = "openai/whisper-tiny"
	repoBiSeNet  = "ManyOtherFunctions/face-parse-bisent"
	// repoDWPose is where MuseTalk's download_weights.sh gets DWPose:
	// huggingface-cli download yzd-v/DWPose dw-ll_ucoco_384.pth, through
	// HF_ENDPOINT like the other hub files.
	repoDWPose = "yzd-v/DWPose"
	s3fdName   = "s3fd-619a316812.pth"
	// s3fdSHA256 and s3fdSize are the published checkpoint's digest and
	// size, as several independent projects record them; the digest starts
	// with the 619a316812 of the file's name (PyTorch hub's convention).
	s3fdSHA256 = "619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543"
	s3fdSize   = 89843225
)

// DefaultS3FDURL is the official address of S3FD's checkpoint, which is
// published outside the Hugging Face hub ([FetchOptions.S3FDURL] replaces
// it).
const DefaultS3FDURL = "https://www.adrianbulat.com/downloads/python-fan/" + s3fdName

// Files returns the files the given versions need, shared files first, in a
// stable order and without duplicates. No versions means [V15].
func Files(versions ...string) ([]File, error) {
	if len(versions) == 0 {
		versions = []string{V15}
	}
	files := []File{
		{Path: "sd-vae/config.json", Kind: weights.KindVAE, Repo: repoVAE, RepoPath: "config.json"},
		{Path: "sd-vae/diffusion_pytorch_model.bin", Kind: weights.KindVAE, Weights: true, Repo: repoVAE, RepoPath: "diffusion_pytorch_model.bin"},
		{Path: "whisper/config.json", Kind: weights.KindWhisper, Repo: repoWhisper, RepoPath: "config.json"},
		{Path: "whisper/preprocessor_config.json", Kind: weights.KindWhisper, Repo: repoWhisper, RepoPath: "preprocessor_config.json"},
		{Path: "whisper/pytorch_model.bin", Kind: weights.KindWhisper, Weights: true, Repo: repoWhisper, RepoPath: "pytorch_model.bin"},
		{Path: "s3fd/" + s3fdName, Kind: weights.KindS3FD, Weights: true, URL: DefaultS3FDURL, SHA256: s3fdSHA256, Size: s3fdSize},
		{Path: "face-parse-bisent/79999_iter.pth", Kind: weights.KindBiSeNet, Weights: true, Repo: repoBiSeNet, RepoPath: "79999_iter.pth"},
		{Path: "dwpose/dw-ll_ucoco_384.pth", Kind: weights.KindDWPose, Weights: true, Repo: repoDWPose, RepoPath: "dw-ll_ucoco_384.pth"},
	}
	seen := map[string]bool{}
	for _, v := range versions {
		if err := CheckVersion(v); err != nil {
			return nil, err
		}
		if seen[v] {
			continue
		}
		seen[v] = true
		config, unet := unetFiles(v)
		files = append(files,
			File{Path: config, Kind: weights.KindUNet, Repo: repoMuseTalk, RepoPath: config},
			File{Path: unet, Kind: weights.KindUNet, Weights: true, Repo: repoMuseTalk, RepoPath: unet},
		)
	}
	return files, nil
}

// unetFiles returns the config and weight paths of a version's UNet.
func unetFiles(version string) (config, unet string) {
	if version == V1 {
		return "musetalk/musetalk.json", "musetalk/pytorch_model.bin"
	}
	return "musetalkV15/musetalk.json", "musetalkV15/unet.pth"
}

// fileOf returns the file of kind (and, for the UNet, version) of the given
// role: a weight file or the first config.
func fileOf(kind weights.Kind, version string, weightFile bool) (File, error) {
	files, err := Files(version)
	if err != nil {
		return File{}, err
	}
	for _, f := range files {
		if f.Kind == kind && f.Weights == weightFile {
			return f, nil
		}
	}
	what := "config"
	if weightFile {
		what = "weights"
	}
	return File{}, fmt.Errorf("the weight directory has no %s file for %s", what, kind)
}

// Default returns the default weight directory: $MUSETALK_WEIGHTS, else
// $XDG_CACHE_HOME/musetalk/weights, else ~/.cache/musetalk/weights (the
// system's temporary directory stands in for a missing home).
func Default() string { return defaultDir(os.Getenv, os.UserHomeDir) }

func defaultDir(getenv func(string) string, home func() (string, error)) string {
	if d := getenv("MUSETALK_WEIGHTS"); d != "" {
		return d
	}
	if d := getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "musetalk", "weights")
	}
	if h, err := home(); err == nil && h != "" {
		return filepath.Join(h, ".cache", "musetalk", "weights")
	}
	return filepath.Join(os.TempDir(), "musetalk", "weights")
}

// Dir is a weight directory. Its methods only read it; they are safe for
// concurrent use.
type Dir string

// Path returns where f lives in d under its official name.
func (d Dir) Path(f File) string { return filepath.Join(string(d), filepath.FromSlash(f.Path)) }

// Resolve returns the file that serves f: for a weight file its
// safetensors replacement if that exists, else the official file. A file
// that is in neither form is an error wrapping [fs.ErrNotExist]; a
// directory in its place is an error too.
func (d Dir) Resolve(f File) (string, error) {
	var candidates []string
	if st := f.SafetensorsPath(); st != "" {
		candidates = append(candidates, filepath.Join(string(d), filepath.FromSlash(st)))
	}
	candidates = append(candidates, d.Path(f))
	for _, p := range candidates {
		info, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return "", fmt.Errorf("looking for %s: %w", f.Path, err)
		case !info.Mode().IsRegular():
			return "", fmt.Errorf("%s is not a regular file", p)
		}
		return p, nil
	}
	return "", fmt.Errorf("%s: %w", d.Path(f), fs.ErrNotExist)
}
