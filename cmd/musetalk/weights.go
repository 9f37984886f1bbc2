package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/musetalk/model"
	"github.com/avatargen/musetalk/musetalk/model/weights"
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
		}},
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
