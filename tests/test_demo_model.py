"""The bundled toy-world model: it loads like any diffusers model, samples what the prompt says, and trains."""

from __future__ import annotations

from pathlib import Path

import pytest

from motion_core.model_loading import load_video_model
from motion_core.sampling import SamplingConfig, sample_video
from motion_core.training import TrainingConfig, evaluation_loss, train_motion_embedding
from motion_core.video_io import read_video_frames
from toyworld.metrics import detect_clip

ASSETS = Path(__file__).resolve().parent.parent / "assets"
MODEL = ASSETS / "toyworld-t2v"
CLIP = ASSETS / "sample_clips" / "toyworld_red_square_bounce.mp4"


@pytest.fixture(scope="module")
def demo_model():
    return load_video_model(MODEL, "fp32", "auto", "cpu", use_cache=False)


def test_folder_is_small_and_complete():
    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size <= 20 * 2**20
    assert all((MODEL / part).is_dir() for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"))


@pytest.mark.parametrize("prompt, colour, shape", [("a blue circle", "blue", "circle"), ("a yellow square", "yellow", "square")])
def test_samples_follow_the_prompt(demo_model, prompt, colour, shape):
    frames = sample_video(demo_model, SamplingConfig(prompt=prompt, width=32, height=32, frames=8, steps=25, guidance_scale=1.5, seed=3))
    found = detect_clip(frames)
    assert found.presence_rate == 1.0
    assert (found.colour, found.shape) == (colour, shape)


def test_short_training_on_the_sample_clip_lowers_the_loss(demo_model):
    reference = read_video_frames(CLIP, frame_count=8, width=32, height=32).frames
    config = TrainingConfig(prompt="a red square", steps=40, learning_rate=0.1, layer_set="all", inversion_steps=0,
                            gradient_checkpointing=False)
    embedding = train_motion_embedding(demo_model, reference, config).embedding
    before = evaluation_loss(demo_model, reference, "a red square", None, draws=16)
    after = evaluation_loss(demo_model, reference, "a red square", embedding, draws=16)
    assert after < 0.9 * before, (before, after)


def test_toyworld_detector_agrees_with_the_worlds_ground_truth():
    """The benchmark's and demo's detector, checked against rendered clips of known colour, shape and position."""
    from toyworld.metrics import self_check

    result = self_check(num_clips=40)
    assert result["colour_acc"] == result["shape_acc"] == result["presence"] == 1.0
    assert result["centroid_err_px"] < 1.0
