package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"strconv"
	"time"
)

// EncodeOptions configures NewEncoder.
type EncodeOptions struct {
	// Width and Height are the size of the RGB24 frames passed to
	// WriteFrame. H.264 yuv420p needs even dimensions: an odd width or
	// height is padded with one black column or row on the right or
	// bottom.
	Width, Height int
	// FPS is the output frame rate (required), e.g. 25/1 or 30000/1001.
	FPS *big.Rat
	// CRF is libx264's constant rate factor, 1 to 51; 0 selects 18
	// (MuseTalk's value, visually lossless).
	CRF int
	// Preset is libx264's preset; empty selects "medium".
	Preset string
	// AudioPath, when set, is a file whose first audio stream is encoded
	// (AAC) and muxed in the same pass.
	AudioPath string
	// Frames is the number of frames the caller will write; 0 if
	// unknown. With audio the output is cut to the shorter stream at a
	// frame boundary: when Frames is set every stream is cut with -t to
	// min(Frames, ⌈audio duration·FPS⌉)/FPS, so the video keeps every
	// frame that shows some of the audio (it may outlast the audio by less
	// than one frame) and the audio is cut only where it is longer than the
	// video (up to its 1024-sample AAC frames); when 0 the output is cut to the
	// audio's duration and ffmpeg's -shortest handles a shorter video,
	// which can leave the audio somewhat longer than the video (one AAC
	// frame in the tests; ffmpeg promises no bound). No stream is cut with
	// a frame cap (-frames:v), which would truncate the audio. When set,
	// writing more frames is an error and Close reports fewer.
	Frames int
}

// Encoder writes RGB24 frames to an H.264 (libx264, yuv420p, BT.709
// limited range, tagged so) MP4 through an ffmpeg subprocess, muxing audio
// (AAC, 128 kb/s) in the same pass. Memory is bounded by the pipe. An
// Encoder is not safe for concurrent use.
type Encoder struct {
	proc   *process
	in     io.WriteCloser
	out    string
	size   int
	frames int
	n      int
	exited bool // ffmpeg was waited for
	closed bool // Close or Abort was called
	err    error
}

// NewEncoder starts ffmpeg writing the MP4 file out (overwritten if it
// exists). The caller must call Close to finish the file, or Abort.
// An AudioPath without an audio stream gives an error wrapping ErrNoAudio.
func (f *FFmpeg) NewEncoder(ctx context.Context, out string, opts EncodeOptions) (*Encoder, error) {
	what := "encoding " + base(out)
	if opts.Width <= 0 || opts.Height <= 0 {
		return nil, fmt.Errorf("media: %s: invalid size %dx%d", what, opts.Width, opts.Height)
	}
	if opts.FPS == nil || opts.FPS.Sign() <= 0 {
		return nil, fmt.Errorf("media: %s: fps must be set and positive", what)
	}
	crf := opts.CRF
	if crf == 0 {
		crf = 18
	}
	if crf < 1 || crf > 51 {
		return nil, fmt.Errorf("media: %s: crf %d outside 1..51", what, crf)
	}
	preset := opts.Preset
	if preset == "" {
		preset = "medium"
	}
	if opts.Frames < 0 {
		return nil, fmt.Errorf("media: %s: negative frame count %d", what, opts.Frames)
	}
	bin, err := f.ffmpegBin()
	if err != nil {
		return nil, err
	}
	var limit time.Duration // 0: none
	fps, _ := opts.FPS.Float64()
	var audioDur time.Duration
	if opts.AudioPath != "" {
		info, err := f.Probe(ctx, opts.AudioPath)
		if err != nil {
			return nil, err
		}
		if info.Audio == nil {
			return nil, fmt.Errorf("media: %s: audio from %s: %w (the file has only %s)", what, base(opts.AudioPath), ErrNoAudio, streamKinds(info))
		}
		audioDur = info.Audio.Duration
	}
	switch {
	case opts.Frames > 0:
		// Cut at a frame boundary: the frames written, or fewer when the
		// audio ends earlier, keeping every frame that shows some of it
		// (ffmpeg's -t drops a frame that starts less than half a frame
		// before the limit, so the limit is the last kept frame's end).
		n := opts.Frames
		if audioDur > 0 {
			n = min(n, int(math.Ceil(audioDur.Seconds()*fps-1e-6)))
		}
		limit = time.Duration(float64(max(n, 1)) / fps * float64(time.Second))
	case audioDur > 0:
		limit = audioDur
	}
	args := []string{"-nostdin", "-v", "error", "-y",
		"-f", "rawvideo", "-pix_fmt", "rgb24", "-s", fmt.Sprintf("%dx%d", opts.Width, opts.Height),
		"-framerate", opts.FPS.RatString(), "-i", "pipe:0"}
	if opts.AudioPath != "" {
		args = append(args, "-i", opts.AudioPath, "-map", "0:v:0", "-map", "1:a:0")
	}
	vf := "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p"
	if opts.Width%2 != 0 || opts.Height%2 != 0 {
		vf = "pad=ceil(iw/2)*2:ceil(ih/2)*2:0:0:black," + vf
	}
	args = append(args, "-vf", vf, "-c:v", "libx264", "-preset", preset, "-crf", strconv.Itoa(crf), "-pix_fmt", "yuv420p",
		"-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv")
	if opts.AudioPath != "" {
		args = append(args, "-c:a", "aac", "-b:a", "128k")
		if opts.Frames == 0 {
			args = append(args, "-shortest")
		}
	}
	if limit > 0 {
		args = append(args, "-t", strconv.FormatFloat(limit.Seconds(), 'f', 6, 64))
	}
	args = append(args, "-movflags", "+faststart", "-f", "mp4", out)
	p := newProcess(ctx, bin, what, []string{out, opts.AudioPath}, args...)
	in, err := p.cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("media: %s: %w", what, err)
	}
	if err := p.cmd.Start(); err != nil {
		return nil, p.wrap(err)
	}
	return &Encoder{proc: p, in: in, out: out, size: opts.Width * opts.Height * 3, frames: opts.Frames}, nil
}

