"""The .safetensors embedding format: round trip, validation, clear errors for files that do not fit."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from motion_core.embedding import EmbeddingInfo, check_fits, zero_embedding
from motion_core.embedding_file import load_embedding, read_embedding_info, save_embedding
from motion_core.errors import EmbeddingFileError, IncompatibleEmbeddingError
from motion_core.model_loading import architecture_hash, load_video_model
from motion_core.sampling import AppliedMotion, SamplingConfig, sample_video
from motion_core.temporal_layers import TemporalBlock, find_temporal_blocks, select_temporal_blocks
from motion_core.testing.tiny_models import TINY_UNET_CONFIG, save_tiny_model
from motion_core.training import TrainingConfig, train_motion_embedding


def make_embedding(model, layer_set="paper", frames=4, latent=8, seed=0):
    blocks = select_temporal_blocks(model.unet, layer_set)
    info = EmbeddingInfo("unet3d", dict(model.identity), tuple(blocks), latent * 2, latent * 2, frames, latent, latent,
                         steps=7, loss="base", prompt="a red square", extra={"learning_rate": 0.1})
    emb = zero_embedding(info)
    g = torch.Generator().manual_seed(seed)
    for t in (*emb.query_key.values(), *emb.value.values()):
        t.copy_(torch.randn(t.shape, generator=g))
    emb.inverted_latent = torch.randn(4, frames, latent, latent, generator=g)
    return emb


def test_round_trip_keeps_tensors_and_metadata(tiny_model, tmp_path):
    emb = make_embedding(tiny_model)
    path = save_embedding(emb, tmp_path / "e.safetensors")
    loaded = load_embedding(path)
    assert loaded.info == emb.info
    for name, tensor in emb.query_key.items():
        assert torch.equal(loaded.query_key[name], tensor)
    for name, tensor in emb.value.items():
        assert torch.equal(loaded.value[name], tensor)
    assert torch.equal(loaded.inverted_latent, emb.inverted_latent)
    assert not list(tmp_path.glob("*.partial"))


def test_saved_file_gets_the_usual_permissions(tiny_model, tmp_path):
    """Files are written through a private temporary file, but end up readable like any other saved file."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    path = save_embedding(make_embedding(tiny_model), tmp_path / "e.safetensors")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_file_is_plain_safetensors_not_pickle(tiny_model, tmp_path):
    path = save_embedding(make_embedding(tiny_model), tmp_path / "e.safetensors")
    header_length = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_length])
    meta = header["__metadata__"]
    assert meta["format"] == "motion_inversion_embedding" and meta["family"] == "unet3d"
    assert json.loads(meta["base_model"])["name"] == "tiny-t2v"
    assert {k for k in header if k != "__metadata__"} >= {"inverted_latent"}


def test_wrong_model_architecture_names_both_sides(tiny_model, tmp_path):
    emb = make_embedding(tiny_model)
    other = [TemporalBlock(b.name, b.channels * 2, b.level, b.attention_names) for b in find_temporal_blocks(tiny_model.unet)]
    with pytest.raises(IncompatibleEmbeddingError, match=r"tiny-t2v.*other-model|other-model.*tiny-t2v") as err:
        check_fits(emb.info, "unet3d", other, "other-model")
    assert "channels" in str(err.value)
    with pytest.raises(IncompatibleEmbeddingError, match="'animatediff'"):
        check_fits(emb.info, "animatediff", find_temporal_blocks(tiny_model.unet), "other-model")


@pytest.fixture(scope="module")
def rebuilt_model_dir(tmp_path_factory):
    """The tiny model's layout with other normalisation groups: same layer widths, other insides."""
    config = {**TINY_UNET_CONFIG, "norm_num_groups": 4}
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-t2v-rebuilt", seed=0, unet_config=config)


def test_embedding_from_a_model_built_differently_is_refused_everywhere(tiny_model, rebuilt_model_dir, reference_clip, pack, tmp_path):
    """Same layer names and widths, so only the stored architecture hash can tell the two models apart."""
    other = load_video_model(rebuilt_model_dir, "fp32", "sdpa", "cpu", use_cache=False)
    assert find_temporal_blocks(other.unet) == find_temporal_blocks(tiny_model.unet)
    mine, theirs = tiny_model.identity["architecture"], other.identity["architecture"]
    assert mine != theirs
    embedding = load_embedding(save_embedding(make_embedding(tiny_model), tmp_path / "e.safetensors"))
    names_both = rf"(?s)'tiny-t2v'.*{mine}.*'tiny-t2v-rebuilt'.*{theirs}.*train a new embedding"
    with pytest.raises(IncompatibleEmbeddingError, match=names_both):
        check_fits(embedding.info, other.family, find_temporal_blocks(other.unet), other.name, architecture=theirs)
    sampling = SamplingConfig(prompt="a blue circle", width=32, height=32, frames=4, steps=1)
    with pytest.raises(IncompatibleEmbeddingError, match=names_both):
        sample_video(other, sampling, AppliedMotion(embedding))
    with pytest.raises(IncompatibleEmbeddingError, match=names_both):
        train_motion_embedding(other, reference_clip[:4], TrainingConfig(prompt="a red square", steps=1), resume=embedding)
    apply_node = pack.NODE_CLASS_MAPPINGS["MI_ApplyMotionEmbedding"]()
    with pytest.raises(pack.motion_core.errors.IncompatibleEmbeddingError, match=names_both):
        apply_node.apply(pack.nodes.handles.MotionModel(other), embedding, strength=1.0, mode="object")
    # The model it was trained on, and files written before hashes were stored, still fit.
    check_fits(embedding.info, "unet3d", find_temporal_blocks(tiny_model.unet), "tiny-t2v", architecture=mine)
    for base_model in ({"name": "tiny-t2v"}, {"name": "tiny-t2v", "architecture": "9be737f35e459521"}):
        older = embedding.with_info(base_model=base_model).info
        check_fits(older, other.family, find_temporal_blocks(other.unet), other.name, architecture=theirs)


