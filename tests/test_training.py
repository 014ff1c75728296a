"""Training on a real (tiny, random) diffusers model: loss falls, Cancel keeps the work, resume is exact."""

from __future__ import annotations

import errno
import math
import tempfile
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from motion_core import embedding_file, memory_estimate
from motion_core.diffusion import encode_frames, encode_prompt
from motion_core.embedding_file import load_embedding, save_embedding
from motion_core.errors import EmbeddingFileError, EmbeddingSaveError, InvalidSettingError, TrainingDivergedError
from motion_core.inversion import ddim_invert
from motion_core.patching import installed_processors
from motion_core.training import TrainingConfig, EmbeddingTrainer, evaluation_loss, train_motion_embedding


def config(**overrides) -> TrainingConfig:
    settings = dict(prompt="a red square", steps=6, learning_rate=0.1, layer_set="all", inversion_steps=3, seed=5)
    settings.update(overrides)
    return TrainingConfig(**settings)


def stop_at(step: int):
    def on_step(done, total, loss):
        if done == step:
            raise KeyboardInterrupt  # ComfyUI's InterruptProcessingException is a BaseException too

    return on_step


def state_keys(path) -> list[str]:
    with safe_open(str(path), "pt") as handle:
        return [key for key in handle.keys() if key.startswith("training_state.")]


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
    assert result.embedding.info.default_mode == ("camera" if loss == "debiased_hybrid" else "raw")


def test_sample_prediction_models_train(tiny_sample_model_dir, reference_clip):
    from motion_core.model_loading import load_video_model

    model = load_video_model(tiny_sample_model_dir, "fp32", "matmul", "cpu", use_cache=False)
    result = train_motion_embedding(model, reference_clip, config(steps=3))
    assert all(torch.isfinite(torch.tensor(result.losses)))


def plain_inversion(model, frames, seed: int, steps: int) -> torch.Tensor:
    """The reference clip inverted through the model as loaded (no processors of the pack installed)."""
    latents = encode_frames(model, frames, torch.Generator().manual_seed(seed))
    return ddim_invert(model, latents, encode_prompt(model, ""), steps)[0]


def test_cancel_mid_training_leaves_a_loadable_file_and_a_clean_model(tiny_model, reference_clip, tmp_path):
    path = tmp_path / "cancelled.safetensors"
    before = dict(tiny_model.unet.attn_processors)
    with pytest.raises(KeyboardInterrupt):
        train_motion_embedding(tiny_model, reference_clip, config(steps=10), path, on_step=stop_at(3))
    saved = load_embedding(path)
    assert saved.info.steps == 3 and saved.info.extra["interrupted"] is True
    # the plain inversion runs before training, so a cancelled run keeps it too
    assert saved.info.extra["inversion"] == "plain"
    torch.testing.assert_close(saved.inverted_latent, plain_inversion(tiny_model, reference_clip, 5, 3))
    assert tiny_model.unet.attn_processors == before
    assert not list(tmp_path.glob("*.partial"))
    # the next run works
    assert train_motion_embedding(tiny_model, reference_clip, config(steps=2)).embedding.info.steps == 2


