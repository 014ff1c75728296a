"""The motion-transfer benchmark's references (toyworld/references.py): on the canvas, varied, readable by the detector."""

from __future__ import annotations

import pytest
import torch

from toyworld import metrics, world
from toyworld.references import APPEARANCES, MOTION_KINDS, benchmark_references


@pytest.mark.parametrize("frames, size", [(8, 32), (17, 96)])
def test_every_reference_stays_on_the_canvas_and_is_not_constant_velocity(frames, size):
    refs = benchmark_references(frames, size)
    assert list(refs) == list(APPEARANCES) and len(refs) == 16
    assert {r.kind for r in refs.values()} == set(MOTION_KINDS) and len(MOTION_KINDS) == 8
    half = world.object_size(size, size) / 2
    for ref in refs.values():
        assert ref.track.shape == (frames, 2)
        assert float(ref.track.min()) >= half - 1e-3 and float(ref.track.max()) <= size - half + 1e-3, ref.name
        steps = ref.track[1:] - ref.track[:-1]
        assert float((steps - steps.mean(dim=0)).abs().max()) > 0.1 * world.canvas_scale(size, size), ref.name
    pairs = [(r.kind, tuple(r.track[0].tolist())) for r in refs.values()]
    assert all(a[1] != b[1] for a, b in zip(pairs[:8], pairs[8:]))  # each kind from two start positions


def test_references_cover_every_colour_and_shape_and_keep_the_first_benchmarks_paths():
    refs = benchmark_references()
    assert {r.colour for r in refs.values()} == set(world.COLOURS)
    assert {r.shape for r in refs.values()} == set(world.SHAPES)
    first = world.reference_trajectories()
    for name in first:
        torch.testing.assert_close(refs[name].track, first[name], atol=1e-5, rtol=0)


def test_the_detector_reads_every_rendered_reference():
    for ref in benchmark_references().values():
        clip = world.render_trajectory(ref.track, ref.colour, ref.shape, world.object_size(), 32, 32)
        det = metrics.detect_clip(clip)
        assert (det.colour, det.shape) == (ref.colour, ref.shape), ref.name
        assert det.presence_rate == 1.0
        assert metrics.motion_pearson(det.centroids, ref.track) > 0.97, ref.name


def _bench_module():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_motion_transfer.py"
    spec = importlib.util.spec_from_file_location("bench_motion_transfer", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "drawn, leak, blend, text",
    [(("blue", "triangle"), False, False, True), (("blue", "circle"), False, True, False),
     (("blue", "square"), True, False, False), (("red", "triangle"), True, False, False)],
)
def test_a_clip_is_scored_as_the_prompts_a_leak_or_a_blend(drawn, leak, blend, text):
    bench = _bench_module()
    ref = benchmark_references()["bounce"]  # a red square
    clip = world.render_trajectory(ref.track, drawn[0], drawn[1], world.object_size(), 32, 32)
    m = bench.measure_clip(clip, ref.track, ("blue", "triangle"), (ref.colour, ref.shape))
    assert (m["leak"], m["blend"], m["text_ok"]) == (leak, blend, text)
    assert m["pearson"] > 0.97


def test_the_prompts_differ_from_the_reference_in_colour_and_shape():
    bench = _bench_module()
    for index, ref in enumerate(benchmark_references().values()):
        prompts = bench.prompt_plan(ref, index, 0, 3)
        assert len(set(prompts)) == 3
        assert all(c != ref.colour and s != ref.shape for c, s in prompts)


def test_the_benchmarks_pack_default_row_is_what_the_nodes_and_cli_do_by_default(tiny_model, reference_clip):
    """The row the targets are checked on uses the core's defaults: training loss and inversion, the embedding's
    default mode as Apply resolves it, Apply's strength and step window, the sampler's noise prior."""
    from motion_core.defaults import field_default
    from motion_core.embedding import EMBEDDING_DEFAULT_MODE, resolve_mode
    from motion_core.sampling import AppliedMotion, SamplingConfig
    from motion_core.training import TrainingConfig, train_motion_embedding

    bench = _bench_module()
    row = next(s for s in bench.SETTINGS if s.name == bench.PACK_DEFAULT)
    assert bench.PACK_DEFAULT in bench.DEFAULT_SETTINGS
    assert {t[0] for t in bench.TARGETS} == {bench.PACK_DEFAULT, "diff_value_pure_noise"}
    config = TrainingConfig(prompt="a red square", steps=1, inversion_steps=0, save_every=0)
    assert (row.loss, row.inversion) == (config.loss, config.inversion)
    info = train_motion_embedding(tiny_model, reference_clip, config).embedding.info
    applied = AppliedMotion(None)  # type: ignore[arg-type]
    assert row.mode == resolve_mode(applied.mode, info) and applied.mode == EMBEDDING_DEFAULT_MODE
    assert (row.strength, row.end_percent, 0.0) == (applied.strength, applied.end_percent, applied.start_percent)
    assert row.noise_prior == field_default(SamplingConfig, "noise_prior")


def _report(settings: dict[str, float], first_loss: float = 0.05, lr: float = 0.1) -> dict:
    """A minimal version-2 report with one training record and the given setting -> fidelity rows."""
    rows = {name: {"fidelity": fidelity, "text_alignment": 1.0} for name, fidelity in settings.items()}
    return {
        "benchmark_version": 2, "family": "unet3d", "model": "m", "reference_appearance": {"bounce": ["red", "square"]},
        "command": "run", "elapsed_seconds": 1.0, "sampling_seconds": 1.0,
        "config": {"learning_rate": lr, "settings": list(settings), "losses": ["base"]},
        "settings": rows, "fidelity_by_reference": {n: {} for n in settings}, "fidelity_by_kind": {n: {} for n in settings},
        "training": [{"reference": "bounce", "seed": 0, "loss": "base", "inversion": "plain", "first_loss": first_loss,
                      "final_loss_mean20": 0.01, "inverted_latent_std": 2.0}],
        "clips": [{"setting": n} for n in settings],
    }


