package avatar

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/face"
	"github.com/avatargen/musetalk/musetalk/model"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// FaceDetector finds the face box in a BGR frame (ok=false: no face).
// face.Detector (S3FD) implements it.
type FaceDetector interface {
	Detect(ctx context.Context, frameBGR *media.Image8) (box media.Box, ok bool, err error)
}

// LandmarkDetector returns a BGR frame's whole-body keypoints: DWPose's
// 133 (x, y) in frame pixels, of which MuseTalk's box logic reads the 68
// face landmarks ([face.TruncLandmarks]).
type LandmarkDetector interface {
	Keypoints(ctx context.Context, frameBGR *media.Image8) ([][2]float64, error)
}

// FaceParser returns a size×size 1-channel map of BiSeNet class ids for an
// RGB image of any size. face.Parser implements it.
type FaceParser interface {
	Parse(ctx context.Context, rgb *media.Image8, size int) (*media.Image8, error)
}

// Networks are what preparation runs.
type Networks struct {
	// Backend runs the VAE.
	Backend kernels.Backend
	// VAE encodes the face crops.
	VAE *model.VAE
	// Detector finds faces (S3FD); it may be nil when Options.FaceBox is
	// set.
	Detector FaceDetector
	// Landmarks finds the face landmarks (DWPose) for
	// Options.FaceDetector DetectorDWPose; it may be nil otherwise.
	Landmarks LandmarkDetector
	// Parser computes the blend masks' class maps.
	Parser FaceParser
	// FFmpeg decodes the avatar file; nil means ffmpeg and ffprobe from
	// PATH.
	FFmpeg *media.FFmpeg
	// EncodeBatch is the number of frames per VAE encoder call (two
	// images each); 0 means DefaultEncodeBatch.
	EncodeBatch int
	// Logger receives the face boxes preparation uses (see [Prepare]);
	// nil means slog.Default().
	Logger *slog.Logger
}

// DefaultEncodeBatch is the default Networks.EncodeBatch.
const DefaultEncodeBatch = 4

func (nets *Networks) check(n Options) error {
	switch {
	case nets.Backend == nil || nets.VAE == nil:
		return errors.New("avatar: networks: no backend or VAE")
	case nets.Parser == nil:
		return errors.New("avatar: networks: no face parser")
	case nets.Detector == nil && n.FaceBox == nil:
		return errors.New("avatar: networks: no face detector and no face box")
	case nets.Landmarks == nil && n.FaceBox == nil && n.FaceDetector == DetectorDWPose:
		return errors.New("avatar: networks: no landmark detector for the dwpose face detector")
	case nets.EncodeBatch < 0:
		return fmt.Errorf("avatar: networks: encode batch %d is negative", nets.EncodeBatch)
	}
	return nil
}

// latentShape is the shape of one frame's latent for a crop of side
// CropSize: both latents' channels, then the VAE's down-sampled size.
func latentShape(cfg weights.VAEConfig) []int {
	f := 1 << (len(cfg.BlockOutChannels) - 1)
	return []int{2 * cfg.LatentChannels, CropSize / f, CropSize / f}
}

// Prepare prepares the avatar file at avatarPath (a still image or a
// video) into dir, which must not exist or be empty, and returns it open.
// Frames are decoded, detected, parsed and written one at a time and
// encoded by the VAE in batches of Networks.EncodeBatch frames, so memory
// does not grow with the video's length beyond each frame's latent and
// mask. progress, when non-nil, is called with the number of frames
// prepared so far and the expected total (the probe's frame count, raised
// to done when the probe undercounted) after every frame.
//
// The face box is found as Options.FaceDetector says: with DetectorDWPose
// S3FD runs first (a frame where it finds no face has none), then DWPose,
// and MuseTalk's rules ([face.MuseTalkBox]) turn the face landmarks and
// the S3FD box into the box; with DetectorS3FD the S3FD box is used.
//
// The face box is logged at Info: the first frame's with a face, the box
// used (after bbox_shift or the extra margin) and its source (landmarks,
// s3fd, s3fd-fallback where the landmarks gave no box, or face-box); a
// summary follows (frames, frames with a face, the boxes' extent, how many
// came from each source and, with DWPose, MuseTalk's bbox_shift range). A
// box from S3FD that touches the frame's edge is more often a helmet, a
// collar or the picture's border than a face: a Warn says how many frames
// had one and suggests giving the face box. Every frame's box is logged at
// Debug.
//
// Cancelling ctx stops preparation within one frame or encoder batch. On
// any error dir is removed if Prepare created it, or emptied of the files
// it wrote. Bad options wrap ErrInvalidOptions; an unreadable avatar file
// wraps media.ErrUnreadable or media.ErrNoVideo.
func Prepare(ctx context.Context, avatarPath, dir string, opt Options, nets Networks, progress func(done, total int)) (*Avatar, error) {
	return prepare(ctx, "", avatarPath, dir, opt, nets, progress)
}