def test_cancel_during_the_embedded_inversion_keeps_the_trained_embedding(tiny_model, reference_clip, tmp_path, caplog):
    path = tmp_path / "e.safetensors"

    def cancel(step, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_motion_embedding(tiny_model, reference_clip, config(steps=4, inversion="embedded"), path, on_inversion_step=cancel)
    saved = load_embedding(path)
    assert saved.info.steps == 4 and saved.inverted_latent is None and saved.info.extra["inversion_stopped"] is True
    assert not saved.training_state  # training had finished
    assert "without its inverted latent" in caplog.text


def test_cancel_during_the_plain_inversion_stops_before_any_training(tiny_model, reference_clip, tmp_path):
    steps_done = []

    def cancel(step, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_motion_embedding(tiny_model, reference_clip, config(steps=4), tmp_path / "e.safetensors",
                               on_step=lambda *a: steps_done.append(a), on_inversion_step=cancel)
    assert steps_done == [] and not (tmp_path / "e.safetensors").exists()


def test_plain_inversion_is_the_unpatched_models_and_independent_of_the_embedding(tiny_model, reference_clip):
    first = train_motion_embedding(tiny_model, reference_clip, config(steps=2, learning_rate=0.1))
    second = train_motion_embedding(tiny_model, reference_clip, config(steps=5, learning_rate=0.5))
    name = next(iter(first.embedding.value))
    assert not torch.allclose(first.embedding.value[name], second.embedding.value[name])
    expected = plain_inversion(tiny_model, reference_clip, 5, 3)
    torch.testing.assert_close(first.embedding.inverted_latent, expected, rtol=0, atol=0)
    torch.testing.assert_close(second.embedding.inverted_latent, expected, rtol=0, atol=0)
    assert first.embedding.info.extra["inversion"] == "plain"


def test_embedded_inversion_runs_through_the_trained_embeddings(tiny_model, reference_clip):
    result = train_motion_embedding(tiny_model, reference_clip, config(steps=4, inversion="embedded"))
    assert result.embedding.info.extra["inversion"] == "embedded"
    plain = plain_inversion(tiny_model, reference_clip, 5, 3)
    assert (result.embedding.inverted_latent - plain).abs().max() > 1e-4


def test_inversion_makes_one_evaluation_per_step_on_the_ddim_schedule(tiny_sample_model_dir, reference_clip):
    """50 steps: 50 model evaluations at the sampler's timesteps, ascending, ending where a 50-step DDIM sampler
    starts; the progress reaches 50/50."""
    from diffusers import DDIMScheduler

    from motion_core.model_loading import load_video_model

    model = load_video_model(tiny_sample_model_dir, "fp32", "sdpa", "cpu", use_cache=False)
    seen: list[int] = []
    handle = model.unet.register_forward_pre_hook(lambda module, args: seen.append(int(args[1])))
    progress: list[tuple[int, int]] = []
    try:
        result = train_motion_embedding(model, reference_clip[:2, :8, :8], config(steps=1, inversion_steps=50),
                                        on_inversion_step=lambda done, total: progress.append((done, total)))
    finally:
        handle.remove()
    sampler = DDIMScheduler.from_config(model.scheduler.config)
    sampler.set_timesteps(50)
    inversion_calls = seen[:50]  # the plain inversion runs before the training step
    assert inversion_calls == sorted(int(t) for t in sampler.timesteps)
    assert inversion_calls[-1] == int(sampler.timesteps[0])
    assert progress[-1] == (50, 50) and len(progress) == 50
    assert torch.isfinite(result.embedding.inverted_latent).all()


def test_inversion_of_an_epsilon_model_is_diffusers_ddim_inversion(tiny_model, reference_clip):
    from diffusers import DDIMInverseScheduler

    latents = encode_frames(tiny_model, reference_clip, torch.Generator().manual_seed(0))
    text = encode_prompt(tiny_model, "")
    ours = ddim_invert(tiny_model, latents, text, 10)
    inverse = DDIMInverseScheduler.from_config(tiny_model.scheduler.config)
    inverse.set_timesteps(10)
    sample = latents
    with torch.no_grad():
        for timestep in inverse.timesteps:
            output = tiny_model.unet(sample, timestep, encoder_hidden_states=text).sample
            sample = inverse.step(output, timestep, sample).prev_sample
    torch.testing.assert_close(ours, sample, rtol=1e-4, atol=1e-5)


class _Reparametrised(nn.Module):
    """A real epsilon UNet whose output is re-expressed as v or x0 at the timestep it is given."""

    def __init__(self, unet: nn.Module, alphas: torch.Tensor, kind: str) -> None:
        super().__init__()
        self.unet, self.alphas, self.kind = unet, alphas, kind

    def forward(self, sample, timestep, encoder_hidden_states):
        eps = self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample
        a = self.alphas[int(timestep)]
        clean = (sample - (1 - a).sqrt() * eps) / a.sqrt()
        out = clean if self.kind == "sample" else a.sqrt() * eps - (1 - a).sqrt() * clean
        return SimpleNamespace(sample=out)


@pytest.mark.parametrize("kind", ["sample", "v_prediction"])
def test_inversion_reads_every_prediction_type_alike(tiny_model, reference_clip, kind):
    from diffusers import DDIMScheduler

    latents = encode_frames(tiny_model, reference_clip, torch.Generator().manual_seed(0))
    text = encode_prompt(tiny_model, "")
    scheduler = DDIMScheduler.from_config(tiny_model.scheduler.config, prediction_type=kind)
    other = replace(tiny_model, unet=_Reparametrised(tiny_model.unet, scheduler.alphas_cumprod, kind), scheduler=scheduler)
    expected = ddim_invert(tiny_model, latents, text, 10)
    torch.testing.assert_close(ddim_invert(other, latents, text, 10), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("loss", ["base", "debiased_hybrid"])
def test_resume_from_an_interrupted_file_matches_an_uninterrupted_run(tiny_model, reference_clip, tmp_path, loss):
    settings = dict(steps=8, inversion_steps=0, loss=loss, lora_rank=4, lora_learning_rate=0.05)
    full = train_motion_embedding(tiny_model, reference_clip, config(**settings), tmp_path / "full" / "full.safetensors")
    folder = tmp_path / "part"
    path = folder / "part.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_motion_embedding(tiny_model, reference_clip, config(save_every=2, **settings), path, on_step=stop_at(4))
    partial = load_embedding(path)
    assert partial.info.steps == 4 and partial.training_state
    if loss == "debiased_hybrid":
        assert any(key.startswith("param.lora.") for key in partial.training_state)
    resumed = train_motion_embedding(tiny_model, reference_clip, config(**settings), path, resume=partial)
    assert resumed.embedding.info.steps == 8
    assert resumed.losses == pytest.approx(full.losses[4:], rel=1e-4)
    for name, tensor in full.embedding.value.items():
        torch.testing.assert_close(resumed.embedding.value[name], tensor, rtol=1e-4, atol=1e-6)
    for name, tensor in full.embedding.query_key.items():
        torch.testing.assert_close(resumed.embedding.query_key[name], tensor, rtol=1e-4, atol=1e-6)
    # the finished file holds no training state, and nothing was left beside it
    assert state_keys(path) == [] and state_keys(tmp_path / "full" / "full.safetensors") == []
    assert sorted(p.name for p in folder.iterdir()) == ["part.safetensors"]


@pytest.mark.parametrize("loss", ["base", "debiased_hybrid"])
def test_training_a_finished_result_further_in_memory_is_exact(tiny_model, reference_clip, loss):
    """Train -> Train(resume_from) in a graph: the in-memory result carries its optimiser state."""
    settings = dict(inversion_steps=0, loss=loss, lora_rank=4, lora_learning_rate=0.05)
    full = train_motion_embedding(tiny_model, reference_clip, config(steps=6, **settings))
    first = train_motion_embedding(tiny_model, reference_clip, config(steps=3, **settings))
    assert first.embedding.training_state["step"] == 3
    resumed = train_motion_embedding(tiny_model, reference_clip, config(steps=6, **settings), resume=first.embedding)
    assert resumed.losses == pytest.approx(full.losses[3:], rel=1e-4)
    for name, tensor in full.embedding.value.items():
        torch.testing.assert_close(resumed.embedding.value[name], tensor, rtol=1e-4, atol=1e-6)


def test_resume_without_training_state_says_the_moments_start_fresh(tiny_model, reference_clip, tmp_path, caplog):
    path = tmp_path / "finished.safetensors"
    train_motion_embedding(tiny_model, reference_clip, config(steps=2, inversion_steps=0), path)
    finished = load_embedding(path)
    assert finished.training_state == {}
    result = train_motion_embedding(tiny_model, reference_clip, config(steps=3, inversion_steps=0), resume=finished)
    assert result.embedding.info.steps == 3
    assert "AdamW moments start fresh" in caplog.text


def _edit_squares(tensors, change):
    return {k: (change(v) if k.startswith("training_state.exp_avg_sq.") else v) for k, v in tensors.items()}


def _interrupted_file(model, frames, path):
    with pytest.raises(KeyboardInterrupt):
        train_motion_embedding(model, frames, config(steps=4, inversion_steps=0, layer_set="paper"), path, on_step=stop_at(2))
    with safe_open(str(path), "pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: {**t, "training_state.exp_avg.value.nowhere": torch.zeros(1)}, "names no tensor"),
        (lambda t: {**t, "training_state.momentum.x": torch.zeros(1)}, "not part of the training state"),
        (lambda t: {k: (v[:1] if k.startswith("training_state.exp_avg.value.") else v) for k, v in t.items()}, "has shape"),
        (lambda t: _edit_squares(t, lambda v: torch.full_like(v, float("inf"))), "NaN or infinite"),
        (lambda t: _edit_squares(t, lambda v: -torch.ones_like(v)), "negative"),
        (lambda t: {**t, "training_state.step": torch.tensor(2.5, dtype=torch.float64)}, "out of range"),
        (lambda t: {**t, "training_state.step": torch.zeros(3)}, "single number"),
        (lambda t: {**t, "training_state.exp_avg.lora.a.q.down.weight": torch.zeros(2, 2, 2)}, "LoRA shape"),
        (lambda t: {**t, "training_state.step": torch.tensor(2, dtype=torch.int64)}, "not floating point"),
    ],
)
def test_bad_training_state_in_a_file_gives_a_clear_error(tiny_model, reference_clip, tmp_path, edit, message):
    path = tmp_path / "e.safetensors"
    tensors, meta = _interrupted_file(tiny_model, reference_clip, path)
    assert meta["format_version"] == "2"
    save_file(edit(tensors), str(path), metadata=meta)
    with pytest.raises(EmbeddingFileError, match=message):
        load_embedding(path)


def test_too_many_training_state_tensors_are_refused(tiny_model, reference_clip, tmp_path, monkeypatch):
    path = tmp_path / "e.safetensors"
    tensors, meta = _interrupted_file(tiny_model, reference_clip, path)
    monkeypatch.setattr(embedding_file, "MAX_TRAINING_STATE_TENSORS", 4)
    with pytest.raises(EmbeddingFileError, match="at most 4"):
        load_embedding(path)


def test_files_without_training_state_stay_format_version_1(tiny_model, reference_clip, tmp_path):
    path = tmp_path / "e.safetensors"
    result = train_motion_embedding(tiny_model, reference_clip, config(steps=2, inversion_steps=0), path)
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata()["format_version"] == "1"
    copy = save_embedding(result.embedding, tmp_path / "with_state.safetensors")  # what is in memory is kept
    loaded = load_embedding(copy)
    assert loaded.training_state.keys() == result.embedding.training_state.keys()
    for key, tensor in result.embedding.training_state.items():
        assert torch.equal(loaded.training_state[key], tensor.to(loaded.training_state[key].dtype))


# ----- the hybrid loss: the spatial LoRA learns from the single-frame loss only -----

def hybrid_trainer(model, frames) -> EmbeddingTrainer:
    trainer = EmbeddingTrainer(model, frames, config(loss="debiased_hybrid", lora_rank=4, inversion_steps=0), None)
    trainer.setup(None)
    # one step first so that the LoRA's up-projections are no longer zero (otherwise its down-projections get none)
    with installed_processors(model.unet, {**trainer.processors, **trainer.lora}), torch.enable_grad():
        trainer.forward_backward(next(s for s in range(50) if trainer.draws(s).lora_on))
        trainer.optimizer_step()
    return trainer


def lora_grads(trainer: EmbeddingTrainer) -> list[torch.Tensor | None]:
    return [p.grad for proc in trainer.lora.values() for p in proc.parameters()]


def test_the_temporal_loss_gives_the_lora_no_gradient(tiny_model, reference_clip):
    trainer = hybrid_trainer(tiny_model, reference_clip)
    step = next(s for s in range(1, 50) if trainer.draws(s).lora_on)
    with installed_processors(tiny_model.unet, {**trainer.processors, **trainer.lora}), torch.enable_grad():
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.temporal_forward_backward(trainer.draws(step))
        assert all(g is None for g in lora_grads(trainer))
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.value.values())

        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.forward_backward(step)
        together = lora_grads(trainer)
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.spatial_forward_backward(trainer.draws(step))
        alone = lora_grads(trainer)
    assert any(g is not None and g.abs().sum() > 0 for g in together)
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b)


