"""Training on a real (tiny, random) diffusers model: loss falls, Cancel keeps the work, resume is exact."""

from __future__ import annotations

import pytest
import torch

from motion_core.embedding_file import load_embedding
from motion_core.errors import InvalidSettingError, TrainingDivergedError
from motion_core.training import TrainingConfig, evaluation_loss, resume_state_path, train_motion_embedding


def config(**overrides) -> TrainingConfig:
    settings = dict(prompt="a red square", steps=6, learning_rate=0.1, layer_set="all", inversion_steps=3, seed=5)
    settings.update(overrides)
    return TrainingConfig(**settings)


def test_loss_falls_over_training_on_a_fixed_clip(tiny_model, reference_clip):
    result = train_motion_embedding(tiny_model, reference_clip, config(steps=40))
    before = evaluation_loss(tiny_model, reference_clip, "a red square", None, draws=16)
    after = evaluation_loss(tiny_model, reference_clip, "a red square", result.embedding, draws=16)
    assert after < 0.97 * before, (before, after)
    assert len(result.losses) == 40 and result.embedding.info.steps == 40
    assert result.embedding.inverted_latent.shape == (4, 6, 16, 16)


@pytest.mark.parametrize("loss", ["debiased_temporal", "debiased_hybrid"])
def test_other_losses_train_and_leave_no_trace(tiny_model, reference_clip, loss):
    before = dict(tiny_model.unet.attn_processors)
    n_params = sum(1 for _ in tiny_model.unet.parameters())
    result = train_motion_embedding(tiny_model, reference_clip, config(loss=loss, steps=4, lora_rank=4))
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert any(t.abs().sum() > 0 for t in result.embedding.value.values())
    assert tiny_model.unet.attn_processors == before  # the hybrid LoRA is gone
    assert sum(1 for _ in tiny_model.unet.parameters()) == n_params
    assert result.embedding.info.default_mode == ("camera" if loss == "debiased_hybrid" else "object")


def test_sample_prediction_models_train(tiny_sample_model_dir, reference_clip):
    from motion_core.model_loading import load_video_model

    model = load_video_model(tiny_sample_model_dir, "fp32", "matmul", "cpu", use_cache=False)
    result = train_motion_embedding(model, reference_clip, config(steps=3))
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_cancel_mid_training_leaves_a_loadable_file_and_a_clean_model(tiny_model, reference_clip, tmp_path):
    path = tmp_path / "cancelled.safetensors"
    before = dict(tiny_model.unet.attn_processors)

    def cancel_at_three(done, total, loss):
        if done == 3:
            raise KeyboardInterrupt  # ComfyUI's InterruptProcessingException is a BaseException too

    with pytest.raises(KeyboardInterrupt):
        train_motion_embedding(tiny_model, reference_clip, config(steps=10), path, on_step=cancel_at_three)
    saved = load_embedding(path)
    assert saved.info.steps == 3 and saved.info.extra["interrupted"] is True
    assert saved.inverted_latent is None
    assert tiny_model.unet.attn_processors == before
    assert not list(tmp_path.glob("*.partial"))
    # the next run works
    assert train_motion_embedding(tiny_model, reference_clip, config(steps=2)).embedding.info.steps == 2


def test_cancel_during_inversion_keeps_the_trained_embedding(tiny_model, reference_clip, tmp_path):
    path = tmp_path / "e.safetensors"

    def cancel(step, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_motion_embedding(tiny_model, reference_clip, config(steps=4), path, on_inversion_step=cancel)
    assert load_embedding(path).info.steps == 4


def test_resume_matches_an_uninterrupted_run(tiny_model, reference_clip, tmp_path):
    full = train_motion_embedding(tiny_model, reference_clip, config(steps=8, inversion_steps=0), tmp_path / "full.safetensors")
    path = tmp_path / "part.safetensors"

    def stop_at_five(done, total, loss):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_motion_embedding(tiny_model, reference_clip, config(steps=8, save_every=2, inversion_steps=0), path, on_step=stop_at_five)
    assert resume_state_path(path).is_file()
    partial = load_embedding(path)
    assert partial.info.steps == 5
    resumed = train_motion_embedding(tiny_model, reference_clip, config(steps=8, inversion_steps=0), path, resume=partial)
    assert resumed.embedding.info.steps == 8
    assert resumed.losses == pytest.approx(full.losses[5:], rel=1e-4)
    for name, tensor in full.embedding.value.items():
        torch.testing.assert_close(resumed.embedding.value[name], tensor, rtol=1e-4, atol=1e-6)
    for name, tensor in full.embedding.query_key.items():
        torch.testing.assert_close(resumed.embedding.query_key[name], tensor, rtol=1e-4, atol=1e-6)
    assert not resume_state_path(path).exists()  # removed once training finished


def test_divergence_stops_and_keeps_the_last_good_embedding(tiny_model, reference_clip, tmp_path):
    path = tmp_path / "diverged.safetensors"
    with pytest.raises(TrainingDivergedError, match=r"at step \d+.*last good embedding") as err:
        train_motion_embedding(tiny_model, reference_clip, config(steps=20, learning_rate=1e36), path)
    saved = load_embedding(path)  # loading validates that every tensor is finite
    # the step that diverged and the update before it are rolled back: what is kept gave a finite loss
    assert saved.info.steps == saved.info.extra["diverged_at_step"] - 2
    assert "Lower the learning rate" in str(err.value)


@pytest.mark.parametrize(
    "overrides, message",
    [({"prompt": "  "}, "prompt is empty"), ({"steps": 0}, "at least 1"), ({"steps": -3}, "at least 1"),
     ({"learning_rate": 0.0}, "positive"), ({"learning_rate": float("nan")}, "positive"), ({"loss": "l1"}, "Unknown loss"),
     ({"layer_set": "some"}, "Unknown layer set")],
)
def test_bad_settings_are_refused_before_any_work(tiny_model, reference_clip, overrides, message):
    with pytest.raises(InvalidSettingError, match=message):
        train_motion_embedding(tiny_model, reference_clip, config(**overrides))


def test_bad_frame_sizes_are_refused(tiny_model):
    with pytest.raises(InvalidSettingError, match="multiple of 8"):
        train_motion_embedding(tiny_model, torch.rand(4, 30, 32, 3), config())
    with pytest.raises(InvalidSettingError, match="at least 2 frames"):
        train_motion_embedding(tiny_model, torch.rand(1, 32, 32, 3), config())
