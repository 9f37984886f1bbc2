package main

import (
	"fmt"
	"io"
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
whisper-tiny's pytorch_model.bin (or safetensors, or the s3fd and BiSeNet
checkpoints), maps legacy names (the VAE's query/key/value/proj_attn,
Whisper's model. prefix, its decoder dropped) and writes safetensors.
For unet, vae and whisper the tensors are checked against the network's
full-size spec first: a missing or misshapen tensor is named and nothing
is written.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "kind", Value: "auto", Usage: "auto, unet, vae, whisper, s3fd or bisenet"},
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
VAE from the Hugging Face hub, Whisper-tiny, BiSeNet and S3FD. Downloads
resume where an interrupted run stopped, are checked against the pinned
or hub-declared sha256 and only then put in place. Set HF_ENDPOINT or
--endpoint to use a hub mirror.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Value: modeldir.Default(), Usage: "the weight directory", EnvVars: []string{"MUSETALK_WEIGHTS"}},
			&cli.StringSliceFlag{Name: "version", Value: cli.NewStringSlice(modeldir.V15), Usage: "MuseTalk versions whose UNet to fetch: v15, v1 or both (v15,v1)"},
			&cli.StringFlag{Name: "endpoint", Usage: "Hugging Face hub URL (default: $HF_ENDPOINT, else " + modeldir.DefaultEndpoint + ")"},
		},
		Action: runWeightsFetch,
	}
}

func runWeightsFetch(c *cli.Context) error {
	dir := c.String("dir")
	if dir == "" {
		return fmt.Errorf("weights fetch: --dir is empty")
	}
	versions, err := parseVersions(c.StringSlice("version"))
	if err != nil {
		return err
	}
	show := newFetchDisplay(c.App.ErrWriter, isTerminal(c.App.ErrWriter), time.Now)
	err = modeldir.Fetch(c.Context, dir, modeldir.FetchOptions{
		Versions: versions,
		Endpoint: c.String("endpoint"),
		Progress: show.update,
	})
	show.finish()
	if err != nil {
		return fmt.Errorf("weights fetch: %w", err)
	}
	d := modeldir.Dir(dir)
	if err := d.Check(versions...); err != nil {
		return err
	}
	id, err := d.ID(versions...)
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
// per file redrawn in place with bytes done and total; elsewhere plain
// lines when a file starts, at each quarter and when it is done.
type fetchDisplay struct {
	w   io.Writer
	tty bool
	now func() time.Time

	file    string    // the file on the current line (tty) or last started
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
	case modeldir.FetchDownload:
		if p.File != d.file {
			d.endLine()
			d.file, d.quarter = p.File, -1
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
			fmt.Fprintf(d.w, "\r\x1b[K%s  %s / %s%s", p.File, humanBytes(p.Done), sizeOf(p.Total), percent(p.Done, p.Total))
			d.open = true
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
			fmt.Fprintf(d.w, "\r\x1b[K%s  %s  verifying", p.File, humanBytes(p.Done))
			d.open = true
		}
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

// endLine ends a line left open on a terminal.
func (d *fetchDisplay) endLine() {
	if d.open {
		fmt.Fprintln(d.w)
		d.open = false
	}
}

// finish ends the display (an interrupted download leaves its line open).
func (d *fetchDisplay) finish() { d.endLine() }

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
give 32×32 latents) and Whisper encoder (30 s windows still work), and
full-structure S3FD and BiSeNet. Everything runs fast; the output is noise.
The same seed writes the same files.`,
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
