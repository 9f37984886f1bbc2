// Package avatar prepares MuseTalk avatars and keeps them in a
// content-addressed disk cache.
//
// Preparation (MuseTalk's realtime "prepare material" step, design notes
// §2) decodes every frame of a still image or a video, finds the face box
// in each, crops and resizes the face to 256×256 (OpenCV Lanczos-4),
// encodes the masked and the reference crop with the VAE into the
// 8-channel UNet input, and computes the blending mask from a face-parsing
// map. The result is one [Frame] per source frame plus the raw frame
// pixels, written into a directory ([Prepare], [Open]) that a [Cache]
// manages by key ([Key]).
//
// Where this package differs from MuseTalk:
//   - There are no landmarks. The face box is the detector's box (the
//     fallback MuseTalk itself uses when its landmark box is degenerate),
//     or [Options.FaceBox]. bbox_shift is applied to that box as it acts on
//     MuseTalk's landmark box: the bottom stays, the upper edge moves by
//     2·shift, so the box's centre line (where the blended region starts)
//     moves by shift.
//   - Frames without a face keep their place and pass through unchanged
//     ([Frame.HasFace] false); MuseTalk skips them and misaligns the rest.
//   - Latents are the VAE posterior mean (MuseTalk samples it unseeded).
//   - Masks are the realtime path's (blur ratio 0.1, crop expand 1.5).
package avatar

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"

	"github.com/avatargen/musetalk/media"
)

// Versions of MuseTalk that [Options.Version] accepts.
const (
	VersionV15 = "v15"
	VersionV1  = "v1"
)

// Face detectors that [Options.FaceDetector] accepts.
const (
	// DetectorDWPose is MuseTalk's own box: built from DWPose's 68 face
	// landmarks by get_landmark_and_bbox's rules, the S3FD box where they
	// give none, no face where S3FD finds none.
	DetectorDWPose = "dwpose"
	// DetectorS3FD is the S3FD box alone.
	DetectorS3FD = "s3fd"
)

// Defaults applied to zero [Options] fields.
const (
	DefaultExtraMargin = 10
	DefaultCheekWidth  = 90
	// StillFPS is the frame rate given to a still image when Options.FPS
	// is nil (MuseTalk's --fps default).
	StillFPS = 25
)

// CropSize is the side of the square face crop the VAE encodes.
const CropSize = 256

// ParseSize is the side of the square class map the face parser returns.
const ParseSize = 512

// Mask geometry of MuseTalk's realtime path: the blend square is the face
// box's longer side times cropExpand; the mask keeps rows below
// maskUpperRatio of the square and is blurred with a kernel of about
// maskBlurRatio of its side.
const (
	cropExpand     = 1.5
	maskUpperRatio = 0.5
	maskBlurRatio  = 0.1
)

// ErrInvalidOptions is wrapped by every error caused by bad [Options]
// (an unknown version, a negative margin, a face box that is empty or
// lies outside the frame). It is a property of the request, not of the
// machine: retrying cannot help.
var ErrInvalidOptions = errors.New("invalid avatar options")