func prepare(ctx context.Context, key, avatarPath, dir string, opt Options, nets Networks, progress func(done, total int)) (a *Avatar, err error) {
	n, err := opt.Normalize()
	if err != nil {
		return nil, fmt.Errorf("avatar: preparing %s: %w", filepath.Base(avatarPath), err)
	}
	if err := nets.check(n); err != nil {
		return nil, err
	}
	created, err := makeEntryDir(dir)
	if err != nil {
		return nil, err
	}
	p := &preparer{ctx: ctx, n: n, nets: nets, dir: dir, progress: progress,
		boxes: boxLog{log: cmp.Or(nets.Logger, slog.Default()), avatar: filepath.Base(avatarPath), key: key, detector: n.FaceDetector}}
	defer func() {
		if err != nil {
			p.abort(created)
			if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
				// A failure caused by the cancellation (ffmpeg killed,
				// a network interrupted) reports the cancellation.
				err = fmt.Errorf("%w (%v)", cerr, err)
			}
			err = fmt.Errorf("avatar: preparing %s: %w", filepath.Base(avatarPath), err)
		}
	}()
	ff := nets.FFmpeg
	if ff == nil {
		ff = &media.FFmpeg{}
	}
	rd, err := ff.DecodeFrames(ctx, avatarPath, media.DecodeOptions{FPS: n.FPS})
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	if err := p.start(key, rd.Info); err != nil {
		return nil, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		f, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := p.addFrame(f); err != nil {
			return nil, err
		}
	}
	if err := p.finish(); err != nil {
		return nil, err
	}
	return p.a, nil
}

// makeEntryDir creates dir, or accepts it when it exists and is empty,
// and reports whether it created it.
func makeEntryDir(dir string) (bool, error) {
	err := os.Mkdir(dir, 0o755)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, os.ErrExist) {
		return false, fmt.Errorf("avatar: creating %s: %w", dir, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("avatar: reading %s: %w", dir, err)
	}
	if len(ents) > 0 {
		return false, fmt.Errorf("avatar: preparing into %s: the directory is not empty", dir)
	}
	return false, nil
}

// preparer holds one preparation's state: the avatar being built, the
// entry's open files and the frames waiting for the encoder.
type preparer struct {
	ctx      context.Context
	n        Options
	nets     Networks
	dir      string
	progress func(done, total int)

	a           *Avatar
	latents     *os.File
	masks       *os.File
	frames      *os.File
	masksW      *bufio.Writer
	framesW     *bufio.Writer
	latentLen   int
	batch       []int     // indices of frames waiting for the encoder
	inputs      []float32 // their VAE inputs: masked, then reference crop
	done, total int
	boxes       boxLog
}