def test_merged_runs_keep_the_settings_order_and_measure_shares_against_controls_from_either_run():
    bench = _bench_module()
    merged = bench.merge_reports([_report({"raw_value_end_0.5": 0.9}), _report({"no_embedding": 0.1, "inverted_start_only": 0.7})])
    assert list(merged["settings"]) == ["no_embedding", "inverted_start_only", "raw_value_end_0.5"]
    assert merged["settings"]["raw_value_end_0.5"]["embedding_share"] == pytest.approx(0.2)
    assert len(merged["clips"]) == 3 and merged["command"] == "run + run"


@pytest.mark.parametrize("other", [_report({"no_embedding": 0.1}, lr=0.2), _report({"no_embedding": 0.1}, first_loss=0.06)])
def test_runs_of_another_configuration_or_training_are_not_merged(other):
    bench = _bench_module()
    with pytest.raises(SystemExit, match="differ"):
        bench.merge_reports([_report({"raw_value_end_0.5": 0.9}), other])


def test_the_value_grid_exploration_flag_changes_the_transformer_families_grid_only(monkeypatch):
    """``--value-grid-max-side`` sets the Latte or Wan family's value grid for the run and is refused on the UNets."""
    from motion_core.families import latte, wan

    bench = _bench_module()
    monkeypatch.setattr(latte, "LATTE_VALUE_GRID_MAX_SIDE", latte.LATTE_VALUE_GRID_MAX_SIDE)  # restored afterwards
    monkeypatch.setattr(wan, "WAN_VALUE_GRID_MAX_SIDE", wan.WAN_VALUE_GRID_MAX_SIDE)
    for family in ("unet3d", "animatediff"):
        with pytest.raises(SystemExit, match="--family latte / wan only"):
            bench.use_value_grid_max_side(family, 4)
    with pytest.raises(SystemExit, match="whole number >= 1"):
        bench.use_value_grid_max_side("latte", 0)
    bench.use_value_grid_max_side("latte", 4)
    assert latte.LATTE_VALUE_GRID_MAX_SIDE == 4  # what LatteFamily.select_sites reads when it runs
    # Wan: a 96x96 toy's latent is 12x12, its tokens 6x6; the grid the sites get follows the flag.
    assert wan.selected_sites([128, 128], 2, "all", 12, 12)[0].grid(12, 12) == (6, 6)
    bench.use_value_grid_max_side("wan", 2)
    assert wan.selected_sites([128, 128], 2, "all", 12, 12)[0].grid(12, 12) == (2, 2)
    assert bench.parse_args(["--family", "latte", "--value-grid-max-side", "4"]).value_grid_max_side == 4


def test_training_variant_rows_train_their_own_embeddings_and_merge_beside_the_standard_ones():
    """Issue 13's training-time ideas: every variant is a valid training configuration, keyed apart from the standard
    embedding of the same reference (a merge keeps both), and its rows share the standard rows' controls."""
    from motion_core.training import TrainingConfig

    bench = _bench_module()
    assert {s.training for s in bench.SETTINGS} == set(bench.TRAINING_VARIANTS)
    for overrides in bench.TRAINING_VARIANTS.values():
        TrainingConfig(prompt="a red square", **overrides).validate()  # type: ignore[arg-type]
    variant = _report({"static_penalty_raw_end_0.5": 0.8}, first_loss=0.07)  # another embedding, other losses
    variant["training"][0]["training"] = "static_penalty"
    merged = bench.merge_reports([_report({"inverted_start_only": 0.7, "raw_value_end_0.5": 0.9}), variant])
    assert sorted(r.get("training", "standard") for r in merged["training"]) == ["standard", "static_penalty"]
    assert merged["settings"]["static_penalty_raw_end_0.5"]["embedding_share"] == pytest.approx(0.1)


def test_the_vae_ceiling_keeps_the_references_motion_on_the_bundled_model_and_prior_1_rows_have_their_control():
    """The report's VAE round trip (encode + decode) of the references, on the bundled UNet3D toy, keeps each track,
    and a row that starts from the inverted latent itself is measured against the same start without embeddings."""
    from motion_core.model_loading import load_video_model

    bench = _bench_module()
    model = load_video_model(bench.FAMILY_MODELS["unet3d"], "fp32", "auto", "cpu", use_cache=False)
    config = bench.config_for_model(model, references=["bounce", "fall"], train_seeds=[0], clips_per_reference_seed=1)
    run = bench.Benchmark(model, config)
    pearson = bench._reference_self_check(run, through_vae=True)
    assert set(pearson) == {"bounce", "fall"} and min(pearson.values()) > 0.95, pearson
    table = bench.render_reference_check(run)  # what --reference-check prints
    assert f"| fall | fall | 1.00 | {pearson['fall']:.2f} |" in table and table.count("\n| ") == 4
    rows = {s.name: s for s in bench.SETTINGS}
    assert bench.control_of(rows["raw_value_prior_1"]) == "inverted_start_prior_1"
    assert bench.control_of(rows["raw_value_end_0.5"]) == "inverted_start_only"
