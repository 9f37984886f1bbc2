package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/control/client"
	"github.com/avatargen/musetalk/protocol"
)

// interruptedExit is the exit status after Ctrl-C, as shells report it.
const interruptedExit = 130

// cancelTimeout bounds the cancel call of --cancel-on-interrupt.
const cancelTimeout = 15 * time.Second

func submitCommand() *cli.Command {
	return &cli.Command{
		Name:      "submit",
		Usage:     "submit a lip-sync job, wait for it with a progress bar, download the result",
		UsageText: "musetalk submit --avatar FACE --audio SPEECH --out RESULT.mp4 [options]\nmusetalk submit --job ID --out RESULT.mp4",
		Description: `Uploads the avatar (a video or a still image) and the speech track to the
control plane, shows the job's progress on stderr, and writes the result
to --out once the job has succeeded. A job that fails or is cancelled ends
the command with the server's message and a non-zero status.

A control plane that is not answering yet (just started with
'musetalk up &') is waited for, at most --wait-for-control (default 1m),
before anything is uploaded.

Ctrl-C while waiting stops waiting, not the job: the job id is printed and
'musetalk submit --job ID --out FILE' fetches it later. With
--cancel-on-interrupt, Ctrl-C cancels the job as well.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "avatar", Usage: "the face: a video or a still image", TakesFile: true},
			&cli.StringFlag{Name: "audio", Usage: "the speech track", TakesFile: true},
			&cli.StringFlag{Name: "out", Usage: "where to write the result (MP4); required unless --no-wait", TakesFile: true},
			&cli.StringFlag{Name: "job", Usage: "wait for and download this existing job instead of submitting one"},
			&cli.StringFlag{Name: "control", Value: defaultControlURL, Usage: "URL of the control plane", EnvVars: []string{"MUSETALK_CONTROL_URL"}},
			&cli.StringFlag{Name: "api-key", Usage: "key of the public API, when it needs one", EnvVars: []string{"MUSETALK_API_KEY"}},
			&cli.DurationFlag{Name: "wait-for-control", Value: time.Minute, Usage: "how long to wait for a control plane that does not answer yet (0: fail at once)", EnvVars: []string{"MUSETALK_WAIT_FOR_CONTROL"}},
			&cli.StringFlag{Name: "engine", Usage: "engine that renders the job: musetalk or preview (default: the worker's)"},
			&cli.StringFlag{Name: "version", Usage: "MuseTalk version: v15 or v1 (default v15)"},
			&cli.StringFlag{Name: "fps", Usage: "output frame rate, e.g. 25 or 30000/1001 (default: the avatar's)"},
			&cli.StringFlag{Name: "face-box", Usage: "face box x1,y1,x2,y2 in pixels, instead of face detection"},
			&cli.StringFlag{Name: "face-detector", Usage: "how the face box is found without --face-box: dwpose (MuseTalk's box from DWPose's face landmarks, S3FD's where they give none) or s3fd (S3FD's box)", DefaultText: "dwpose"},
			&cli.IntFlag{Name: "batch-size", Usage: "frames per UNet/VAE batch", DefaultText: "20"},
			&cli.IntFlag{Name: "bbox-shift", Usage: "v1: move the face box's upper edge, in pixels"},
			&cli.IntFlag{Name: "extra-margin", Usage: "v1.5: extend the face box downwards, in pixels", DefaultText: "10"},
			&cli.StringFlag{Name: "parsing-mode", Usage: "v1.5 blend mask: jaw or raw (default jaw)"},
			&cli.IntFlag{Name: "priority", Usage: "-100..100, higher runs first"},
			&cli.StringFlag{Name: "idempotency-key", Usage: "submitting again with the same key returns the first job instead of a new one"},
			&cli.BoolFlag{Name: "no-wait", Usage: "print the job id on stdout and return at once"},
			&cli.BoolFlag{Name: "cancel-on-interrupt", Usage: "cancel the job on Ctrl-C instead of leaving it running"},
		},
		Action: runSubmit,
	}
}

func runSubmit(c *cli.Context) error {
	start := time.Now()
	if err := checkSubmitFlags(c); err != nil {
		return err
	}
	params, err := paramsFromFlags(c)
	if err != nil {
		return err
	}
	cl, err := client.New(c.String("control"), c.String("api-key"))
	if err != nil {
		return fmt.Errorf("--control: %w", err)
	}
	stderr := errWriter(c)
	jobID, out := c.String("job"), c.String("out")

	// Ctrl-C (or SIGTERM) ends the upload, the wait or the download, not
	// the process.
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := waitForControl(ctx, cl, c.Duration("wait-for-control"), stderr); err != nil {
		if ctx.Err() != nil {
			return cli.Exit("musetalk: interrupted while waiting for the control plane; no job was created", interruptedExit)
		}
		return err
	}
	if jobID == "" {
		job, err := cl.Submit(ctx, client.SubmitRequest{
			AvatarPath: c.String("avatar"), AudioPath: c.String("audio"), Params: params,
			IdempotencyKey: c.String("idempotency-key"), Priority: c.Int("priority"),
		})
		if err != nil {
			if ctx.Err() != nil {
				return cli.Exit("musetalk: interrupted during the upload; no job was created", interruptedExit)
			}
			return err
		}
		jobID = job.ID
		if c.Bool("no-wait") {
			fmt.Fprintln(c.App.Writer, jobID)
			return nil
		}
		fmt.Fprintf(stderr, "submitted job %s\n", jobID)
	} else {
		fmt.Fprintf(stderr, "waiting for job %s\n", jobID)
	}

	final, err := waitWithProgress(ctx, cl, jobID, stderr)
	if ctx.Err() != nil && !final.State.Final() {
		stop()
		return interrupted(c, cl, jobID, out)
	}
	if err != nil {
		return err // a *client.JobError names the job, its state and the server's message
	}
	n, err := cl.DownloadFile(ctx, jobID, out)
	if err != nil {
		if ctx.Err() != nil {
			// The job is done; only the download stopped, leaving nothing.
			return cli.Exit(fmt.Sprintf("musetalk: interrupted during the download; job %s has succeeded, fetch it with:\n  %s",
				jobID, fetchCommand(c, jobID, out)), interruptedExit)
		}
		return err
	}
	fmt.Fprintf(stderr, "wrote %s (%s) in %s\n", out, formatBytes(n), formatDuration(time.Since(start)))
	return nil
}

// waitForControl waits up to maxWait for the control plane to answer,
// saying once on stderr that it is waiting.
func waitForControl(ctx context.Context, cl *client.Client, maxWait time.Duration, stderr io.Writer) error {
	said := false
	err := cl.WaitReachable(ctx, maxWait, func(err error) {
		if !said {
			said = true
			fmt.Fprintf(stderr, "waiting up to %s for the control plane at %s (is `musetalk up` running?)\n", maxWait.Round(time.Second), cl.BaseURL())
		}
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("%w\nstart one with `musetalk up`, or point --control (MUSETALK_CONTROL_URL) at a running one", err)
	}
	return err
}

// checkSubmitFlags checks the flags that do not make the job's parameters:
// what to submit or fetch, and where the result goes.
func checkSubmitFlags(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: files are given with --avatar and --audio", c.Args().Slice())
	}
	jobID, out, noWait := c.String("job"), c.String("out"), c.Bool("no-wait")
	switch {
	case jobID != "" && (c.IsSet("avatar") || c.IsSet("audio")):
		return errors.New("--job fetches an existing job: leave out --avatar and --audio")
	case jobID != "" && noWait:
		return errors.New("--job with --no-wait does nothing")
	case jobID == "" && (c.String("avatar") == "" || c.String("audio") == ""):
		return errors.New("--avatar and --audio are required (or --job to fetch an existing job)")
	case out == "" && !noWait:
		return errors.New("--out is required: where to write the result (or --no-wait to only submit)")
	case jobID != "" && !protocol.ValidID(jobID):
		return fmt.Errorf("--job %q: not a valid job id", jobID)
	}
	// The inputs are read before anything waits for the server.
	for _, name := range []string{"avatar", "audio"} {
		if p := c.String(name); p != "" {
			if st, err := os.Stat(p); err != nil {
				return fmt.Errorf("--%s: %w", name, err)
			} else if st.IsDir() {
				return fmt.Errorf("--%s %s: is a directory", name, p)
			}
		}
	}
	if out != "" {
		return checkOutDir(out)
	}
	return nil
}

// waitWithProgress waits for the job with a progress bar on w, redrawn
// every second so that the elapsed time moves between updates.
func waitWithProgress(ctx context.Context, cl *client.Client, jobID string, w io.Writer) (protocol.JobView, error) {
	bar := newProgressBar(w)
	defer bar.Done()
	ticking := make(chan struct{})
	defer close(ticking)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ticking:
				return
			case <-t.C:
				bar.Refresh()
			}
		}
	}()
	return cl.Wait(ctx, jobID, func(v protocol.JobView) { bar.Update(jobProgress(v)) })
}

// errWriter is where the command's messages go: the app's ErrWriter, or
// stderr.
func errWriter(c *cli.Context) io.Writer {
	if c.App.ErrWriter != nil {
		return c.App.ErrWriter
	}
	return os.Stderr
}

// interrupted handles Ctrl-C while waiting: the job goes on unless
// --cancel-on-interrupt asks to cancel it.
func interrupted(c *cli.Context, cl *client.Client, jobID, out string) error {
	stderr := errWriter(c)
	if c.Bool("cancel-on-interrupt") {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Context), cancelTimeout)
		defer cancel()
		job, err := cl.Cancel(ctx, jobID)
		if err != nil {
			return cli.Exit(fmt.Sprintf("musetalk: interrupted; cancelling job %s failed: %v", jobID, err), interruptedExit)
		}
		return cli.Exit(fmt.Sprintf("musetalk: interrupted; job %s is %s", jobID, job.State), interruptedExit)
	}
	fmt.Fprintf(stderr, "stopped waiting; job %s goes on. Its state: %s\nFetch the result later with:\n  %s\n",
		jobID, cl.JobURL(jobID), fetchCommand(c, jobID, out))
	return cli.Exit("", interruptedExit)
}

// fetchCommand is the command line that waits for the job again and
// downloads it.
func fetchCommand(c *cli.Context, jobID, out string) string {
	cmd := "musetalk submit --job " + jobID + " --out " + out
	if ctl := c.String("control"); ctl != defaultControlURL {
		cmd += " --control " + ctl
	}
	return cmd
}

// jobProgress is what the progress bar shows for a job: the worker's
// progress while it runs, else the job's state.
func jobProgress(v protocol.JobView) protocol.Progress {
	if v.State == protocol.JobRunning && v.Progress != nil {
		return *v.Progress
	}
	stage := string(v.State)
	switch {
	case v.State == protocol.JobQueued && v.Attempt > 0:
		stage = fmt.Sprintf("queued for attempt %d", v.Attempt+1)
	case v.State == protocol.JobRunning:
		stage = "starting"
	}
	return protocol.Progress{Stage: stage}
}

// paramsFromFlags builds the job parameters from the flags and checks them
// as the server would.
func paramsFromFlags(c *cli.Context) (protocol.JobParams, error) {
	p := protocol.JobParams{
		Engine:       c.String("engine"),
		Version:      c.String("version"),
		BBoxShift:    c.Int("bbox-shift"),
		ExtraMargin:  c.Int("extra-margin"),
		ParsingMode:  c.String("parsing-mode"),
		FPS:          c.String("fps"),
		BatchSize:    c.Int("batch-size"),
		FaceDetector: c.String("face-detector"),
	}
	if s := c.String("face-box"); s != "" {
		box, err := parseFaceBox(s)
		if err != nil {
			return p, err
		}
		p.FaceBox = box
	}
	if err := p.Validate(); err != nil {
		return p, flagError(err)
	}
	return p, nil
}

// flagError names the flag behind a bad job parameter: the libraries name
// the API's fields (params.batch_size), which a command-line user never
// typed. Other errors pass through.
func flagError(err error) error {
	var pe *protocol.ParamError
	if errors.As(err, &pe) {
		return fmt.Errorf("--%s: %w", strings.ReplaceAll(pe.Field, "_", "-"), pe.Err)
	}
	return err
}

// parseFaceBox reads "x1,y1,x2,y2".
func parseFaceBox(s string) ([]int, error) {
	fields := strings.Split(s, ",")
	if len(fields) != 4 {
		return nil, fmt.Errorf("--face-box %q: want four integers x1,y1,x2,y2", s)
	}
	box := make([]int, 4)
	for i, f := range fields {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("--face-box %q: %q is not an integer", s, f)
		}
		box[i] = v
	}
	return box, nil
}

// checkOutDir fails early, before an upload, when the result could not be
// written: its directory is missing, or out names a directory.
func checkOutDir(out string) error {
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		return fmt.Errorf("--out %s: is a directory; name the result file", out)
	}
	dir := filepath.Dir(out)
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("--out %s: %w", out, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("--out %s: %s is not a directory", out, dir)
	}
	return nil
}

// formatBytes writes n with a binary unit.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 3 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGT"[i])
}
