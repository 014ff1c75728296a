"""Hostile embedding files, memory that would not fit, and long sessions that must not leak."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import struct
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from motion_core import memory_estimate
from motion_core.attention import MotionAttnProcessor
from motion_core.embedding import EmbeddingInfo, zero_embedding
from motion_core.embedding_file import load_embedding, save_embedding
from motion_core.errors import EmbeddingFileError, InvalidSettingError
from motion_core.sampling import AppliedMotion, SamplingConfig, sample_video
from motion_core.spatial_lora import SpatialLoRAProcessor
from motion_core.temporal_layers import select_temporal_blocks
from motion_core.training import TrainingConfig, train_motion_embedding
from motion_core.video_io import write_video

# Cases per fuzz strategy: 300 in CI; MI_FUZZ_CASES=5000 python -m pytest tests/test_hardening.py -k fuzz runs more.
FUZZ_CASES = int(os.environ.get("MI_FUZZ_CASES", "300"))


@pytest.fixture(scope="module")
def valid_file_bytes(tiny_model_dir, tmp_path_factory) -> bytes:
    from motion_core.model_loading import load_video_model

    model = load_video_model(tiny_model_dir, "fp32", "sdpa", "cpu", use_cache=False)
    blocks = select_temporal_blocks(model.unet, "paper")
    emb = zero_embedding(EmbeddingInfo("unet3d", dict(model.identity), tuple(blocks), 16, 16, 3, 2, 2))
    emb.inverted_latent = torch.zeros(4, 3, 2, 2)
    path = save_embedding(emb, tmp_path_factory.mktemp("fuzz") / "valid.safetensors")
    return path.read_bytes()


def _load_bytes(tmp_path, data: bytes) -> None:
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(data)
    try:
        load_embedding(path)
    except EmbeddingFileError as err:
        assert path.name in str(err) and len(str(err)) < 2000


@settings(max_examples=FUZZ_CASES, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_byte_mutations_end_in_the_pack_error(valid_file_bytes, tmp_path, data):
    blob = bytearray(valid_file_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(blob) - 1))
        blob[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    _load_bytes(tmp_path, bytes(blob))


@settings(max_examples=FUZZ_CASES, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_header_mutations_end_in_the_pack_error(valid_file_bytes, tmp_path, data):
    """Rewrite the JSON header (shapes, offsets, dtypes, metadata) with hostile values and keep the payload."""
    length = struct.unpack("<Q", valid_file_bytes[:8])[0]
    header = json.loads(valid_file_bytes[8 : 8 + length])
    payload = valid_file_bytes[8 + length :]
    key = data.draw(st.sampled_from(sorted(header)))
    if key == "__metadata__":
        field = data.draw(st.sampled_from(sorted(header[key])))
        header[key][field] = data.draw(st.one_of(st.text(max_size=40), st.sampled_from(["-1", "1e9", "[]", "{}", "99999999999", "null"])))
    else:
        part = data.draw(st.sampled_from(["shape", "dtype", "data_offsets"]))
        header[key][part] = data.draw({
            "shape": st.lists(st.integers(-2, 2**40), max_size=5),
            "dtype": st.sampled_from(["F32", "F16", "I64", "U8", "BOOL", "F8_E4M3", "XX"]),
            "data_offsets": st.lists(st.integers(-5, 2**40), min_size=0, max_size=3),
        }[part])
    encoded = json.dumps(header).encode()
    _load_bytes(tmp_path, struct.pack("<Q", len(encoded)) + encoded + payload)


def test_absurd_header_length_is_refused_quickly(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(EmbeddingFileError, match="cannot be read as safetensors"):
        load_embedding(path)


def test_training_that_cannot_fit_is_refused_before_it_starts(tiny_model, reference_clip, monkeypatch, tmp_path):
    monkeypatch.setattr(memory_estimate, "available_bytes", lambda device: 1024 * 1024)
    path = tmp_path / "never.safetensors"
    with pytest.raises(InvalidSettingError, match=r"needs about .* GiB but only .* GiB is free.*lower the width"):
        train_motion_embedding(tiny_model, reference_clip, TrainingConfig(prompt="a red square", steps=2), path)
    assert not path.exists()
    monkeypatch.setenv(memory_estimate.SKIP_ENV, "1")  # the documented way past an estimate the user knows is wrong
    train_motion_embedding(tiny_model, reference_clip, TrainingConfig(prompt="a red square", steps=2, inversion_steps=2), path)
    assert path.exists()


def test_estimate_grows_with_size_and_shrinks_with_checkpointing(tiny_model):
    small = memory_estimate.estimate_training_bytes(tiny_model, 8, 8, 8, False)
    assert memory_estimate.estimate_training_bytes(tiny_model, 16, 8, 8, False) == 2 * small
    assert memory_estimate.estimate_training_bytes(tiny_model, 8, 16, 16, False) >= 4 * small
    assert memory_estimate.estimate_training_bytes(tiny_model, 8, 8, 8, True) < small
    assert memory_estimate.estimate_training_bytes(tiny_model, 8, 8, 8, False, "paper") < small  # "all" is the default


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _live_objects(*types: type) -> int:
    """How many objects of ``types`` the garbage collector can still reach (after a full collection)."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, types))


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_twenty_train_and_sample_cycles_keep_memory_flat(tiny_model, reference_clip):
    """RSS catches big leaks; KB-sized embeddings are below its noise, so every embedding tensor of every cycle
    is followed by a weak reference, and the processors and optimisers a cycle makes are counted."""
    config = TrainingConfig(prompt="a red square", steps=2, learning_rate=0.1, layer_set="all", inversion_steps=2,
                            gradient_checkpointing=False, loss="debiased_hybrid")
    sampling = SamplingConfig(prompt="a blue circle", width=16, height=16, frames=4, steps=2, guidance_scale=2.0)
    reference_clip = reference_clip[:4, :16, :16]
    unet = tiny_model.unet
    processors_before = dict(unet.attn_processors)
    parameters_before = {name: p.detach().clone() for name, p in unet.named_parameters()}
    per_cycle = (MotionAttnProcessor, SpatialLoRAProcessor, torch.optim.Optimizer)
    baseline = _live_objects(*per_cycle)
    readings, tensors = [], []
    for cycle in range(20):
        embedding = train_motion_embedding(tiny_model, reference_clip, config).embedding
        sample_video(tiny_model, sampling, AppliedMotion(embedding))
        tensors += [weakref.ref(t) for t in (*embedding.query_key.values(), *embedding.value.values(), embedding.inverted_latent)]
        del embedding
        assert _live_objects(*per_cycle) == baseline, f"cycle {cycle} left processors or an optimiser alive"
        assert not [ref for ref in tensors if ref() is not None], f"cycle {cycle} left embedding tensors alive"
        readings.append(_rss_bytes())
    growth = readings[-1] - readings[4]  # after warm-up (allocator pools, lazy imports)
    assert growth < 40 * 2**20, [r // 2**20 for r in readings]
    assert unet.attn_processors == processors_before
    assert {name for name, _ in unet.named_parameters()} == set(parameters_before)  # nothing left registered
    for name, parameter in unet.named_parameters():
        assert torch.equal(parameter, parameters_before[name]) and not parameter.requires_grad, name


# ----- atomic saves: a failed or killed save never costs the old file, a handle, or a hidden partial file -----

REPO = Path(__file__).resolve().parent.parent


def _open_partial_handles() -> list[str]:
    """Files ending in ``.partial`` (deleted or not) that this process still holds open."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [t for t in targets if ".partial" in t]


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def _write_existing(kind: str, folder: Path, tiny_model_identity: dict) -> Path:
    """A real file of ``kind`` written by the pack (what a failed save must not damage)."""
    if kind == "embedding":
        from motion_core.temporal_layers import TemporalBlock

        blocks = (TemporalBlock("transformer_in", 64, 0, ("transformer_in.transformer_blocks.0.attn1",)),)
        embedding = zero_embedding(EmbeddingInfo("unet3d", tiny_model_identity, blocks, 64, 64, 8, 8, 8))
        return save_embedding(embedding, folder / "keep.safetensors")
    return write_video(torch.rand(6, 32, 32, 3), folder / f"keep.{kind}", fps=4)


_DISK_FULL_CHILD = """
import json, os, resource, signal, sys, torch
from pathlib import Path
from motion_core.embedding import EmbeddingInfo, zero_embedding
from motion_core.embedding_file import save_embedding
from motion_core.temporal_layers import TemporalBlock
from motion_core.video_io import write_video
target, kind = Path(sys.argv[1]), sys.argv[2]
blocks = (TemporalBlock("transformer_in", 64, 0, ("transformer_in.transformer_blocks.0.attn1",)),)
embedding = zero_embedding(EmbeddingInfo("unet3d", {}, blocks, 128, 128, 16, 16, 16))
frames = torch.rand(12, 64, 64, 3)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    save_embedding(embedding, target) if kind == "embedding" else write_video(frames, target, fps=4)
    error = None
except BaseException as exc:
    error = type(exc).__name__ + ": " + str(exc)
    handles = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")]
print(json.dumps({"error": error, "open_partials": [h for h in handles if ".partial" in h] if error else []}))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc and RLIMIT_FSIZE")
@pytest.mark.parametrize("kind", ["embedding", "mp4", "gif", "webp"])
def test_save_that_fails_midway_keeps_the_old_file_byte_for_byte(tiny_model, tmp_path, kind):
    """A real write error partway through (the file size limit makes write() fail with EFBIG, as a full disk
    does with ENOSPC) over an existing file: the old bytes stay, and no partial file or handle is left."""
    existing = _write_existing(kind, tmp_path, dict(tiny_model.identity))
    old_bytes = existing.read_bytes()
    assert len(old_bytes) > 4096  # so the new save really is cut partway
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", _DISK_FULL_CHILD, str(existing), kind], capture_output=True, text=True,
                           env=env, cwd=REPO, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["error"] and ("too large" in report["error"].lower() or "27" in report["error"]), report
    assert report["open_partials"] == []
    assert existing.read_bytes() == old_bytes
    assert _partials(tmp_path) == []


def test_interrupted_save_keeps_the_old_file_and_releases_its_handle(tiny_model, tmp_path, monkeypatch):
    """Cancel (a BaseException) after the writer wrote some bytes: no handle stays open on the deleted partial
    file (Pillow's own GIF writer closed its file only on ``Exception``; the pack's writer writes into a handle the
    pack owns and always closes)."""
    from PIL import GifImagePlugin

    from motion_core import embedding_file

    real_getdata = GifImagePlugin.getdata
    frames_written = []

    def second_frame_cancels(image, **kwargs):
        if frames_written:
            raise KeyboardInterrupt
        frames_written.append(1)
        return real_getdata(image, **kwargs)

    monkeypatch.setattr(GifImagePlugin, "getdata", second_frame_cancels)
    existing = _write_existing("mp4", tmp_path, {}).rename(tmp_path / "keep.gif")
    old_bytes = existing.read_bytes()
    with pytest.raises(KeyboardInterrupt) as cancelled:
        write_video(torch.rand(4, 16, 16, 3), existing, fps=4)
    assert frames_written  # the header and a first frame were written before the Cancel
    # While the traceback lives (ComfyUI keeps it to report the interruption), so do the writer's frames.
    assert cancelled.traceback and _open_partial_handles() == []
    assert existing.read_bytes() == old_bytes and _partials(tmp_path) == []

    def half_then_cancel(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 100)
        raise KeyboardInterrupt

    embedding_path = _write_existing("embedding", tmp_path, dict(tiny_model.identity))
    old_bytes = embedding_path.read_bytes()
    monkeypatch.setattr(embedding_file, "save_file", half_then_cancel)
    with pytest.raises(KeyboardInterrupt) as cancelled:
        save_embedding(load_embedding(embedding_path), embedding_path)
    assert cancelled.traceback and _open_partial_handles() == []
    assert embedding_path.read_bytes() == old_bytes and _partials(tmp_path) == []


_BLOCKED_WRITER_CHILD = """
import sys, time
from pathlib import Path
from motion_core.atomic_io import atomic_output_path
with atomic_output_path(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"half of an embedding")
    print(tmp.name, flush=True)
    time.sleep(600)  # killed long before: a save stuck mid-write
"""


def _start_blocked_writer(target: Path) -> tuple[subprocess.Popen, str]:
    writer = subprocess.Popen([sys.executable, "-c", _BLOCKED_WRITER_CHILD, str(target)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    return writer, writer.stdout.readline().strip()  # returns once the partial file is written


def test_a_killed_save_leaves_no_partial_file_for_long(tiny_model, tmp_path):
    """A save killed with SIGKILL runs no cleanup; the next save into the folder removes its partial file, but
    never the partial file of a writer that is still running, nor files that are not the pack's."""
    killed, killed_partial = _start_blocked_writer(tmp_path / "a_00001.safetensors")
    live, live_partial = _start_blocked_writer(tmp_path / "a_00002.safetensors")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=60)
        old_other_host = tmp_path / ".a_00003.safetensors.elsewhere-4242.x1y2z3w4.partial"
        old_unowned = tmp_path / ".a_00004.safetensors.k3j4h5g6.partial"  # the name earlier versions wrote
        fresh_other_host = tmp_path / ".a_00005.safetensors.elsewhere-4242.q1w2e3r4.partial"
        users_file = tmp_path / ".notes.partial"
        for path in (old_other_host, old_unowned, fresh_other_host, users_file):
            path.write_bytes(b"x")
        two_days_ago = time.time() - 2 * 24 * 3600
        for path in (old_other_host, old_unowned, users_file):
            os.utime(path, (two_days_ago, two_days_ago))
        assert {killed_partial, live_partial} <= set(_partials(tmp_path))
        save_embedding(zero_embedding(EmbeddingInfo("unet3d", dict(tiny_model.identity), tuple(select_temporal_blocks(tiny_model.unet, "paper")), 16, 16, 3, 2, 2)), tmp_path / "b_00001.safetensors")
        assert sorted(_partials(tmp_path)) == sorted([live_partial, fresh_other_host.name, users_file.name])
    finally:
        live.kill()
        live.wait(timeout=60)
