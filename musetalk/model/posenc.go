package model

import (
	"fmt"
	"math"

	"github.com/avatargen/musetalk/kernels"
)

// PositionalEncodingTable returns MuseTalk's sinusoidal table
// (musetalk.models.unet.PositionalEncoding) for positions 0..length−1:
// pe[p, 2i] = sin(p·div_i), pe[p, 2i+1] = cos(p·div_i), with
// div_i = exp(2i·(−ln 10000/dModel)). Like the PyTorch module it computes
// div_i and the angle in float32 (the sines in float64, rounded), so the
// table matches the module's float32 buffer. Shape [length, dModel],
// row-major; dModel must be even.
func PositionalEncodingTable(length, dModel int) ([]float32, error) {
	if length <= 0 || dModel <= 0 || dModel%2 != 0 {
		return nil, fmt.Errorf("positional encoding: length %d, d_model %d: want positive, d_model even", length, dModel)
	}
	half := dModel / 2
	coef := float32(-math.Log(10000.0) / float64(dModel))
	div := make([]float32, half)
	for i := range div {
		div[i] = float32(math.Exp(float64(float32(2*i) * coef)))
	}
	pe := make([]float32, length*dModel)
	for p := range length {
		row := pe[p*dModel : (p+1)*dModel]
		for i, dv := range div {
			a := float64(float32(p) * dv)
			row[2*i] = float32(math.Sin(a))
			row[2*i+1] = float32(math.Cos(a))
		}
	}
	return pe, nil
}

// PositionalEncoding adds MuseTalk's positional encoding to the audio tokens
// before the UNet: x [N, T, d_model] + pe[:T].
type PositionalEncoding struct {
	b      kernels.Backend
	table  *kernels.Tensor // [maxLen, d_model]
	dModel int
	maxLen int
}

// NewPositionalEncoding builds the table for maxLen positions on b. MuseTalk's
// module holds 5000 positions and uses the first 50 (its tokens per frame).
func NewPositionalEncoding(b kernels.Backend, dModel, maxLen int) (*PositionalEncoding, error) {
	pe, err := PositionalEncodingTable(maxLen, dModel)
	if err != nil {
		return nil, err
	}
	return &PositionalEncoding{b: b, table: b.Weight(pe, maxLen, dModel), dModel: dModel, maxLen: maxLen}, nil
}

// Apply sets dst = x + pe[:T] for x [N, T, d_model], T ≤ maxLen. dst has x's
// shape and may be x.
func (p *PositionalEncoding) Apply(dst, x *kernels.Tensor) error {
	if x.Rank() != 3 || x.Dim(2) != p.dModel || x.Dim(1) > p.maxLen {
		return fmt.Errorf("positional encoding: input %v, want [N T %d] with T <= %d", x.Shape(), p.dModel, p.maxLen)
	}
	if !dst.SameShape(x) {
		return fmt.Errorf("positional encoding: dst %v, want %v", dst.Shape(), x.Shape())
	}
	p.b.Add(dst, x, p.table.Slice(0, x.Dim(1)))
	return nil
}

// Close releases the table.
func (p *PositionalEncoding) Close() { p.b.Free(p.table) }
