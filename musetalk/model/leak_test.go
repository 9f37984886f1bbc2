package model_test

import (
	"context"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/kerneltest"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/model"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// TestForwardFreesItsTemporaries runs each network twice on a counting
// backend (the CUDA kernels on the emulator, where a forgotten tensor is
// device memory) and checks that a pass leaves nothing allocated but its
// outputs, which the caller frees, and that Close frees the weights.
func TestForwardFreesItsTemporaries(t *testing.T) {
	t.Parallel()
	for _, nb := range model.GoldenBackends {
		t.Run(nb.Name, func(t *testing.T) {
			t.Run("unet", func(t *testing.T) {
				g := dmLoadGolden(t, "a_unet2d_condition")
				cfg, err := weights.ParseUNetConfig(g.config(t))
				if err != nil {
					t.Fatal(err)
				}
				be := kerneltest.NewCounting(nb.New(t))
				u, err := model.NewUNet(be, *cfg, g)
				if err != nil {
					t.Fatal(err)
				}
				sample := g.upload(t, be, "input.sample")
				cond := g.upload(t, be, "input.encoder_hidden_states")
				ts, _, err := g.Tensor("input.timestep")
				if err != nil {
					t.Fatal(err)
				}
				checkPasses(t, be, func() []*kernels.Tensor {
					out, err := u.Forward(sample, ts, cond)
					if err != nil {
						t.Fatal(err)
					}
					return []*kernels.Tensor{out}
				})
				be.Free(sample)
				be.Free(cond)
				checkClosed(t, be, u.Close)
			})
			t.Run("vae", func(t *testing.T) {
				g := dmLoadGolden(t, "b_autoencoder_kl")
				cfg, err := weights.ParseVAEConfig(g.config(t))
				if err != nil {
					t.Fatal(err)
				}
				be := kerneltest.NewCounting(nb.New(t))
				v, err := model.NewVAE(be, *cfg, g)
				if err != nil {
					t.Fatal(err)
				}
				image := g.upload(t, be, "input.image")
				checkPasses(t, be, func() []*kernels.Tensor {
					mean, err := v.Encode(image)
					if err != nil {
						t.Fatal(err)
					}
					dec, err := v.Decode(mean)
					if err != nil {
						t.Fatal(err)
					}
					return []*kernels.Tensor{mean, dec}
				})
				be.Free(image)
				checkClosed(t, be, v.Close)
			})
			t.Run("whisper", func(t *testing.T) {
				g := loadAudioGolden(t, "c_whisper_encoder")
				be := kerneltest.NewCounting(nb.New(t))
				enc, err := model.NewWhisperEncoder(be, g.whisperConfig(t), g)
				if err != nil {
					t.Fatal(err)
				}
				in := g.tensor(t, "input.input_features")
				mel := kernels.Upload(be, g.float32s(t, "input.input_features"), in.Shape...)
				checkPasses(t, be, func() []*kernels.Tensor {
					states, err := enc.Forward(mel)
					if err != nil {
						t.Fatal(err)
					}
					return states
				})
				be.Free(mel)
				checkClosed(t, be, enc.Close)
			})
			t.Run("bisenet", func(t *testing.T) {
				if nb.Name != "cpu" {
					// What it allocates is model code, the same on every
					// backend, and 20 s on the emulator.
					t.Skip("checked on the CPU backend")
				}
				c := golden.Load(t, "h_bisenet_face_parsing")
				be := kerneltest.NewCounting(nb.New(t))
				net, err := model.NewBiSeNet(be, c)
				if err != nil {
					t.Fatal(err)
				}
				set := c.Set(t)
				x := kernels.Upload(be, set.Float32s(t, "input.x"), set.Get(t, "input.x").Shape...)
				checkPasses(t, be, func() []*kernels.Tensor {
					out, err := net.Forward(x)
					if err != nil {
						t.Fatal(err)
					}
					return []*kernels.Tensor{out}
				})
				be.Free(x)
				checkClosed(t, be, net.Close)
			})
			t.Run("dwpose", func(t *testing.T) {
				if nb.Name != "cpu" {
					t.Skip("checked on the CPU backend") // as BiSeNet: model code, 50 s on the emulator
				}
				c := golden.Load(t, "k_dwpose_model")
				cfg, err := model.InferDWPoseConfig(c)
				if err != nil {
					t.Fatal(err)
				}
				be := kerneltest.NewCounting(nb.New(t))
				net, err := model.NewDWPose(be, cfg, c)
				if err != nil {
					t.Fatal(err)
				}
				set := c.Set(t)
				x := kernels.Upload(be, set.Float32s(t, "input.model_input"), set.Get(t, "input.model_input").Shape...)
				frame := media.NewImage8(40, 30, 3)
				checkPasses(t, be, func() []*kernels.Tensor {
					if _, err := net.Keypoints(context.Background(), frame, model.WholeFrameBox(40, 30)); err != nil {
						t.Fatal(err)
					}
					sx, sy, err := net.Forward(x)
					if err != nil {
						t.Fatal(err)
					}
					return []*kernels.Tensor{sx, sy}
				})
				be.Free(x)
				checkClosed(t, be, net.Close)
			})
		})
	}
}

// checkPasses runs pass twice (the second reuses the pool), frees its
// outputs, and fails naming every tensor left allocated.
func checkPasses(t *testing.T, be *kerneltest.Counting, pass func() []*kernels.Tensor) {
	t.Helper()
	before := be.Snapshot()
	for range 2 {
		outs := pass()
		if err := be.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, o := range outs {
			be.Free(o)
		}
		if leaked := be.LiveSince(before); len(leaked) > 0 {
			t.Fatalf("a pass left %d tensors allocated: %v", len(leaked), leaked)
		}
	}
}

// checkClosed closes the network and fails when any tensor is left.
func checkClosed(t *testing.T, be *kerneltest.Counting, close func()) {
	t.Helper()
	close()
	if n := be.Live(); n != 0 {
		t.Errorf("after Close %d tensors are still allocated: %v", n, be.LiveSince(nil))
	}
}
