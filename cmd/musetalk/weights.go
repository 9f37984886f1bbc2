package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/musetalk/model"
	"github.com/avatargen/musetalk/musetalk/model/weights"
	"github.com/avatargen/musetalk/musetalk/modeldir"
)

func weightsCommand() *cli.Command {
	return &cli.Command{
		Name:  "weights",
		Usage: "prepare model weights",
		Subcommands: []*cli.Command{{
			Name:      "convert",
			Usage:     "convert an official checkpoint (PyTorch .pth/.bin or safetensors) to safetensors",
			ArgsUsage: "SRC DST",
			Description: `Reads MuseTalk's unet.pth, sd-vae-ft-mse's diffusion_pytorch_model.bin,
whisper-tiny's pytorch_model.bin, DWPose's dw-ll_ucoco_384.pth (or
safetensors, or the s3fd and BiSeNet checkpoints), maps legacy names (the
VAE's query/key/value/proj_attn, Whisper's model. prefix, its decoder
dropped; DWPose's state dict is taken out of the mmengine checkpoint, its
BatchNorm buffers kept) and writes safetensors. For unet, vae, whisper and
dwpose the tensors are checked against the network's full-size spec first:
a missing or misshapen tensor is named and nothing is written.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "kind", Value: "auto", Usage: "auto, unet, vae, whisper, s3fd, bisenet or dwpose"},
				&cli.BoolFlag{Name: "fp16", Usage: "store floating-point tensors as float16"},
				&cli.BoolFlag{Name: "no-check", Usage: "skip the check against the network's spec"},
				&cli.BoolFlag{Name: "drop-unexpected", Usage: "drop tensors the network does not use instead of failing"},
			},
			Action: runWeightsConvert,
		}, weightsFetchCommand(), weightsTinyCommand()},
	}
}

func runWeightsConvert(c *cli.Context) error {
	if c.NArg() != 2 {
		return fmt.Errorf("weights convert: want SRC and DST, got %d arguments", c.NArg())
	}
	src, dst := c.Args().Get(0), c.Args().Get(1)
	kind, err := weights.ParseKind(c.String("kind"))
	if err != nil {
		return fmt.Errorf("--kind: %w", err)
	}
	if kind == weights.KindAuto {
		m, err := weights.OpenMapped(src, weights.KindAuto)
		if err != nil {
			return fmt.Errorf("reading %s: %w", src, err)
		}
		kind = m.Kind()
		m.Close()
	}
	opts := weights.ConvertOptions{Kind: kind, FP16: c.Bool("fp16"), DropUnexpected: c.Bool("drop-unexpected")}
	if !c.Bool("no-check") {
		if opts.Expect, err = fullSizeSpec(kind); err != nil {
			return err
		}
	}
	res, err := weights.Convert(c.Context, src, dst, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s: %d %s tensors from %s, %d bytes", dst, res.Tensors, res.Kind, res.Format, res.Bytes)
	if len(res.Dropped) > 0 {
		fmt.Fprintf(c.App.Writer, " (%d dropped)", len(res.Dropped))
	}
	fmt.Fprintln(c.App.Writer)
	return nil
}

// fullSizeSpec is the tensor list the full-size network of kind expects, or
// nil where the project has no network for it yet.
func fullSizeSpec(kind weights.Kind) ([]weights.TensorSpec, error) {
	var spec []model.TensorSpec
	var err error
	switch kind {
	case weights.KindUNet:
		spec, err = model.UNetSpec(model.MuseTalkUNetConfig())
	case weights.KindVAE:
		spec, err = model.VAESpec(model.SDVAEConfig())
	case weights.KindWhisper:
		spec = model.WhisperEncoderSpec(model.DefaultWhisperConfig())
	case weights.KindDWPose:
		spec = modeldir.DWPoseSpec()
	default:
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("building the %s spec: %w", kind, err)
	}
	out := make([]weights.TensorSpec, len(spec))
	for i, s := range spec {
		out[i] = weights.TensorSpec(s)
	}
	return out, nil
}

func weightsFetchCommand() *cli.Command {
	return &cli.Command{
		Name:  "fetch",
		Usage: "download the official weights into a weight directory",
		Description: `Downloads every file the given MuseTalk versions need that the directory
lacks (in neither its official nor its safetensors form): the UNet(s) and
VAE from the Hugging Face hub, Whisper-tiny, BiSeNet, DWPose (yzd-v/DWPose,
as MuseTalk's download script gets it) and S3FD. Downloads
resume where an interrupted run stopped, are checked against the pinned
or hub-declared sha256 and only then put in place. Set HF_ENDPOINT or
--endpoint to use a hub mirror, and --s3fd-url for S3FD's checkpoint,
which comes from its own address and is checked against its pinned sha256
wherever it comes from.

A failure that no retry can fix (a name that does not resolve, a refused
connection, a certificate error, a 401, 403 or 404) ends the file at once,
and a host that cannot be reached is asked for nothing more.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "dir", Value: modeldir.Default(), Usage: "the weight directory", EnvVars: []string{"MUSETALK_WEIGHTS"}},
			&cli.StringSliceFlag{Name: "version", Value: cli.NewStringSlice(modeldir.V15), Usage: "MuseTalk versions whose UNet to fetch: v15, v1 or both (v15,v1)"},
		}, weightSourceFlags()...),
		Action: runWeightsFetch,
	}
}

