// Package preview is a worker engine that needs no model: it muxes the
// avatar (a still image looped, or a video looped) with the speech track
// into an H.264/AAC MP4 as long as the audio, without lip-sync. It lets the
// whole system run end to end before MuseTalk does, and shows what a
// render costs without inference. It shells out to ffmpeg and ffprobe.
package preview

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/engine"
)

// Name is the engine's name in protocol.JobParams.Engine.
const Name = "preview"

// The progress stages the engine reports, in order.
const (
	StageProbe  = "probe"  // reading the inputs' streams
	StageRender = "render" // frames muxed of all
)

// DefaultFPS is the output frame rate for a still image when the job names
// none.
const DefaultFPS = 25

// Options configure the engine; zero values take defaults.
type Options struct {
	FFmpeg  string // path or name of ffmpeg; default "ffmpeg" on PATH
	FFprobe string // path or name of ffprobe; default "ffprobe" on PATH
	// Preset is libx264's speed preset; default "veryfast".
	Preset string
}

// Engine is the preview engine. It is safe for concurrent use.
type Engine struct {
	opts Options
}

var _ engine.Engine = (*Engine)(nil)

// New returns a preview engine.
func New(opts Options) *Engine {
	if opts.FFmpeg == "" {
		opts.FFmpeg = "ffmpeg"
	}
	if opts.FFprobe == "" {
		opts.FFprobe = "ffprobe"
	}
	if opts.Preset == "" {
		opts.Preset = "veryfast"
	}
	return &Engine{opts: opts}
}

// Name returns "preview".
func (e *Engine) Name() string { return Name }

// Check finds ffmpeg and ffprobe and makes sure ffmpeg has the libx264
// encoder. The preview engine runs on the CPU and needs no weights.
func (e *Engine) Check(ctx context.Context) (engine.CheckResult, error) {
	res := engine.CheckResult{Device: "cpu", WeightsPresent: true}
	for _, tool := range []string{e.opts.FFmpeg, e.opts.FFprobe} {
		if _, err := exec.LookPath(tool); err != nil {
			return res, fmt.Errorf("preview engine: %s not found (install ffmpeg): %w", tool, err)
		}
	}
	out, err := exec.CommandContext(ctx, e.opts.FFmpeg, "-hide_banner", "-h", "encoder=libx264").CombinedOutput()
	if err != nil {
		return res, fmt.Errorf("preview engine: running %s: %w: %s", e.opts.FFmpeg, err, tail(out))
	}
	if !bytes.Contains(out, []byte("libx264")) || bytes.Contains(out, []byte("is not recognized")) {
		return res, fmt.Errorf("preview engine: %s has no libx264 encoder", e.opts.FFmpeg)
	}
	return res, nil
}

// Run renders job.OutputPath. Unreadable or missing inputs give permanent
// errors carrying ffprobe's or ffmpeg's own message; cancelling ctx kills
// ffmpeg and returns ctx's error.
func (e *Engine) Run(ctx context.Context, job *engine.Job, progress engine.ProgressFunc) error {
	if progress == nil {
		progress = func(protocol.Progress) {}
	}
	progress(protocol.Progress{Stage: StageProbe})
	audio, err := e.probe(ctx, job.AudioPath)
	if err != nil {
		return inputError(ctx, "audio", err)
	}
	if !audio.hasAudio() {
		return engine.Permanent(errors.New("audio: the file has no audio stream"))
	}
	dur, err := audio.duration()
	if err != nil {
		return engine.Permanent(fmt.Errorf("audio: %w", err))
	}
	avatar, err := e.probe(ctx, job.AvatarPath)
	if err != nil {
		return inputError(ctx, "avatar", err)
	}
	v := avatar.video()
	if v == nil {
		return engine.Permanent(errors.New("avatar: the file has no image or video stream"))
	}
	still := avatar.isStill()
	fps, err := chooseFPS(job.Params.FPS, v, still)
	if err != nil {
		return engine.Permanent(err)
	}
	fpsF, _ := fps.Float64()
	total := max(1, int(math.Round(dur*fpsF)))
	progress(protocol.Progress{Stage: StageRender, FramesTotal: total})

	args := []string{"-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-progress", "pipe:1", "-y"}
	if still {
		args = append(args, "-loop", "1", "-framerate", fps.RatString())
	} else {
		args = append(args, "-stream_loop", "-1")
	}
	args = append(args,
		"-i", job.AvatarPath, "-i", job.AudioPath,
		"-map", "0:v:0", "-map", "1:a:0",
		"-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p",
		"-r", fps.RatString(),
		"-c:v", "libx264", "-preset", e.opts.Preset, "-crf", "23", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "128k",
		"-t", strconv.FormatFloat(dur, 'f', 6, 64),
		"-movflags", "+faststart", "-f", "mp4", job.OutputPath)
	cmd := exec.CommandContext(ctx, e.opts.FFmpeg, args...)
	cmd.WaitDelay = 5 * time.Second
	stderr := &tailWriter{max: 8 << 10}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("preview: %w", err)
	}
	if err := cmd.Start(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("preview: %w", context.Cause(ctx))
		}
		return engine.Retryable(fmt.Errorf("preview: starting ffmpeg: %w", err))
	}
	readProgress(stdout, total, progress)
	err = cmd.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("preview: ffmpeg stopped: %w", context.Cause(ctx))
	}
	if err != nil {
		msg := tail(stderr.buf, job.AvatarPath, job.AudioPath, job.OutputPath)
		ferr := fmt.Errorf("preview: ffmpeg failed: %w: %s", err, msg)
		if strings.Contains(msg, "No space left on device") {
			return engine.Retryable(ferr)
		}
		return engine.Permanent(ferr)
	}
	if st, err := os.Stat(job.OutputPath); err != nil || st.Size() == 0 {
		return engine.Permanent(fmt.Errorf("preview: ffmpeg wrote no output: %s", tail(stderr.buf, job.AvatarPath, job.AudioPath, job.OutputPath)))
	}
	progress(protocol.Progress{Stage: StageRender, FramesDone: total, FramesTotal: total})
	return nil
}

