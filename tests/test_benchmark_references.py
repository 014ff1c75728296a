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