// weightSourceFlags say where weights are downloaded from; `weights fetch`
// and `up` (which fetches missing weights at start) share them.
func weightSourceFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "endpoint", Usage: "Hugging Face hub URL, e.g. a mirror's", DefaultText: "$HF_ENDPOINT, else " + modeldir.DefaultEndpoint},
		&cli.StringFlag{Name: "s3fd-url", Usage: "where to download S3FD's checkpoint from, e.g. a mirror's copy (it is not on the hub, so --endpoint does not move it); checked against its pinned sha256 wherever it comes from", DefaultText: modeldir.DefaultS3FDURL, EnvVars: []string{"MUSETALK_S3FD_URL"}},
	}
}

// weightSource is where missing weights come from (weightSourceFlags).
type weightSource struct {
	endpoint string // "" means $HF_ENDPOINT, else the hub
	s3fdURL  string // "" means the official address
}

func weightSourceFrom(c *cli.Context) weightSource {
	return weightSource{endpoint: c.String("endpoint"), s3fdURL: c.String("s3fd-url")}
}

// fetchWeights downloads into dir the files of versions that it lacks,
// from src, showing the progress on stderr (one redrawn line on a
// terminal, plain lines otherwise), then checks the directory. Both
// `weights fetch` and `up` fetch through it; what to do after a failure
// is the caller's to say.
func fetchWeights(ctx context.Context, stderr io.Writer, dir string, versions []string, src weightSource) error {
	show := newFetchDisplay(stderr, isTerminal(stderr), time.Now)
	err := modeldir.Fetch(ctx, dir, modeldir.FetchOptions{
		Versions: versions,
		Endpoint: src.endpoint,
		S3FDURL:  src.s3fdURL,
		Progress: show.update,
	})
	show.finish()
	if err != nil {
		return err
	}
	return modeldir.Dir(dir).Check(versions...)
}

// fetchAlternatives ends the error of a failed `weights fetch`.
const fetchAlternatives = `Other ways on:
  a Hugging Face mirror:  --endpoint URL (or HF_ENDPOINT=URL), with --s3fd-url URL for S3FD's checkpoint
  tiny random weights:    musetalk weights tiny --out DIR (the whole pipeline runs; the mouth region is noise)
  no weights at all:      musetalk up --engine preview (the service with the preview engine)`

