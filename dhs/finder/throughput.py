"""How fast a training run went, against what its hardware can do.

The train stage writes ``metrics/train/{arch}.throughput.json`` (a timing: it differs from run
to run, so it is kept out of the deterministic ``{arch}.json``): images per second through the
whole loop (data, augmentation, forward, backward, optimiser, validation passes), the FLOPs of
one training image (forward and backward, counted by ``torch.utils.flop_counter`` on the first
step the run took, so every architecture and stamp size is counted as it ran), the TFLOP/s that
makes, and on a GPU whose name is in ``PEAK_DENSE_BF16_TFLOPS`` the fraction of its peak.

Peaks are the vendors' dense (no structured sparsity) bf16 tensor-core figures from the NVIDIA
datasheets (H100 SXM5 and H200 989.4, H100 PCIe 756, A100 312, L40S 362.05, L4 121). A CPU has
no entry: its fraction is left null rather than guessed.
"""

from __future__ import annotations

# (substring of torch.cuda.get_device_name(), dense bf16 TFLOP/s); the first match wins, so the
# more specific names come first
PEAK_DENSE_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H200", 989.4),
    ("H100", 989.4),
    ("A100", 312.0),
    ("L40S", 362.05),
    ("L4", 121.0),
)


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of the named GPU, or None when it is not in the table."""
    for key, tflops in PEAK_DENSE_BF16_TFLOPS:
        if key in device_name:
            return tflops
    return None


def throughput_record(images: int, elapsed_s: float, steps: int, world: int, device_name: str,
                      flops_per_image: float | None) -> dict:
    """The throughput file's content. ``images`` counts every rank's; the fraction of peak is per
    device (``world`` devices share the work)."""
    per_s = images / elapsed_s if elapsed_s > 0 else None
    achieved = per_s * flops_per_image / 1e12 if per_s and flops_per_image else None
    peak = peak_bf16_tflops(device_name)
    return {"steps_timed": int(steps), "elapsed_s": round(elapsed_s, 3), "images_per_s": round(per_s, 1) if per_s else None,
            "world_size": int(world), "device_name": device_name,
            "train_gflop_per_image": round(flops_per_image / 1e9, 4) if flops_per_image else None,
            "achieved_tflops": round(achieved, 3) if achieved else None, "peak_bf16_tflops_per_device": peak,
            "fraction_of_peak": round(achieved / (peak * world), 4) if achieved and peak else None}
