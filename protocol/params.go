package protocol

import (
	"fmt"
	"math/big"
	"strings"
)

// JobParams are the lip-sync parameters of a job. Zero values mean the
// engine's defaults.
type JobParams struct {
	// Engine selects the worker engine: "musetalk" (default) or "preview".
	Engine string `json:"engine,omitempty"`
	// Version of MuseTalk: "v15" (default) or "v1".
	Version string `json:"version,omitempty"`
	// BBoxShift moves the face box's upper edge (v1).
	BBoxShift int `json:"bbox_shift,omitempty"`
	// ExtraMargin extends the face box downwards (v1.5), in pixels.
	ExtraMargin int `json:"extra_margin,omitempty"`
	// ParsingMode is the v1.5 blend mask: "jaw" (default) or "raw".
	ParsingMode string `json:"parsing_mode,omitempty"`
	// FPS of the output as a rational ("25", "30000/1001"); default the avatar's.
	FPS string `json:"fps,omitempty"`
	// BatchSize of UNet/VAE batches; default 20.
	BatchSize int `json:"batch_size,omitempty"`
	// FaceBox overrides face detection: x1, y1, x2, y2 in pixels.
	FaceBox []int `json:"face_box,omitempty"`
	// FaceDetector finds the face box when FaceBox is not given:
	// "dwpose" (default: MuseTalk's box from DWPose's face landmarks, the
	// S3FD box where they give none) or "s3fd" (the S3FD box alone).
	FaceDetector string `json:"face_detector,omitempty"`
}

// ParamError is a bad job parameter. Field is its JSON name
// ("batch_size"), so a command-line tool can name its own flag instead.
type ParamError struct {
	Field string
	Err   error
}

// Error returns "params.<field>: <reason>".
func (e *ParamError) Error() string { return "params." + e.Field + ": " + e.Err.Error() }

// Unwrap returns the reason.
func (e *ParamError) Unwrap() error { return e.Err }

func paramErrorf(field, format string, args ...any) error {
	return &ParamError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks every parameter and names the first bad one in a
// *[ParamError].
func (p *JobParams) Validate() error {
	switch p.Engine {
	case "", "musetalk", "preview":
	default:
		return paramErrorf("engine", "%q is not one of musetalk, preview", p.Engine)
	}
	switch p.Version {
	case "", "v15", "v1":
	default:
		return paramErrorf("version", "%q is not one of v15, v1", p.Version)
	}
	switch p.ParsingMode {
	case "", "jaw", "raw":
	default:
		return paramErrorf("parsing_mode", "%q is not one of jaw, raw", p.ParsingMode)
	}
	switch p.FaceDetector {
	case "", "dwpose", "s3fd":
	default:
		return paramErrorf("face_detector", "%q is not one of dwpose, s3fd", p.FaceDetector)
	}
	if p.BBoxShift < -256 || p.BBoxShift > 256 {
		return paramErrorf("bbox_shift", "%d is outside -256..256", p.BBoxShift)
	}
	if p.ExtraMargin < 0 || p.ExtraMargin > 256 {
		return paramErrorf("extra_margin", "%d is outside 0..256", p.ExtraMargin)
	}
	if p.BatchSize < 0 || p.BatchSize > 256 {
		return paramErrorf("batch_size", "%d is outside 1..256", p.BatchSize)
	}
	if p.FPS != "" {
		if _, err := ParseFPS(p.FPS); err != nil {
			return &ParamError{Field: "fps", Err: err}
		}
	}
	if p.FaceBox != nil {
		b := p.FaceBox
		if len(b) != 4 {
			return paramErrorf("face_box", "want 4 numbers x1,y1,x2,y2, got %d", len(b))
		}
		if b[0] < 0 || b[1] < 0 || b[2] <= b[0] || b[3] <= b[1] {
			return paramErrorf("face_box", "%v is not a box with 0 <= x1 < x2 and 0 <= y1 < y2", b)
		}
	}
	return nil
}

// ParseFPS reads a frame rate written as an integer, a decimal or a
// rational ("30000/1001") and returns it as an exact rational in (0, 1000].
func ParseFPS(s string) (*big.Rat, error) {
	r, ok := new(big.Rat).SetString(strings.TrimSpace(s))
	if !ok {
		return nil, fmt.Errorf("%q is not a number or a fraction like 30000/1001", s)
	}
	if r.Sign() <= 0 || r.Cmp(big.NewRat(1000, 1)) > 0 {
		return nil, fmt.Errorf("%q is outside (0, 1000]", s)
	}
	return r, nil
}
