"""Memory estimates of the UNet3D family (see :mod:`motion_core.memory_estimate` for the checks that use them).

The estimate is deliberately simple: activation memory of a UNet3D grows with frames x latent area x the
channel width of each resolution level (each level has a quarter of the area of the one above), a little faster
than the area on CPU (attention over the positions of a frame), and by a quarter more when the embeddings sit in
every temporal layer (the backward pass then runs through the whole UNet). The factors below come from peak memory measured with ``benchmarks/bench_training.py --preset zeroscope-small --scale`` (the
full ZeroScope UNet in fp32 on CPU: the script prints "estimate / measured" for every case) and are rounded up
so that the estimate stays above every measured case. They were not measured on a GPU, where attention kernels
keep less; a user who knows better can set ``MOTION_INVERSION_SKIP_MEMORY_CHECK=1``.

The VAE encode of the clip (before training, no gradients) is estimated too: it grows with the pixels of a chunk
of frames times the VAE's first block width. The same estimate decides gradient checkpointing ``auto``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..model_loading import VideoModel

# VAE frames encoded or decoded at once (the 2-D VAE runs frame by frame).
VAE_CHUNK_FRAMES = 8
# Stored activations per (frame x latent position x channel) of one level, in elements.
ACTIVATIONS_PER_ELEMENT = {False: 380.0, True: 150.0}
# CPU only: memory grows by (1 + latent positions per frame / this) on top of linear (measured 1.02 at 512, 1.15 at 1024).
CPU_AREA_GROWTH = 6000.0
# The backward pass reaches the top level only when the embeddings are in every temporal layer (measured 1.21).
LAYER_SET_FACTOR = {"paper": 1.0, "paper+640": 1.0, "all": 1.3}
# VAE encode (no gradients, fp32, VAE_CHUNK_FRAMES frames at a time): peak per element of the top level's
# activations (frames x pixels x first block width); measured 4.2 on the toy-world VAE at 256 and 512 px, rounded up.
VAE_ACTIVATIONS_PER_ELEMENT = 6.0


def estimate_training_bytes(
    model: VideoModel, frames: int, latent_height: int, latent_width: int, checkpointing: bool, layer_set: str = "all"
) -> int:
    """Rough peak activation memory (bytes) of one training step, on top of the loaded model.

    Args:
        frames, latent_height, latent_width: size of the training latents ``(1, C, frames, h, w)``.
        checkpointing: whether gradient checkpointing is on.
        layer_set: ``paper`` / ``paper+640`` / ``all`` (unknown names count as ``all``).
    """
    element = torch.finfo(model.dtype).bits // 8
    per_position = sum(c / 4**level for level, c in enumerate(model.denoiser.config.block_out_channels))
    area = latent_height * latent_width
    growth = 1.0 + area / CPU_AREA_GROWTH if model.device.type == "cpu" else 1.0
    layers = LAYER_SET_FACTOR.get(layer_set, LAYER_SET_FACTOR["all"])
    return int(ACTIVATIONS_PER_ELEMENT[checkpointing] * frames * area * per_position * element * growth * layers)


def estimate_vae_encode_bytes(model: VideoModel, frames: int, height: int, width: int) -> int:
    """Rough peak memory (bytes) of encoding ``frames`` frames of ``height`` x ``width`` pixels with the VAE."""
    chunk = min(frames, VAE_CHUNK_FRAMES)
    top_width = model.vae.config.block_out_channels[0]
    element = 4  # the VAE runs in fp32
    return int(VAE_ACTIVATIONS_PER_ELEMENT * chunk * height * width * top_width * element)


# ----- sampling -----
# Feature maps of the top UNet level alive besides the skip connections (block input, a resnet's intermediate,
# its output), and full-resolution VAE decoder maps alive during one decode chunk. Both are floors, not
# measurements: the sampling check refuses only what cannot fit, never what might.
SAMPLING_WORKING_MAPS = 3
VAE_WORKING_MAPS = 2


def _temporal_scores_elements(model: VideoModel, batch: int, frames: int, latent_height: int, latent_width: int) -> int:
    """Largest frame-attention score tensor ``(batch*h*w, heads, frames, frames)`` the matmul kernel builds (0 otherwise)."""
    if model.kernel != "matmul":
        return 0
    modules = dict(model.denoiser.named_modules())
    largest = 0
    for block in model.family.find_sites(model.denoiser):
        h, w = block.grid(latent_height, latent_width)
        heads = int(getattr(modules[block.attention_names[0]], "heads", 1))
        largest = max(largest, batch * h * w * heads * frames * frames)
    return largest


def estimate_sampling_bytes(model: VideoModel, frames: int, latent_height: int, latent_width: int, guided: bool) -> int:
    """A floor on the peak memory (bytes) of one generation, on top of the loaded model.

    Counts what must exist at once: the latents ``(B, C, frames, h, w)`` in fp32 (B = 2 with guidance), the
    UNet's skip connections and working maps at every level, the frame-attention scores when the kernel builds
    them (the matmul kernel; scores and their softmax), and the VAE decode of one chunk of frames at full
    resolution plus the decoded clip ``(frames, 3, H, W)`` fp32. The UNet and the VAE run one after the other,
    so the larger of the two counts.
    """
    batch = 2 if guided else 1
    element = torch.finfo(model.dtype).bits // 8
    area = latent_height * latent_width
    unet_config = model.denoiser.config
    channels = list(unet_config.block_out_channels)
    skips = (unet_config.layers_per_block + 1) * sum(c / 4**level for level, c in enumerate(channels))
    unet_maps = batch * frames * area * (skips + SAMPLING_WORKING_MAPS * channels[0]) * element
    scores = 2 * _temporal_scores_elements(model, batch, frames, latent_height, latent_width) * element
    latents = sampling_latent_bytes(model, frames, latent_height, latent_width, guided)
    return int(latents + max(unet_maps + scores, vae_decode_bytes(model, frames, latent_height, latent_width)))


def sampling_latent_bytes(model: VideoModel, frames: int, latent_height: int, latent_width: int, guided: bool) -> int:
    """The latents, model input, output and scheduler step of a generation, fp32 (batch 2 with guidance)."""
    batch = 2 if guided else 1
    return 4 * batch * model.latent_channels * frames * latent_height * latent_width * 4


def vae_decode_bytes(model: VideoModel, frames: int, latent_height: int, latent_width: int) -> int:
    """The 2-D VAE decode: full-resolution decoder maps of one chunk of frames plus the decoded clip, fp32."""
    pixels = latent_height * latent_width * model.vae_scale_factor**2
    vae_top = model.vae.config.block_out_channels[0]
    return (VAE_WORKING_MAPS * min(frames, VAE_CHUNK_FRAMES) * vae_top + 2 * frames * 3) * pixels * 4
