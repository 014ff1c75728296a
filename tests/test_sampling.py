"""Sampling with embeddings: other sizes and frame counts, modes, schedulers, and a base model left untouched."""

from __future__ import annotations

import pytest
import torch

from motion_core.embedding import frame_difference, prepare_for_sampling, resample_frames, resample_grid
from motion_core.errors import IncompatibleEmbeddingError, InvalidSettingError
from motion_core.sampling import SCHEDULERS, AppliedMotion, SamplingConfig, sample_video
from motion_core.training import TrainingConfig, train_motion_embedding


@pytest.fixture
def trained(tiny_model, reference_clip):
    cfg = TrainingConfig(prompt="a red square", steps=6, learning_rate=0.1, layer_set="all", inversion_steps=4)
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
    name = next(iter(trained.value))
    torch.testing.assert_close(obj.value[name], frame_difference(trained.value[name]))
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