// start checks the decoded stream against the options and opens the
// entry's data files.
func (p *preparer) start(key string, info *media.Info) error {
	v := info.Video
	fps := p.n.FPS
	switch {
	case fps != nil:
	case v.IsStill:
		fps = big.NewRat(StillFPS, 1)
	case v.FPS != nil:
		fps = v.FPS
	default:
		return errors.New("the video has no frame rate; set Options.FPS")
	}
	if p.n.FaceBox != nil {
		if err := checkFaceBox(*p.n.FaceBox, v.Width, v.Height); err != nil {
			return err
		}
	}
	p.a = &Avatar{Key: key, Options: p.n, W: v.Width, H: v.Height, FPS: new(big.Rat).Set(fps),
		LatentShape: latentShape(p.nets.VAE.Config())}
	p.latentLen = p.a.LatentShape[0] * p.a.LatentShape[1] * p.a.LatentShape[2]
	p.total = v.Frames
	if p.n.FPS != nil && !v.IsStill {
		secs := info.Duration.Seconds()
		if v.FPS != nil && v.Frames > 0 {
			f, _ := v.FPS.Float64()
			secs = float64(v.Frames) / f
		}
		f, _ := p.n.FPS.Float64()
		p.total = int(secs*f + 0.5)
	}
	var err error
	open := func(name string) *os.File {
		if err != nil {
			return nil
		}
		var f *os.File
		f, err = os.OpenFile(filepath.Join(p.dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		return f
	}
	p.latents, p.masks, p.frames = open(latentsFile), open(masksFile), open(framesFile)
	if err != nil {
		return fmt.Errorf("creating the entry's files: %w", err)
	}
	p.masksW = bufio.NewWriterSize(p.masks, 1<<16)
	p.framesW = bufio.NewWriterSize(p.frames, 1<<20)
	return nil
}

// addFrame prepares one decoded frame (f's buffer is reused by the
// decoder, so nothing keeps it).
func (p *preparer) addFrame(f *media.Frame) error {
	i := len(p.a.Frames)
	rgb := &media.Image8{W: f.W, H: f.H, C: 3, Pix: f.Pix}
	bgr := rgb.SwapRB()
	if _, err := p.framesW.Write(bgr.Pix); err != nil {
		return fmt.Errorf("writing frame %d: %w", i, err)
	}
	det, found, err := p.detect(i, bgr)
	if err != nil {
		return err
	}
	var fr Frame
	if found.ok {
		if face, ok := faceBox(det, f.W, f.H, p.n, found.shift); ok && !blankBox(bgr, face) {
			crop, s := media.CropBox(face, cropExpand)
			fr = Frame{HasFace: s > 0, Face: face, Crop: crop}
		}
	}
	p.boxes.frame(i, fr, det, found, f.W, f.H)
	if !fr.HasFace {
		p.a.Frames = append(p.a.Frames, Frame{})
		p.frameDone()
		return nil
	}
	c256 := media.CropResizeLanczos4(bgr, fr.Face, CropSize, CropSize)
	p.inputs = append(p.inputs, media.VAEInput(c256, true)...)
	p.inputs = append(p.inputs, media.VAEInput(c256, false)...)
	classes, err := p.nets.Parser.Parse(p.ctx, rgb.Crop(fr.Crop[0], fr.Crop[1], fr.Crop[2], fr.Crop[3]), ParseSize)
	if err != nil {
		return fmt.Errorf("parsing the face in frame %d: %w", i, err)
	}
	if classes == nil || classes.W != ParseSize || classes.H != ParseSize || classes.C != 1 {
		return fmt.Errorf("parsing the face in frame %d: the parser returned %s, want a %dx%dx1 class map",
			i, describe(classes), ParseSize, ParseSize)
	}
	pm, _ := media.ParsingMask(classes, p.n.ParsingMode, p.n.LeftCheek, p.n.RightCheek)
	fr.Mask = media.BlendMask(pm, fr.Face, fr.Crop, maskUpperRatio, maskBlurRatio)
	if _, err := p.masksW.Write(fr.Mask.Pix); err != nil {
		return fmt.Errorf("writing the mask of frame %d: %w", i, err)
	}
	p.a.Frames = append(p.a.Frames, fr)
	p.batch = append(p.batch, i)
	if len(p.batch) >= cmp.Or(p.nets.EncodeBatch, DefaultEncodeBatch) {
		return p.flush()
	}
	return nil
}

// detection is where a frame's face box came from.
type detection struct {
	ok     bool   // a face was found (always, with Options.FaceBox)
	source string // sourceLandmarks, sourceS3FD, sourceFallback or sourceFaceBox
	s3fd   media.Box
	shift  bool // bbox_shift is still to be applied (it was not, in the landmark rules)
	lm     face.LandmarkBox
}

// The face box sources preparation logs.
const (
	sourceLandmarks = "landmarks"     // MuseTalk's landmark box (DWPose)
	sourceS3FD      = "s3fd"          // S3FD's box (DetectorS3FD)
	sourceFallback  = "s3fd-fallback" // S3FD's box where the landmarks gave none (DetectorDWPose)
	sourceFaceBox   = "face-box"      // Options.FaceBox
)

// detect finds frame i's face box as the options say: the given box, the
// S3FD box, or MuseTalk's box from DWPose's landmarks and the S3FD box.
func (p *preparer) detect(i int, bgr *media.Image8) (media.Box, detection, error) {
	if p.n.FaceBox != nil {
		return *p.n.FaceBox, detection{ok: true, source: sourceFaceBox, shift: true}, nil
	}
	det, found, err := p.nets.Detector.Detect(p.ctx, bgr)
	if err != nil {
		return media.Box{}, detection{}, fmt.Errorf("detecting the face in frame %d: %w", i, err)
	}
	d := detection{ok: found, source: sourceS3FD, s3fd: det, shift: true}
	if !found || p.n.FaceDetector != DetectorDWPose {
		// MuseTalk's placeholder: no face, whatever DWPose would say, so
		// it is not run.
		return det, d, nil
	}
	kp, err := p.nets.Landmarks.Keypoints(p.ctx, bgr)
	if err != nil {
		return media.Box{}, detection{}, fmt.Errorf("finding the face landmarks in frame %d: %w", i, err)
	}
	lm, err := face.TruncLandmarks(kp)
	if err != nil {
		return media.Box{}, detection{}, fmt.Errorf("finding the face landmarks in frame %d: %w", i, err)
	}
	d.lm = face.MuseTalkBox(lm, det, found, p.n.BBoxShift)
	// The landmark rules applied bbox_shift (through landmark 29); their
	// S3FD fallback is used as it is, as MuseTalk does.
	d.shift = false
	d.source = sourceFallback
	if d.lm.Source == face.SourceLandmarks {
		d.source = sourceLandmarks
	}
	return d.lm.Box, d, nil
}

// flush encodes the waiting frames' crops and writes their latents.
func (p *preparer) flush() error {
	k := len(p.batch)
	if k == 0 {
		return nil
	}
	if err := p.ctx.Err(); err != nil {
		return err
	}
	be, vae := p.nets.Backend, p.nets.VAE
	x := kernels.Upload(be, p.inputs, 2*k, 3, CropSize, CropSize)
	mean, err := vae.Encode(x)
	be.Free(x)
	if err != nil {
		return fmt.Errorf("encoding frames %d to %d: %w", p.batch[0], p.batch[k-1], err)
	}
	if mean.Len() != k*p.latentLen {
		be.Free(mean)
		return fmt.Errorf("encoding frames %d to %d: VAE returned %v, want %d latents of %v",
			p.batch[0], p.batch[k-1], mean, 2*k, p.a.LatentShape)
	}
	out := make([]float32, mean.Len())
	err = be.Download(out, mean)
	be.Free(mean)
	if err != nil {
		return fmt.Errorf("encoding frames %d to %d: %w", p.batch[0], p.batch[k-1], err)
	}
	sf := vae.ScalingFactor()
	buf := make([]byte, 0, p.latentLen*4)
	for j, i := range p.batch {
		lat := out[j*p.latentLen : (j+1)*p.latentLen : (j+1)*p.latentLen]
		for m := range lat {
			lat[m] *= sf
		}
		p.a.Frames[i].Latent = lat
		if _, err := p.latents.WriteAt(encodeFloats(buf[:0], lat), int64(i)*int64(p.latentLen)*4); err != nil {
			return fmt.Errorf("writing the latent of frame %d: %w", i, err)
		}
		p.frameDone()
	}
	p.batch, p.inputs = p.batch[:0], p.inputs[:0]
	return nil
}

func (p *preparer) frameDone() {
	p.done++
	p.total = max(p.total, p.done)
	if p.progress != nil {
		p.progress(p.done, p.total)
	}
}

// finish flushes the last batch, completes and syncs the data files,
// writes the manifest last and reopens the frame file for reading.
func (p *preparer) finish() error {
	if err := p.flush(); err != nil {
		return err
	}
	nf := len(p.a.Frames)
	if nf == 0 {
		return errors.New("the avatar file has no frames")
	}
	m, err := newManifest(p.a)
	if err != nil {
		return err
	}
	// Frames without a face keep zero latents: extend the file over any
	// trailing ones.
	if err := p.latents.Truncate(int64(nf) * int64(p.latentLen) * 4); err != nil {
		return fmt.Errorf("writing latents: %w", err)
	}
	if err := p.masksW.Flush(); err != nil {
		return fmt.Errorf("writing masks: %w", err)
	}
	if err := p.framesW.Flush(); err != nil {
		return fmt.Errorf("writing frames: %w", err)
	}
	m.Sizes = map[string]int64{}
	for name, f := range map[string]*os.File{latentsFile: p.latents, masksFile: p.masks, framesFile: p.frames} {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("syncing %s: %w", name, err)
		}
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("syncing %s: %w", name, err)
		}
		m.Sizes[name] = st.Size()
	}
	if err := writeManifest(filepath.Join(p.dir, manifestFile), m); err != nil {
		return err
	}
	p.boxes.summary(nf)
	p.latents.Close()
	p.masks.Close()
	p.latents, p.masks = nil, nil
	p.a.frames, p.frames = p.frames, nil
	return nil
}