// WriteFrame encodes one RGB24 frame of Width×Height pixels (3 bytes each,
// no row padding). It blocks while ffmpeg is busy. rgb is not retained.
// Frames past the output's cut (the audio's end) are accepted and dropped:
// ffmpeg has finished the file by then.
func (e *Encoder) WriteFrame(rgb []uint8) error {
	if e.err != nil {
		return e.err
	}
	if e.closed {
		return fmt.Errorf("media: %s: write after close", e.proc.what)
	}
	if len(rgb) != e.size {
		return fmt.Errorf("media: %s: frame of %d bytes, want %d", e.proc.what, len(rgb), e.size)
	}
	if e.frames > 0 && e.n >= e.frames {
		return fmt.Errorf("media: %s: frame %d beyond the announced %d", e.proc.what, e.n, e.frames)
	}
	if !e.exited {
		if _, err := e.in.Write(rgb); err != nil {
			// ffmpeg has exited: a clean exit means it reached the cut
			// (-t, -shortest); otherwise its status and stderr say why.
			_ = e.in.Close()
			werr := e.proc.cmd.Wait()
			e.exited = true
			if werr != nil || e.proc.ctx.Err() != nil {
				if werr == nil {
					werr = err
				}
				e.err = e.proc.wrap(werr)
				return e.err
			}
		}
	}
	e.n++
	return nil
}

// Frames reports how many frames WriteFrame accepted, including any
// dropped past the cut.
func (e *Encoder) Frames() int { return e.n }

// Close ends the input, waits for ffmpeg to finish the file and reports
// its failure, or a frame count short of EncodeOptions.Frames (the file is
// still finished). It is safe to call more than once.
func (e *Encoder) Close() error {
	if e.closed {
		return e.err
	}
	e.closed = true
	if e.err != nil {
		return e.err
	}
	if !e.exited {
		e.exited = true
		_ = e.in.Close()
		if err := e.proc.wrap(e.proc.cmd.Wait()); err != nil {
			e.err = err
			return err
		}
	}
	if e.frames > 0 && e.n != e.frames {
		e.err = fmt.Errorf("media: %s: wrote %d of the announced %d frames", e.proc.what, e.n, e.frames)
	}
	return e.err
}

// Abort kills ffmpeg, waits for it and removes the partial output file.
func (e *Encoder) Abort() error {
	e.closed = true
	if !e.exited {
		e.exited = true
		_ = e.in.Close()
		if e.proc.cmd.Process != nil {
			_ = e.proc.cmd.Process.Kill()
		}
		_ = e.proc.cmd.Wait()
		if e.err == nil {
			e.err = errors.New("media: " + e.proc.what + ": aborted")
		}
	}
	if err := os.Remove(e.out); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("media: %s: removing partial output: %w", e.proc.what, err)
	}
	return nil
}
