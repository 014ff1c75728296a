"""The toy-world Wan folder: one ComfyUI's and diffusers' Wan loaders take, stored in fp16, with latents normalised by
Wan 2.1's constants, that samples the prompt's colour and trains an embedding.

It checks ``assets/toyworld-wan`` once that folder is bundled; until then (it misses its model check:
toyworld/README.md) the module is skipped unless ``TOYWORLD_WAN_DIR`` names a local rebuild exported with
``python -m toyworld.export_fp16``, which is how a rebuild is checked before it is bundled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from motion_core.comfy_layout import check_transformer_config, check_vae_config, export_comfy
from motion_core.model_loading import load_video_model
from motion_core.recommended_settings import read_recommended_settings
from motion_core.sampling import SamplingConfig, sample_video
from motion_core.training import TrainingConfig, evaluation_loss, train_motion_embedding
from motion_core.video_io import read_video_frames
from toyworld import world
from toyworld.metrics import detect_clip
from toyworld.train_vae import WAN_FRAMES, WAN_SIZE

ASSETS = Path(__file__).resolve().parent.parent / "assets"
MODEL = Path(os.environ.get("TOYWORLD_WAN_DIR") or ASSETS / "toyworld-wan")
CLIP = ASSETS / "sample_clips" / "toyworld_wan_red_square_bounce.mp4"
PARTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")

pytestmark = pytest.mark.skipif(
    not (MODEL / "model_index.json").is_file(),
    reason=f"no toy-world Wan at {MODEL}: not bundled yet; set TOYWORLD_WAN_DIR to a rebuild (toyworld/README.md)",
)


@pytest.fixture(scope="module")
def wan_demo():
    return load_video_model(MODEL, "fp32", "auto", "cpu", use_cache=False)


def _config(part: str) -> dict:
    return json.loads((MODEL / part / "config.json").read_text())


def test_folder_is_small_complete_and_stored_in_fp16():
    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size <= 20 * 2**20
    assert json.loads((MODEL / "model_index.json").read_text())["_class_name"] == "WanPipeline"
    assert all((MODEL / part).is_dir() for part in PARTS)
    weights = sorted(MODEL.rglob("*.safetensors"))
    assert {w.parent.name for w in weights} == {"transformer", "vae", "text_encoder"}
    for path in weights:
        with safe_open(str(path), "pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        assert dtypes <= {"F16", "I64"}, (path, dtypes)


def test_comfyuis_wan_loaders_take_it(tmp_path):
    """The dims ComfyUI reads from the weights or fixes hold, so the core-node export is a faithful copy."""
    check_transformer_config(_config("transformer"))
    check_vae_config(_config("vae"))
    export = export_comfy(MODEL, tmp_path, "toyworld_wan")
    assert export.transformer.is_file() and export.vae.is_file()


def test_latents_are_normalised_by_the_wan21_constants(wan_demo):
    """Wan 2.1's fixed means and stds (what ComfyUI's latent format applies) map this VAE's latents to mean 0, std 1."""
    clips = [world.random_clip(90_000 + i, num_frames=WAN_FRAMES, height=WAN_SIZE, width=WAN_SIZE).frames for i in range(6)]
    with torch.no_grad():
        latents = torch.cat([wan_demo.family.encode_frames(wan_demo, clip, None) for clip in clips])  # (6, 16, F', h, w)
    per_channel = latents.transpose(0, 1).flatten(1)
    assert per_channel.mean(dim=1).abs().max() < 0.35
    assert ((per_channel.std(dim=1) > 0.6) & (per_channel.std(dim=1) < 1.5)).all()


def test_recommended_settings_are_the_geometry_it_was_trained_at():
    info = json.loads((MODEL / "train_info.json").read_text())
    settings = read_recommended_settings(MODEL)
    assert (info["frames"], info["height"], info["width"]) == (WAN_FRAMES, WAN_SIZE, WAN_SIZE)
    for part in (settings.train, settings.sample):
        values = dataclasses.asdict(part)
        assert (values["width"], values["height"], values["frames"]) == (WAN_SIZE, WAN_SIZE, WAN_FRAMES)


@pytest.mark.parametrize("prompt, colour", [("a blue circle", "blue"), ("a yellow square", "yellow")])
def test_samples_follow_the_prompt(wan_demo, prompt, colour):
    frames = sample_video(wan_demo, SamplingConfig(prompt=prompt, width=WAN_SIZE, height=WAN_SIZE, frames=WAN_FRAMES,
                                                   steps=20, guidance_scale=1.0, seed=3))
    found = detect_clip(frames)
    assert found.presence_rate >= 0.9
    assert found.colour == colour


def test_short_training_on_the_wan_sample_clip_lowers_the_loss(wan_demo):
    reference = read_video_frames(CLIP, frame_count=WAN_FRAMES, width=WAN_SIZE, height=WAN_SIZE).frames
    config = TrainingConfig(prompt="a red square", steps=40, learning_rate=0.1, layer_set="all", inversion_steps=0,
                            gradient_checkpointing=False)
    embedding = train_motion_embedding(wan_demo, reference, config).embedding
    before = evaluation_loss(wan_demo, reference, "a red square", None, draws=16)
    after = evaluation_loss(wan_demo, reference, "a red square", embedding, draws=16)
    assert after < 0.9 * before, (before, after)
