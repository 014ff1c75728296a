"""Issue 13's training-time ideas: appearance augmentation of the reference and the value-static penalty.

The augmentation is checked on toy-world clips with the toy world's own detector (the motion must survive, the look
must not); both ideas are trained on a real (tiny, random) diffusers model.
"""

from __future__ import annotations

import pytest
import torch

from motion_core.appearance_augmentation import AUGMENTED_COPIES, augment_clip, augmented_clips, hue_rotation
from motion_core.errors import InvalidSettingError
from motion_core.losses import static_share, value_static_penalty
from motion_core.training import EmbeddingTrainer, TrainingConfig, train_motion_embedding
from toyworld import metrics, world
from toyworld.references import benchmark_references


def config(**overrides) -> TrainingConfig:
    settings = dict(prompt="a red square", steps=6, learning_rate=0.1, layer_set="all", inversion_steps=0, seed=5)
    return TrainingConfig(**{**settings, **overrides})


def toy_clip(colour: str = "red", shape: str = "triangle") -> tuple[torch.Tensor, torch.Tensor]:
    """A benchmark reference (a bounce) rendered in ``colour`` and ``shape``: frames ``(8, 32, 32, 3)`` and its track."""
    reference = benchmark_references(8, 32)["bounce"]
    frames = world.render_trajectory(reference.track, colour, shape, world.object_size(32, 32), 32, 32)
    return frames, reference.track


def test_a_hue_rotation_keeps_greys_and_turns_red_green_in_a_third_turn():
    rotation = hue_rotation(120.0)
    torch.testing.assert_close(rotation @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(rotation @ torch.full((3,), 0.4), torch.full((3,), 0.4), atol=1e-6, rtol=0)
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["colour", "colour_blur"])
def test_an_augmented_copy_moves_as_the_reference_does_in_another_colour(kind):
    frames, track = toy_clip()
    original = metrics.detect_clip(frames)
    generator = torch.Generator().manual_seed(0)
    colours = set()
    for _ in range(6):
        copy = augment_clip(frames, kind, generator)
        assert copy.shape == frames.shape and 0.0 <= float(copy.min()) and float(copy.max()) <= 1.0
        found = metrics.detect_clip(copy)
        assert found.presence_rate == 1.0
        # the same motion: the detected track of the copy is the reference's
        assert metrics.motion_pearson(found.centroids, track) > 0.99
        assert float((found.centroids - original.centroids).abs().max()) < 0.75
        colours.add(found.colour)
    assert "red" not in colours and len(colours) >= 2, colours  # the look changes, and from copy to copy


def test_the_blur_softens_the_outline():
    frames, _ = toy_clip(shape="square")
    generator = torch.Generator().manual_seed(0)
    sharp = augment_clip(frames, "colour", torch.Generator().manual_seed(0))
    blurred = augment_clip(frames, "colour_blur", generator)
    # the blurred copy's largest neighbouring-pixel step is much smaller than the sharp copy's
    assert float(blurred.diff(dim=2).abs().max()) < 0.6 * float(sharp.diff(dim=2).abs().max())


def test_the_training_clips_are_the_reference_then_seeded_copies():
    frames, _ = toy_clip()
    assert augmented_clips(frames, "off", seed=0) == [frames]
    clips = augmented_clips(frames, "colour", seed=0)
    assert len(clips) == 1 + AUGMENTED_COPIES and clips[0] is frames
    again, other = augmented_clips(frames, "colour", seed=0), augmented_clips(frames, "colour", seed=1)
    assert all(torch.equal(a, b) for a, b in zip(clips, again))
    assert not torch.equal(clips[1], other[1])


def test_the_static_penalty_and_share_measure_the_temporal_mean():
    constant = torch.ones(4, 6, 3) * 2.0  # (positions, frames, channels), the same every frame
    alternating = torch.ones(4, 6, 3) * torch.tensor([1.0, -1.0] * 3).view(1, 6, 1)
    assert float(value_static_penalty([constant])) == pytest.approx(4.0)
    assert float(value_static_penalty([alternating])) == pytest.approx(0.0)
    assert static_share([constant]) == pytest.approx(1.0)
    assert static_share([alternating]) == pytest.approx(0.0)
    assert static_share([constant, alternating]) == pytest.approx(0.8)  # 96 of 120 units of energy are static


def test_the_static_penalty_trains_a_value_embedding_with_little_static_part(tiny_model, reference_clip):
    plain = train_motion_embedding(tiny_model, reference_clip, config(steps=20))
    # the random tiny model's loss is ~1 (the toy models' 0.02-0.1), so it takes a heavier weight than the benchmark's 1
    penalised = train_motion_embedding(tiny_model, reference_clip, config(steps=20, value_static_penalty=100.0))
    share_plain = static_share(plain.embedding.value.values())
    share_penalised = static_share(penalised.embedding.value.values())
    assert share_penalised < 0.25 * share_plain, (share_plain, share_penalised)
    assert penalised.embedding.info.extra["value_static_penalty"] == 100.0
    assert "value_static_penalty" not in plain.embedding.info.extra


def test_augmented_training_draws_every_copy_and_keeps_the_other_draws(tiny_model, reference_clip):
    plain = EmbeddingTrainer(tiny_model, reference_clip, config(), None)
    augmented = EmbeddingTrainer(tiny_model, reference_clip, config(appearance_augmentation="colour"), None)
    for trainer in (plain, augmented):
        trainer.setup(None)
    assert plain.augmented_latents == [] and len(augmented.augmented_latents) == AUGMENTED_COPIES
    assert all(copy.shape == augmented.latents.shape for copy in augmented.augmented_latents)
    assert not any(torch.equal(copy, augmented.latents) for copy in augmented.augmented_latents)
    clips = set()
    for step in range(40):
        before, after = plain.draws(step), augmented.draws(step)
        assert torch.equal(before.noise, after.noise) and torch.equal(before.timestep, after.timestep)
        assert before.clip == 0
        clips.add(after.clip)
    assert clips == set(range(1 + AUGMENTED_COPIES))
    result = train_motion_embedding(tiny_model, reference_clip, config(appearance_augmentation="colour_blur"))
    assert result.embedding.info.extra["appearance_augmentation"] == "colour_blur"
    assert len(result.losses) == 6 and all(torch.isfinite(torch.tensor(result.losses)))


@pytest.mark.parametrize("overrides, message", [
    ({"appearance_augmentation": "sepia"}, "Unknown appearance augmentation 'sepia'; choose one of off, colour, colour_blur"),
    ({"value_static_penalty": -1.0}, "zero or a positive number"),
    ({"value_static_penalty": float("inf")}, "zero or a positive number"),
])
def test_bad_variant_settings_are_refused_before_any_work(tiny_model, reference_clip, overrides, message):
    with pytest.raises(InvalidSettingError, match=message):
        train_motion_embedding(tiny_model, reference_clip, config(**overrides))