def test_masked_steps_run_no_spatial_pass_and_leave_the_lora_alone(tiny_model, reference_clip):
    trainer = hybrid_trainer(tiny_model, reference_clip)
    masked = next(s for s in range(1, 200) if not trainer.draws(s).lora_on)
    unmasked = next(s for s in range(1, 200) if trainer.draws(s).lora_on)
    calls: list[int] = []
    handle = tiny_model.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[2]))
    try:
        with installed_processors(tiny_model.unet, {**trainer.processors, **trainer.lora}), torch.enable_grad():
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer.forward_backward(masked)
            assert calls == [6]  # the whole clip once; no single-frame pass
            assert all(g is None for g in lora_grads(trainer))
            calls.clear()
            trainer.forward_backward(unmasked)
            assert calls == [6, 1]
    finally:
        handle.remove()


# ----- gradient checkpointing "auto" -----

def test_auto_checkpointing_is_off_when_the_run_fits_and_on_when_it_does_not(tiny_model, caplog):
    caplog.set_level("INFO")
    decide = memory_estimate.decide_gradient_checkpointing
    assert decide(tiny_model, 6, 16, 16, "auto", "all") is False
    assert "Gradient checkpointing auto: off" in caplog.text
    need = memory_estimate.estimate_training_bytes(tiny_model, 6, 16, 16, False, "all")
    assert decide(tiny_model, 6, 16, 16, "auto", "all", available=need) is True
    assert decide(tiny_model, 6, 16, 16, "off", "all", available=1) is False
    assert decide(tiny_model, 6, 16, 16, "on", "all") is True


