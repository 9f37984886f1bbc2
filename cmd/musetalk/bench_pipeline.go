package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/musetalk"
	"github.com/avatargen/musetalk/musetalk/modeldir"
	"github.com/avatargen/musetalk/protocol"
)

func benchPipelineCommand() *cli.Command {
	return &cli.Command{
		Name:      "pipeline",
		Usage:     "time each stage of a render: preparation, features, UNet, VAE decoder, blend, encode",
		UsageText: "musetalk bench pipeline --avatar FILE [--face-box x1,y1,x2,y2 | --face-detector dwpose|s3fd] [options]",
		Description: `Renders the avatar to a generated tone of --seconds (the networks' cost does
not depend on what is said) with a fresh avatar cache, and reports each
stage's time in total and per frame (preparation per avatar frame, the
rest per output frame; S3FD's and DWPose's share of the preparation per
avatar frame they ran on) and the process's peak resident memory. The first
line names the device the networks ran on (--device) and its precision
(--precision; the device's default: fp16 on cuda, fp32 on cpu).

Without --weights it writes the full-size networks with seeded random
weights (about 1.9 GB) into a temporary directory first, so the figures
are those of the real network sizes without a download.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "avatar", Usage: "still image or video with the face (required)", Required: true},
			&cli.StringFlag{Name: "face-box", Usage: "x1,y1,x2,y2: skip detection and use this box"},
			&cli.StringFlag{Name: "face-detector", Usage: "how the face box is found without --face-box: dwpose (MuseTalk's box from DWPose's face landmarks, S3FD's where they give none) or s3fd (S3FD's box)", DefaultText: "dwpose"},
			&cli.Float64Flag{Name: "seconds", Value: 4, Usage: "length of the audio, in seconds"},
			&cli.StringFlag{Name: "fps", Usage: "output frame rate (default: the avatar's, 25 for a still)"},
			&cli.IntFlag{Name: "batch-size", Value: musetalk.DefaultBatchSize, Usage: "frames per UNet/VAE batch"},
			&cli.StringFlag{Name: "version", Value: musetalk.DefaultVersion, Usage: "MuseTalk version: v15 or v1"},
			&cli.StringFlag{Name: "parsing-mode", Usage: "v1.5 blend mask: jaw (default) or raw"},
			&cli.StringFlag{Name: "weights", Usage: "weight directory (default: full-size random weights in a temporary directory)"},
			&cli.StringFlag{Name: "work-dir", Usage: "where the temporary weights, cache and output go (default: the system's temporary directory)"},
		}, deviceFlags("threads of the cpu device")...),
		Action: runBenchPipeline,
	}
}

func runBenchPipeline(c *cli.Context) error {
	secs := c.Float64("seconds")
	if !(secs > 0) {
		return fmt.Errorf("--seconds %v: must be positive", secs)
	}
	if c.Int("batch-size") < 1 {
		return fmt.Errorf("--batch-size %d: must be at least 1", c.Int("batch-size"))
	}
	params := protocol.JobParams{Version: c.String("version"), BatchSize: c.Int("batch-size"), FPS: c.String("fps"),
		ParsingMode: c.String("parsing-mode"), FaceDetector: c.String("face-detector")}
	if fb := c.String("face-box"); fb != "" {
		box, err := parseFaceBox(fb)
		if err != nil {
			return err
		}
		params.FaceBox = box
	}
	if err := params.Validate(); err != nil {
		return flagError(err)
	}
	if _, err := os.Stat(c.String("avatar")); err != nil {
		return fmt.Errorf("--avatar: %w", err)
	}
	log, err := logger(c)
	if err != nil {
		return err
	}
	device, err := deviceConfigFrom(c, log)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(c.String("work-dir"), "musetalk-bench-")
	if err != nil {
		return fmt.Errorf("creating the work directory: %w", err)
	}
	defer os.RemoveAll(work)
	out := c.App.Writer

	weightsDir := c.String("weights")
	if weightsDir == "" {
		weightsDir = filepath.Join(work, "weights")
		fmt.Fprintf(out, "writing full-size random weights to %s ...\n", weightsDir)
		t := time.Now()
		if err := modeldir.WriteFullSize(weightsDir, 1); err != nil {
			return err
		}
		fmt.Fprintf(out, "  done in %.1f s\n", time.Since(t).Seconds())
	}
	audio := filepath.Join(work, "tone.wav")
	gen := exec.CommandContext(c.Context, "ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi",
		"-i", "sine=frequency=220:sample_rate=16000:duration="+strconv.FormatFloat(secs, 'f', -1, 64), audio)
	if msg, err := gen.CombinedOutput(); err != nil {
		return fmt.Errorf("generating the audio with ffmpeg: %w: %s", err, msg)
	}

	r, err := musetalk.New(c.Context, musetalk.Options{
		WeightsDir: weightsDir, NewBackend: device.open, CacheDir: filepath.Join(work, "cache"), Logger: log,
	})
	if err != nil {
		return err
	}
	defer r.Close()
	var st musetalk.Stats
	stderr := c.App.ErrWriter
	if stderr == nil {
		stderr = os.Stderr
	}
	bar := newProgressBar(stderr)
	err = r.Render(c.Context, musetalk.Request{
		AvatarPath: c.String("avatar"), AudioPath: audio, OutPath: filepath.Join(work, "out.mp4"), Params: params, Stats: &st,
	}, bar.Update)
	bar.Done()
	if err != nil {
		return fmt.Errorf("render: %w", err)
	}
	fmt.Fprintf(out, "device %s, batch %d, %g s of audio -> %d frames (%d through the networks), avatar of %d frame(s)\n",
		r.Device(), params.BatchSize, secs, st.Frames, st.FaceFrames, st.AvatarFrames)
	writeStageTable(out, &st)
	fmt.Fprintf(out, "peak resident memory %.2f GiB\n", float64(maxRSS())/(1<<30))
	return nil
}

// writeStageTable prints each stage's total and per-frame time:
// preparation per avatar frame (and within it the face detectors, S3FD and
// DWPose, per avatar frame they ran on), the networks per frame they ran
// on, the rest per output frame.
func writeStageTable(w io.Writer, st *musetalk.Stats) {
	row := func(name string, d time.Duration, per int, unit string) {
		perFrame := "-"
		if per > 0 {
			perFrame = fmt.Sprintf("%.3f s/%s", d.Seconds()/float64(per), unit)
		}
		fmt.Fprintf(w, "  %-12s %9.2f s  %s\n", name, d.Seconds(), perFrame)
	}
	row("load", st.Load, 0, "")
	row("prepare", st.Prepare, st.AvatarFrames, "avatar frame")
	row("  s3fd", st.S3FD, st.S3FDFrames, "avatar frame")
	row("  dwpose", st.DWPose, st.DWPoseFrames, "avatar frame")
	row("features", st.Features, st.Frames, "frame")
	row("unet", st.UNet, st.FaceFrames, "frame")
	row("vae-decoder", st.VAEDecode, st.FaceFrames, "frame")
	row("blend", st.Blend, st.Frames, "frame")
	row("encode", st.Encode, st.Frames, "frame")
	row("wall", st.Wall, st.Frames, "frame")
}
