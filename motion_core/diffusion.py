"""Small diffusion helpers shared by training, inversion and sampling: text and VAE encoding, targets."""

from __future__ import annotations

import torch

from .model_loading import VideoModel

VAE_CHUNK_FRAMES = 8
HALF_DTYPES = (torch.float16, torch.bfloat16)


def autocast(model: VideoModel) -> torch.autocast:
    """Mixed precision for the UNet of a half-precision model (a no-op for fp32 models).

    Matrix products and convolutions run in the model's dtype, reductions such as norms and softmax in fp32,
    and fp32 tensors (the motion embeddings, the LoRA) meet the half-precision weights without manual casts.
    """
    half = model.dtype in HALF_DTYPES
    return torch.autocast(model.device.type, dtype=model.dtype if half else torch.bfloat16, enabled=half)


@torch.no_grad()
def encode_prompt(model: VideoModel, prompt: str) -> torch.Tensor:
    """Text embedding of ``prompt``: ``(1, L, D)`` in the model's dtype (L = tokenizer max length)."""
    tokens = model.tokenizer(
        prompt, padding="max_length", max_length=model.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return model.text_encoder(tokens.input_ids.to(model.device))[0].to(model.dtype)


@torch.no_grad()
def encode_frames(model: VideoModel, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """VAE latents of a clip.

    Args:
        frames: ``(F, H, W, 3)`` in 0..1 (ComfyUI IMAGE layout); H and W multiples of the VAE factor.
        generator: for the posterior sample (deterministic when given).

    Returns:
        ``(1, C, F, H/f, W/f)`` scaled by the VAE's scaling factor, fp32.
    """
    pixels = frames.permute(0, 3, 1, 2).to(model.device, torch.float32) * 2.0 - 1.0
    chunks = []
    for start in range(0, pixels.shape[0], VAE_CHUNK_FRAMES):
        posterior = model.vae.encode(pixels[start : start + VAE_CHUNK_FRAMES]).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator, device=generator.device if generator else None)
        chunks.append(posterior.mean + posterior.std * noise.to(posterior.mean.device))
    latents = torch.cat(chunks) * model.vae.config.scaling_factor  # (F, C, h, w)
    return latents.permute(1, 0, 2, 3).unsqueeze(0)


@torch.no_grad()
def decode_latents(model: VideoModel, latents: torch.Tensor) -> torch.Tensor:
    """Frames of ``latents`` ``(1, C, F, h, w)`` as ``(F, H, W, 3)`` in 0..1 on the CPU, fp32."""
    flat = latents[0].permute(1, 0, 2, 3).to(torch.float32) / model.vae.config.scaling_factor
    frames = [model.vae.decode(flat[i : i + VAE_CHUNK_FRAMES]).sample for i in range(0, flat.shape[0], VAE_CHUNK_FRAMES)]
    images = (torch.cat(frames) / 2.0 + 0.5).clamp(0.0, 1.0)
    return images.permute(0, 2, 3, 1).cpu()


def alpha_bar(scheduler, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Cumulative alpha of ``timesteps`` (``(B,)``), shaped to broadcast over ``like`` ``(B, C, F, h, w)``."""
    values = scheduler.alphas_cumprod.to(like.device)[timesteps.to(like.device).long()].to(torch.float32)
    return values.view(-1, *([1] * (like.ndim - 1)))


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict under the scheduler's ``prediction_type`` (epsilon, v_prediction, sample)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return latents
    if kind == "v_prediction":
        a = alpha_bar(scheduler, timesteps, latents)
        return a.sqrt() * noise - (1 - a).sqrt() * latents
    raise ValueError(f"Unsupported prediction_type {kind!r}")


def add_noise(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Forward diffusion ``sqrt(a) x0 + sqrt(1-a) eps`` for 5-D video latents."""
    a = alpha_bar(scheduler, timesteps, latents)
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def split_prediction(scheduler, output: torch.Tensor, sample: torch.Tensor, timestep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert a UNet output at ``timestep`` into (predicted clean latent, predicted noise)."""
    a = scheduler.alphas_cumprod[int(timestep)].to(sample.device, torch.float32)
    kind = scheduler.config.prediction_type
    output = output.float()
    if kind == "epsilon":
        eps = output
        x0 = (sample - (1 - a).sqrt() * eps) / a.sqrt()
    elif kind == "sample":
        x0 = output
        eps = (sample - a.sqrt() * x0) / (1 - a).sqrt()
    elif kind == "v_prediction":
        x0 = a.sqrt() * sample - (1 - a).sqrt() * output
        eps = a.sqrt() * output + (1 - a).sqrt() * sample
    else:
        raise ValueError(f"Unsupported prediction_type {kind!r}")
    return x0, eps
