"""Half-precision training: autocast around the model, fp32 master embeddings, loss scaling for fp16 (on CPU)."""

from __future__ import annotations

import pytest
import torch

from motion_core import training
from motion_core.model_loading import load_video_model, resolve_dtype
from motion_core.training import TrainingConfig, evaluation_loss, train_motion_embedding


def config(**overrides) -> TrainingConfig:
    settings = dict(prompt="a red square", steps=40, learning_rate=0.1, layer_set="all", inversion_steps=2, seed=5)
    settings.update(overrides)
    return TrainingConfig(**settings)


def autocast_seen(model) -> tuple[list[tuple[bool, torch.dtype]], object]:
    """Record, at every UNet call, whether CPU autocast is on and its dtype."""
    seen: list[tuple[bool, torch.dtype]] = []
    hook = model.unet.register_forward_pre_hook(
        lambda module, args: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
    )
    return seen, hook


def test_bf16_model_trains_under_autocast_with_fp32_embeddings(tiny_model_dir, reference_clip):
    model = load_video_model(tiny_model_dir, "bf16", "sdpa", "cpu", use_cache=False)
    assert model.unet.dtype == torch.bfloat16
    seen, hook = autocast_seen(model)
    try:
        result = train_motion_embedding(model, reference_clip, config())
    finally:
        hook.remove()
    assert seen and all(entry == (True, torch.bfloat16) for entry in seen)
    embedding = result.embedding
    assert all(t.dtype == torch.float32 for t in (*embedding.query_key.values(), *embedding.value.values()))
    assert all(t.dtype == torch.float32 for k, t in embedding.training_state.items() if k.startswith("exp_avg"))
    assert all(torch.isfinite(torch.tensor(result.losses)))
    before = evaluation_loss(model, reference_clip, "a red square", None, draws=16)
    after = evaluation_loss(model, reference_clip, "a red square", embedding, draws=16)
    assert after < 0.97 * before, (before, after)


def test_fp32_model_trains_without_autocast(tiny_model, reference_clip):
    seen, hook = autocast_seen(tiny_model)
    try:
        train_motion_embedding(tiny_model, reference_clip, config(steps=1, inversion_steps=0))
    finally:
        hook.remove()
    assert seen and not any(enabled for enabled, _ in seen)


def test_fp16_training_scales_the_loss_and_skips_steps_whose_gradients_overflow(tiny_model_dir, reference_clip, monkeypatch):
    """CPU fp16 kernels run these ops, so the real GradScaler path is exercised: a loss scale too large for fp16
    makes the first gradients overflow; those steps are skipped (AdamW counts fewer updates) and the scale backs off."""
    model = load_video_model(tiny_model_dir, "fp16", "sdpa", "cpu", use_cache=False)
    initial = 2.0**30
    monkeypatch.setattr(training, "GRAD_SCALER_INIT_SCALE", initial)
    seen, hook = autocast_seen(model)
    try:
        result = train_motion_embedding(model, reference_clip, config(steps=12, inversion_steps=0))
    finally:
        hook.remove()
    assert seen and all(entry == (True, torch.float16) for entry in seen)
    state = result.embedding.training_state
    scale = float(state["grad_scaler.scale"])
    updates = {int(v) for k, v in state.items() if k.startswith("step.")}
    assert len(updates) == 1
    (updated,) = updates
    skipped = 12 - updated
    assert 0 < skipped < 12
    assert scale == initial * 0.5**skipped  # GradScaler's backoff per overflowing step (no growth within 2000 steps)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert any(t.abs().sum() > 0 for t in result.embedding.value.values())
    assert all(t.dtype == torch.float32 for t in result.embedding.value.values())


def test_fp16_resume_restores_the_loss_scale(tiny_model_dir, reference_clip, monkeypatch):
    """Stopped while the scale is still backing off, a resumed run continues from the same scale."""
    model = load_video_model(tiny_model_dir, "fp16", "sdpa", "cpu", use_cache=False)
    monkeypatch.setattr(training, "GRAD_SCALER_INIT_SCALE", 2.0**30)
    full = train_motion_embedding(model, reference_clip, config(steps=12, inversion_steps=0))
    first = train_motion_embedding(model, reference_clip, config(steps=3, inversion_steps=0))
    assert float(first.embedding.training_state["grad_scaler.scale"]) < 2.0**30
    resumed = train_motion_embedding(model, reference_clip, config(steps=12, inversion_steps=0), resume=first.embedding)
    scale = resumed.embedding.training_state["grad_scaler.scale"]
    assert float(scale) == float(full.embedding.training_state["grad_scaler.scale"])
    assert resumed.losses == pytest.approx(full.losses[3:], rel=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_precision_on_cuda_prefers_bf16_where_the_gpu_has_it():
    expected = torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8 else torch.float16
    assert resolve_dtype("auto", torch.device("cuda")) == expected


def test_auto_precision_is_fp32_on_cpu():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
