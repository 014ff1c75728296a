"""Training through a Wan transformer the family layer does not load (``motion_core.native_training``).

ComfyUI's adapter (``nodes/native_wan_training.py``) is checked against a real ComfyUI in
tests/test_comfy_native_wan_integration.py. Here the "foreign" Wan is diffusers' own transformer, driven only through
what a :class:`ForeignWan` gives the trainer (block widths, shift, a context that installs the block-indexed motion and
yields the velocity), so training through it must give exactly what the diffusers path gives: same draws, same
losses, same embedding, same inverted start, and a file either path's sampling takes.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import moving_square_clip

from motion_core.diffusion import encode_frames, encode_prompt
from motion_core.embedding_file import load_embedding
from motion_core.errors import InvalidSettingError
from motion_core.families.block_stack import embedding_training_bytes
from motion_core.model_loading import VideoModel, clear_model_cache, load_video_model
from motion_core.native_training import decide_checkpointing, train_foreign_wan
from motion_core.sampling import AppliedMotion, SamplingConfig, sample_video
from motion_core.testing.foreign_wan import diffusers_foreign_wan
from motion_core.testing.tiny_models import save_tiny_wan_model
from motion_core.training import TrainingConfig, train_motion_embedding

PROMPT = "a red square"


@pytest.fixture(scope="module")
def wan(tmp_path_factory) -> VideoModel:
    clear_model_cache()
    folder = save_tiny_wan_model(tmp_path_factory.mktemp("models") / "tiny-wan", seed=0)
    return load_video_model(folder, "fp32", "auto", "cpu", use_cache=False)


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return moving_square_clip(frames=9, size=32)


def config(**overrides) -> TrainingConfig:
    settings = dict(prompt=PROMPT, steps=4, learning_rate=0.05, layer_set="alternate", inversion_steps=3, save_every=0)
    return TrainingConfig(**{**settings, **overrides})


def foreign(model: VideoModel, installs: list[bool] | None = None):
    return diffusers_foreign_wan(model.denoiser, model.family.shift(model), installs)


def reference(model: VideoModel, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    latents = encode_frames(model, clip, torch.Generator().manual_seed(0))
    return latents, encode_prompt(model, PROMPT), encode_prompt(model, "")


def test_training_through_a_foreign_wan_gives_exactly_the_diffusers_paths_embedding(wan, clip, tmp_path):
    expected = train_motion_embedding(wan, clip, config())
    latents, text, empty = reference(wan, clip)
    installs: list[bool] = []
    result = train_foreign_wan(foreign(wan, installs), latents, text, empty, config(), tmp_path / "native.safetensors")

    assert installs == [False]  # installed once, without checkpointing at this size
    assert result.losses == pytest.approx(expected.losses, rel=1e-5)
    assert result.losses[0] != result.losses[-1]
    assert [b.name for b in result.embedding.info.blocks] == [b.name for b in expected.embedding.info.blocks] == ["blocks.0"]
    for name, tensor in expected.embedding.query_key.items():
        torch.testing.assert_close(result.embedding.query_key[name], tensor, rtol=1e-5, atol=1e-6)
    for name, tensor in expected.embedding.value.items():
        torch.testing.assert_close(result.embedding.value[name], tensor, rtol=1e-5, atol=1e-6)
        assert tensor.abs().max() > 0.01  # it trained
    torch.testing.assert_close(result.embedding.inverted_latent, expected.embedding.inverted_latent, rtol=1e-5, atol=1e-5)
    saved = load_embedding(tmp_path / "native.safetensors")
    info, other = saved.info, expected.embedding.info
    assert (info.family, info.train_width, info.train_height, info.train_frames, info.latent_frames) == (
        other.family, other.train_width, other.train_height, other.train_frames, other.latent_frames)
    assert info.extra["trained_through"] == "native" and not saved.training_state
    # the file samples on the diffusers path like the diffusers path's own embedding
    sampling = SamplingConfig(prompt="a blue circle", width=32, height=32, frames=9, steps=3, guidance_scale=3.0, scheduler="euler", seed=3)
    ours = sample_video(wan, sampling, AppliedMotion(saved))
    theirs = sample_video(wan, sampling, AppliedMotion(expected.embedding))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_checkpointing_and_the_embedded_inversion_run_through_the_foreign_model(wan, clip):
    latents, text, empty = reference(wan, clip)
    plain = train_foreign_wan(foreign(wan), latents, text, empty, config(steps=2, inversion="embedded"))
    installs: list[bool] = []
    checkpointed = train_foreign_wan(foreign(wan, installs), latents, text, empty,
                                     config(steps=2, inversion="embedded", gradient_checkpointing="on"))
    assert installs == [True]
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-5)
    torch.testing.assert_close(checkpointed.embedding.inverted_latent, plain.embedding.inverted_latent)
    expected = train_motion_embedding(wan, clip, config(steps=2, inversion="embedded"))
    torch.testing.assert_close(plain.embedding.inverted_latent, expected.embedding.inverted_latent, rtol=1e-5, atol=1e-5)


def test_automatic_checkpointing_counts_what_the_diffusers_paths_estimate_counts(wan, clip):
    """``auto`` turns checkpointing on exactly where the Wan family's estimate without it (activations and the
    embeddings' values, gradients and AdamW moments) passes 90 % of the free memory."""
    latents, _, _ = reference(wan, clip)
    _, _, frames, height, width = latents.shape
    need = wan.family.estimate_training_bytes(wan, frames, height, width, False, "alternate")
    sites = wan.family.select_sites(wan.denoiser, "alternate", height, width)
    embeddings = embedding_training_bytes(sites, frames, height, width)
    assert 0.02 * need < embeddings < need  # large enough here that leaving it out would move the switch
    for free, expected in ((need / 0.9 * 1.01, False), (need / 0.9 * 0.99, True), ((need - embeddings) / 0.9 * 1.01, True)):
        native = dataclasses.replace(foreign(wan), free_bytes=lambda free=free: int(free))
        assert decide_checkpointing(native, latents, "auto", "alternate") is expected
    assert decide_checkpointing(foreign(wan), latents, "auto", "alternate") is False  # free memory unknown: off


