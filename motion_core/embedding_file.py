"""The motion embedding file format: ``.safetensors`` with tensors and string metadata, never a pickle.

Tensors: ``query_key.<block name>`` ``(1, N, C)``, ``value.<attention name>`` ``(h*w, N, C)`` and optionally
``inverted_latent`` ``(C_latent, N, H_latent, W_latent)``. Metadata (all strings): ``format``,
``format_version``, ``family``, ``base_model`` (JSON), ``blocks`` (JSON list), ``train_width``,
``train_height``, ``train_frames``, ``latent_height``, ``latent_width``, ``steps``, ``loss``, ``prompt``,
``default_mode``, ``extra`` (JSON). Everything read back is validated before any tensor is loaded, so a
hostile or damaged file ends in :class:`EmbeddingFileError` with a readable message.

Format version 2 adds ``training_state.<key>`` tensors (the optimiser state of an unfinished run, see
:attr:`MotionEmbedding.training_state`); a file without them is written as version 1, which older packs read.
Format version 3 adds ``latent_frames``: N of the tensors is latent frames, not video frames (the Wan family,
whose VAE folds 4 frames into one). Files with it are always version 3, so an older pack says "update the pack"
instead of failing on shapes.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic_io import atomic_output_path
from .embedding import MOTION_MODES, EmbeddingInfo, MotionEmbedding, magnitude_limit
from .errors import EmbeddingFileError, EmbeddingSaveError, InvalidSettingError
from .motion_sites import TemporalBlock

logger = logging.getLogger(__name__)

FORMAT_NAME = "motion_inversion_embedding"
FORMAT_VERSION = 3  # the newest version this pack reads and writes
TRAINING_STATE_FORMAT_VERSION = 2  # what a video-frame file with training state is written as
PLAIN_FORMAT_VERSION = 1  # what a video-frame file without training state is written as
LATENT_FRAMES_FORMAT_VERSION = 3  # what every file with latent_frames is written as
TRAINING_STATE_PREFIX = "training_state."
MAX_TRAINING_STATE_TENSORS = 16384
MAX_LORA_TENSOR_ELEMENTS = 1 << 24
MAX_STEP = 10**9
MAX_LOSS_SCALE = 1e38
RESCUE_FOLDER = "motion_inversion_rescue"
GRAD_SCALER_KEYS = ("grad_scaler.scale", "grad_scaler.growth_tracker")
MAX_FRAMES = 1024
MAX_LATENT_SIDE = 1024
MAX_CHANNELS = 16384
MAX_BLOCKS = 256
MAX_METADATA_CHARS = 1_000_000
_FLOAT_DTYPES = {torch.float32, torch.float16, torch.bfloat16, torch.float64}


def _metadata(info: EmbeddingInfo, version: int) -> dict[str, str]:
    blocks = [
        {"name": b.name, "channels": b.channels, "level": b.level, "attention_names": list(b.attention_names)}
        for b in info.blocks
    ]
    return {
        "format": FORMAT_NAME,
        "format_version": str(version),
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
        **({} if info.latent_frames is None else {"latent_frames": str(info.latent_frames)}),
    }


def save_embedding(embedding: MotionEmbedding, path: str | Path) -> Path:
    """Write ``embedding`` to ``path`` atomically (temporary file + rename) and return the path.

    Its ``training_state`` (if any) is written too, as ``training_state.<key>`` tensors (format version 2, or 3
    for a file with ``latent_frames``).
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in embedding.query_key.items():
        tensors[f"query_key.{name}"] = tensor.detach().float().contiguous().cpu()
    for name, tensor in embedding.value.items():
        tensors[f"value.{name}"] = tensor.detach().float().contiguous().cpu()
    if embedding.inverted_latent is not None:
        tensors["inverted_latent"] = embedding.inverted_latent.detach().float().contiguous().cpu()
    for key, tensor in embedding.training_state.items():
        kept = tensor.detach() if tensor.dtype == torch.float64 else tensor.detach().float()  # step counts: float64
        tensors[TRAINING_STATE_PREFIX + key] = kept.contiguous().cpu()
    if embedding.info.latent_frames is not None:
        version = LATENT_FRAMES_FORMAT_VERSION
    else:
        version = TRAINING_STATE_FORMAT_VERSION if embedding.training_state else PLAIN_FORMAT_VERSION
    with atomic_output_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=_metadata(embedding.info, version))
    logger.info("Saved motion embedding (%d steps) to %s", embedding.info.steps, path)
    return path


