package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
)

// Frame is one decoded RGB24 picture.
type Frame struct {
	// W and H are the frame size in pixels.
	W, H int
	// Pix holds H rows of W pixels, 3 bytes (R, G, B) each, no padding.
	Pix []uint8
	// Index counts frames from 0 in decode order.
	Index int
}

// DecodeOptions tunes DecodeFrames. The zero value decodes every frame at
// the file's own rate. Both fields are ignored for stills (one frame).
type DecodeOptions struct {
	// FPS, when set, resamples the video to this constant rate with
	// ffmpeg's fps filter (frames are dropped or duplicated by
	// timestamp). When nil every decoded frame is delivered once
	// (passthrough), as MuseTalk's frame extraction does.
	FPS *big.Rat
	// MaxFrames, when positive, stops after that many frames.
	MaxFrames int
}

// FrameReader streams RGB24 frames from an ffmpeg subprocess. Memory is
// one frame buffer plus the pipe, whatever the video's length. A
// FrameReader is not safe for concurrent use.
type FrameReader struct {
	// Info is the probe result of the input.
	Info  *Info
	proc  *process
	out   io.ReadCloser
	frame Frame
	n     int
	done  bool
	err   error
}

// DecodeFrames starts decoding the video or still image at path into RGB24
// frames (rotation applied; YUV converted with the stream's tagged matrix,
// BT.601 when untagged, as OpenCV does). A still yields exactly one frame; the caller
// repeats it at the rate it chooses. A file without a video stream gives an
// error wrapping ErrNoVideo. The reader must be closed.
func (f *FFmpeg) DecodeFrames(ctx context.Context, path string, opts DecodeOptions) (*FrameReader, error) {
	bin, err := f.ffmpegBin()
	if err != nil {
		return nil, err
	}
	info, err := f.Probe(ctx, path)
	if err != nil {
		return nil, err
	}
	v := info.Video
	if v == nil {
		return nil, fmt.Errorf("media: decoding frames of %s: %w", base(path), ErrNoVideo)
	}
	if v.Width <= 0 || v.Height <= 0 {
		return nil, fmt.Errorf("media: decoding frames of %s: invalid size %dx%d", base(path), v.Width, v.Height)
	}
	args := []string{"-nostdin", "-v", "error", "-i", path, "-map", "0:v:0", "-an", "-sn", "-dn"}
	switch {
	case v.IsStill:
		args = append(args, "-frames:v", "1")
	case opts.FPS != nil:
		if opts.FPS.Sign() <= 0 {
			return nil, fmt.Errorf("media: decoding frames of %s: fps %s must be positive", base(path), opts.FPS.RatString())
		}
		args = append(args, "-vf", "fps="+opts.FPS.RatString())
	default:
		args = append(args, "-fps_mode", "passthrough")
	}
	if opts.MaxFrames > 0 && !v.IsStill {
		args = append(args, "-frames:v", strconv.Itoa(opts.MaxFrames))
	}
	args = append(args, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1")
	p := newProcess(ctx, bin, "decoding frames of "+base(path), []string{path}, args...)
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("media: decoding frames of %s: %w", base(path), err)
	}
	if err := p.cmd.Start(); err != nil {
		return nil, p.wrap(err)
	}
	return &FrameReader{
		Info:  info,
		proc:  p,
		out:   out,
		frame: Frame{W: v.Width, H: v.Height, Pix: make([]uint8, v.Width*v.Height*3)},
	}, nil
}

// Next returns the next frame, or io.EOF after the last one. The returned
// Frame and its Pix buffer are reused by the following call: copy them to
// keep a frame. Decoding errors (including a cancelled context) are
// returned instead of io.EOF, with the tail of ffmpeg's stderr.
func (r *FrameReader) Next() (*Frame, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.done {
		return nil, io.EOF
	}
	_, err := io.ReadFull(r.out, r.frame.Pix)
	if err == nil {
		r.frame.Index = r.n
		r.n++
		return &r.frame, nil
	}
	werr := r.proc.wrap(r.proc.cmd.Wait())
	r.done = true
	switch {
	case werr != nil:
		r.err = werr
	case errors.Is(err, io.ErrUnexpectedEOF):
		r.err = fmt.Errorf("media: %s: truncated frame %d", r.proc.what, r.n)
	case err != io.EOF:
		r.err = r.proc.wrap(err)
	}
	if r.err != nil {
		return nil, r.err
	}
	return nil, io.EOF
}

// Frames reports how many frames Next has returned.
func (r *FrameReader) Frames() int { return r.n }

// Close stops ffmpeg if it is still running (kill) and waits for it. It is
// safe to call more than once and after Next returned io.EOF.
func (r *FrameReader) Close() error {
	if r.done {
		return nil
	}
	r.done = true
	if r.proc.cmd.Process != nil {
		_ = r.proc.cmd.Process.Kill()
	}
	_ = r.proc.cmd.Wait() // the kill is the expected exit
	if r.err == nil {
		r.err = errors.New("media: frame reader closed")
	}
	return nil
}