def test_architecture_hash_does_not_depend_on_diffusers_bookkeeping(tiny_model_dir, tmp_path):
    """ZeroScope's unet config lacks keys newer diffusers has; diffusers lists them in ``_use_default_values`` in
    an order that changes from process to process (string hashing), and the hash must not change with it."""
    folder = tmp_path / "zeroscope-like"
    shutil.copytree(tiny_model_dir, folder)
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    for key in ("num_attention_heads", "time_cond_proj_dim"):  # absent from ZeroScope v2's published config
        config.pop(key, None)
    config_path.write_text(json.dumps(config))
    model = load_video_model(folder, "fp32", "sdpa", "cpu", use_cache=False)
    loaded_config = dict(model.unet.config)
    assert len(loaded_config["_use_default_values"]) == 2  # the premise: diffusers recorded what the file lacked
    reordered = {**loaded_config, "_use_default_values": loaded_config["_use_default_values"][::-1]}
    assert architecture_hash(reordered) == model.identity["architecture"]
    assert architecture_hash({**loaded_config, "an_option_of_a_later_diffusers": None}) == model.identity["architecture"]
    original = load_video_model(tiny_model_dir, "fp32", "sdpa", "cpu", use_cache=False)
    assert original.identity["architecture"] == model.identity["architecture"]  # same architecture, same hash


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "cannot be read as safetensors"),
        (lambda b: b"this is not a safetensors file at all", "cannot be read as safetensors"),
        (lambda b: b"", "cannot be read as safetensors"),
    ],
)
def test_damaged_files_give_clear_errors(tiny_model, tmp_path, damage, message):
    path = save_embedding(make_embedding(tiny_model), tmp_path / "e.safetensors")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(EmbeddingFileError, match=message):
        load_embedding(path)


def _rewrite(path, tensors=None, metadata=None):
    import safetensors

    with safetensors.safe_open(str(path), "pt") as f:
        old_tensors = {k: f.get_tensor(k) for k in f.keys()}
        old_meta = f.metadata()
    save_file(tensors if tensors is not None else old_tensors, str(path), metadata=metadata if metadata is not None else old_meta)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t, m: (t, {k: v for k, v in m.items() if k != "format"}), "not a motion embedding"),
        (lambda t, m: (t, {**m, "blocks": "{not json"}), "not valid JSON"),
        (lambda t, m: (t, {**m, "train_frames": "many"}), "not a whole number"),
        (lambda t, m: (t, {**m, "train_frames": "99999999"}), "outside"),
        (lambda t, m: (t, {**m, "format_version": "99"}), "newer than this pack"),
        (lambda t, m: ({k: (v.half() if k == "inverted_latent" else v) for k, v in t.items()} | {"inverted_latent": torch.zeros(2, 2, dtype=torch.int32)}, m), "not floating point"),
        (lambda t, m: ({k: v for k, v in t.items() if not k.startswith("value.")}, m), "missing"),
        (lambda t, m: ({k: (v[:1] if k.startswith("value.") else v) for k, v in t.items()}, m), "has shape"),
        (lambda t, m: ({**t, "evil": torch.zeros(1)}, m), "unexpected tensors"),
        (lambda t, m: ({**t, "inverted_latent": torch.zeros(4, 3, 8, 8)}, m), "inverted latent"),
        (lambda t, m: ({k: torch.full_like(v, float("nan")) for k, v in t.items()}, m), "NaN"),
        (lambda t, m: ({k: (v * 1e30 if k.startswith("value.") else v) for k, v in t.items()}, m), r"'value\..*up to .*e\+30.*1e\+07"),
        (lambda t, m: ({k: (v * 1e30 if k.startswith("query_key.") else v) for k, v in t.items()}, m), r"'query_key\..*far beyond"),
        (lambda t, m: ({**t, "inverted_latent": t["inverted_latent"] * 1e5}, m), r"'inverted_latent'.*far beyond the 1e\+04"),
    ],
)
def test_bad_contents_give_clear_errors(tiny_model, tmp_path, edit, message):
    path = save_embedding(make_embedding(tiny_model), tmp_path / "e.safetensors")
    import safetensors

    with safetensors.safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    tensors, meta = edit(tensors, meta)
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(EmbeddingFileError, match=message):
        load_embedding(path)


def test_large_values_that_training_can_reach_still_load(tiny_model, tmp_path):
    """The magnitude limits refuse only what no training run can produce."""
    embedding = make_embedding(tiny_model)
    for tensor in (*embedding.query_key.values(), *embedding.value.values()):
        tensor.mul_(1e6 / tensor.abs().max())
    embedding.inverted_latent.mul_(50 / embedding.inverted_latent.abs().max())
    loaded = load_embedding(save_embedding(embedding, tmp_path / "e.safetensors"))
    assert max(t.abs().max() for t in loaded.value.values()) == pytest.approx(1e6)


def test_half_precision_tensors_load_as_fp32(tiny_model, tmp_path):
    emb = make_embedding(tiny_model)
    path = save_embedding(emb, tmp_path / "e.safetensors")
    import safetensors

    with safetensors.safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k).half() for k in f.keys()}
        meta = f.metadata()
    save_file(tensors, str(path), metadata=meta)
    loaded = load_embedding(path)
    assert all(t.dtype == torch.float32 for t in loaded.value.values())


def test_missing_file(tmp_path):
    with pytest.raises(EmbeddingFileError, match="not found"):
        read_embedding_info(tmp_path / "nope.safetensors")