def check_output_writable(path: str | Path) -> Path:
    """Refuse, with :class:`InvalidSettingError`, an output file path that cannot be written.

    Creates the missing folders and writes (and removes) a probe file beside ``path``, so a read-only folder,
    a full disk or a parent that is a file is found before any work rather than at the final save.
    """
    path = Path(path)
    if path.is_dir():
        raise InvalidSettingError(f"The output path {path} is a folder; give a file name such as {path / 'motion.safetensors'}.")
    if path.exists() and not path.is_file():
        raise InvalidSettingError(f"The output path {path} exists and is not a regular file; choose another name.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        try:
            os.write(handle, b"probe")
        finally:
            os.close(handle)
            os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InvalidSettingError(f"Cannot write the embedding to {path} ({reason}); choose a folder you can write to.") from None
    return path


def rescue_path(path: str | Path) -> Path:
    """A new file in the system temporary folder for an embedding that could not be saved to ``path``."""
    path = Path(path)
    folder = Path(tempfile.gettempdir()) / RESCUE_FOLDER
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = folder / f"{path.stem}_{stamp}{path.suffix or '.safetensors'}"
    count = 1
    while candidate.exists():
        count += 1
        candidate = folder / f"{path.stem}_{stamp}_{count}{path.suffix or '.safetensors'}"
    return candidate


def save_embedding_or_rescue(embedding: MotionEmbedding, path: str | Path) -> Path:
    """:func:`save_embedding`; when ``path`` cannot be written (disk full, folder gone, ...), keep the embedding
    in a rescue file in the system temporary folder and raise :class:`EmbeddingSaveError` naming both paths."""
    path = Path(path)
    try:
        return save_embedding(embedding, path)
    except (OSError, SafetensorError) as exc:
        failure = _describe_write_error(exc)
    spare = rescue_path(path)
    try:
        save_embedding(embedding, spare)
    except (OSError, SafetensorError) as exc:
        raise EmbeddingSaveError(
            f"Could not save the motion embedding to {path} ({failure}), nor to {spare} ({_describe_write_error(exc)}). "
            "Free some disk space and train again."
        ) from None
    logger.error("Could not save the motion embedding to %s (%s); kept it in %s", path, failure, spare)
    raise EmbeddingSaveError(
        f"Could not save the motion embedding to {path} ({failure}). It was kept in {spare}: move it where you "
        "want it (e.g. models/motion_embeddings) before the temporary folder is cleaned."
    )


def _describe_write_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "the disk is full"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)[:200]


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
        latent_frames=_int_field(meta, "latent_frames", path, 1, MAX_FRAMES) if "latent_frames" in meta else None,
    )
    _check_shapes(info, shapes, path)
    return info, shapes


def _check_shapes(info: EmbeddingInfo, shapes: dict[str, tuple[int, ...]], path: Path) -> None:
    expected: dict[str, tuple[int, ...]] = {}
    for block in info.blocks:
        h, w = block.grid(info.latent_height, info.latent_width)
        expected[f"query_key.{block.name}"] = (1, info.frames, block.channels)
        for attention in block.attention_names:
            expected[f"value.{attention}"] = (h * w, info.frames, block.channels)
    for key, shape in expected.items():
        if key not in shapes:
            raise _fail(path, f"tensor {key!r} named by its metadata is missing")
        if shapes[key] != shape:
            raise _fail(path, f"tensor {key!r} has shape {list(shapes[key])}, its metadata says {list(shape)}")
    state_shapes = {k[len(TRAINING_STATE_PREFIX) :]: v for k, v in shapes.items() if k.startswith(TRAINING_STATE_PREFIX)}
    extra_keys = set(shapes) - set(expected) - {"inverted_latent"} - {TRAINING_STATE_PREFIX + k for k in state_shapes}
    if extra_keys:
        raise _fail(path, f"it holds unexpected tensors ({sorted(extra_keys)[:3]})")
    _check_training_state_shapes(expected, state_shapes, path)
    latent = shapes.get("inverted_latent")
    if latent is not None:
        if len(latent) != 4 or latent[1:] != (info.frames, info.latent_height, info.latent_width) or not 1 <= latent[0] <= 64:
            raise _fail(path, f"its inverted latent has shape {list(latent)}, which does not match its metadata")


