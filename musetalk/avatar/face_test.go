package avatar

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/avatargen/musetalk/musetalk/face"
	"github.com/avatargen/musetalk/musetalk/model"
)

// The face package's networks are what production plugs in.
var (
	_ FaceDetector = (*face.Detector)(nil)
	_ FaceParser   = (*face.Parser)(nil)
)

// TestPrepareWithS3FD runs preparation with the real S3FD detector (random
// weights, frames downscaled to 64 px for speed): whatever it finds, the
// prepared frame must carry exactly the box derived from its detection.
// With seed 2 the detection overshoots the frame and is clipped.
func TestPrepareWithS3FD(t *testing.T) {
	still := fixture(t, "still.png")
	nets := testNets(t)
	net, err := model.NewS3FD(nets.Backend, model.RandomTensors(model.S3FDSpec(), 2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(net.Close)
	det := face.NewDetector(net, nets.Backend).WithMaxSide(64)
	nets.Detector = det
	opt := Options{Version: "v1", FaceDetector: DetectorS3FD}
	a, err := Prepare(context.Background(), still, filepath.Join(t.TempDir(), "e"), opt, nets, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	frame, err := a.FrameBGR(0)
	if err != nil {
		t.Fatal(err)
	}
	box, ok, err := det.Detect(context.Background(), frame)
	if err != nil {
		t.Fatal(err)
	}
	want, ok := faceBox(box, a.W, a.H, mustNormalize(t, opt), true)
	f := a.Frames[0]
	if f.HasFace != ok || f.Face != want {
		t.Fatalf("frame: face %v (has %v); S3FD found %v (%v), want %v", f.Face, f.HasFace, box, ok, want)
	}
	t.Logf("S3FD box %v -> face %v", box, f.Face)
	if ok {
		checkFrame(t, nets, a, 0, want, mustNormalize(t, opt), nil)
	}
}