func runWeightsFetch(c *cli.Context) error {
	dir := c.String("dir")
	if dir == "" {
		return fmt.Errorf("weights fetch: --dir is empty")
	}
	versions, err := parseVersions(c.StringSlice("version"))
	if err != nil {
		return err
	}
	if err := fetchWeights(c.Context, c.App.ErrWriter, dir, versions, weightSourceFrom(c)); err != nil {
		if c.Context.Err() != nil {
			return fmt.Errorf("weights fetch: %w", err)
		}
		return fmt.Errorf("weights fetch: %w\n%s", err, fetchAlternatives)
	}
	id, err := modeldir.Dir(dir).ID(versions...)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "weights for %s ready in %s (id %s)\n", strings.Join(versions, ", "), dir, id)
	return nil
}

// parseVersions splits and checks --version values ("v15,v1" or repeated
// flags), dropping duplicates.
func parseVersions(values []string) ([]string, error) {
	var out []string
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" || slices.Contains(out, p) {
				continue
			}
			if err := modeldir.CheckVersion(p); err != nil {
				return nil, fmt.Errorf("--version: %w", err)
			}
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--version: no version given")
	}
	return out, nil
}

// fetchDisplay shows [modeldir.Fetch]'s progress: on a terminal one line
// per file redrawn in place (the host it connects to, then a bar with
// bytes done and total); elsewhere plain lines when a file starts, when
// its bytes start to arrive, at each quarter, at a retry and when it is
// done or failed. Present files get a line each.
type fetchDisplay struct {
	w   io.Writer
	tty bool
	now func() time.Time

	file    string    // the file being fetched
	started bool      // plain: its "downloading" line is out (since the start or the last retry)
	quarter int       // plain: the last quarter printed for file
	drawn   time.Time // tty: when the line was last drawn
	open    bool      // tty: a line is on screen without its newline
}

func newFetchDisplay(w io.Writer, tty bool, now func() time.Time) *fetchDisplay {
	return &fetchDisplay{w: w, tty: tty, now: now}
}

func (d *fetchDisplay) update(p modeldir.FetchProgress) {
	switch p.Phase {
	case modeldir.FetchPresent:
		d.endLine()
		fmt.Fprintf(d.w, "%s: present\n", p.File)
	case modeldir.FetchStart:
		d.endLine()
		d.file, d.started, d.quarter = p.File, false, -1
		if d.tty {
			d.redraw(fmt.Sprintf("%s  connecting to %s", p.File, urlHost(p.URL)))
		} else {
			fmt.Fprintf(d.w, "%s: fetching %s\n", p.File, p.URL)
		}
	case modeldir.FetchDownload:
		if p.File != d.file {
			d.endLine()
			d.file, d.started, d.quarter = p.File, false, -1
		}
		if !d.started {
			d.started = true
			if !d.tty {
				fmt.Fprintf(d.w, "%s: downloading %s\n", p.File, sizeOf(p.Total))
				if p.Done > 0 {
					fmt.Fprintf(d.w, "%s: resuming at %s\n", p.File, humanBytes(p.Done))
				}
			}
		}
		if d.tty {
			now := d.now()
			if d.open && now.Sub(d.drawn) < 100*time.Millisecond && p.Done != p.Total {
				return // at most ten redraws a second
			}
			d.drawn = now
			d.redraw(fmt.Sprintf("%s %s%s / %s%s", p.File, bytesBar(p.Done, p.Total), humanBytes(p.Done), sizeOf(p.Total), percent(p.Done, p.Total)))
			return
		}
		if p.Total > 0 {
			if q := int(4 * p.Done / p.Total); q > d.quarter && q < 4 {
				d.quarter = q
				if q > 0 {
					fmt.Fprintf(d.w, "%s: %s of %s%s\n", p.File, humanBytes(p.Done), humanBytes(p.Total), percent(p.Done, p.Total))
				}
			}
		}
	case modeldir.FetchVerify:
		if d.tty {
			d.redraw(fmt.Sprintf("%s  %s  verifying", p.File, humanBytes(p.Done)))
		}
	case modeldir.FetchRetry:
		d.endLine()
		d.started = false
		fmt.Fprintf(d.w, "%s: attempt %d failed (%v); trying again\n", p.File, p.Attempt, p.Err)
	case modeldir.FetchFailed:
		if d.open { // replace the file's line: the error follows at the end
			fmt.Fprint(d.w, "\r\x1b[K")
			d.open = false
		}
		fmt.Fprintf(d.w, "%s: failed\n", p.File)
		d.file = ""
	case modeldir.FetchDone:
		d.endLine()
		check := "no checksum known"
		if p.Verified != "" {
			check = p.Verified + " verified"
		}
		fmt.Fprintf(d.w, "%s: %s, %s\n", p.File, humanBytes(p.Done), check)
		d.file = ""
	}
}

