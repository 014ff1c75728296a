"""The motion embedding file format: ``.safetensors`` with tensors and string metadata, never a pickle.

Tensors: ``query_key.<block name>`` ``(1, N, C)``, ``value.<attention name>`` ``(h*w, N, C)`` and optionally
``inverted_latent`` ``(C_latent, N, H_latent, W_latent)``. Metadata (all strings): ``format``,
``format_version``, ``family``, ``base_model`` (JSON), ``blocks`` (JSON list), ``train_width``,
``train_height``, ``train_frames``, ``latent_height``, ``latent_width``, ``steps``, ``loss``, ``prompt``,
``default_mode``, ``extra`` (JSON). Everything read back is validated before any tensor is loaded, so a
hostile or damaged file ends in :class:`EmbeddingFileError` with a readable message.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic_io import atomic_output_path
from .embedding import MOTION_MODES, EmbeddingInfo, MotionEmbedding, magnitude_limit
from .errors import EmbeddingFileError
from .temporal_layers import TemporalBlock

logger = logging.getLogger(__name__)

FORMAT_NAME = "motion_inversion_embedding"
FORMAT_VERSION = 1
MAX_FRAMES = 1024
MAX_LATENT_SIDE = 1024
MAX_CHANNELS = 16384
MAX_BLOCKS = 256
MAX_METADATA_CHARS = 1_000_000
_FLOAT_DTYPES = {torch.float32, torch.float16, torch.bfloat16, torch.float64}


def _metadata(info: EmbeddingInfo) -> dict[str, str]:
    blocks = [
        {"name": b.name, "channels": b.channels, "level": b.level, "attention_names": list(b.attention_names)}
        for b in info.blocks
    ]
    return {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "family": info.family,
        "base_model": json.dumps(info.base_model, sort_keys=True),
        "blocks": json.dumps(blocks),
        "train_width": str(info.train_width),
        "train_height": str(info.train_height),
        "train_frames": str(info.train_frames),
        "latent_height": str(info.latent_height),
        "latent_width": str(info.latent_width),
        "steps": str(info.steps),
        "loss": info.loss,
        "prompt": info.prompt,
        "default_mode": info.default_mode,
        "extra": json.dumps(info.extra, sort_keys=True, default=str),
    }


def save_embedding(embedding: MotionEmbedding, path: str | Path) -> Path:
    """Write ``embedding`` to ``path`` atomically (temporary file + rename) and return the path."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in embedding.query_key.items():
        tensors[f"query_key.{name}"] = tensor.detach().float().contiguous().cpu()
    for name, tensor in embedding.value.items():
        tensors[f"value.{name}"] = tensor.detach().float().contiguous().cpu()
    if embedding.inverted_latent is not None:
        tensors["inverted_latent"] = embedding.inverted_latent.detach().float().contiguous().cpu()
    with atomic_output_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=_metadata(embedding.info))
    logger.info("Saved motion embedding (%d steps) to %s", embedding.info.steps, path)
    return path


def _fail(path: Path, what: str) -> EmbeddingFileError:
    return EmbeddingFileError(f"{path.name}: {what}. It is not a usable motion embedding file; re-train or re-download it.")


def _int_field(meta: dict[str, str], key: str, path: Path, low: int, high: int) -> int:
    raw = meta.get(key)
    try:
        value = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _fail(path, f"metadata field {key!r} is missing or not a whole number ({raw!r})") from None
    if not low <= value <= high:
        raise _fail(path, f"metadata field {key!r} = {value} is outside {low}..{high}")
    return value


def _json_field(meta: dict[str, str], key: str, path: Path, kind: type) -> Any:
    raw = meta.get(key, "")
    if len(raw) > MAX_METADATA_CHARS:
        raise _fail(path, f"metadata field {key!r} is too large")
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise _fail(path, f"metadata field {key!r} is not valid JSON") from None
    if not isinstance(value, kind):
        raise _fail(path, f"metadata field {key!r} should be a JSON {kind.__name__}")
    return value


def _parse_blocks(raw_blocks: list[Any], path: Path) -> tuple[TemporalBlock, ...]:
    if not 1 <= len(raw_blocks) <= MAX_BLOCKS:
        raise _fail(path, f"it lists {len(raw_blocks)} layers (expected 1..{MAX_BLOCKS})")
    blocks = []
    for item in raw_blocks:
        try:
            name, channels, level = str(item["name"]), int(item["channels"]), int(item["level"])
            attention_names = tuple(str(a) for a in item["attention_names"])
        except (TypeError, KeyError, ValueError):
            raise _fail(path, "a layer entry in its metadata is malformed") from None
        if not (1 <= channels <= MAX_CHANNELS and 0 <= level <= 16 and 1 <= len(attention_names) <= 8):
            raise _fail(path, f"layer {name!r} has an impossible size in its metadata")
        blocks.append(TemporalBlock(name, channels, level, attention_names))
    return tuple(blocks)


