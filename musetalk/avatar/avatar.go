package avatar

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/avatargen/musetalk/media"
)

// Frame is one prepared source frame.
type Frame struct {
	// HasFace is false for a frame without a face: it passes through
	// unchanged, and the other fields are zero.
	HasFace bool
	// Face is the box the generated face is resized into and blended at
	// (after bbox_shift / extra_margin), inside the frame.
	Face media.Box
	// Crop is the blending square, media.CropBox(Face, 1.5); it may
	// extend past the frame.
	Crop media.Box
	// Latent is the UNet's reference input for this frame, [8, h/8, w/8]
	// for the 256×256 crop (8×32×32 with MuseTalk's VAE): the latent of
	// the crop with its lower half masked (4 channels), then the latent of
	// the whole crop (4 channels), each the VAE posterior mean times the
	// scaling factor.
	Latent []float32
	// Mask is the 1-channel blend mask of Crop's size (media.BlendMask of
	// the parsing mask, realtime blur ratio 0.1).
	Mask *media.Image8
}

// Avatar is a prepared avatar, in memory or opened from a cache entry.
// Latents and masks are held in memory (about 32 KiB plus the mask per
// face frame); frame pixels stay on disk and are read by [Avatar.FrameBGR].
// An Avatar is safe for concurrent use; Close it when done.
type Avatar struct {
	// Key is the cache key ("" for an avatar prepared outside a cache).
	Key string
	// Options are the normalized options it was prepared with.
	Options Options
	// W and H are the frame size.
	W, H int
	// FPS is the frame rate: the video's own (or Options.FPS), StillFPS
	// for a still.
	FPS *big.Rat
	// LatentShape is the shape of every Frame.Latent, e.g. [8, 32, 32].
	LatentShape []int
	// Frames are the source frames in order. Generation walks them as
	// MuseTalk's ping-pong cycle (frames, then the frames reversed).
	Frames []Frame

	frames    *os.File
	closeOnce sync.Once
	closeErr  error
	release   func()
}

// FaceFrames counts the frames with a face.
func (a *Avatar) FaceFrames() int {
	n := 0
	for _, f := range a.Frames {
		if f.HasFace {
			n++
		}
	}
	return n
}

// FrameBGR returns a new copy of source frame i's pixels (BGR, W×H×3),
// read from the entry's raw frame file.
func (a *Avatar) FrameBGR(i int) (*media.Image8, error) {
	if i < 0 || i >= len(a.Frames) {
		return nil, fmt.Errorf("avatar: frame %d out of range [0, %d)", i, len(a.Frames))
	}
	img := media.NewImage8(a.W, a.H, 3)
	if _, err := a.frames.ReadAt(img.Pix, int64(i)*int64(len(img.Pix))); err != nil {
		return nil, fmt.Errorf("avatar: reading frame %d: %w", i, err)
	}
	return img, nil
}

// Close releases the frame file and, for an avatar from a [Cache], the
// entry (which may then be evicted). It is safe to call more than once.
func (a *Avatar) Close() error {
	a.closeOnce.Do(func() {
		if a.frames != nil {
			a.closeErr = a.frames.Close()
		}
		if a.release != nil {
			a.release()
		}
	})
	return a.closeErr
}

// Entry files.
const (
	manifestFile = "manifest.json"
	latentsFile  = "latents.f32"
	masksFile    = "masks.u8"
	framesFile   = "frames.bgr"
)

// manifestFormat is the entry layout's version.
const manifestFormat = 1

// manifest is an entry's manifest.json. The data files are:
// latents.f32, len(Frames)·prod(LatentShape) little-endian float32 (zeros
// for frames without a face); masks.u8, the masks of the face frames in
// order, each Crop width × height bytes; frames.bgr, len(Frames)·W·H·3
// bytes of BGR pixels.
type manifest struct {
	Format      int             `json:"format"`
	Key         string          `json:"key"`
	Options     json.RawMessage `json:"options"`
	W           int             `json:"width"`
	H           int             `json:"height"`
	FPS         string          `json:"fps"`
	LatentShape []int           `json:"latent_shape"`
	Frames      []manifestFrame `json:"frames"`
	// Sizes holds each data file's length in bytes.
	Sizes map[string]int64 `json:"sizes"`
}

// manifestFrame is one frame: both boxes, or neither for no face.
type manifestFrame struct {
	Face *media.Box `json:"face,omitempty"`
	Crop *media.Box `json:"crop,omitempty"`
}

// ErrCorrupt is wrapped by the error of opening an entry whose files are
// missing, truncated or inconsistent.
var ErrCorrupt = errors.New("corrupt avatar entry")

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// Open opens the prepared avatar in dir (written by [Prepare]). It checks
// the manifest against the data files' sizes and returns an error
// wrapping ErrCorrupt when they disagree or a file is missing.
func Open(dir string) (*Avatar, error) {
	a, err := open(dir)
	if err != nil {
		return nil, fmt.Errorf("avatar: opening %s: %w", dir, err)
	}
	return a, nil
}

