"""The flow-matching arithmetic against diffusers' own flow scheduler (the reference the Wan pipeline uses)."""

from __future__ import annotations

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from motion_core import flow_matching as fm
from motion_core.testing.tiny_models import build_tiny_pipeline_parts
from motion_core.text_encoding import encode_masked_prompts


def test_noising_and_euler_step_match_diffusers_flow_scheduler() -> None:
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(8)
    g = torch.Generator().manual_seed(0)
    x0, noise, velocity = (torch.randn(1, 4, 3, 2, 2, generator=g) for _ in range(3))
    sigma = scheduler.sigmas[2]
    ours_noisy = fm.noisy_latents(x0, noise, sigma.reshape(1))
    theirs_noisy = scheduler.scale_noise(x0, scheduler.timesteps[2:3], noise)
    assert torch.allclose(ours_noisy, theirs_noisy, atol=1e-6)
    stepped = scheduler.step(velocity, scheduler.timesteps[2], ours_noisy).prev_sample
    assert torch.allclose(fm.euler_step(ours_noisy, velocity, float(sigma), float(scheduler.sigmas[3])), stepped, atol=1e-6)


def test_shift_matches_diffusers_and_keeps_the_ends() -> None:
    u = torch.linspace(0, 1, 11)
    assert torch.allclose(fm.shift_sigmas(u, 5.0), 5.0 * u / (1 + 4.0 * u))
    sig = fm.sampling_sigmas(10, 3.0)
    assert sig[0] == 1.0 and sig[-1] == 0.0 and bool((sig[1:] < sig[:-1]).all())
    with pytest.raises(ValueError, match="positive"):
        fm.shift_sigmas(u, 0.0)


def test_velocity_and_clean_estimate_are_consistent() -> None:
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    sigma = torch.tensor([0.2, 0.9])
    x = fm.noisy_latents(x0, noise, sigma)
    assert torch.allclose(fm.predicted_clean(x, fm.velocity_target(x0, noise), sigma), x0, atol=1e-6)
    # The flow path is straight: one Euler step with the exact velocity goes from any sigma to the clean end and
    # back up to pure noise.
    at_half = fm.noisy_latents(x0, noise, torch.tensor(0.5))
    assert torch.allclose(fm.euler_step(at_half, noise - x0, 0.5, 0.0), x0, atol=1e-6)
    assert torch.allclose(fm.euler_step(at_half, noise - x0, 0.5, 1.0), noise, atol=1e-6)


def test_shift_is_read_from_either_scheduler_config_key() -> None:
    assert fm.shift_from_config({"flow_shift": 5.0}) == 5.0
    assert fm.shift_from_config({"shift": 2.0}) == 2.0
    assert fm.shift_from_config({}) == fm.DEFAULT_SHIFT


def test_masked_prompt_encoding_zeroes_the_padding() -> None:
    parts = build_tiny_pipeline_parts()
    tokenizer, encoder = parts["tokenizer"], parts["text_encoder"]
    short, longer = encode_masked_prompts(tokenizer, encoder, ["a red square", "a red square on the beach"])
    real = int(tokenizer("a red square").attention_mask.__len__())  # tokens incl. start and end markers
    assert short.shape == longer.shape == (12, 32)
    assert torch.count_nonzero(short[real:]) == 0
    assert bool((short[:real].abs().sum(-1) > 0).all())
    assert bool((longer[: real + 3].abs().sum(-1) > 0).all())
