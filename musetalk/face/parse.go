package face

import (
	"context"
	"fmt"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/model"
)

// ParseSize is the side of the square MuseTalk's FaceParsing resizes every
// crop to before BiSeNet (its default size=(512, 512)); the jaw mode of
// [media.ParsingMask] needs maps of this size.
const ParseSize = 512

// maxParseSize bounds the parse size so that a bad argument fails with an
// error rather than an enormous allocation (19 float32 logits per pixel).
const maxParseSize = 4096

// The ImageNet statistics of FaceParsing's Normalize, per RGB channel, as
// the float32 tensors torchvision builds from them.
var (
	parseMean = [3]float32{0.485, 0.456, 0.406}
	parseStd  = [3]float32{0.229, 0.224, 0.225}
)

// Parser is MuseTalk's FaceParsing.__call__ up to the argmax: the image is
// resized to size×size with Pillow's BILINEAR filter, converted to float32
// and normalised with the ImageNet statistics, run through BiSeNet, and
// every pixel gets the class with the largest logit. The mode masks (raw,
// neck, jaw) are [media.ParsingMask] applied to the result.
//
// A Parser is safe for concurrent use if its backend is.
type Parser struct {
	b   kernels.Backend
	net *model.BiSeNet
}

// NewParser returns a Parser running net, which must have been built on b.
// The Parser does not own net: the caller closes it.
func NewParser(net *model.BiSeNet, b kernels.Backend) *Parser {
	return &Parser{b: b, net: net}
}

// Parse returns the size×size class-id map (1 channel, values 0–18; see
// [model.BiSeNetClasses]) of the RGB image rgb, which is resized to
// size×size whatever its aspect ratio. MuseTalk uses size [ParseSize].
// Ties between classes go to the lowest class id, as torch.argmax does.
//
// It returns an error for an image that is not a consistent non-empty
// 3-channel one, for a size outside [1, 4096], when the backend fails, or
// ctx's error when ctx ends before the network runs or while it runs (the
// forward pass itself is not interrupted).
func (p *Parser) Parse(ctx context.Context, rgb *media.Image8, size int) (*media.Image8, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkParseInput(rgb, size); err != nil {
		return nil, err
	}
	_, x := parseInput(rgb, size)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	in := kernels.Upload(p.b, x, 1, 3, size, size)
	defer p.b.Free(in)
	out, err := p.net.Forward(in)
	if err != nil {
		return nil, fmt.Errorf("face parsing: %w", err)
	}
	defer p.b.Free(out)
	logits := make([]float32, out.Len())
	if err := p.b.Download(logits, out); err != nil {
		return nil, fmt.Errorf("face parsing: reading the logits: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return argmaxClasses(logits, model.BiSeNetClasses, size, size), nil
}

// checkParseInput reports an image or size Parse cannot use.
func checkParseInput(rgb *media.Image8, size int) error {
	if rgb == nil {
		return fmt.Errorf("face parsing: nil image")
	}
	if rgb.C != 3 || rgb.W <= 0 || rgb.H <= 0 || len(rgb.Pix) != rgb.W*rgb.H*rgb.C {
		return fmt.Errorf("face parsing: image %d×%d×%d with %d bytes, want a non-empty 3-channel image",
			rgb.W, rgb.H, rgb.C, len(rgb.Pix))
	}
	if size < 1 || size > maxParseSize {
		return fmt.Errorf("face parsing: size %d, want 1 to %d", size, maxParseSize)
	}
	return nil
}

// parseInput returns rgb resized to size×size (Pillow BILINEAR) and that
// image as BiSeNet's input [1,3,size,size]: ToTensor then Normalize, in
// float32 as torchvision computes it, (float32(u)/255 − mean)/std.
func parseInput(rgb *media.Image8, size int) (*media.Image8, []float32) {
	resized := media.ResizePIL(rgb, size, size, media.PILBilinear)
	n := size * size
	x := make([]float32, 3*n)
	for c := range 3 {
		plane := x[c*n : (c+1)*n]
		m, s := parseMean[c], parseStd[c]
		for i := range plane {
			u := float32(resized.Pix[3*i+c]) / 255
			plane[i] = float32(u-m) / s
		}
	}
	return resized, x
}

// argmaxClasses returns the h×w map of the index of the largest of the
// classes planes of logits [classes,h,w] at each pixel (the first on ties).
func argmaxClasses(logits []float32, classes, h, w int) *media.Image8 {
	n := h * w
	m := media.NewImage8(w, h, 1)
	best := make([]float32, n)
	copy(best, logits[:n])
	for k := 1; k < classes; k++ {
		plane := logits[k*n : (k+1)*n]
		for i, v := range plane {
			if v > best[i] {
				best[i] = v
				m.Pix[i] = uint8(k)
			}
		}
	}
	return m
}