// Options are the preparation parameters that change the prepared result;
// all of them are part of the cache key. Zero fields take MuseTalk's
// defaults (see [Options.Normalize]) except ParsingMode, whose zero value
// is media.ParsingRaw: start from [DefaultOptions] to get v1.5's jaw mode.
type Options struct {
	// Version is "v15" (default when empty) or "v1".
	Version string
	// BBoxShift (v1 only; v1.5 forces 0 as MuseTalk does) moves the face
	// box's centre line by BBoxShift pixels: positive opens the mouth
	// more. With DetectorDWPose it moves landmark 29 as MuseTalk does
	// (the upper edge follows at twice the shift; a shift past the chin
	// makes the box fall back to S3FD's, which MuseTalk never shifts).
	// Otherwise the upper edge of the detected or given box moves by
	// 2·BBoxShift, and a shift that would empty the box is dropped for
	// that frame.
	BBoxShift int
	// ExtraMargin (v1.5 only) extends the box downwards, clamped to the
	// frame; 0 means DefaultExtraMargin (10, as MuseTalk). Negative is
	// invalid.
	ExtraMargin int
	// ParsingMode is the blend mask's face-parsing mode for v1.5
	// (media.ParsingJaw is MuseTalk's default; media.ParsingRaw and
	// media.ParsingNeck are accepted); v1 always uses media.ParsingRaw.
	ParsingMode media.ParsingMode
	// LeftCheek and RightCheek are the jaw mode's cheek widths at the
	// 512×512 parse resolution; 0 means DefaultCheekWidth (90). They
	// must lie in 0..256.
	LeftCheek, RightCheek int
	// FaceBox, when non-nil, replaces face detection for every frame (the
	// detectors are not run, and Networks.Detector and Landmarks may be
	// nil). It must lie inside the frame with x1 < x2 and y1 < y2.
	// BBoxShift and ExtraMargin still apply to it.
	FaceBox *media.Box
	// FaceDetector is how the face box is found without FaceBox:
	// DetectorDWPose (default when empty; it runs S3FD too, for its
	// fallback and to tell frames without a face) or DetectorS3FD. It is
	// dropped (normalized to "") with FaceBox.
	FaceDetector string
	// FPS, when non-nil, is the avatar's frame rate: a video is resampled
	// to it (ffmpeg's fps filter, frames dropped or repeated by
	// timestamp) and a still gets it. Nil keeps a video's own rate and
	// gives a still StillFPS.
	FPS *big.Rat
}

// DefaultOptions returns MuseTalk v1.5's defaults: jaw parsing with 90 px
// cheeks and a 10 px extra margin.
func DefaultOptions() Options {
	return Options{
		Version:     VersionV15,
		ExtraMargin: DefaultExtraMargin,
		ParsingMode: media.ParsingJaw,
		LeftCheek:   DefaultCheekWidth,
		RightCheek:  DefaultCheekWidth,
	}
}

// Normalize checks o and returns it with defaults filled in and every
// field that does not affect the result for its version zeroed (v1.5
// drops BBoxShift; v1 drops ExtraMargin, the cheeks and the parsing mode,
// which is raw; modes other than jaw drop the cheeks; a FaceBox drops the
// face detector). Two Options that
// prepare the same avatar normalize to the same value. Errors wrap
// ErrInvalidOptions.
func (o Options) Normalize() (Options, error) {
	n := Options{Version: cmp.Or(o.Version, VersionV15)}
	switch n.Version {
	case VersionV15:
		if o.ExtraMargin < 0 {
			return Options{}, fmt.Errorf("%w: extra margin %d is negative", ErrInvalidOptions, o.ExtraMargin)
		}
		n.ExtraMargin = cmp.Or(o.ExtraMargin, DefaultExtraMargin)
		switch o.ParsingMode {
		case media.ParsingJaw:
			for _, c := range []int{o.LeftCheek, o.RightCheek} {
				if c < 0 || c > ParseSize/2 {
					return Options{}, fmt.Errorf("%w: cheek width %d outside 0..%d", ErrInvalidOptions, c, ParseSize/2)
				}
			}
			n.LeftCheek = cmp.Or(o.LeftCheek, DefaultCheekWidth)
			n.RightCheek = cmp.Or(o.RightCheek, DefaultCheekWidth)
		case media.ParsingRaw, media.ParsingNeck:
		default:
			return Options{}, fmt.Errorf("%w: unknown parsing mode %d", ErrInvalidOptions, o.ParsingMode)
		}
		n.ParsingMode = o.ParsingMode
	case VersionV1:
		n.BBoxShift = o.BBoxShift
		n.ParsingMode = media.ParsingRaw
	default:
		return Options{}, fmt.Errorf("%w: version %q is not one of %s, %s", ErrInvalidOptions, o.Version, VersionV15, VersionV1)
	}
	if b := o.FaceBox; b != nil {
		if b[0] < 0 || b[1] < 0 || b[2] <= b[0] || b[3] <= b[1] {
			return Options{}, fmt.Errorf("%w: face box %v is not a box with 0 <= x1 < x2 and 0 <= y1 < y2", ErrInvalidOptions, *b)
		}
		fb := *b
		n.FaceBox = &fb
	} else {
		switch n.FaceDetector = cmp.Or(o.FaceDetector, DetectorDWPose); n.FaceDetector {
		case DetectorDWPose, DetectorS3FD:
		default:
			return Options{}, fmt.Errorf("%w: face detector %q is not one of %s, %s", ErrInvalidOptions, o.FaceDetector, DetectorDWPose, DetectorS3FD)
		}
	}
	if o.FPS != nil {
		if o.FPS.Sign() <= 0 {
			return Options{}, fmt.Errorf("%w: fps %s is not positive", ErrInvalidOptions, o.FPS.RatString())
		}
		n.FPS = new(big.Rat).Set(o.FPS)
	}
	return n, nil
}

