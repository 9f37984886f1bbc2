#!/usr/bin/env python3
"""PyTorch reference figures for scripts/gpu-check (step "torch").

Run on the GPU machine, with whatever PyTorch is installed there. Prints:

1. GFLOP/s of cuBLAS/cuDNN on the shapes the MuseTalk networks run
   (a large GEMM, the UNet's 3x3 convolutions at 320 and 1280 channels,
   the VAE decoder's at 128 channels and 256x256), in fp32 with TF32 off
   (the arithmetic of the Go CUDA backend's fp32 kernels) and in fp16.
2. When diffusers is importable: seconds per frame of the full-size
   MuseTalk UNet (musetalk.json) and the sd-vae-ft-mse decoder, seeded
   random weights, at the batch sizes of `musetalk bench model`, in the
   same layout as its "batch N: unet + vae-decoder X s/frame" lines.
   Without diffusers this part says so and is left out.

Usage: gpu-check-torch.py BATCHES ITERS   (e.g. 1,8,20,32 2)
"""

import sys
import time

BATCHES = [int(b) for b in (sys.argv[1] if len(sys.argv) > 1 else "1,8").split(",")]
ITERS = int(sys.argv[2]) if len(sys.argv) > 2 else 2

# The full-size configs, as golden cases a and b record them
# (reference_full_size_config).
UNET = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 8, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
VAE = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def main():
    try:
        import torch
    except ImportError as e:
        print(f"SKIP: PyTorch is not importable here: {e}")
        return 0
    if not torch.cuda.is_available():
        print(f"SKIP: PyTorch {torch.__version__} sees no CUDA device")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
          f"{torch.cuda.get_device_name(0)}; TF32 off")

    def timed(fn, n):
        fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / n

    torch.manual_seed(1)
    print("\n## ops (GFLOP/s)")
    print(f"{'op':44s} {'fp32':>10s} {'fp16':>10s}")

    def gemm(dtype):
        a = torch.randn(8192, 8192, device=dev, dtype=dtype)
        b = torch.randn(8192, 8192, device=dev, dtype=dtype)
        return (lambda: a @ b), 2 * 8192**3

    def conv(n, c, h, w, co):
        def make(dtype):
            x = torch.randn(n, c, h, w, device=dev, dtype=dtype)
            k = torch.randn(co, c, 3, 3, device=dev, dtype=dtype)
            return (lambda: torch.nn.functional.conv2d(x, k, padding=1)), 2 * n * co * h * w * c * 9
        return make

    ops = [
        ("gemm 8192x8192x8192", gemm),
        ("conv3x3 320ch 32x32 batch 20 (UNet)", conv(20, 320, 32, 32, 320)),
        ("conv3x3 1280ch 8x8 batch 20 (UNet)", conv(20, 1280, 8, 8, 1280)),
        ("conv3x3 128ch 256x256 batch 4 (VAE)", conv(4, 128, 256, 256, 128)),
    ]
    failed = False
    for name, make in ops:
        try:
            row = []
            for dtype in (torch.float32, torch.float16):
                fn, flops = make(dtype)
                row.append(flops / timed(fn, 10) / 1e9)
                del fn
                torch.cuda.empty_cache()
            print(f"{name:44s} {row[0]:10.0f} {row[1]:10.0f}", flush=True)
        except Exception as e:  # one op's failure must not hide the others
            print(f"{name:44s} failed: {type(e).__name__}: {e}")
            failed = True

    print("\n## networks (diffusers, full size, seeded random weights)")
    try:
        import diffusers
    except ImportError as e:
        print(f"SKIP: diffusers is not importable here ({e}); no network figures")
        return 1 if failed else 0
    print(f"diffusers {diffusers.__version__}")
    from diffusers import AutoencoderKL, UNet2DConditionModel

    def networks(dtype, label):
        torch.manual_seed(1)
        with torch.device(dev):  # build on the GPU: a CPU init of 850 M weights is slow
            unet = UNet2DConditionModel(**UNET).to(dtype).eval()
            vae = AutoencoderKL(**VAE).to(dtype).eval()
        with torch.no_grad():
            for b in BATCHES:
                x = torch.randn(b, 8, 32, 32, device=dev, dtype=dtype)
                ehs = torch.randn(b, 50, 384, device=dev, dtype=dtype)
                ts = torch.tensor([0], device=dev)
                lat = torch.randn(b, 4, 32, 32, device=dev, dtype=dtype)
                u = timed(lambda: unet(x, ts, encoder_hidden_states=ehs).sample, ITERS) / b
                v = timed(lambda: vae.decode(lat).sample, ITERS) / b
                print(f"{label} batch {b}: unet {u:.4f}, vae-decoder {v:.4f}, "
                      f"unet + vae-decoder {u + v:.4f} s/frame", flush=True)

    for dtype, label in ((torch.float16, "fp16"), (torch.float32, "fp32")):
        try:
            networks(dtype, label)
        except Exception as e:
            print(f"{label} networks failed: {type(e).__name__}: {e}")
            failed = True
        torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