// redraw replaces the terminal line with s.
func (d *fetchDisplay) redraw(s string) {
	fmt.Fprint(d.w, "\r\x1b[K"+s)
	d.open = true
}

// endLine ends a line left open on a terminal.
func (d *fetchDisplay) endLine() {
	if d.open {
		fmt.Fprintln(d.w)
		d.open = false
	}
}

// finish ends the display (an interrupted download leaves its line open).
func (d *fetchDisplay) finish() { d.endLine() }

// bytesBar draws done of total as the progress bar's cells followed by a
// space, or only the space while the total is unknown.
func bytesBar(done, total int64) string {
	if total <= 0 {
		return " "
	}
	full := int(min(done, total) * progressBarWidth / total)
	return "[" + strings.Repeat("#", full) + strings.Repeat(".", progressBarWidth-full) + "] "
}

// urlHost is the host of a URL, or the URL itself if it has none.
func urlHost(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Host
	}
	return raw
}

func sizeOf(n int64) string {
	if n < 0 {
		return "? bytes"
	}
	return humanBytes(n)
}

func percent(done, total int64) string {
	if total <= 0 {
		return ""
	}
	return fmt.Sprintf(" (%d%%)", 100*done/total)
}

// humanBytes formats n with binary units: 512 B, 3.4 GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), 0
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGT"[i-1])
}

func weightsTinyCommand() *cli.Command {
	return &cli.Command{
		Name:  "tiny",
		Usage: "write seeded random weights of tiny networks, for tests and demos",
		Description: `Writes a complete weight directory in the official layout with seeded
random weights: tiny UNets for v15 and v1, a tiny VAE (256×256 crops still
give 32×32 latents) and Whisper encoder (30 s windows still work),
full-structure S3FD and BiSeNet, and DWPose's structure at an eighth of its
width. Everything runs fast. A render with them replaces the lower half of
the face box with the random networks' noise and leaves the rest of the
frame as it was. The tiny DWPose draws a fixed schematic face whatever the
picture, which MuseTalk's landmark rules turn into the box
(0.36, 0.18)-(0.64, 0.62) of a square frame (182,91,328,317 on a 512x512
one); the random S3FD's box (--face-detector s3fd, or where S3FD finds a
face and the landmarks give no box) is arbitrary (preparation warns when it
touches the frame's edge). Give --face-box x1,y1,x2,y2 for a box of your
own. The same seed writes the same files.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "the directory to write (created if needed)", Required: true},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the random weights"},
		},
		Action: runWeightsTiny,
	}
}

func runWeightsTiny(c *cli.Context) error {
	out := c.String("out")
	if out == "" {
		return fmt.Errorf("weights tiny: --out is empty")
	}
	if err := modeldir.WriteTiny(out, c.Uint64("seed")); err != nil {
		return err
	}
	id, err := modeldir.Dir(out).ID(modeldir.Versions()...)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "tiny weights for %s written to %s (id %s)\n", strings.Join(modeldir.Versions(), " and "), out, id)
	return nil
}