func open(dir string) (*Avatar, error) {
	raw, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if err != nil {
		return nil, corruptf("%v", err)
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, corruptf("manifest: %v", err)
	}
	if m.Format != manifestFormat {
		return nil, corruptf("manifest format %d, want %d", m.Format, manifestFormat)
	}
	fps, ok := new(big.Rat).SetString(m.FPS)
	if !ok || fps.Sign() <= 0 || m.W <= 0 || m.H <= 0 || len(m.Frames) == 0 {
		return nil, corruptf("manifest: fps %q, size %dx%d, %d frames", m.FPS, m.W, m.H, len(m.Frames))
	}
	latentLen := 1
	for _, d := range m.LatentShape {
		latentLen *= d
	}
	if len(m.LatentShape) != 3 || latentLen <= 0 {
		return nil, corruptf("manifest: latent shape %v", m.LatentShape)
	}
	a := &Avatar{Key: m.Key, W: m.W, H: m.H, FPS: fps, LatentShape: m.LatentShape, Frames: make([]Frame, len(m.Frames))}
	if err := json.Unmarshal(m.Options, &a.Options); err != nil {
		return nil, corruptf("manifest options: %v", err)
	}
	var maskBytes int64
	for i, f := range m.Frames {
		if f.Face == nil {
			continue
		}
		crop, _ := media.CropBox(*f.Face, cropExpand)
		if f.Crop == nil || *f.Crop != crop || f.Face[0] < 0 || f.Face[1] < 0 || f.Face[2] > m.W || f.Face[3] > m.H ||
			f.Face[2] <= f.Face[0] || f.Face[3] <= f.Face[1] {
			return nil, corruptf("frame %d: face box %v, crop box %v", i, f.Face, f.Crop)
		}
		a.Frames[i] = Frame{HasFace: true, Face: *f.Face, Crop: crop}
		maskBytes += int64(crop[2]-crop[0]) * int64(crop[3]-crop[1])
	}
	n := int64(len(m.Frames))
	want := map[string]int64{
		latentsFile: n * int64(latentLen) * 4,
		masksFile:   maskBytes,
		framesFile:  n * int64(m.W) * int64(m.H) * 3,
	}
	for name, size := range want {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return nil, corruptf("%v", err)
		}
		if st.Size() != size || m.Sizes[name] != size {
			return nil, corruptf("%s is %d bytes, manifest says %d, frames need %d", name, st.Size(), m.Sizes[name], size)
		}
	}
	if err := a.readLatentsAndMasks(dir, latentLen); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(dir, framesFile))
	if err != nil {
		return nil, corruptf("%v", err)
	}
	a.frames = f
	return a, nil
}

// readLatentsAndMasks fills the face frames' Latent and Mask from the
// entry's files, streaming.
func (a *Avatar) readLatentsAndMasks(dir string, latentLen int) error {
	lf, err := os.Open(filepath.Join(dir, latentsFile))
	if err != nil {
		return corruptf("%v", err)
	}
	defer lf.Close()
	mf, err := os.Open(filepath.Join(dir, masksFile))
	if err != nil {
		return corruptf("%v", err)
	}
	defer mf.Close()
	buf := make([]byte, latentLen*4)
	for i := range a.Frames {
		fr := &a.Frames[i]
		if _, err := io.ReadFull(lf, buf); err != nil {
			return corruptf("latents of frame %d: %v", i, err)
		}
		if !fr.HasFace {
			continue
		}
		fr.Latent = decodeFloats(buf)
		fr.Mask = media.NewImage8(fr.Crop[2]-fr.Crop[0], fr.Crop[3]-fr.Crop[1], 1)
		if _, err := io.ReadFull(mf, fr.Mask.Pix); err != nil {
			return corruptf("mask of frame %d: %v", i, err)
		}
	}
	return nil
}

func decodeFloats(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func encodeFloats(dst []byte, v []float32) []byte {
	for _, x := range v {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(x))
	}
	return dst
}

// newManifest describes a for writing; sizes are filled by the writer.
func newManifest(a *Avatar) (*manifest, error) {
	opts, err := json.Marshal(a.Options)
	if err != nil {
		return nil, fmt.Errorf("encoding options: %w", err)
	}
	m := &manifest{
		Format: manifestFormat, Key: a.Key, Options: opts, W: a.W, H: a.H, FPS: a.FPS.RatString(),
		LatentShape: slices.Clone(a.LatentShape), Frames: make([]manifestFrame, len(a.Frames)),
	}
	for i, f := range a.Frames {
		if f.HasFace {
			face, crop := f.Face, f.Crop
			m.Frames[i] = manifestFrame{Face: &face, Crop: &crop}
		}
	}
	return m, nil
}