func writeManifest(path string, m *manifest) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding the manifest: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("writing the manifest: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing the manifest: %w", err)
	}
	return nil
}

// abort closes the open files and removes what preparation wrote.
func (p *preparer) abort(created bool) {
	for _, f := range []*os.File{p.latents, p.masks, p.frames} {
		if f != nil {
			f.Close()
		}
	}
	if created {
		os.RemoveAll(p.dir)
		return
	}
	for _, name := range []string{manifestFile, latentsFile, masksFile, framesFile} {
		os.Remove(filepath.Join(p.dir, name))
	}
}

// describe names an image's size for error messages.
func describe(m *media.Image8) string {
	if m == nil {
		return "no map"
	}
	return fmt.Sprintf("a %dx%dx%d map", m.W, m.H, m.C)
}

// boxLog logs the face boxes of one preparation: every frame's at Debug,
// the first face's at Info, and at the end a summary and a warning for
// detected boxes that touch the frame's edge.
type boxLog struct {
	log         *slog.Logger
	avatar, key string
	detector    string // Options.FaceDetector ("" with a face box)

	faces     int            // frames with a face
	sources   map[string]int // frames with a face by their box's source
	extent    media.Box      // the union of the face boxes used
	edge      int            // frames whose S3FD face box touches the edge
	firstEdge int            // the first of them
	edgeBox   media.Box      // its detected box
	shift     face.ShiftRange
}

