// Package media is the project's audio/video I/O: ffmpeg and ffprobe run as
// subprocesses exchanging raw RGB24 frames and float32 samples over pipes
// (FFmpeg: Probe, DecodeFrames, DecodeAudio, NewEncoder), and Whisper's
// log-mel front end (LogMel).
package media

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// FFmpeg runs the ffmpeg and ffprobe command-line tools (Debian package
// ffmpeg) as subprocesses, exchanging raw frames and samples over pipes.
// The zero value is ready to use and finds both binaries on PATH. An FFmpeg
// holds no state besides the two paths and is safe for concurrent use.
type FFmpeg struct {
	// Path is the ffmpeg binary: a path, or a name looked up on PATH.
	// Empty means "ffmpeg".
	Path string
	// ProbePath is the ffprobe binary: a path, or a name looked up on
	// PATH. Empty means "ffprobe".
	ProbePath string
}

// ErrBinaryNotFound is wrapped by every error caused by a missing or
// non-executable ffmpeg or ffprobe binary.
var ErrBinaryNotFound = errors.New("binary not found")

// ErrUnreadable is wrapped by the error of Probe (and so of every
// operation, which probes first) when ffprobe cannot open or parse a file:
// missing, unreadable or not a media file.
var ErrUnreadable = errors.New("unreadable media file")

// ErrNoAudio is wrapped by the error of an operation that needs an audio
// stream when the file has none.
var ErrNoAudio = errors.New("no audio stream")

// ErrNoVideo is wrapped by the error of an operation that needs a video
// stream (or an image) when the file has none.
var ErrNoVideo = errors.New("no video stream")

// stderrTail is how many bytes of a subprocess's stderr are kept for
// error messages.
const stderrTail = 2048

// waitDelay bounds how long Wait waits for pipes to drain after the process
// was killed (context cancellation, Close).
const waitDelay = 2 * time.Second

func (f *FFmpeg) ffmpegBin() (string, error) {
	return lookBinary(f.Path, "ffmpeg")
}

func (f *FFmpeg) ffprobeBin() (string, error) {
	return lookBinary(f.ProbePath, "ffprobe")
}

// lookBinary resolves name (default def) to an executable path, with an
// error that says how to install it.
func lookBinary(name, def string) (string, error) {
	if name == "" {
		name = def
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("media: %s binary %q: %w (install the Debian package ffmpeg: apt-get install ffmpeg): %s",
			def, filepath.Base(name), ErrBinaryNotFound, sanitize(err.Error(), name))
	}
	return p, nil
}

// tailBuffer is an io.Writer keeping the last max bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// dirPrefix matches the directory part of a path that starts with "/",
// "./" or "../" at the start of a line or after a space, quote, "(" or
// "=", so that error messages (which may reach clients) carry base names
// only. Rationals such as 30000/1001 are left alone.
var dirPrefix = regexp.MustCompile(`(?m)(^|[\s'"(=])(?:\.\.?)?/(?:[^\s/'"]*/)*([^\s/'"])`)

// logContext matches ffmpeg's log prefixes such as "[h264 @ 0x55d0c8]",
// whose addresses are noise.
var logContext = regexp.MustCompile(`\[([^\]@]+?) @ 0x[0-9a-f]+\]`)

// sanitize reduces the known paths, then any remaining path-like token, to
// base names, drops log-context addresses and joins the non-blank lines
// with "; ", giving a one-line message fit for a client.
func sanitize(s string, paths ...string) string {
	for _, p := range paths {
		if p != "" && strings.Contains(p, "/") {
			s = strings.ReplaceAll(s, p, filepath.Base(p))
		}
	}
	s = dirPrefix.ReplaceAllString(s, "$1$2")
	s = logContext.ReplaceAllString(s, "[$1]")
	lines := strings.Split(s, "\n")
	kept := lines[:0]
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "; ")
}

// process is a running ffmpeg/ffprobe with its stderr tail and the file
// paths to hide from error messages.
type process struct {
	ctx    context.Context
	cmd    *exec.Cmd
	stderr *tailBuffer
	what   string   // what was being done, for error messages
	paths  []string // file paths to reduce to base names
}

func newProcess(ctx context.Context, bin, what string, paths []string, args ...string) *process {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = waitDelay
	tb := &tailBuffer{max: stderrTail}
	cmd.Stderr = tb
	return &process{ctx: ctx, cmd: cmd, stderr: tb, what: what, paths: paths}
}

// wrap wraps err with what was being done and the sanitized stderr
// tail. A cancelled context takes precedence over the kill it caused.
func (p *process) wrap(err error) error {
	if err == nil {
		return nil
	}
	if cerr := p.ctx.Err(); cerr != nil {
		return fmt.Errorf("media: %s: %w", p.what, cerr)
	}
	msg := sanitize(err.Error(), p.paths...)
	if tail := sanitize(p.stderr.String(), p.paths...); tail != "" {
		return fmt.Errorf("media: %s: %s: %s", p.what, msg, tail)
	}
	return fmt.Errorf("media: %s: %s", p.what, msg)
}

// wrapAs is wrap for a failure that means kind (a sentinel error) when the
// process exited with an error status.
func (p *process) wrapAs(err, kind error) error {
	var exit *exec.ExitError
	if err == nil || p.ctx.Err() != nil || !errors.As(err, &exit) {
		return p.wrap(err)
	}
	if tail := sanitize(p.stderr.String(), p.paths...); tail != "" {
		return fmt.Errorf("media: %s: %w: %s", p.what, kind, tail)
	}
	return fmt.Errorf("media: %s: %w (%s)", p.what, kind, sanitize(err.Error(), p.paths...))
}

// base returns the base name of path, for error messages.
func base(path string) string { return filepath.Base(path) }
