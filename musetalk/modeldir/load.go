package modeldir

import (
	"context"
	"fmt"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/musetalk/model"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// Models are the networks of one MuseTalk version, loaded on a backend.
// Close releases them all.
type Models struct {
	// Version is the MuseTalk version of the UNet.
	Version string
	// ID is the weight directory's fingerprint for Version ([Dir.ID]).
	ID string

	UNet    *model.UNet
	VAE     *model.VAE
	Whisper *model.WhisperEncoder
	S3FD    *model.S3FD
	BiSeNet *model.BiSeNet
	DWPose  *model.DWPose
}

// Close releases every network's weights on the backend. The networks must
// not be used afterwards. Closing twice is harmless.
func (m *Models) Close() {
	if m.UNet != nil {
		m.UNet.Close()
	}
	if m.VAE != nil {
		m.VAE.Close()
	}
	if m.Whisper != nil {
		m.Whisper.Close()
	}
	if m.S3FD != nil {
		m.S3FD.Close()
	}
	if m.BiSeNet != nil {
		m.BiSeNet.Close()
	}
	if m.DWPose != nil {
		m.DWPose.Close()
	}
	*m = Models{Version: m.Version, ID: m.ID}
}

// Load builds every network of version (UNet, VAE, Whisper encoder, S3FD,
// BiSeNet, DWPose, whose size is read from its tensors) on b from d. It first runs [Dir.Check], so a missing file is a
// *[MissingError] naming the fetch command; a malformed config or a
// missing or misshapen tensor is an error naming the file. Load stops
// between networks when ctx is done and returns its cause. On error
// nothing stays allocated on b.
func (d Dir) Load(ctx context.Context, b kernels.Backend, version string) (*Models, error) {
	if err := d.Check(version); err != nil {
		return nil, err
	}
	id, err := d.ID(version)
	if err != nil {
		return nil, err
	}
	m := &Models{Version: version, ID: id}
	steps := []struct {
		kind  weights.Kind
		build func(src model.Tensors) error
	}{
		{weights.KindWhisper, func(src model.Tensors) error {
			cfg, err := d.WhisperConfig()
			if err == nil {
				m.Whisper, err = model.NewWhisperEncoder(b, cfg, src)
			}
			return err
		}},
		{weights.KindVAE, func(src model.Tensors) error {
			cfg, err := d.VAEConfig()
			if err == nil {
				m.VAE, err = model.NewVAE(b, cfg, src)
			}
			return err
		}},
		{weights.KindUNet, func(src model.Tensors) error {
			cfg, err := d.UNetConfig(version)
			if err == nil {
				m.UNet, err = model.NewUNet(b, cfg, src)
			}
			return err
		}},
		{weights.KindS3FD, func(src model.Tensors) (err error) {
			m.S3FD, err = model.NewS3FD(b, src)
			return err
		}},
		{weights.KindBiSeNet, func(src model.Tensors) (err error) {
			m.BiSeNet, err = model.NewBiSeNet(b, src)
			return err
		}},
		{weights.KindDWPose, func(src model.Tensors) error {
			cfg, err := model.InferDWPoseConfig(src)
			if err == nil {
				m.DWPose, err = model.NewDWPose(b, cfg, src)
			}
			return err
		}},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			m.Close()
			return nil, context.Cause(ctx)
		}
		if err := d.build(s.kind, version, s.build); err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

// build opens the weight file of kind, hands it to fn and closes it.
func (d Dir) build(kind weights.Kind, version string, fn func(model.Tensors) error) error {
	src, err := d.Open(kind, version)
	if err != nil {
		return fmt.Errorf("loading %s: %w", kind, err)
	}
	err = fn(src)
	if cerr := src.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("loading %s from %s: %w", kind, src.Path(), err)
	}
	return nil
}
