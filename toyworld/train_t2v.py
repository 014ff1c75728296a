"""Stage 2 of a toy-world model: train its denoiser (and text encoder) from scratch on the toy world.

One loop for every toy family; what differs (model, objective, latent normalisation, prompt encoding, folder
layout) is a recipe in :mod:`toyworld.denoisers` chosen with ``--family``:

* ``unet3d`` (default, ``assets/toyworld-t2v``): ``UNet3DConditionModel`` (block_out_channels (48, 96),
  layers_per_block 1, one cross-attention level at the 8x8 latent grid plus the mid block, so it has temporal
  attention blocks for motion embeddings); x0 ("sample") prediction, cosine schedule with 1000 steps.
* ``wan`` (``assets/toyworld-wan``): ``WanTransformer3DModel`` with heads of 128, rectified flow
  (:mod:`motion_core.flow_matching`, shift ``--shift``), prompts encoded with
  :func:`motion_core.text_encoding.encode_masked_prompts`; 17-frame 96x96 clips.
* ``animatediff``: ``UNetMotionModel`` (an SD-style 2-D UNet with motion modules) with the UNet3D toy's objective
  and clips; the prompt goes in once per frame.
* ``latte``: ``LatteTransformer3DModel`` (spatial + temporal transformer blocks, patch 2) with the UNet3D toy's
  objective and clips, prompts encoded as the Latte family encodes them (padding zeroed and masked).

Shared: a tiny ``CLIPTextModel`` over a closed-vocabulary ``CLIPTokenizer``, trained jointly; the VAE written by
:mod:`toyworld.train_vae` is read from ``<out>/vae`` and the posteriors of ``--num-clips`` rendered clips are
cached (a fresh latent sample each step); AdamW lr 1e-3 with warm-up then cosine decay to 1e-4, batch 16,
gradient clip 1, EMA 0.998 (the EMA weights are saved), 10 % caption dropout to the empty prompt for
classifier-free guidance.

Every ``--save-every`` steps the EMA weights are written as a complete diffusers folder at ``--out`` (so a
partial run is usable) and a resumable state to ``--work-dir``.

Usage::

    python -m toyworld.train_vae --out assets/toyworld-t2v --steps 1500 --seed 0
    python -m toyworld.train_t2v --out assets/toyworld-t2v --steps 2500 --seed 0
    python -m toyworld.train_t2v --family wan --out assets/toyworld-wan --steps 600 --num-clips 400 --ema 0.995 --threads 1 --seed 0

Add ``--resume`` to continue from ``<work-dir>/state.pt``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from pathlib import Path

import torch

from .denoisers import (  # noqa: F401  (re-exported: the UNet3D names this module always had)
    MODEL_MAX_LENGTH,
    RECIPES,
    SCHEDULER_CONFIG,
    T2V_TRAIN_SEED_OFFSET,
    UNET_CONFIG,
    build_text_encoder,
    build_tokenizer,
    make_recipe,
    prefix_text_encoder_keys,
    write_slow_tokenizer_files,
)

logger = logging.getLogger(__name__)


def save_pipeline(recipe, out: Path, text_encoder, tokenizer, model, extra: dict) -> None:
    """Write the recipe's complete diffusers folder plus ``train_info.json``."""
    recipe.save(out, text_encoder, tokenizer, model)
    write_slow_tokenizer_files(out / "tokenizer")
    prefix_text_encoder_keys(out / "text_encoder")
    (out / "train_info.json").write_text(json.dumps(extra, indent=1))