// readProgress parses ffmpeg's -progress key=value blocks until EOF.
func readProgress(r io.Reader, total int, progress engine.ProgressFunc) {
	sc := bufio.NewScanner(r)
	last := -1
	frame := 0
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "frame":
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				frame = min(n, total)
			}
		case "progress":
			if frame > last {
				last = frame
				progress(protocol.Progress{Stage: StageRender, FramesDone: frame, FramesTotal: total})
			}
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

func inputError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("preview: probing %s: %w", what, context.Cause(ctx))
	}
	return engine.Permanent(fmt.Errorf("%s: %w", what, err))
}

// probeResult is the part of ffprobe's JSON the engine reads.
type probeResult struct {
	Streams []probeStream `json:"streams"`
	Format  struct {
		FormatName string `json:"format_name"`
		Duration   string `json:"duration"`
	} `json:"format"`
}

type probeStream struct {
	CodecType    string `json:"codec_type"`
	CodecName    string `json:"codec_name"`
	AvgFrameRate string `json:"avg_frame_rate"`
	RFrameRate   string `json:"r_frame_rate"`
	Duration     string `json:"duration"`
}

func (e *Engine) probe(ctx context.Context, path string) (*probeResult, error) {
	if _, err := os.Stat(path); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is the worker's, not the client's business
		}
		return nil, fmt.Errorf("cannot open the file %s: %w", filepath.Base(path), err)
	}
	cmd := exec.CommandContext(ctx, e.opts.FFprobe, "-v", "error",
		"-show_entries", "format=format_name,duration:stream=codec_type,codec_name,avg_frame_rate,r_frame_rate,duration",
		"-of", "json", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ffprobe cannot read it: %s", tail(stderr.Bytes(), path))
	}
	var p probeResult
	if err := json.Unmarshal(out, &p); err != nil {
		return nil, fmt.Errorf("reading ffprobe's answer: %w", err)
	}
	return &p, nil
}

func (p *probeResult) hasAudio() bool {
	for _, s := range p.Streams {
		if s.CodecType == "audio" {
			return true
		}
	}
	return false
}

func (p *probeResult) video() *probeStream {
	for i := range p.Streams {
		if p.Streams[i].CodecType == "video" {
			return &p.Streams[i]
		}
	}
	return nil
}

// isStill reports whether the avatar is a single image rather than a video.
func (p *probeResult) isStill() bool {
	f := p.Format.FormatName
	return f == "image2" || strings.HasSuffix(f, "_pipe")
}

func (p *probeResult) duration() (float64, error) {
	cands := []string{p.Format.Duration}
	for _, s := range p.Streams {
		if s.CodecType == "audio" {
			cands = append(cands, s.Duration)
		}
	}
	for _, c := range cands {
		if d, err := strconv.ParseFloat(c, 64); err == nil && d > 0 && !math.IsInf(d, 0) {
			return d, nil
		}
	}
	return 0, errors.New("the audio has no duration (empty or unreadable)")
}

// chooseFPS takes the job's frame rate, else the avatar video's, else
// DefaultFPS.
func chooseFPS(param string, v *probeStream, still bool) (*big.Rat, error) {
	if param != "" {
		r, err := protocol.ParseFPS(param)
		if err != nil {
			return nil, fmt.Errorf("params.fps: %w", err)
		}
		return r, nil
	}
	if !still {
		for _, s := range []string{v.AvgFrameRate, v.RFrameRate} {
			if r, err := protocol.ParseFPS(s); err == nil {
				return r, nil
			}
		}
	}
	return big.NewRat(DefaultFPS, 1), nil
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	max int
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// tail returns the last few lines of a tool's output as one line.
func tail(b []byte, paths ...string) string {
	text := string(b)
	// Job errors are shown to clients: name files, not the worker's disk.
	for _, p := range paths {
		if p != "" {
			text = strings.ReplaceAll(text, p, filepath.Base(p))
		}
	}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	s := strings.Join(lines, " | ")
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	if s == "" {
		return "(no message)"
	}
	return s
}
