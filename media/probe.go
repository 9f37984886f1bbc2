package media

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// Info describes a media file as reported by ffprobe.
type Info struct {
	// Format is ffprobe's format_name (e.g. "mov,mp4,m4a,3gp,3g2,mj2",
	// "png_pipe", "wav").
	Format string
	// Duration is the container duration; zero when unknown (stills).
	Duration time.Duration
	// Streams lists every stream in file order.
	Streams []StreamInfo
	// Video describes the first video stream, nil if there is none.
	// Attached pictures (cover art) are not counted as video.
	Video *VideoInfo
	// Audio describes the first audio stream, nil if there is none.
	Audio *AudioInfo
}

// StreamInfo is one stream of a file.
type StreamInfo struct {
	Index int
	// Type is "video", "audio", "subtitle", "data" or "attachment".
	Type  string
	Codec string
	// Duration is the stream's own duration; zero when unknown.
	Duration time.Duration
}

// VideoInfo describes a video stream or a still image.
type VideoInfo struct {
	// Width and Height are the displayed size: the coded size with a 90°
	// or 270° rotation applied, as ffmpeg's decoder (autorotate) delivers
	// frames.
	Width, Height int
	// Rotation is the display rotation in degrees counter-clockwise (0,
	// 90, 180, 270), as ffprobe reports the display matrix.
	Rotation int
	// FPS is the frame rate, nil for stills. It is r_frame_rate when that
	// agrees with avg_frame_rate within 0.5 % (constant-rate material,
	// where r_frame_rate is the exact rational such as 30000/1001), and
	// avg_frame_rate otherwise (variable-rate material, where
	// r_frame_rate is only a timebase guess); either one alone when the
	// other is missing.
	FPS *big.Rat
	// Frames is the frame count: the container's nb_frames when present
	// (FramesEstimated false), otherwise round(duration × FPS)
	// (FramesEstimated true). Stills have 1.
	Frames          int
	FramesEstimated bool
	PixFmt          string
	Codec           string
	// IsStill is true for an image file (image2 or *_pipe demuxer: PNG,
	// JPEG, BMP, TIFF, WebP ...) holding a single frame. A still has no
	// frame rate of its own; the caller chooses one.
	IsStill bool
}

// AudioInfo describes an audio stream.
type AudioInfo struct {
	SampleRate int
	Channels   int
	Codec      string
	// Duration is the stream duration, or the container's when the
	// stream has none.
	Duration time.Duration
}

type probeJSON struct {
	Streams []struct {
		Index        int               `json:"index"`
		CodecType    string            `json:"codec_type"`
		CodecName    string            `json:"codec_name"`
		Width        int               `json:"width"`
		Height       int               `json:"height"`
		PixFmt       string            `json:"pix_fmt"`
		RFrameRate   string            `json:"r_frame_rate"`
		AvgFrameRate string            `json:"avg_frame_rate"`
		NbFrames     string            `json:"nb_frames"`
		Duration     string            `json:"duration"`
		SampleRate   string            `json:"sample_rate"`
		Channels     int               `json:"channels"`
		Tags         map[string]string `json:"tags"`
		Disposition  map[string]int    `json:"disposition"`
		SideDataList []map[string]any  `json:"side_data_list"`
	} `json:"streams"`
	Format struct {
		FormatName string `json:"format_name"`
		Duration   string `json:"duration"`
		NbStreams  int    `json:"nb_streams"`
	} `json:"format"`
}