def _is_step_key(key: str) -> bool:
    """0-d entries of the training state: ``step``, ``step.<param>`` and the fp16 loss scaler's state."""
    return key == "step" or key.startswith(("step.", "grad_scaler."))


def _names_a_parameter(param: str, expected: dict[str, tuple[int, ...]]) -> bool:
    """Whether ``param`` is an embedding tensor of this file or a (hybrid loss) LoRA weight."""
    return param in expected or (param.startswith("lora.") and len(param) > len("lora."))


def _check_training_state_shapes(expected: dict[str, tuple[int, ...]], state: dict[str, tuple[int, ...]], path: Path) -> None:
    """Validate the keys and shapes of ``training_state.*`` tensors (see :attr:`MotionEmbedding.training_state`).

    ``expected``: file key (``query_key.<block>``, ``value.<attention>``) -> shape of the embedding tensors.
    """
    if len(state) > MAX_TRAINING_STATE_TENSORS:
        raise _fail(path, f"its training state holds {len(state)} tensors (at most {MAX_TRAINING_STATE_TENSORS})")
    for key, shape in state.items():
        what = f"training state tensor {key!r}"
        if _is_step_key(key):
            if key.startswith("grad_scaler.") and key not in GRAD_SCALER_KEYS:
                raise _fail(path, f"{what} is not part of the training state format")
            if key.startswith("step.") and not _names_a_parameter(key[len("step.") :], expected):
                raise _fail(path, f"{what} names no tensor of the embedding")
            if shape != ():
                raise _fail(path, f"{what} should be a single number, it has shape {list(shape)}")
            continue
        kind, _, param = key.partition(".")
        if kind not in ("exp_avg", "exp_avg_sq", "param") or not param:
            raise _fail(path, f"{what} is not part of the training state format")
        if not _names_a_parameter(param, expected):
            raise _fail(path, f"{what} names no tensor of the embedding")
        if param.startswith("lora."):
            sides_ok = len(shape) == 2 and all(1 <= side <= MAX_CHANNELS for side in shape)
            if not sides_ok or math.prod(shape) > MAX_LORA_TENSOR_ELEMENTS:
                raise _fail(path, f"{what} has an impossible LoRA shape {list(shape)}")
        elif shape != expected[param]:
            raise _fail(path, f"{what} has shape {list(shape)}, the embedding tensor has {list(expected[param])}")


def _read_training_state(handle: Any, keys: list[str], path: Path) -> dict[str, torch.Tensor]:
    """Load the ``training_state.*`` tensors (shapes already checked) and check their values."""
    state: dict[str, torch.Tensor] = {}
    for file_key in keys:
        key = file_key[len(TRAINING_STATE_PREFIX) :]
        tensor = handle.get_tensor(file_key)
        tensor = tensor.double() if _is_step_key(key) else tensor.float()
        if not torch.isfinite(tensor).all():
            raise _fail(path, f"training state tensor {key!r} contains NaN or infinite values")
        if _is_step_key(key):
            number = float(tensor)
            if key == "grad_scaler.scale":
                valid = 0.0 < number <= MAX_LOSS_SCALE
            else:
                valid = 0 <= number <= MAX_STEP and number == int(number)
            if not valid:
                raise _fail(path, f"training state value {key!r} = {number} is out of range")
        elif key.startswith("exp_avg_sq.") and bool((tensor < 0).any()):
            raise _fail(path, f"training state tensor {key!r} has negative values (it holds squares)")
        state[key] = tensor
    return state


def load_embedding(path: str | Path, device: torch.device | str = "cpu") -> MotionEmbedding:
    """Load and validate a motion embedding file; tensors come back as fp32 on ``device``."""
    path = Path(path)
    info, shapes = read_embedding_info(path)
    query_key: dict[str, torch.Tensor] = {}
    value: dict[str, torch.Tensor] = {}
    latent = None
    state_keys = [key for key in shapes if key.startswith(TRAINING_STATE_PREFIX)]
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            training_state = _read_training_state(handle, state_keys, path)
            for key in (key for key in shapes if not key.startswith(TRAINING_STATE_PREFIX)):
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
    return MotionEmbedding(info, query_key, value, latent, training_state)
