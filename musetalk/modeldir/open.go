package modeldir

import (
	"errors"
	"fmt"

	"github.com/avatargen/musetalk/musetalk/model"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// UNetConfig reads the musetalk.json of version's UNet.
func (d Dir) UNetConfig(version string) (weights.UNetConfig, error) {
	p, err := d.configPath(weights.KindUNet, version)
	if err != nil {
		return weights.UNetConfig{}, err
	}
	c, err := weights.LoadUNetConfig(p)
	if err != nil {
		return weights.UNetConfig{}, err
	}
	return *c, nil
}

// VAEConfig reads the VAE's config.json.
func (d Dir) VAEConfig() (weights.VAEConfig, error) {
	p, err := d.configPath(weights.KindVAE, V15)
	if err != nil {
		return weights.VAEConfig{}, err
	}
	c, err := weights.LoadVAEConfig(p)
	if err != nil {
		return weights.VAEConfig{}, err
	}
	return *c, nil
}

// WhisperConfig reads the Whisper encoder's config.json.
func (d Dir) WhisperConfig() (weights.WhisperConfig, error) {
	p, err := d.configPath(weights.KindWhisper, V15)
	if err != nil {
		return weights.WhisperConfig{}, err
	}
	c, err := weights.LoadWhisperConfig(p)
	if err != nil {
		return weights.WhisperConfig{}, err
	}
	return *c, nil
}

func (d Dir) configPath(kind weights.Kind, version string) (string, error) {
	f, err := fileOf(kind, version, false)
	if err != nil {
		return "", err
	}
	return d.Resolve(f)
}

// Source is an open weight file serving tensors under the names the model
// code uses ([weights.MapNames]: the VAE's legacy attention names and
// Whisper's "model." prefix are mapped). It is safe for concurrent use,
// except Close.
type Source struct {
	r    *weights.MappedReader
	path string
}

var _ model.HalfTensors = (*Source)(nil)

// Open opens the weight file of kind (for [weights.KindUNet], version's
// UNet; other kinds ignore version), preferring its safetensors form.
func (d Dir) Open(kind weights.Kind, version string) (*Source, error) {
	f, err := fileOf(kind, version, true)
	if err != nil {
		return nil, err
	}
	p, err := d.Resolve(f)
	if err != nil {
		return nil, err
	}
	r, err := weights.OpenMapped(p, kind)
	if err != nil {
		return nil, fmt.Errorf("opening %s weights: %w", kind, err)
	}
	return &Source{r: r, path: p}, nil
}

// Path returns the file the source reads.
func (s *Source) Path() string { return s.path }

// Tensor implements [model.Tensors]: the named tensor as float32 (F16 and
// other stored types are converted).
func (s *Source) Tensor(name string) ([]float32, []int, error) {
	t, err := s.r.ReadFloat32(name)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", s.path, err)
	}
	return t.Data, t.Shape, nil
}

// TensorF16 implements [model.HalfTensors]: the bits of a tensor the file
// stores as F16, unconverted (viewing the file's mapping where it can:
// valid until Close). ok is false for any other dtype, a missing name (Tensor
// reports it) and a file format that cannot serve the bits (a PyTorch
// checkpoint).
func (s *Source) TensorF16(name string) ([]uint16, []int, bool, error) {
	info, found := s.r.Info(name)
	if !found || info.DType != weights.F16 {
		return nil, nil, false, nil
	}
	bits, err := s.r.ReadF16(name)
	if errors.Is(err, weights.ErrUnsupported) {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, fmt.Errorf("%s: %w", s.path, err)
	}
	return bits, info.Shape, true, nil
}

// Close releases the file (and its mapping). Tensors read earlier with
// Tensor stay valid; bits from TensorF16 must not be used afterwards.
func (s *Source) Close() error { return s.r.Close() }