// Probe runs ffprobe on path. It does not decode the file, so it is cheap
// whatever the file's length. A file ffprobe cannot read gives an error
// wrapping ErrUnreadable, with ffprobe's message; a file without audio or
// video is not an error (Info.Audio / Info.Video are nil).
func (f *FFmpeg) Probe(ctx context.Context, path string) (*Info, error) {
	bin, err := f.ffprobeBin()
	if err != nil {
		return nil, err
	}
	p := newProcess(ctx, bin, "probing "+base(path), []string{path},
		"-v", "error", "-print_format", "json", "-show_format", "-show_streams", "--", path)
	var out bytes.Buffer
	p.cmd.Stdout = &out
	if err := p.wrapAs(p.cmd.Run(), ErrUnreadable); err != nil {
		return nil, err
	}
	var pj probeJSON
	if err := json.Unmarshal(out.Bytes(), &pj); err != nil {
		return nil, fmt.Errorf("media: probing %s: parsing ffprobe output: %w", base(path), err)
	}
	return pj.info(), nil
}

func (pj *probeJSON) info() *Info {
	info := &Info{Format: pj.Format.FormatName, Duration: parseSeconds(pj.Format.Duration)}
	still := pj.Format.FormatName == "image2" || strings.HasSuffix(pj.Format.FormatName, "_pipe")
	for _, s := range pj.Streams {
		d := parseSeconds(s.Duration)
		info.Streams = append(info.Streams, StreamInfo{Index: s.Index, Type: s.CodecType, Codec: s.CodecName, Duration: d})
		switch s.CodecType {
		case "video":
			if info.Video != nil || s.Disposition["attached_pic"] == 1 {
				continue
			}
			v := &VideoInfo{Width: s.Width, Height: s.Height, PixFmt: s.PixFmt, Codec: s.CodecName}
			v.Rotation = rotation(s.Tags, s.SideDataList)
			if v.Rotation == 90 || v.Rotation == 270 {
				v.Width, v.Height = v.Height, v.Width
			}
			nb, _ := strconv.Atoi(s.NbFrames)
			if still && nb <= 1 {
				v.IsStill, v.Frames = true, 1
				info.Video = v
				continue
			}
			v.FPS = chooseFPS(parseRat(s.RFrameRate), parseRat(s.AvgFrameRate))
			if nb > 0 {
				v.Frames = nb
			} else {
				if d == 0 {
					d = info.Duration
				}
				if v.FPS != nil {
					fps, _ := v.FPS.Float64()
					v.Frames = int(math.Round(d.Seconds() * fps))
				}
				v.FramesEstimated = true
			}
			info.Video = v
		case "audio":
			if info.Audio != nil {
				continue
			}
			sr, _ := strconv.Atoi(s.SampleRate)
			if d == 0 {
				d = info.Duration
			}
			info.Audio = &AudioInfo{SampleRate: sr, Channels: s.Channels, Codec: s.CodecName, Duration: d}
		}
	}
	return info
}

// chooseFPS implements the rule documented on VideoInfo.FPS.
func chooseFPS(r, avg *big.Rat) *big.Rat {
	switch {
	case r == nil:
		return avg
	case avg == nil:
		return r
	}
	rf, _ := r.Float64()
	af, _ := avg.Float64()
	if math.Abs(rf-af) <= 0.005*af {
		return r
	}
	return avg
}

// rotation reads the display rotation, counter-clockwise as ffprobe
// reports the display matrix (ffmpeg >= 5), or from the legacy clockwise
// "rotate" tag, normalized to 0, 90, 180 or 270.
func rotation(tags map[string]string, side []map[string]any) int {
	deg := 0.0
	if r, ok := tags["rotate"]; ok {
		v, _ := strconv.ParseFloat(r, 64)
		deg = -v
	}
	for _, sd := range side {
		if r, ok := sd["rotation"].(float64); ok {
			deg = r
		}
	}
	n := int(math.Round(deg/90)) * 90 % 360
	if n < 0 {
		n += 360
	}
	return n
}

// parseRat parses "num/den"; zero or invalid rates give nil.
func parseRat(s string) *big.Rat {
	r, ok := new(big.Rat).SetString(s)
	if !ok || r.Sign() <= 0 {
		return nil
	}
	return r
}

func parseSeconds(s string) time.Duration {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) {
		return 0
	}
	return time.Duration(v * float64(time.Second))
}