def read_embedding_info(path: str | Path) -> tuple[EmbeddingInfo, dict[str, tuple[int, ...]]]:
    """Read and validate the metadata and tensor shapes of an embedding file without loading tensors."""
    path = Path(path)
    if not path.is_file():
        raise EmbeddingFileError(f"Motion embedding file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = handle.metadata() or {}
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
            dtypes = {key: handle.get_slice(key).get_dtype() for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
        raise _fail(path, f"it cannot be read as safetensors ({str(exc)[:200]})") from None
    if meta.get("format") != FORMAT_NAME:
        raise _fail(path, "it is a safetensors file but not a motion embedding (no 'format' metadata)")
    version = _int_field(meta, "format_version", path, 1, 10_000)
    if version > FORMAT_VERSION:
        raise EmbeddingFileError(
            f"{path.name} uses embedding format version {version}, newer than this pack understands "
            f"({FORMAT_VERSION}); update the Motion Inversion node pack."
        )
    bad_dtypes = sorted(k for k, d in dtypes.items() if d not in ("F32", "F16", "BF16", "F64"))
    if bad_dtypes:
        raise _fail(path, f"tensor {bad_dtypes[0]!r} is not floating point ({dtypes[bad_dtypes[0]]})")
    mode = meta.get("default_mode", "object")
    base_model = _json_field(meta, "base_model", path, dict)
    info = EmbeddingInfo(
        family=str(meta.get("family", "")),
        base_model={str(k): str(v) for k, v in base_model.items()},
        blocks=_parse_blocks(_json_field(meta, "blocks", path, list), path),
        train_width=_int_field(meta, "train_width", path, 1, 65536),
        train_height=_int_field(meta, "train_height", path, 1, 65536),
        train_frames=_int_field(meta, "train_frames", path, 1, MAX_FRAMES),
        latent_height=_int_field(meta, "latent_height", path, 1, MAX_LATENT_SIDE),
        latent_width=_int_field(meta, "latent_width", path, 1, MAX_LATENT_SIDE),
        steps=_int_field(meta, "steps", path, 0, 10**9),
        loss=str(meta.get("loss", "base")),
        prompt=str(meta.get("prompt", ""))[:10_000],
        default_mode=mode if mode in MOTION_MODES else "object",
        extra=_json_field(meta, "extra", path, dict) if "extra" in meta else {},
    )
    _check_shapes(info, shapes, path)
    return info, shapes


def _check_shapes(info: EmbeddingInfo, shapes: dict[str, tuple[int, ...]], path: Path) -> None:
    expected: dict[str, tuple[int, ...]] = {}
    for block in info.blocks:
        h, w = block.grid(info.latent_height, info.latent_width)
        expected[f"query_key.{block.name}"] = (1, info.train_frames, block.channels)
        for attention in block.attention_names:
            expected[f"value.{attention}"] = (h * w, info.train_frames, block.channels)
    for key, shape in expected.items():
        if key not in shapes:
            raise _fail(path, f"tensor {key!r} named by its metadata is missing")
        if shapes[key] != shape:
            raise _fail(path, f"tensor {key!r} has shape {list(shapes[key])}, its metadata says {list(shape)}")
    extra_keys = set(shapes) - set(expected) - {"inverted_latent"}
    if extra_keys:
        raise _fail(path, f"it holds unexpected tensors ({sorted(extra_keys)[:3]})")
    latent = shapes.get("inverted_latent")
    if latent is not None:
        if len(latent) != 4 or latent[1:] != (info.train_frames, info.latent_height, info.latent_width) or not 1 <= latent[0] <= 64:
            raise _fail(path, f"its inverted latent has shape {list(latent)}, which does not match its metadata")


def load_embedding(path: str | Path, device: torch.device | str = "cpu") -> MotionEmbedding:
    """Load and validate a motion embedding file; tensors come back as fp32 on ``device``."""
    path = Path(path)
    info, shapes = read_embedding_info(path)
    query_key: dict[str, torch.Tensor] = {}
    value: dict[str, torch.Tensor] = {}
    latent = None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for key in shapes:
                tensor = handle.get_tensor(key).float()
                if not torch.isfinite(tensor).all():
                    raise _fail(path, f"tensor {key!r} contains NaN or infinite values")
                limit, peak = magnitude_limit(key), tensor.abs().max().item()
                if limit is not None and peak > limit:
                    raise _fail(path, f"tensor {key!r} holds values up to {peak:.3g}, far beyond the {limit:.0e} training can produce")
                if key == "inverted_latent":
                    latent = tensor.to(device)
                elif key.startswith("query_key."):
                    query_key[key[len("query_key.") :]] = tensor.to(device)
                else:
                    value[key[len("value.") :]] = tensor.to(device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _fail(path, f"its tensors cannot be read ({str(exc)[:200]})") from None
    return MotionEmbedding(info, query_key, value, latent)