def test_cancel_keeps_a_file_that_resumes_to_the_uninterrupted_result(wan, clip, tmp_path):
    latents, text, empty = reference(wan, clip)
    full = train_foreign_wan(foreign(wan), latents, text, empty, config(steps=5))
    path = tmp_path / "part.safetensors"

    def cancel_at_two(done, total, loss):
        if done == 2:
            raise KeyboardInterrupt  # what ComfyUI's Cancel raises from the progress update

    with pytest.raises(KeyboardInterrupt):
        train_foreign_wan(foreign(wan), latents, text, empty, config(steps=5), path, on_step=cancel_at_two)
    partial = load_embedding(path)
    assert partial.info.steps == 2 and partial.training_state and partial.inverted_latent is not None
    resumed = train_foreign_wan(foreign(wan), latents, text, empty, config(steps=5), resume=partial)
    assert resumed.losses == pytest.approx(full.losses[2:], rel=1e-5)
    for name, tensor in full.embedding.value.items():
        torch.testing.assert_close(resumed.embedding.value[name], tensor, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("change, message", [
    (dict(latents=torch.zeros(1, 16, 1, 4, 4)), "at least 2 latent frames"),
    (dict(latents=torch.zeros(1, 16, 3, 5, 4)), "multiple of the model's 2x2 patch"),
    (dict(latents=torch.zeros(2, 16, 3, 4, 4)), "one video latent"),
    (dict(latents=torch.full((1, 16, 3, 4, 4), float("nan"))), "NaN"),
    (dict(loss="debiased_hybrid"), "not available for Wan"),
    (dict(text=torch.zeros(4, 7)), "conditioning must be"),
    (dict(appearance_augmentation="colour"), "Appearance augmentation recolours the reference's pixels"),
])
def test_bad_input_is_refused_before_the_model_runs(wan, change, message):
    installs: list[bool] = []
    latents = change.get("latents", torch.zeros(1, 16, 3, 4, 4))
    text = change.get("text", torch.zeros(1, 7, 32))
    with pytest.raises(InvalidSettingError, match=message):
        settings = {key: change[key] for key in ("loss", "appearance_augmentation") if key in change}
        train_foreign_wan(foreign(wan, installs), latents, text, text, config(**settings))
    assert installs == []


def test_resuming_at_another_reference_size_is_refused(wan, clip):
    latents, text, empty = reference(wan, clip)
    first = train_foreign_wan(foreign(wan), latents, text, empty, config(steps=1, inversion_steps=0))
    with pytest.raises(InvalidSettingError, match="latent"):
        train_foreign_wan(foreign(wan), latents[:, :, :2], text, empty, config(steps=2), resume=first.embedding)
