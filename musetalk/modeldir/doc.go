// Package modeldir knows where each network's files live in a weight
// directory, opens them, fetches the official ones and writes tiny random
// ones.
//
// The layout mirrors MuseTalk's models/ directory, so a directory prepared
// for the Python code works here unchanged:
//
//	musetalk/musetalk.json, musetalk/pytorch_model.bin        UNet, MuseTalk v1   (TMElyralab/MuseTalk)
//	musetalkV15/musetalk.json, musetalkV15/unet.pth           UNet, MuseTalk v1.5 (TMElyralab/MuseTalk)
//	sd-vae/config.json, sd-vae/diffusion_pytorch_model.bin    VAE                 (stabilityai/sd-vae-ft-mse)
//	whisper/config.json, whisper/pytorch_model.bin,
//	whisper/preprocessor_config.json                          audio encoder       (openai/whisper-tiny)
//	face-parse-bisent/79999_iter.pth                          BiSeNet face parser (ManyOtherFunctions/face-parse-bisent)
//	s3fd/s3fd-619a316812.pth                                  S3FD face detector  (face-alignment's release)
//	dwpose/dw-ll_ucoco_384.pth                                DWPose landmarks    (yzd-v/DWPose)
//
// Every weight file may instead be a .safetensors file with the same base
// name (musetalkV15/unet.safetensors), as `musetalk weights convert` and
// [WriteTiny] write them; the safetensors file wins when both exist.
//
// [Dir] resolves, checks ([Dir.Check]), fingerprints ([Dir.ID]) and loads
// ([Dir.Load]) a directory; [Fetch] downloads the official files with
// resume and checksum verification; [WriteTiny] writes seeded random weights
// of tiny but valid networks for tests and demos.
package modeldir
