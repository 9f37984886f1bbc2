package media

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
)

// AudioSampleRate is the rate DecodeAudio delivers (Whisper's input rate).
const AudioSampleRate = 16000

// DecodeAudio decodes the first audio stream of path (any container or
// codec ffmpeg reads, including a video file's sound track) to mono
// float32 samples in [-1, 1] at 16 kHz, like librosa.load(path, sr=16000):
// channels are averaged with equal weights and the resampler is SoX's
// (soxr, 20-bit precision, librosa's "soxr_hq"). A file without audio gives
// an error wrapping ErrNoAudio. The whole result is held in memory (4
// bytes a sample: 64 KB a second).
func (f *FFmpeg) DecodeAudio(ctx context.Context, path string) ([]float32, error) {
	bin, err := f.ffmpegBin()
	if err != nil {
		return nil, err
	}
	info, err := f.Probe(ctx, path)
	if err != nil {
		return nil, err
	}
	a := info.Audio
	if a == nil {
		return nil, fmt.Errorf("media: decoding audio of %s: %w (the file has only %s)", base(path), ErrNoAudio, streamKinds(info))
	}
	filters := []string{}
	if a.Channels > 1 {
		terms := make([]string, a.Channels)
		for i := range terms {
			terms[i] = fmt.Sprintf("%.9g*c%d", 1/float64(a.Channels), i)
		}
		filters = append(filters, "pan=mono|c0="+strings.Join(terms, "+"))
	}
	filters = append(filters, fmt.Sprintf("aresample=%d:resampler=soxr:precision=20", AudioSampleRate))
	args := []string{"-nostdin", "-v", "error", "-i", path, "-map", "0:a:0", "-vn", "-sn", "-dn",
		"-af", strings.Join(filters, ","), "-ac", "1", "-ar", fmt.Sprint(AudioSampleRate), "-f", "f32le", "pipe:1"}
	p := newProcess(ctx, bin, "decoding audio of "+base(path), []string{path}, args...)
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("media: decoding audio of %s: %w", base(path), err)
	}
	if err := p.cmd.Start(); err != nil {
		return nil, p.wrap(err)
	}
	capHint := int(a.Duration.Seconds()*AudioSampleRate) + AudioSampleRate
	raw, rerr := readAllCap(out, 4*capHint)
	if err := p.wrap(p.cmd.Wait()); err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, p.wrap(rerr)
	}
	samples := make([]float32, len(raw)/4)
	for i := range samples {
		samples[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return samples, nil
}

// readAllCap is io.ReadAll with an initial capacity.
func readAllCap(r io.Reader, capacity int) ([]byte, error) {
	if capacity < 512 {
		capacity = 512
	}
	b := make([]byte, 0, capacity)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// streamKinds lists the stream types of a file, for error messages.
func streamKinds(info *Info) string {
	if len(info.Streams) == 0 {
		return "no streams"
	}
	kinds := make([]string, len(info.Streams))
	for i, s := range info.Streams {
		kinds[i] = s.Type
	}
	return strings.Join(kinds, ", ") + " streams"
}