// keyFormat versions the key derivation together with the prepared
// entry's contents: bump it whenever either changes, so that old cache
// entries are never read as new ones. 2: the face detector (DWPose's
// landmark box by default, where 1 always used S3FD's box).
const keyFormat = 2

// canonicalOptions is the key's encoding of normalized Options: a JSON
// object with a fixed field order.
type canonicalOptions struct {
	Format       int     `json:"format"`
	Version      string  `json:"version"`
	BBoxShift    int     `json:"bbox_shift"`
	ExtraMargin  int     `json:"extra_margin"`
	ParsingMode  string  `json:"parsing_mode"`
	LeftCheek    int     `json:"left_cheek"`
	RightCheek   int     `json:"right_cheek"`
	FaceBox      *[4]int `json:"face_box"`
	FaceDetector string  `json:"face_detector"`
	FPS          string  `json:"fps"`
}

func parsingModeName(m media.ParsingMode) string {
	switch m {
	case media.ParsingRaw:
		return "raw"
	case media.ParsingNeck:
		return "neck"
	case media.ParsingJaw:
		return "jaw"
	}
	return fmt.Sprintf("mode%d", int(m))
}

// canonical returns the key encoding of n, which must be normalized.
func (n Options) canonical() []byte {
	c := canonicalOptions{
		Format: keyFormat, Version: n.Version, BBoxShift: n.BBoxShift, ExtraMargin: n.ExtraMargin,
		ParsingMode: parsingModeName(n.ParsingMode), LeftCheek: n.LeftCheek, RightCheek: n.RightCheek,
		FaceDetector: n.FaceDetector,
	}
	if n.FaceBox != nil {
		b := [4]int(*n.FaceBox)
		c.FaceBox = &b
	}
	if n.FPS != nil {
		c.FPS = n.FPS.RatString()
	}
	b, err := json.Marshal(c)
	if err != nil { // a struct of ints and strings always marshals
		panic(fmt.Sprintf("avatar: encoding options: %v", err))
	}
	return b
}

// Key derives the cache key of preparing the avatar file at avatarPath
// with opt under the weight set identified by weightsID: the hex SHA-256
// of the file's SHA-256, the canonical encoding of the normalized options
// and weightsID, each length-prefixed. It reads the whole file; equal
// contents give equal keys wherever the file lives, and the key is
// stable across runs and releases until the entry format changes.
func Key(avatarPath string, opt Options, weightsID string) (string, error) {
	n, err := opt.Normalize()
	if err != nil {
		return "", err
	}
	f, err := os.Open(avatarPath)
	if err != nil {
		return "", fmt.Errorf("avatar: hashing avatar file: %w", err)
	}
	defer f.Close()
	fh := sha256.New()
	if _, err := io.Copy(fh, f); err != nil {
		return "", fmt.Errorf("avatar: hashing avatar file %s: %w", avatarPath, err)
	}
	h := sha256.New()
	for _, part := range [][]byte{[]byte("musetalk-avatar"), fh.Sum(nil), n.canonical(), []byte(weightsID)} {
		var l [8]byte
		for i := range l {
			l[i] = byte(uint64(len(part)) >> (8 * i))
		}
		h.Write(l[:])
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
