package musetalk

import (
	"context"
	"time"

	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/avatar"
	"github.com/avatargen/musetalk/musetalk/model"
)

// dwposeLandmarks is avatar preparation's landmark detector: DWPose's
// top-down pipeline on the whole frame, as MuseTalk's
// get_landmark_and_bbox calls inference_topdown with no person box.
type dwposeLandmarks struct{ net *model.DWPose }

// Keypoints implements avatar.LandmarkDetector.
func (d dwposeLandmarks) Keypoints(ctx context.Context, frameBGR *media.Image8) ([][2]float64, error) {
	r, err := d.net.Keypoints(ctx, frameBGR, model.WholeFrameBox(frameBGR.W, frameBGR.H))
	if err != nil {
		return nil, err
	}
	return r.Keypoints[:], nil
}

// timedDetector adds the time of each S3FD detection, and one frame, to
// a render's Stats.
type timedDetector struct {
	d      avatar.FaceDetector
	t      *time.Duration
	frames *int
}

func (d timedDetector) Detect(ctx context.Context, frameBGR *media.Image8) (media.Box, bool, error) {
	start := time.Now()
	defer func() {
		*d.t += time.Since(start)
		*d.frames++
	}()
	return d.d.Detect(ctx, frameBGR)
}

// timedLandmarks adds the time of each DWPose run, and one frame, to a
// render's Stats.
type timedLandmarks struct {
	l      avatar.LandmarkDetector
	t      *time.Duration
	frames *int
}

func (l timedLandmarks) Keypoints(ctx context.Context, frameBGR *media.Image8) ([][2]float64, error) {
	start := time.Now()
	defer func() {
		*l.t += time.Since(start)
		*l.frames++
	}()
	return l.l.Keypoints(ctx, frameBGR)
}
