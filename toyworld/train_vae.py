"""Stage 1 of a toy-world model: train its VAE on toy-world frames.

Two kinds (``--kind``), one training loop:

* ``unet3d`` (the UNet3D demo model, the default): a tiny ``AutoencoderKL`` on single 32x32 frames -> 8x8x4
  latents; afterwards ``scaling_factor`` is set to ``1 / std`` of the latent means over held-out frames, so
  scaled latents have unit standard deviation.
* ``wan`` (the toy-world Wan): a Wan 2.1-format ``AutoencoderKLWan`` (causal 3-D, 4x temporal and 8x spatial
  compression, 16 latent channels) with a small ``base_dim`` and the fields ComfyUI's Wan 2.1 VAE loader fixes
  (:data:`WAN_VAE_CONFIG`). It trains on ``--window``-frame windows of 17-frame 96x96 clips, ``--crop`` pixels
  square (the VAE encodes the first frame alone and then chunks of 4: 1 + 4 frame windows cover both paths but
  not a chunk whose causal cache comes from another 4-frame chunk, which 9-frame windows do), in the stages that
  toyworld/README.md lists (``--init-from`` continues a saved VAE), and is checked on whole 17-frame clips.
  Afterwards a per-channel affine map is folded into ``quant_conv`` and its inverse into ``post_quant_conv``
  (:func:`fold_latent_normalisation`), so raw latent means and stds equal the Wan 2.1 constants in the config's
  ``latents_mean`` / ``latents_std`` (which ComfyUI's Wan21 latent format hard-codes).

The loss is an object-weighted MSE + L1 in ``[-1, 1]`` pixel space plus a small KL term, optionally
(``--edge-weight``) an L1 on spatial finite differences (the outline). ``--decoder-only`` trains the decoder
alone, so the latents a denoiser was trained on stay the same.

Usage::

    python -m toyworld.train_vae --out assets/toyworld-t2v --steps 1500 --seed 0
    python -m toyworld.train_vae --kind wan --out B/v1 --window 1 --crop 48 --steps 1200 --batch 16 --num-clips 300 --seed 0
    python -m toyworld.train_vae --kind wan --out B/v2 --init-from B/v1/vae --window 5 --crop 96 --steps 250 --batch 4 ...
    (the Wan stages, in order: toyworld/README.md)

Writes ``<out>/vae/`` and ``<out>/vae_train_log.json``. The output folder name is shared with
:mod:`toyworld.train_t2v`, which reads the VAE from there.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from motion_core.comfy_layout import COMFY_WAN_VAE_FIXED

from .world import render_batch

logger = logging.getLogger(__name__)

VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 32,
}

#: The toy-world Wan VAE. ``base_dim`` is ours (ComfyUI reads it from ``decoder.head.0.gamma``); the other fields
#: are the values ComfyUI's Wan 2.1 VAE loader fixes, so it can load these weights. ``latents_mean`` /
#: ``latents_std`` stay diffusers' defaults (the Wan 2.1 constants); the fold makes the latents match them.
WAN_VAE_CONFIG: dict = {"base_dim": 16, **COMFY_WAN_VAE_FIXED}

#: Clip geometry of the toy-world Wan: 17 frames (1 + 4k) of 96x96 -> latents 16 x 5 x 12 x 12. 96 rather than 64:
#: the object is then 27 px, 3.4 latent cells across; at 64 (18 px, 2.25 cells) the VAE rounded every square and
#: triangle into a circle (toyworld/README.md, "Shape at 64x64").
WAN_FRAMES = 17
WAN_SIZE = 96
#: Wan training windows of the recipe's first stage: single frames (every window is a first frame, which the VAE
#: encodes without its temporal convolutions: the spatial path alone), cropped to 48x48 around the object (the VAE is
#: fully convolutional; measured at 96x96 and 2 threads, a step of 16 such crops takes 0.73 s, 8 crops of 1 + 4
#: frames 1.6 s, 4 whole 9-frame windows 5.9 s). Later stages give ``window`` and ``crop`` (toyworld/README.md).
WAN_TRAIN_WINDOW = 1
WAN_TRAIN_CROP = 48

#: Seed offsets keep the VAE's, the T2V model's and the evaluation's clips disjoint.
VAE_TRAIN_SEED_OFFSET = 1_000_000
VAE_EVAL_SEED_OFFSET = 2_000_000


def frames_to_images(frames: torch.Tensor) -> torch.Tensor:
    """``[..., H, W, 3]`` in 0..1 -> ``[N, 3, H, W]`` in -1..1 (leading dims flattened)."""
    x = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2)
    return x * 2.0 - 1.0


def frames_to_videos(frames: torch.Tensor) -> torch.Tensor:
    """``[B, F, H, W, 3]`` in 0..1 -> ``[B, 3, F, H, W]`` in -1..1 (the Wan VAE's input layout)."""
    return frames.permute(0, 4, 1, 2, 3) * 2.0 - 1.0


def videos_to_frames(videos: torch.Tensor) -> torch.Tensor:
    """``[B, 3, F, H, W]`` in -1..1 -> ``[B, F, H, W, 3]`` in 0..1, clamped."""
    return ((videos + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1)


@dataclass(frozen=True)
class VaeKind:
    """What differs between the two toy VAEs; the training loop is shared.

    Attributes:
        name: ``"unet3d"`` or ``"wan"``.
        config: constructor kwargs of the diffusers class.
        model_class: diffusers class name (``AutoencoderKL`` / ``AutoencoderKLWan``).
        num_frames, size: geometry of the rendered clips.
        render: seeds -> training tensor (the unit one batch row indexes: images or clips).
        crop: ``(batch tensor, generator, window, crop size) -> model input`` (picks Wan's training windows of
            ``window`` frames and ``crop size`` pixels; identity for unet3d).
        finalize: ``(vae, eval tensor) -> stats`` after training (scaling factor or latent fold).
        decode_for_loss: ``(vae, z) -> reconstruction`` the loss sees (unclamped for Wan, see
            :func:`_unclamped_wan_decode`).
        logvar_init: initial posterior log-variance (``quant_conv`` bias of the logvar half); None keeps the init.
    """

    name: str
    config: dict
    model_class: str
    num_frames: int
    size: int
    render: Callable[[list[int]], torch.Tensor]
    crop: Callable[[torch.Tensor, torch.Generator, int, int], torch.Tensor]
    finalize: Callable[[object, torch.Tensor], dict]
    decode_for_loss: Callable[[object, torch.Tensor], torch.Tensor] = lambda vae, z: vae.decode(z).sample
    logvar_init: float | None = None

    def build(self):
        """A fresh VAE from :attr:`config`.

        For Wan the posterior's log-variance starts at -6 (``quant_conv`` bias), not 0: at the default init the
        latent mean has std ~0.17 against unit sampling noise, so the decoder would first learn to ignore it.
        """
        import diffusers

        vae = getattr(diffusers, self.model_class)(**self.config)
        if self.logvar_init is not None:
            with torch.no_grad():
                vae.quant_conv.bias[vae.config.z_dim :] = self.logvar_init
        return vae

    def load(self, path: Path):
        """The trained VAE saved at ``path``, in eval mode."""
        import diffusers

        return getattr(diffusers, self.model_class).from_pretrained(path).eval()


def _render_images(seeds: list[int]) -> torch.Tensor:
    frames, _, _ = render_batch(seeds)
    return frames_to_images(frames)  # [len(seeds)*F, 3, 32, 32]


def _render_wan_clips(seeds: list[int]) -> torch.Tensor:
    frames, _, _ = render_batch(seeds, num_frames=WAN_FRAMES, height=WAN_SIZE, width=WAN_SIZE)
    return frames_to_videos(frames)  # [len(seeds), 3, 17, 64, 64]


def _unclamped_wan_decode(vae, z: torch.Tensor) -> torch.Tensor:
    """``AutoencoderKLWan`` decode without its final clamp to [-1, 1] (the per-latent-frame decoder outputs).

    The clamp has zero gradient outside [-1, 1]: once the decoder undershoots -1 (the black background), object
    pixels there get no gradient either and training stalls at "all black" (measured: weighted MSE stuck near
    0.5-0.6 for 200 steps with it). The decoder module's outputs are collected by a forward hook, so diffusers'
    own chunked decode runs unchanged.
    """
    outputs: list[torch.Tensor] = []
    handle = vae.decoder.register_forward_hook(lambda module, args, out: outputs.append(out))
    try:
        vae.decode(z)
    finally:
        handle.remove()
    return torch.cat(outputs, dim=2)


def _wan_window(
    x: torch.Tensor, g: torch.Generator, window: int = WAN_TRAIN_WINDOW, crop: int = WAN_TRAIN_CROP
) -> torch.Tensor:
    """One random ``window``-frame, ``crop`` x ``crop`` window per clip of ``x`` ``[B, 3, F, H, W]``.

    Returns ``[B, 3, window, crop, crop]`` (``crop`` at least the frame size: whole frames). The crop is centred
    on the object (its brightness centroid over the window) plus a uniform +-8 px jitter, so every window shows
    it: with uniform crops about half showed only background, and training stalled on "all black" for 200 steps.
    """
    b, _, f, h, w = x.shape
    starts = torch.randint(f - window + 1, (b,), generator=g).tolist()
    if crop >= h and crop >= w:
        return torch.stack([clip[:, s : s + window] for clip, s in zip(x, starts)])
    c = crop
    jitter = (torch.rand(b, 2, generator=g) * 16 - 8).tolist()
    out = []
    for clip, s, (jx, jy) in zip(x, starts, jitter):
        win = clip[:, s : s + window]
        inten = ((win + 1) / 2).amax(dim=0).sum(dim=0)  # [H, W] brightness summed over the window
        total = inten.sum().clamp(min=1e-6)
        cy = float((inten.sum(dim=1) * torch.arange(h)).sum() / total)
        cx = float((inten.sum(dim=0) * torch.arange(w)).sum() / total)
        y0 = int(min(max(round(cy - c / 2 + jy), 0), h - c))
        x0 = int(min(max(round(cx - c / 2 + jx), 0), w - c))
        out.append(win[:, :, y0 : y0 + c, x0 : x0 + c])
    return torch.stack(out)


@torch.no_grad()
def _encode_means(vae, data: torch.Tensor, chunk: int) -> torch.Tensor:
    return torch.cat([vae.encode(data[i : i + chunk]).latent_dist.mean for i in range(0, len(data), chunk)])


@torch.no_grad()
def _finalize_scaling(vae, eval_data: torch.Tensor) -> dict:
    """UNet3D VAE: ``scaling_factor = 1 / std`` of held-out latent means."""
    lat = _encode_means(vae, eval_data, 128)
    scaling = 1.0 / float(lat.std())
    vae.register_to_config(scaling_factor=scaling)
    rec = torch.cat([vae.decode(lat[i : i + 128]).sample for i in range(0, len(lat), 128)])
    return {
        "latent_mean": float(lat.mean()),
        "latent_std": float(lat.std()),
        "latent_channel_means": lat.mean(dim=(0, 2, 3)).tolist(),
        "scaling_factor": scaling,
        **_reconstruction_errors(rec, eval_data),
    }


@torch.no_grad()
def fold_latent_normalisation(vae, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make the raw latents of ``vae`` (an ``AutoencoderKLWan``) have the config's per-channel mean and std.

    With the measured per-channel posterior-mean statistics ``mean``, ``std`` (``[z_dim]``), the map
    ``z' = a * z + b`` with ``a = latents_std / std`` and ``b = latents_mean - a * mean`` is folded into the mu half
    of ``quant_conv`` (logvar gets ``+ 2 log a``, so the posterior scales alike) and ``z = (z' - b) / a`` into
    ``post_quant_conv`` (both are 1x1x1 convolutions). ``decode(encode(x))`` is unchanged up to float rounding.
    """
    z = vae.config.z_dim
    target_mean = torch.tensor(vae.config.latents_mean, dtype=torch.float64)
    target_std = torch.tensor(vae.config.latents_std, dtype=torch.float64)
    a = target_std / std.double()
    b = target_mean - a * mean.double()
    q = vae.quant_conv
    w, bias = q.weight.double(), q.bias.double()  # [2z, 2z, 1, 1, 1], [2z]
    w[:z] *= a.view(z, 1, 1, 1, 1)
    bias[:z] = a * bias[:z] + b
    bias[z:] += 2 * a.log()
    q.weight.copy_(w)
    q.bias.copy_(bias)
    pq = vae.post_quant_conv
    w, bias = pq.weight.double(), pq.bias.double()  # [z, z, 1, 1, 1] acting on z' through (z' - b) / a
    bias -= (w[:, :, 0, 0, 0] * (b / a)[None]).sum(dim=1)
    w /= a.view(1, z, 1, 1, 1)
    pq.weight.copy_(w)
    pq.bias.copy_(bias)


@torch.no_grad()
def _finalize_wan_fold(vae, eval_data: torch.Tensor) -> dict:
    """Wan VAE: fold the latent normalisation, then measure reconstructions of whole 17-frame clips."""
    lat = _encode_means(vae, eval_data, 8)  # [N, 16, 5, 12, 12]
    mean, std = lat.mean(dim=(0, 2, 3, 4)), lat.std(dim=(0, 2, 3, 4))
    fold_latent_normalisation(vae, mean, std)
    lat2 = _encode_means(vae, eval_data, 8)
    norm = (lat2 - torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)) / torch.tensor(
        vae.config.latents_std
    ).view(1, -1, 1, 1, 1)
    rec = torch.cat([vae.decode(lat2[i : i + 8]).sample for i in range(0, len(lat2), 8)])
    return {
        "prefold_channel_means": mean.tolist(),
        "prefold_channel_stds": std.tolist(),
        "normalised_latent_mean": float(norm.mean()),
        "normalised_latent_std": float(norm.std()),
        "normalised_channel_std_range": [float(norm.std(dim=(0, 2, 3, 4)).min()), float(norm.std(dim=(0, 2, 3, 4)).max())],
        **_reconstruction_errors(rec, eval_data),
    }


@torch.no_grad()
def _reconstruction_stats(vae, eval_data: torch.Tensor) -> dict:
    """Reconstruction errors of ``eval_data`` clips through an already finalised Wan VAE (nothing refolded)."""
    lat = _encode_means(vae, eval_data, 8)
    rec = torch.cat([vae.decode(lat[i : i + 8]).sample for i in range(0, len(lat), 8)])
    return _reconstruction_errors(rec, eval_data)


def _reconstruction_errors(rec: torch.Tensor, data: torch.Tensor) -> dict:
    """Mean absolute errors in 0..1 of reconstructions ``rec`` of ``data`` (both channel-first, -1..1)."""
    rec01 = ((rec + 1) / 2).clamp(0, 1)
    tgt01 = (data + 1) / 2
    obj = tgt01.amax(dim=1) > 0.5
    err = (rec01 - tgt01).abs().transpose(0, 1)  # channel first
    return {
        "eval_mae_all": float(err.mean()),
        "eval_mae_object": float(err[:, obj].mean()),
        "eval_mae_background": float(err[:, ~obj].mean()),
    }


VAE_KINDS: dict[str, VaeKind] = {
    "unet3d": VaeKind(
        "unet3d", VAE_CONFIG, "AutoencoderKL", 8, 32, _render_images, lambda x, g, window, crop: x, _finalize_scaling
    ),
    "wan": VaeKind(
        "wan",
        WAN_VAE_CONFIG,
        "AutoencoderKLWan",
        WAN_FRAMES,
        WAN_SIZE,
        _render_wan_clips,
        _wan_window,
        _finalize_wan_fold,
        _unclamped_wan_decode,
        -6.0,
    ),
}


def spatial_gradient_l1(rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 difference of the horizontal and vertical finite differences of ``rec`` and ``target`` (``[..., H, W]``).

    Zero on flat regions, so it weighs the object's outline: the corners that tell a square from a circle are a
    handful of pixels that the plain MSE hardly sees (a VAE trained without it drew every square with rounded
    corners, fill ratio ~0.82, read as circles).
    """
    dx = (rec.diff(dim=-1) - target.diff(dim=-1)).abs().mean()
    dy = (rec.diff(dim=-2) - target.diff(dim=-2)).abs().mean()
    return dx + dy


def vae_loss(vae, images: torch.Tensor, kl_weight: float, decode=None, edge_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Object-weighted reconstruction + KL (+ ``edge_weight`` x :func:`spatial_gradient_l1` when positive).

    Args:
        vae: diffusers AutoencoderKL or AutoencoderKLWan.
        images: ``[N, 3, H, W]`` images or ``[N, 3, F, H, W]`` clips in -1..1.
        kl_weight: weight of the per-element KL term.
        decode: ``(vae, z) -> reconstruction`` (default ``vae.decode(z).sample``).
        edge_weight: weight of the outline term (0: not computed).
    """
    post = vae.encode(images).latent_dist
    z = post.sample()
    rec = decode(vae, z) if decode is not None else vae.decode(z).sample
    target_intensity = ((images + 1) / 2).amax(dim=1, keepdim=True)  # [N,1,...], 1 on the object
    w = 1.0 + 9.0 * target_intensity
    mse = (w * (rec - images) ** 2).mean() / w.mean()
    l1 = (w * (rec - images).abs()).mean() / w.mean()
    kl = 0.5 * (post.mean**2 + post.var - 1.0 - post.logvar).mean()
    loss = mse + 0.5 * l1 + kl_weight * kl
    parts = {"mse": mse.item(), "l1": l1.item(), "kl": kl.item()}
    if edge_weight > 0:
        edge = spatial_gradient_l1(rec, images)
        loss = loss + edge_weight * edge
        parts["edge"] = edge.item()
    return loss, parts


def train_vae(
    out: Path,
    steps: int = 1500,
    seed: int = 0,
    batch: int = 64,
    num_clips: int = 2000,
    lr: float = 2e-3,
    kl_weight: float = 1e-4,
    threads: int = 2,
    kind: str = "unet3d",
    eval_clips: int = 64,
    window: int = WAN_TRAIN_WINDOW,
    init_from: Path | None = None,
    crop: int = WAN_TRAIN_CROP,
    edge_weight: float = 0.0,
    decoder_only: bool = False,
) -> dict:
    """Train the VAE and save it to ``out / "vae"``. Returns the training log (also written as JSON).

    ``batch`` counts frames for ``unet3d`` and clips (``window``-frame windows) for ``wan``. ``init_from`` continues
    from a saved VAE folder instead of a fresh one (a folded Wan VAE is refolded at the end). ``decoder_only``
    (with ``init_from``) trains ``post_quant_conv`` and the decoder alone and skips the finalisation: the encoder,
    and so every latent a denoiser was trained on, stays bit for bit the same.
    """
    if decoder_only and init_from is None:
        raise ValueError("decoder_only continues a trained VAE: give init_from")
    recipe = VAE_KINDS[kind]
    if kind == "wan" and not (1 <= window <= recipe.num_frames and (window - 1) % 4 == 0):
        raise ValueError(f"window {window}: the Wan VAE encodes 1 + 4k frames; give 1, 5, 9, ... up to {recipe.num_frames}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = recipe.render([VAE_TRAIN_SEED_OFFSET + seed * 100_000 + i for i in range(num_clips)])
    eval_data = recipe.render([VAE_EVAL_SEED_OFFSET + i for i in range(eval_clips)])
    logger.info("rendered training data %s in %.1fs", tuple(data.shape), time.time() - t0)

    vae = recipe.load(init_from).train() if init_from is not None else recipe.build()
    n_params = sum(p.numel() for p in vae.parameters())
    logger.info("VAE parameters: %.2f M", n_params / 1e6)
    if decoder_only:
        trained = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
        ids = {id(p) for p in trained}
        for param in vae.parameters():
            param.requires_grad_(id(param) in ids)
    else:
        trained = list(vae.parameters())
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    warm = max(steps // 20, 1)

    def lr_at(step: int) -> float:
        if step < warm:
            return lr * (step + 1) / warm
        p = (step - warm) / max(steps - warm, 1)
        return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))

    g = torch.Generator().manual_seed(seed)
    history = []
    t_start = time.time()
    vae.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        idx = torch.randint(data.shape[0], (batch,), generator=g)
        x = recipe.crop(data[idx], g, window, crop)
        if torch.rand((), generator=g) < 0.5:  # flips keep the world's statistics
            x = x.flip(-1)
        loss, parts = vae_loss(vae, x, kl_weight, recipe.decode_for_loss, edge_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            rec = dict(step=step, loss=loss.item(), **parts, elapsed=time.time() - t_start)
            history.append(rec)
            logger.info(
                "vae step %d loss %.5f mse %.5f kl %.3f (%.0fs)", step, loss.item(), parts["mse"], parts["kl"], rec["elapsed"]
            )

    vae.eval()
    train_seconds = time.time() - t_start
    finalised = _reconstruction_stats(vae, eval_data) if decoder_only else recipe.finalize(vae, eval_data)
    stats = {**finalised, "params": n_params, "train_seconds": train_seconds}
    vae.save_pretrained(out / "vae")
    log = {
        "config": recipe.config,
        "steps": steps,
        "seed": seed,
        "batch": batch,
        "lr": lr,
        "kl_weight": kl_weight,
        **({"edge_weight": edge_weight} if edge_weight > 0 else {}),
        "stats": stats,
        "history": history,
    }
    if kind != "unet3d":  # the UNet3D log keeps its original fields
        log.update(kind=kind, num_clips=num_clips, frames=recipe.num_frames, size=recipe.size, window=window, crop=crop)
        log.update(init_from=str(init_from) if init_from else None, decoder_only=decoder_only)
    (out / "vae_train_log.json").write_text(json.dumps(log, indent=1))
    logger.info("VAE saved to %s: %s", out / "vae", json.dumps(stats))
    return log


@torch.no_grad()
def check_vae(vae_dir: Path, num_clips: int = 100, kind: str = "unet3d") -> dict:
    """Reconstruct held-out clips and run the toy-world detector on the reconstructions.

    Returns:
        dict with colour / shape accuracy and presence on reconstructions, mean centroid shift (px) between
        original and reconstruction, and the mean absolute pixel error.
    """
    from .metrics import detect_clip

    recipe = VAE_KINDS[kind]
    vae = recipe.load(vae_dir)
    frames, _, clips = render_batch(
        [VAE_EVAL_SEED_OFFSET + 10_000 + i for i in range(num_clips)],
        num_frames=recipe.num_frames,
        height=recipe.size,
        width=recipe.size,
    )
    b = frames.shape[0]
    if kind == "unet3d":
        x = frames_to_images(frames)
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        rec = ((rec + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).reshape(frames.shape)
    else:
        x = frames_to_videos(frames)
        rec = torch.cat(
            [vae.decode(vae.encode(x[i : i + 8]).latent_dist.mean).sample for i in range(0, b, 8)]
        )
        rec = videos_to_frames(rec)
    col = shp = pres = 0
    shifts = []
    for r, c in zip(rec, clips):
        d, d0 = detect_clip(r), detect_clip(c.frames)
        col += d.colour == c.colour
        shp += d.shape == c.shape
        pres += d.presence_rate
        shifts.append((d.centroids - d0.centroids).norm(dim=1).nanmean())
    out = {
        "colour_acc": col / b,
        "shape_acc": shp / b,
        "presence": pres / b,
        "centroid_shift_px": float(torch.stack(shifts).nanmean()),
        "mae": float((rec - frames).abs().mean()),
    }
    logger.info("VAE reconstruction check: %s", out)
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=sorted(VAE_KINDS), default="unet3d", help="which toy VAE (see above)")
    ap.add_argument("--out", type=Path, default=Path("assets/toyworld-t2v"), help="model folder (vae/ goes inside)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64, help="frames (unet3d) or windows (wan) per step")
    ap.add_argument("--num-clips", type=int, default=2000, help="training clips rendered up front")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check-only", action="store_true", help="only run check_vae on <out>/vae")
    ap.add_argument("--check-clips", type=int, default=100, help="held-out clips for the reconstruction check")
    ap.add_argument("--window", type=int, default=WAN_TRAIN_WINDOW, help="wan: frames per training window (1 + 4k; 1: single frames, the first-frame path)")
    ap.add_argument("--init-from", type=Path, default=None, help="continue from this saved VAE folder")
    ap.add_argument("--edge-weight", type=float, default=0.0, help="weight of the outline (spatial-gradient L1) term")
    ap.add_argument("--decoder-only", action="store_true", help="with --init-from: train the decoder alone (latents unchanged)")
    ap.add_argument("--crop", type=int, default=WAN_TRAIN_CROP, help=f"wan: training crop side in pixels ({WAN_SIZE}: whole frames)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.check_only:
        check_vae(args.out / "vae", args.check_clips, args.kind)
        return
    train_vae(
        args.out,
        args.steps,
        args.seed,
        args.batch,
        args.num_clips,
        args.lr,
        args.kl_weight,
        args.threads,
        args.kind,
        window=args.window,
        init_from=args.init_from,
        crop=args.crop,
        edge_weight=args.edge_weight,
        decoder_only=args.decoder_only,
    )
    check_vae(args.out / "vae", args.check_clips, args.kind)


if __name__ == "__main__":
    main()
