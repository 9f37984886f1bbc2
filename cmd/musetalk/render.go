package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/musetalk"
	"github.com/avatargen/musetalk/musetalk/modeldir"
)

func renderCommand() *cli.Command {
	return &cli.Command{
		Name:      "render",
		Usage:     "lip-sync an avatar to a speech track on this machine, without a control plane",
		UsageText: "musetalk render --avatar FILE --audio FILE --out FILE [options]",
		Description: `Runs the MuseTalk pipeline locally: prepares the avatar (a still image or
a video; prepared avatars are cached in --avatar-cache), computes the
speech's Whisper features, generates the mouth region frame by frame and
writes an H.264/AAC MP4 as long as the audio. Progress goes to stderr.

Weights come from --weights (default $MUSETALK_WEIGHTS or
~/.cache/musetalk/weights); fetch them with ` + "`musetalk weights fetch`" + `, or
write random tiny ones for a dry run with ` + "`musetalk weights tiny --out DIR`" + `.
Without --face-box the face box of every frame is MuseTalk's: built from
DWPose's face landmarks, S3FD's box where they give none (--face-detector
s3fd: S3FD's box alone); frames where S3FD finds no face pass through
unchanged. The networks run on --device (auto:
the GPU when this build has CUDA and one is usable, else the CPU) at
--precision (the device's default: fp16 on cuda, fp32 on cpu; fp16 needs
cuda). See docs/PIPELINE.md.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "avatar", Usage: "still image or video with the face (required)", Required: true},
			&cli.StringFlag{Name: "audio", Usage: "speech track: any file ffmpeg reads with an audio stream (required)", Required: true},
			&cli.StringFlag{Name: "out", Usage: "MP4 file to write (required); it appears only when the render succeeds", Required: true},
			&cli.StringFlag{Name: "version", Value: musetalk.DefaultVersion, Usage: "MuseTalk version: v15 or v1"},
			&cli.StringFlag{Name: "weights", Usage: "weight directory (default: " + modeldir.Default() + ")", EnvVars: []string{"MUSETALK_WEIGHTS"}},
			&cli.IntFlag{Name: "batch-size", Value: musetalk.DefaultBatchSize, Usage: "frames per UNet/VAE batch"},
			&cli.StringFlag{Name: "fps", Usage: "output frame rate, e.g. 25 or 30000/1001 (default: the video's own, 25 for a still)"},
			&cli.StringFlag{Name: "face-box", Usage: "x1,y1,x2,y2: use this face box in every frame instead of detecting the face"},
			&cli.StringFlag{Name: "face-detector", Usage: "how the face box is found without --face-box: dwpose (MuseTalk's box from DWPose's face landmarks, S3FD's where they give none) or s3fd (S3FD's box)", DefaultText: "dwpose"},
			&cli.IntFlag{Name: "bbox-shift", Usage: "v1: move the face box's upper edge (positive opens the mouth more)"},
			&cli.IntFlag{Name: "extra-margin", Usage: "v1.5: extend the face box downwards by this many pixels", DefaultText: "10"},
			&cli.StringFlag{Name: "parsing-mode", Usage: "v1.5 blend mask: jaw (default) or raw"},
			&cli.IntFlag{Name: "crf", Value: musetalk.DefaultCRF, Usage: "libx264 quality, 1 (best) to 51"},
			&cli.StringFlag{Name: "avatar-cache", Usage: "directory of prepared avatars (default: " + musetalk.DefaultCacheDir() + ")", EnvVars: []string{"MUSETALK_AVATAR_CACHE"}},
			&cli.Int64Flag{Name: "avatar-cache-max-bytes", Value: musetalk.DefaultCacheMaxBytes, Usage: "size bound of the avatar cache", EnvVars: []string{"MUSETALK_AVATAR_CACHE_MAX_BYTES"}},
		}, deviceFlags("threads of the cpu device")...),
		Action: runRender,
	}
}

func runRender(c *cli.Context) error {
	log, err := logger(c)
	if err != nil {
		return err
	}
	params, err := paramsFromFlags(c)
	if err != nil {
		return err
	}
	if c.Int("batch-size") < 1 {
		return fmt.Errorf("--batch-size %d: must be at least 1", c.Int("batch-size"))
	}
	out := c.String("out")
	if err := checkOutDir(out); err != nil {
		return err
	}
	device, err := deviceConfigFrom(c, log)
	if err != nil {
		return err
	}
	for _, f := range []string{"avatar", "audio"} {
		if _, err := os.Stat(c.String(f)); err != nil {
			return fmt.Errorf("--%s: %w", f, err)
		}
	}
	stderr := c.App.ErrWriter
	if stderr == nil {
		stderr = os.Stderr
	}
	// Ctrl-C (or SIGTERM) stops the render within one batch and leaves no
	// output file.
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := musetalk.New(ctx, musetalk.Options{
		WeightsDir: c.String("weights"), NewBackend: device.open, CRF: c.Int("crf"),
		CacheDir: c.String("avatar-cache"), CacheMaxBytes: c.Int64("avatar-cache-max-bytes"), Logger: log,
	})
	if err != nil {
		return err
	}
	defer r.Close()
	bar := newProgressBar(stderr)
	err = r.Render(ctx, musetalk.Request{AvatarPath: c.String("avatar"), AudioPath: c.String("audio"), OutPath: out, Params: params}, bar.Update)
	bar.Done()
	if err != nil {
		if ctx.Err() != nil {
			return cli.Exit("musetalk: render interrupted; no output written", interruptedExit)
		}
		var ie *musetalk.InputError
		if errors.As(err, &ie) {
			return fmt.Errorf("bad input: %w", flagError(err))
		}
		return fmt.Errorf("render: %w", err)
	}
	fmt.Fprintf(c.App.Writer, "wrote %s\n", out)
	return nil
}
