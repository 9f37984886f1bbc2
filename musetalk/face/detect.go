package face

import (
	"context"
	"fmt"
	"math"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/model"
)

// Preprocess turns a BGR uint8 frame (HWC) into S3FD's input as MuseTalk
// builds it: channels reversed to RGB, 104, 117 and 123 subtracted from R,
// G and B, transposed to CHW float32 ([3,H,W], every value an integer in
// [−123, 151]). It returns an error unless frame is a consistent 3-channel
// image of at least [model.S3FDMinSide] pixels each way.
func Preprocess(frameBGR *media.Image8) ([]float32, error) {
	if err := checkFrame(frameBGR); err != nil {
		return nil, err
	}
	// The means MuseTalk's batch_detect subtracts after flipping BGR to
	// RGB: the Caffe BGR means, applied to R, G and B in that order, as
	// the code does (not as the original detector intended).
	means := [3]float32{104, 117, 123}
	w, h := frameBGR.W, frameBGR.H
	out := make([]float32, 3*w*h)
	for c := range 3 {
		plane := out[c*w*h : (c+1)*w*h]
		src := 2 - c // RGB channel c is BGR channel 2−c
		for i := range plane {
			plane[i] = float32(frameBGR.Pix[3*i+src]) - means[c]
		}
	}
	return out, nil
}

// checkFrame reports a frame S3FD cannot run on.
func checkFrame(m *media.Image8) error {
	if m == nil {
		return fmt.Errorf("s3fd: nil frame")
	}
	if m.C != 3 || m.W < model.S3FDMinSide || m.H < model.S3FDMinSide || len(m.Pix) != m.W*m.H*m.C {
		return fmt.Errorf("s3fd: frame %d×%d×%d with %d bytes, want 3 channels and at least %d×%d pixels",
			m.W, m.H, m.C, len(m.Pix), model.S3FDMinSide, model.S3FDMinSide)
	}
	return nil
}

// Detector finds the face box MuseTalk's avatar preparation uses
// (FaceAlignment.get_detections_for_batch with a batch of one): S3FD on
// the whole frame, then [Postprocess].
//
// By default the network runs at the frame's full size, as MuseTalk does;
// see [model.S3FD] for what that costs (≈ 0.6 TFLOP for a 720p frame).
// [Detector.WithMaxSide] trades exactness for speed.
//
// A Detector is safe for concurrent use if its backend is.
type Detector struct {
	net     *model.S3FD
	b       kernels.Backend
	maxSide int
}

// NewDetector returns a detector running net on b (the backend net was
// built on). The detector does not own net.
func NewDetector(net *model.S3FD, b kernels.Backend) *Detector {
	return &Detector{net: net, b: b}
}

// WithMaxSide returns a copy of d that first downscales frames whose longer
// side exceeds maxSide (Pillow-style antialiased bilinear, aspect kept) and
// scales the box back to the frame. This departs from MuseTalk, whose
// boxes come from the full-size frame: use it only where a slightly
// different box is acceptable. maxSide ≤ 0 (the default) turns it off; a
// value below [model.S3FDMinSide] is raised to it.
func (d *Detector) WithMaxSide(maxSide int) *Detector {
	c := *d
	c.maxSide = maxSide
	if maxSide > 0 {
		c.maxSide = max(maxSide, model.S3FDMinSide)
	}
	return &c
}

// Detect returns the face box of a BGR frame: the highest-scoring detection
// after NMS, clipped at 0 and truncated ([x1, y1, x2, y2]; x2 and y2 may
// exceed the frame), or ok = false when S3FD finds no face. It returns an
// error for a frame it cannot run on, a backend failure, or ctx's error if
// ctx ends before the network runs or before the result is used (a forward
// pass itself is not interrupted).
func (d *Detector) Detect(ctx context.Context, frameBGR *media.Image8) (box media.Box, ok bool, err error) {
	if err := checkFrame(frameBGR); err != nil {
		return media.Box{}, false, err
	}
	in, sx, sy := frameBGR, 1.0, 1.0
	if d.maxSide > 0 && max(frameBGR.W, frameBGR.H) > d.maxSide {
		in = downscale(frameBGR, d.maxSide)
		sx, sy = float64(frameBGR.W)/float64(in.W), float64(frameBGR.H)/float64(in.H)
	}
	levels, err := d.levels(ctx, in)
	if err != nil {
		return media.Box{}, false, err
	}
	box, ok, err = Postprocess(levels)
	if err != nil || !ok {
		return media.Box{}, false, err
	}
	if in != frameBGR {
		for i, s := range [4]float64{sx, sy, sx, sy} {
			box[i] = int(float64(box[i]) * s)
		}
	}
	return box, true, nil
}

// levels runs the network on one frame and returns its levels.
func (d *Detector) levels(ctx context.Context, frameBGR *media.Image8) ([]Level, error) {
	x, err := Preprocess(frameBGR)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("s3fd: %w", err)
	}
	t := kernels.Upload(d.b, x, 1, 3, frameBGR.H, frameBGR.W)
	heads, err := d.net.Forward(t)
	d.b.Free(t)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("s3fd: %w", err)
	}
	return LevelsFromHeads(heads, 0)
}

// downscale resizes m so that its longer side is maxSide, keeping the
// aspect ratio and at least model.S3FDMinSide pixels each way.
func downscale(m *media.Image8, maxSide int) *media.Image8 {
	s := float64(maxSide) / float64(max(m.W, m.H))
	w := max(int(math.Round(float64(m.W)*s)), model.S3FDMinSide)
	h := max(int(math.Round(float64(m.H)*s)), model.S3FDMinSide)
	return media.ResizePIL(m, w, h, media.PILBilinear)
}