// attrs starts a record's attributes with the avatar's name and key.
func (l *boxLog) attrs(more ...any) []any {
	a := []any{"avatar", l.avatar}
	if l.key != "" {
		a = append(a, "key", l.key)
	}
	return append(a, more...)
}

// frame records frame i of a w×h avatar: fr as prepared, box the box it
// came from (before bbox_shift, the margin and clipping) as d found it.
func (l *boxLog) frame(i int, fr Frame, box media.Box, d detection, w, h int) {
	if d.source == sourceLandmarks || d.source == sourceFallback {
		l.shift.Add(d.lm)
	}
	if !fr.HasFace {
		l.log.Debug("avatar: no face", l.attrs("frame", i, "detected", d.ok)...)
		return
	}
	if l.sources == nil {
		l.sources = map[string]int{}
	}
	l.sources[d.source]++
	fromS3FD := d.source == sourceS3FD || d.source == sourceFallback
	if fromS3FD && (box[0] <= 0 || box[1] <= 0 || box[2] >= w || box[3] >= h) {
		if l.edge == 0 {
			l.firstEdge, l.edgeBox = i, box
		}
		l.edge++
	}
	if l.faces == 0 {
		l.extent = fr.Face
	} else {
		l.extent = media.Box{min(l.extent[0], fr.Face[0]), min(l.extent[1], fr.Face[1]),
			max(l.extent[2], fr.Face[2]), max(l.extent[3], fr.Face[3])}
	}
	l.faces++
	a := l.attrs("frame", i, "box", fr.Face, "source", d.source)
	if d.source != sourceFaceBox {
		a = append(a, "detector", l.detector)
		if box != fr.Face {
			a = append(a, "detected", box)
		}
		if d.source == sourceLandmarks {
			a = append(a, "s3fd", d.s3fd)
		}
	}
	if l.faces == 1 {
		l.log.Info("avatar: face box", a...)
	} else {
		l.log.Debug("avatar: face box", a...)
	}
}

// summary logs, after the last of n frames, the video's boxes and the
// warning about boxes at the edge.
func (l *boxLog) summary(n int) {
	if n == 1 && l.faces == 1 && l.detector != DetectorDWPose {
		l.warnEdge(n)
		return // the frame's record said it all
	}
	a := l.attrs("frames", n, "with_face", l.faces)
	if l.detector != "" {
		a = append(a, "detector", l.detector)
	}
	for _, src := range []string{sourceLandmarks, sourceFallback, sourceS3FD, sourceFaceBox} {
		if k := l.sources[src]; k > 0 {
			a = append(a, src, k)
		}
	}
	if l.faces > 0 {
		a = append(a, "extent", l.extent)
	}
	if l.detector != "" {
		a = append(a, "at_edge", l.edge)
	}
	if m, p, ok := l.shift.Range(); ok {
		// MuseTalk's "Manually adjust range" of bbox_shift (v1).
		a = append(a, "bbox_shift_range", fmt.Sprintf("[-%d~%d]", m, p))
	}
	l.log.Info("avatar: face boxes", a...)
	l.warnEdge(n)
}

// warnEdge warns about S3FD boxes at the frame's edge, if there were any.
func (l *boxLog) warnEdge(n int) {
	if l.edge > 0 {
		l.log.Warn("avatar: the detected face box touches the frame's edge",
			l.attrs("frames", l.edge, "of", n, "first_frame", l.firstEdge, "detected", l.edgeBox,
				"hint", "likely not a face (a helmet, a collar, the picture's border); check the output, or give the face box with --face-box x1,y1,x2,y2")...)
	}
}