def test_training_uses_the_resolved_checkpointing(tiny_model, reference_clip, caplog):
    caplog.set_level("INFO")
    train_motion_embedding(tiny_model, reference_clip, config(steps=1, inversion_steps=0))
    assert "Gradient checkpointing auto: off" in caplog.text


# ----- sizes that cannot fit, outputs that cannot be written -----

def test_absurd_sizes_are_refused_before_the_vae_runs(tiny_model):
    encoder_calls = []
    handle = tiny_model.vae.register_forward_pre_hook(lambda *a: encoder_calls.append(1))
    frames = torch.zeros(1, 1, 1, 3).expand(24, 320, 100_000, 3)  # no memory behind it
    try:
        with pytest.raises(InvalidSettingError, match="needs about .* GiB but only"):
            train_motion_embedding(tiny_model, frames, config())
    finally:
        handle.remove()
    assert encoder_calls == []


def test_a_vae_encode_that_would_not_fit_is_refused(tiny_model):
    """A wide VAE on a small UNet: the VAE encode, not the training step, is what would not fit."""
    from diffusers import AutoencoderKL

    wide_vae = AutoencoderKL(block_out_channels=(256,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                             up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=32)
    model = replace(tiny_model, vae=wide_vae)  # 8x smaller latents than pixels
    training = memory_estimate.estimate_training_bytes(model, 2, 8, 8, False, "paper")
    encode = memory_estimate.estimate_vae_encode_bytes(model, 2, 64, 64)
    assert encode > 2 * training
    memory_estimate.check_training_fits(model, 2, 8, 8, False, "paper", available=2 * encode)
    with pytest.raises(InvalidSettingError, match="Encoding 2 frames at 64x64 with the VAE needs about"):
        memory_estimate.check_training_fits(model, 2, 8, 8, False, "paper", available=(training + encode) // 2)


@pytest.mark.parametrize("where", ["parent_is_a_file", "is_a_folder", "proc"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(tiny_model, reference_clip, tmp_path, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    path = {"parent_is_a_file": blocker / "e.safetensors", "is_a_folder": tmp_path,
            "proc": "/proc/motion_inversion_test/e.safetensors"}[where]
    steps = []
    with pytest.raises(InvalidSettingError, match="folder|Cannot write"):
        train_motion_embedding(tiny_model, reference_clip, config(), path, on_step=lambda *a: steps.append(a),
                               on_inversion_step=lambda *a: steps.append(a))
    assert steps == []


def _full_disk_for(folder, monkeypatch):
    """Make the low-level writer fail with ENOSPC for files in ``folder`` only."""
    real = embedding_file.save_file

    def writer(tensors, filename, metadata=None):
        if str(filename).startswith(str(folder)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(embedding_file, "save_file", writer)


def test_a_failed_final_save_keeps_the_embedding_in_a_rescue_file(tiny_model, reference_clip, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    out = tmp_path / "out"
    out.mkdir()
    _full_disk_for(out, monkeypatch)
    path = out / "e.safetensors"
    with pytest.raises(EmbeddingSaveError, match="disk is full") as err:
        train_motion_embedding(tiny_model, reference_clip, config(steps=3), path)
    rescued = list((tmp_path / "tmp" / "motion_inversion_rescue").glob("e_*.safetensors"))
    assert len(rescued) == 1
    assert str(path) in str(err.value) and str(rescued[0]) in str(err.value)
    saved = load_embedding(rescued[0])
    assert saved.info.steps == 3 and saved.inverted_latent is not None and not saved.training_state
    assert not list(out.iterdir())


def test_a_failed_save_on_cancel_keeps_the_embedding_in_a_rescue_file(tiny_model, reference_clip, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    out = tmp_path / "out"
    out.mkdir()
    _full_disk_for(out, monkeypatch)
    with pytest.raises(EmbeddingSaveError) as err:
        train_motion_embedding(tiny_model, reference_clip, config(steps=5), out / "e.safetensors", on_step=stop_at(2))
    assert isinstance(err.value.__context__, KeyboardInterrupt)
    (rescued,) = (tmp_path / "tmp" / "motion_inversion_rescue").iterdir()
    saved = load_embedding(rescued)
    assert saved.info.steps == 2 and saved.info.extra["interrupted"] and saved.training_state


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
     ({"layer_set": "some"}, "Unknown layer set"), ({"inversion": "magic"}, "Unknown inversion"),
     ({"gradient_checkpointing": "sometimes"}, "Unknown gradient checkpointing")],
)
def test_bad_settings_are_refused_before_any_work(tiny_model, reference_clip, overrides, message):
    with pytest.raises(InvalidSettingError, match=message):
        train_motion_embedding(tiny_model, reference_clip, config(**overrides))


def test_bad_frame_sizes_are_refused(tiny_model):
    with pytest.raises(InvalidSettingError, match="multiple of 8"):
        train_motion_embedding(tiny_model, torch.rand(4, 30, 32, 3), config())
    with pytest.raises(InvalidSettingError, match="at least 2 frames"):
        train_motion_embedding(tiny_model, torch.rand(1, 32, 32, 3), config())
    with pytest.raises(InvalidSettingError, match="NaN"):
        train_motion_embedding(tiny_model, torch.full((2, 32, 32, 3), math.nan), config())
