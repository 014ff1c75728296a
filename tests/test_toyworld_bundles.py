"""The bundled toy-world AnimateDiff and Latte: each a complete diffusers folder stored in fp16 that the pack loads as
its family, with recommended settings at the geometry it was trained at, that samples what the prompt says and
whose embeddings train on the demo clip.

A folder that is not in ``assets/`` is skipped (with the reason); ``TOYWORLD_<FAMILY>_DIR`` checks a local rebuild
exported with ``python -m toyworld.export_fp16`` before it is bundled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from safetensors import safe_open

from motion_core.model_loading import load_video_model
from motion_core.recommended_settings import read_recommended_settings
from motion_core.sampling import SamplingConfig, sample_video
from motion_core.training import TrainingConfig, evaluation_loss, train_motion_embedding
from motion_core.video_io import read_video_frames
from toyworld.metrics import detect_clip

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CLIP = ASSETS / "sample_clips" / "toyworld_red_square_bounce.mp4"
FRAMES, SIZE = 8, 32  # the UNet3D toy's world geometry, which both share

#: family -> (bundled folder, pipeline class, denoiser folder)
BUNDLES = {
    "animatediff": ("toyworld-animatediff", "AnimateDiffPipeline", "unet"),
    "latte": ("toyworld-latte", "LattePipeline", "transformer"),
}


def _folder(family: str) -> Path:
    return Path(os.environ.get(f"TOYWORLD_{family.upper()}_DIR") or ASSETS / BUNDLES[family][0])


def _present(family: str):
    folder = _folder(family)
    return pytest.param(family, marks=pytest.mark.skipif(
        not (folder / "model_index.json").is_file(),
        reason=f"no toy-world {family} at {folder}: not bundled; toyworld/README.md rebuilds it",
    ))


FAMILIES = [_present(family) for family in BUNDLES]
_models: dict[str, object] = {}


def _model(family: str):
    if family not in _models:
        _models[family] = load_video_model(_folder(family), "fp32", "auto", "cpu", use_cache=False)
    return _models[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_folder_is_small_complete_and_stored_in_fp16(family):
    folder = _folder(family)
    _, pipeline, denoiser = BUNDLES[family]
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) <= 12 * 2**20
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == pipeline
    assert all((folder / part).is_dir() for part in (denoiser, "vae", "text_encoder", "tokenizer", "scheduler"))
    for path in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        assert dtypes <= {"F16", "I64"}, (path, dtypes)
    assert _model(family).family.name == family


@pytest.mark.parametrize("family", FAMILIES)
def test_recommended_settings_are_the_geometry_it_was_trained_at(family):
    settings = read_recommended_settings(_folder(family))
    for part in (settings.train, settings.sample):
        values = dataclasses.asdict(part)
        assert (values["width"], values["height"], values["frames"]) == (SIZE, SIZE, FRAMES)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prompt, colour, shape", [("a blue circle", "blue", "circle"), ("a yellow square", "yellow", "square")])
def test_samples_follow_the_prompt(family, prompt, colour, shape):
    model = _model(family)
    cfg = read_recommended_settings(_folder(family)).value("sample", "cfg")
    frames = sample_video(model, SamplingConfig(prompt=prompt, width=SIZE, height=SIZE, frames=FRAMES, steps=25,
                                                guidance_scale=cfg, seed=3))
    found = detect_clip(frames)
    assert found.presence_rate == 1.0
    assert (found.colour, found.shape) == (colour, shape)


@pytest.mark.parametrize("family", FAMILIES)
def test_short_training_on_the_sample_clip_lowers_the_loss(family):
    model = _model(family)
    reference = read_video_frames(CLIP, frame_count=FRAMES, width=SIZE, height=SIZE).frames
    config = TrainingConfig(prompt="a red square", steps=40, learning_rate=0.1, layer_set="all", inversion_steps=0,
                            gradient_checkpointing=False)
    embedding = train_motion_embedding(model, reference, config).embedding
    before = evaluation_loss(model, reference, "a red square", None, draws=16)
    after = evaluation_loss(model, reference, "a red square", embedding, draws=16)
    assert after < 0.9 * before, (before, after)