def train_t2v(
    out: Path,
    work_dir: Path,
    steps: int = 2500,
    seed: int = 0,
    batch: int = 16,
    num_clips: int = 8000,
    lr: float = 1e-3,
    lr_min: float = 1e-4,
    warmup: int = 100,
    ema_decay: float = 0.998,
    cfg_dropout: float = 0.1,
    save_every: int = 250,
    threads: int = 2,
    resume: bool = False,
    family: str = "unet3d",
    shift: float | None = None,
) -> dict:
    """Train the denoiser + text encoder; see the module docstring. Returns the training summary."""
    torch.set_num_threads(threads)
    work_dir.mkdir(parents=True, exist_ok=True)
    recipe = make_recipe(family, **({"shift": shift} if shift is not None else {}))
    recipe.load_vae(out)
    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(tokenizer, seed)
    model = recipe.build_model(seed + 1)
    n_model = sum(p.numel() for p in model.parameters())
    n_text = sum(p.numel() for p in text_encoder.parameters())
    logger.info("%s %.2f M params, text encoder %.3f M params", recipe.model_key, n_model / 1e6, n_text / 1e6)

    t0 = time.time()
    cache_file = work_dir / recipe.cache_name(seed, num_clips)
    if cache_file.exists():
        cached = torch.load(cache_file)
        lat_mean, lat_std, captions = cached["mean"], cached["std"], cached["captions"]
    else:
        lat_mean, lat_std, captions = recipe.cache_latents(num_clips, seed)
        torch.save({"mean": lat_mean, "std": lat_std, "captions": captions}, cache_file)
    cache_seconds = time.time() - t0
    logger.info(
        "latents %s cached in %.0fs (normalised std %.3f)",
        tuple(lat_mean.shape),
        cache_seconds,
        float(recipe.normalise(lat_mean).std()),
    )

    # Every distinct caption plus the empty prompt; a batch row indexes this list.
    vocab_caps = sorted(set(captions)) + [""]
    cap_index = torch.tensor([vocab_caps.index(c) for c in captions])
    empty_idx = len(vocab_caps) - 1

    params = list(model.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ema_model, ema_text = copy.deepcopy(model).eval(), copy.deepcopy(text_encoder).eval()
    for p in list(ema_model.parameters()) + list(ema_text.parameters()):
        p.requires_grad_(False)
    ema_pairs = list(zip(list(ema_model.parameters()) + list(ema_text.parameters()), params))

    start_step = 0
    history: list[dict] = []
    g = torch.Generator().manual_seed(seed + 7)
    state_file = work_dir / "state.pt"
    key = recipe.model_key
    if resume and state_file.exists():
        st = torch.load(state_file)
        model.load_state_dict(st[key])
        text_encoder.load_state_dict(st["text"])
        ema_model.load_state_dict(st[f"ema_{key}"])
        ema_text.load_state_dict(st["ema_text"])
        opt.load_state_dict(st["opt"])
        g.set_state(st["gen"])
        start_step, history = st["step"], st["history"]
        logger.info("resumed from step %d", start_step)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        p = min((step - warmup) / max(steps - warmup, 1), 1.0)
        return lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * p))

    model.train()
    text_encoder.train()
    t_start = time.time()
    run_loss, run_n = 0.0, 0
    bucket = torch.zeros(4)
    bucket_n = torch.zeros(4)
    for step in range(start_step, steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        idx = torch.randint(lat_mean.shape[0], (batch,), generator=g)
        x0 = recipe.normalise(lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=g))
        cap = cap_index[idx].clone()
        drop = torch.rand(batch, generator=g) < cfg_dropout
        cap[drop] = empty_idx
        prompts = [vocab_caps[i] for i in cap.tolist()]
        res = recipe.objective(model, x0, lambda: recipe.encode_text(tokenizer, text_encoder, prompts), g)
        loss = res.per_sample.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            d = min(ema_decay, (1 + step) / (10 + step))
            for pe, p in ema_pairs:
                pe.mul_(d).add_(p.detach(), alpha=1 - d)
            bucket.index_add_(0, res.quarter, res.per_sample.detach())
            bucket_n.index_add_(0, res.quarter, torch.ones(batch))
        run_loss += loss.item()
        run_n += 1
        done = step + 1
        if done % 50 == 0 or done == steps:
            rec = {
                "step": done,
                "loss": run_loss / run_n,
                "lr": lr_at(step),
                "loss_by_t_quarter": (bucket / bucket_n.clamp(min=1)).tolist(),
                "elapsed": time.time() - t_start,
            }
            history.append(rec)
            logger.info(
                "t2v step %d loss %.4f lr %.2e by-t %s (%.0fs, %.2f s/step)",
                done,
                rec["loss"],
                rec["lr"],
                [round(v, 3) for v in rec["loss_by_t_quarter"]],
                rec["elapsed"],
                rec["elapsed"] / max(done - start_step, 1),
            )
            run_loss, run_n = 0.0, 0
            bucket.zero_()
            bucket_n.zero_()
        if done % save_every == 0 or done == steps:
            info = {
                "step": done,
                "total_steps": steps,
                "seed": seed,
                "batch": batch,
                "num_clips": num_clips,
                "lr": lr,
                "lr_min": lr_min,
                "ema_decay": ema_decay,
                "cfg_dropout": cfg_dropout,
                recipe.params_key: n_model,
                "text_params": n_text,
                **recipe.extra_info,
                **({"latent_cache_seconds": cache_seconds} if recipe.extra_info else {}),
                "history": history,
            }
            save_pipeline(recipe, out, ema_text, tokenizer, ema_model, info)
            torch.save(
                {
                    key: model.state_dict(),
                    "text": text_encoder.state_dict(),
                    f"ema_{key}": ema_model.state_dict(),
                    "ema_text": ema_text.state_dict(),
                    "opt": opt.state_dict(),
                    "gen": g.get_state(),
                    "step": done,
                    "history": history,
                },
                state_file,
            )
            logger.info("saved EMA pipeline to %s at step %d", out, done)
    summary = {"steps": steps, "final_loss": history[-1]["loss"] if history else None, "train_seconds": time.time() - t_start}
    logger.info("done: %s", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=sorted(RECIPES), default="unet3d", help="which toy model (see above)")
    ap.add_argument("--out", type=Path, default=Path("assets/toyworld-t2v"), help="model folder (must hold vae/)")
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/toyworld_work"),
        help="latent cache and resumable state (not part of the model)",
    )
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--num-clips", type=int, default=8000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-min", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--cfg-dropout", type=float, default=0.1)
    ap.add_argument("--save-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shift", type=float, default=None, help="flow shift (wan only; default 3.0)")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train_t2v(
        args.out,
        args.work_dir,
        args.steps,
        args.seed,
        args.batch,
        args.num_clips,
        args.lr,
        args.lr_min,
        args.warmup,
        args.ema,
        args.cfg_dropout,
        args.save_every,
        args.threads,
        args.resume,
        args.family,
        args.shift,
    )


if __name__ == "__main__":
    main()
