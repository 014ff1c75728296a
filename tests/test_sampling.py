"""Sampling with embeddings: other sizes and frame counts, modes, schedulers, and a base model left untouched."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from motion_core.embedding import (
    EMBEDDING_DEFAULT_MODE, MotionEmbedding, frame_difference, prepare_for_sampling, resample_frames, resample_grid,
)
from motion_core.errors import IncompatibleEmbeddingError, InvalidSettingError, SamplingError
from motion_core.memory_estimate import SKIP_ENV, estimate_sampling_bytes
from motion_core.sampling import SCHEDULERS, AppliedMotion, SamplingConfig, sample_video
from motion_core.training import TrainingConfig, train_motion_embedding


@pytest.fixture
def trained(tiny_model, reference_clip):
    cfg = TrainingConfig(prompt="a red square", steps=6, learning_rate=0.1, layer_set="all", inversion_steps=4,
                         gradient_checkpointing="off")
    return train_motion_embedding(tiny_model, reference_clip, cfg).embedding


def small(**overrides) -> SamplingConfig:
    settings = dict(prompt="a blue circle", width=32, height=32, frames=6, steps=3, guidance_scale=4.0, seed=1)
    settings.update(overrides)
    return SamplingConfig(**settings)


def test_resample_helpers_keep_end_points_and_shapes():
    value = torch.randn(16, 6, 8)
    more = resample_frames(value, 11)
    assert more.shape == (16, 11, 8)
    torch.testing.assert_close(more[:, 0], value[:, 0])
    torch.testing.assert_close(more[:, -1], value[:, -1])
    grid = resample_grid(value, (4, 4), (6, 10))
    assert grid.shape == (60, 6, 8)
    constant = torch.ones(16, 6, 8)
    torch.testing.assert_close(resample_grid(constant, (4, 4), (6, 10)), torch.ones(60, 6, 8))
    diff = frame_difference(value)
    torch.testing.assert_close(diff[:, 0], value[:, 0])
    torch.testing.assert_close(diff[:, 3], value[:, 3] - value[:, 2])


def test_prepare_modes(trained):
    latent = trained.info.latent_height
    obj = prepare_for_sampling(trained, 6, latent, latent, "object", 1.0)
    raw = prepare_for_sampling(trained, 6, latent, latent, "raw", 2.0)
    cam = prepare_for_sampling(trained, 6, latent, latent, "camera", 1.0)
    centred = prepare_for_sampling(trained, 6, latent, latent, "centred", 1.0)
    name = next(iter(trained.value))
    torch.testing.assert_close(obj.value[name], frame_difference(trained.value[name]))
    torch.testing.assert_close(centred.value[name] + trained.value[name].mean(dim=1, keepdim=True), trained.value[name])
    assert float(centred.value[name].mean(dim=1).abs().max()) < 1e-6 and float(trained.value[name].mean(dim=1).abs().max()) > 1e-4
    torch.testing.assert_close(raw.value[name], 2.0 * trained.value[name])
    assert cam.value == {} and set(cam.query_key) == set(trained.query_key)
    with pytest.raises(InvalidSettingError, match="Unknown motion mode"):
        prepare_for_sampling(trained, 6, latent, latent, "sideways", 1.0)


@pytest.mark.parametrize("size, frames", [((32, 32), 6), ((48, 64), 9), ((16, 24), 3)])
def test_embedding_trained_at_one_size_samples_at_another(tiny_model, trained, size, frames):
    width, height = size
    video = sample_video(tiny_model, small(width=width, height=height, frames=frames), AppliedMotion(trained))
    assert video.shape == (frames, height, width, 3)
    assert torch.isfinite(video).all() and 0.0 <= video.min() and video.max() <= 1.0


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_schedulers_are_deterministic_for_a_seed(tiny_model, trained, scheduler):
    a = sample_video(tiny_model, small(scheduler=scheduler), AppliedMotion(trained))
    b = sample_video(tiny_model, small(scheduler=scheduler), AppliedMotion(trained))
    assert torch.equal(a, b)


def test_embedding_and_noise_prior_change_the_output(tiny_model, trained):
    base = sample_video(tiny_model, small())
    moved = sample_video(tiny_model, small(noise_prior=0.0), AppliedMotion(trained, 1.0, "raw"))
    inverted = sample_video(tiny_model, small(noise_prior=0.5), AppliedMotion(trained, 1.0, "raw"))
    zero = sample_video(tiny_model, small(noise_prior=0.0), AppliedMotion(trained, 0.0, "raw"))
    assert (moved - base).abs().max() > 1e-4
    assert (inverted - moved).abs().max() > 1e-4
    assert torch.equal(zero, base)  # strength 0 with pure noise is the base model


def test_base_model_gives_the_same_frames_after_embedded_and_failed_runs(tiny_model, trained):
    before = sample_video(tiny_model, small())
    processors = dict(tiny_model.unet.attn_processors)
    sample_video(tiny_model, small(), AppliedMotion(trained))

    def explode(step, total, latent):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample_video(tiny_model, small(), AppliedMotion(trained), on_step=explode)
    assert tiny_model.unet.attn_processors == processors
    assert torch.equal(sample_video(tiny_model, small()), before)


def test_embedding_from_another_architecture_is_refused(tiny_sample_model_dir, trained, reference_clip):
    from motion_core.model_loading import load_video_model
    from motion_core.testing.tiny_models import TINY_UNET_CONFIG, build_tiny_unet

    other = load_video_model(tiny_sample_model_dir, "fp32", "matmul", "cpu", use_cache=False)
    other.unet = build_tiny_unet(config={**TINY_UNET_CONFIG, "block_out_channels": [16, 48, 48]})
    other.name = "wider-model"
    with pytest.raises(IncompatibleEmbeddingError, match="tiny-t2v.*wider-model|wider-model.*tiny-t2v"):
        sample_video(other, small(), AppliedMotion(trained))


@pytest.mark.parametrize(
    "overrides, message",
    [({"steps": 0}, "at least 1"), ({"width": 30}, "multiples of 8"), ({"noise_prior": 1.5}, "between 0 and 1"),
     ({"scheduler": "plms"}, "Unknown scheduler"), ({"frames": 0}, "at least 1")],
)
def test_bad_sampling_settings(tiny_model, overrides, message):
    with pytest.raises(InvalidSettingError, match=message):
        sample_video(tiny_model, small(**overrides))


def test_strength_zero_is_exactly_the_plain_model(tiny_model, trained):
    assert trained.inverted_latent is not None  # what strength 0 used to keep as the start
    for mode in ("raw", "object", EMBEDDING_DEFAULT_MODE):
        zero = sample_video(tiny_model, small(noise_prior=0.5), AppliedMotion(trained, 0.0, mode))
        assert torch.equal(zero, sample_video(tiny_model, small(noise_prior=0.5)))


def test_embedding_default_mode_is_the_embeddings_own(tiny_model, reference_clip):
    cfg = TrainingConfig(prompt="a red square", steps=2, learning_rate=0.1, layer_set="all", loss="debiased_hybrid",
                         lora_rank=2, inversion_steps=2, gradient_checkpointing="off")
    hybrid = train_motion_embedding(tiny_model, reference_clip, cfg).embedding
    applied = AppliedMotion(hybrid, 1.0, EMBEDDING_DEFAULT_MODE)
    assert AppliedMotion(hybrid).mode == EMBEDDING_DEFAULT_MODE and applied.resolved_mode == "camera"
    default = sample_video(tiny_model, small(), applied)
    assert torch.equal(default, sample_video(tiny_model, small(), AppliedMotion(hybrid, 1.0, "camera")))
    assert not torch.equal(default, sample_video(tiny_model, small(), AppliedMotion(hybrid, 1.0, "object")))
    with pytest.raises(InvalidSettingError, match="Unknown motion mode"):
        sample_video(tiny_model, small(), AppliedMotion(hybrid, 1.0, "sideways"))


@pytest.mark.parametrize("seed", [0, 2**63, 2**64 - 1])
def test_every_seed_works_with_a_stochastic_scheduler(tiny_model, trained, seed):
    a = sample_video(tiny_model, small(seed=seed, scheduler="euler_ancestral"), AppliedMotion(trained))
    b = sample_video(tiny_model, small(seed=seed, scheduler="euler_ancestral"), AppliedMotion(trained))
    assert torch.equal(a, b) and torch.isfinite(a).all()


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_seeds_outside_the_widget_range_are_refused(tiny_model, seed):
    with pytest.raises(InvalidSettingError, match="Seed must be"):
        sample_video(tiny_model, small(seed=seed))


def test_non_finite_output_is_refused_not_written_black(tiny_model, trained):
    scale = 1e30  # finite values, as the damaged file held; sampling turns them into NaN
    huge = MotionEmbedding(trained.info, {k: v * scale for k, v in trained.query_key.items()},
                           {k: v * scale for k, v in trained.value.items()}, trained.inverted_latent)
    steps = []
    with pytest.raises(SamplingError, match="NaN or infinite.*at step 1 of 3.*strength") as caught:
        sample_video(tiny_model, small(), AppliedMotion(huge, 1.0, "raw"), on_step=lambda *a: steps.append(a[0]))
    assert "damaged or extreme embedding" in str(caught.value) and steps == []  # stopped at the first bad step
    assert torch.isfinite(sample_video(tiny_model, small(), AppliedMotion(trained))).all()  # the model is fine after


def test_a_size_that_cannot_fit_is_refused_before_any_work(tiny_model, monkeypatch):
    monkeypatch.delenv(SKIP_ENV, raising=False)
    steps = []
    with pytest.raises(InvalidSettingError, match="100000x3200.*needs at least"):
        sample_video(tiny_model, small(width=100000, height=3200), on_step=lambda *a: steps.append(a[0]))
    assert steps == []


def test_the_papers_size_passes_the_sampling_check_on_a_16_gb_gpu(tiny_model):
    """ZeroScope (its published UNet config) at 576x320, 24 frames, fp16 with guidance: well under 16 GB less its weights."""
    from types import SimpleNamespace

    from diffusers.configuration_utils import FrozenDict

    from motion_core.testing.tiny_models import ZEROSCOPE_UNET_CONFIG

    zeroscope = dataclasses.replace(
        tiny_model,
        unet=SimpleNamespace(config=FrozenDict(ZEROSCOPE_UNET_CONFIG)),
        vae=SimpleNamespace(config=FrozenDict(block_out_channels=[128, 256, 512, 512], scaling_factor=0.18215)),
        device=torch.device("cuda"), dtype=torch.float16, kernel="sdpa",
    )
    latent_h, latent_w = zeroscope.latent_size(576, 320)
    assert (latent_h, latent_w) == (40, 72)
    assert estimate_sampling_bytes(zeroscope, 24, latent_h, latent_w, guided=True) < (16 - 4) * 2**30


def _clean_predictions(model, motion) -> list[torch.Tensor]:
    """The predicted clean latent after each of the 4 steps of a pure-noise run."""
    seen: list[torch.Tensor] = []
    sample_video(model, small(steps=4, noise_prior=0.0), motion, on_step=lambda i, n, x: seen.append(x.clone()))
    return seen


def test_step_window_applies_the_embedding_only_on_its_steps(tiny_model, trained):
    plain = _clean_predictions(tiny_model, None)
    full = _clean_predictions(tiny_model, AppliedMotion(trained, 1.0, "raw", 0.0, 1.0))  # every step
    early = _clean_predictions(tiny_model, AppliedMotion(trained, 1.0, "raw", end_percent=0.5))
    late = _clean_predictions(tiny_model, AppliedMotion(trained, 1.0, "raw", 0.5, 1.0))
    for step in (0, 1):  # steps 0/4 and 1/4 are inside [0, 0.5): as with the embedding on every step
        assert torch.equal(early[step], full[step]) and torch.equal(late[step], plain[step])
    assert not torch.equal(full[0], plain[0])  # the embedding changes the first step's prediction
    assert not torch.allclose(early[3], full[3]) and not torch.allclose(late[3], plain[3])
    # the default window (the first half): steps 0-1 of 4 with the embedding, the last two without
    default = _clean_predictions(tiny_model, AppliedMotion(trained, 1.0, "raw"))
    assert all(torch.equal(default[step], full[step]) for step in (0, 1)) and not torch.allclose(default[2], full[2])
    assert all(torch.equal(default[step], early[step]) for step in range(4))


@pytest.mark.parametrize("start, end", [(0.5, 0.5), (0.6, 0.2), (-0.1, 1.0), (0.0, 1.5)])
def test_an_empty_or_out_of_range_step_window_is_refused(tiny_model, trained, start, end):
    with pytest.raises(InvalidSettingError, match="start_percent < end_percent"):
        sample_video(tiny_model, small(), AppliedMotion(trained, 1.0, "object", start, end))
