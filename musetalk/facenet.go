package musetalk

import (
	"context"
	"fmt"
	"math"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/model"
)

// modelNet is the faceNet of the real networks: MuseTalk's UNet at
// timestep 0 on [masked latent | reference latent] with the audio prompt
// plus the positional encoding as cross-attention input, then the VAE
// decoder on the prediction divided by the scaling factor.
type modelNet struct {
	b       kernels.Backend
	unet    *model.UNet
	vae     *model.VAE
	pe      *model.PositionalEncoding
	inC     int // UNet input channels (8)
	latent  int // latent side (32 for 256×256 faces)
	tokens  int // audio tokens per frame
	dim     int // cross-attention dim
	invScal float32
}

// newModelNet checks that the networks fit each other and MuseTalk's
// shapes: latents of side latentSide, prompts of tokens×dim.
func newModelNet(b kernels.Backend, unet *model.UNet, vae *model.VAE, latentSide, tokens, dim int) (*modelNet, error) {
	uc, vc := unet.Config(), vae.Config()
	switch {
	case uc.InChannels != 2*vc.LatentChannels || uc.OutChannels != vc.LatentChannels:
		return nil, fmt.Errorf("the UNet (%d in, %d out channels) does not fit the VAE's %d latent channels",
			uc.InChannels, uc.OutChannels, vc.LatentChannels)
	case !allEqual(uc.CrossAttentionDim, dim):
		return nil, fmt.Errorf("the UNet's cross-attention dim %v is not the Whisper encoder's d_model %d", []int(uc.CrossAttentionDim), dim)
	case vc.ScalingFactor <= 0:
		return nil, fmt.Errorf("the VAE's scaling factor %v is not positive", vc.ScalingFactor)
	}
	pe, err := model.NewPositionalEncoding(b, dim, tokens)
	if err != nil {
		return nil, err
	}
	return &modelNet{b: b, unet: unet, vae: vae, pe: pe, inC: uc.InChannels, latent: latentSide,
		tokens: tokens, dim: dim, invScal: float32(1 / vc.ScalingFactor)}, nil
}

func (m *modelNet) latentLen() int { return m.inC * m.latent * m.latent }

func (m *modelNet) close() { m.pe.Close() }

// generate implements faceNet. It checks ctx between the two networks,
// each of which runs in its own span (unet, vae_decode).
func (m *modelNet) generate(ctx context.Context, latents, prompts []float32, n int, st *Stats) ([]*media.Image8, error) {
	t0 := time.Now()
	if len(latents) != n*m.latentLen() || len(prompts) != n*m.tokens*m.dim {
		return nil, fmt.Errorf("batch of %d: %d latent and %d prompt values", n, len(latents), len(prompts))
	}
	z, shape, err := m.unetPass(ctx, latents, prompts, n)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	t1 := time.Now()
	st.UNet += t1.Sub(t0)
	defer func() { st.VAEDecode += time.Since(t1) }()
	return m.vaePass(ctx, z, shape)
}

// unetPass runs the UNet on a batch and returns its prediction on the
// host, with its shape.
func (m *modelNet) unetPass(ctx context.Context, latents, prompts []float32, n int) (z []float32, shape []int, err error) {
	_, span := startSpan(ctx, SpanUNet, attribute.Int("musetalk.batch.frames", n))
	defer func() { endSpan(span, err) }()
	x := kernels.Upload(m.b, latents, n, m.inC, m.latent, m.latent)
	cond := kernels.Upload(m.b, prompts, n, m.tokens, m.dim)
	err = m.pe.Apply(cond, cond)
	var pred *kernels.Tensor
	if err == nil {
		pred, err = m.unet.Forward(x, []float32{0}, cond)
	}
	m.b.Free(x)
	m.b.Free(cond)
	if err != nil {
		return nil, nil, fmt.Errorf("UNet: %w", err)
	}
	z = make([]float32, pred.Len())
	err = m.b.Download(z, pred)
	shape = pred.Shape()
	m.b.Free(pred)
	if err != nil {
		return nil, nil, fmt.Errorf("UNet: %w", err)
	}
	return z, shape, nil
}

// vaePass decodes the UNet's prediction z into BGR faces.
func (m *modelNet) vaePass(ctx context.Context, z []float32, shape []int) (faces []*media.Image8, err error) {
	_, span := startSpan(ctx, SpanVAEDecode, attribute.Int("musetalk.batch.frames", shape[0]))
	defer func() { endSpan(span, err) }()
	for i := range z {
		z[i] *= m.invScal
	}
	zt := kernels.Upload(m.b, z, shape...)
	img, err := m.vae.Decode(zt)
	m.b.Free(zt)
	if err != nil {
		return nil, fmt.Errorf("VAE decoder: %w", err)
	}
	px := make([]float32, img.Len())
	err = m.b.Download(px, img)
	ishape := img.Shape()
	m.b.Free(img)
	if err != nil {
		return nil, fmt.Errorf("VAE decoder: %w", err)
	}
	if len(ishape) != 4 || ishape[1] != 3 {
		return nil, fmt.Errorf("VAE decoder: output %v, want [N 3 H W]", ishape)
	}
	return decodedToBGR(px, ishape[0], ishape[2], ishape[3]), nil
}

// decodedToBGR is MuseTalk's VAE.decode_latents post-processing on the
// decoder's RGB NCHW output: x/2 + 0.5 clamped to [0, 1] (float32), ×255
// in float32, rounded half to even, to uint8, channels reversed to BGR.
func decodedToBGR(px []float32, n, h, w int) []*media.Image8 {
	out := make([]*media.Image8, n)
	plane := h * w
	for i := range n {
		im := media.NewImage8(w, h, 3)
		base := px[i*3*plane:]
		for c := range 3 {
			ch := base[c*plane : (c+1)*plane]
			dc := 2 - c // RGB → BGR
			for p, v := range ch {
				im.Pix[p*3+dc] = toByte(v)
			}
		}
		out[i] = im
	}
	return out
}

// toByte maps one decoder output value in about [−1, 1] to 0..255.
func toByte(v float32) uint8 {
	v = v/2 + 0.5
	if !(v > 0) { // also NaN
		return 0
	}
	if v > 1 {
		v = 1
	}
	return uint8(math.RoundToEven(float64(v * 255)))
}

// allEqual reports whether l is non-empty and every element is v.
func allEqual(l []int, v int) bool {
	for _, x := range l {
		if x != v {
			return false
		}
	}
	return len(l) > 0
}
