"""Copy a built toy model folder into the pack with its weights stored in fp16 (half the bytes).

The toy trainers write fp32 weights; the pack's bundled models must fit a size budget (48 MB for all of them,
``tests/test_toyworld_wan.py``), so the bundled copy stores every floating-point tensor in fp16. Loaders read them
back into fp32 (the pack's family loaders and ``toyworld.check_model`` pass ``torch_dtype=torch.float32``; ComfyUI
casts to its compute dtype), so only the storage is halved. Measure the copy, not the build: run
``toyworld.check_model`` on the exported folder.

Usage::

    python -m toyworld.export_fp16 --src BUILD_FOLDER --dst assets/toyworld-wan

Everything in ``--src`` except the trainer's scratch (``*.pt`` caches, checkpoints) is copied; ``.safetensors``
files are rewritten in fp16 with their metadata kept. ``--dst`` must not exist (nothing is overwritten).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

#: Largest finite fp16 value (65504): a weight beyond it would turn into inf.
FP16_MAX = float(torch.finfo(torch.float16).max)
#: What the trainer leaves in a build folder that a model folder does not need.
SKIPPED_SUFFIXES = (".pt", ".ckpt", ".log")


def half_state_dict(tensors: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """``tensors`` with every floating-point tensor cast to fp16 (integer tensors kept as they are).

    Raises ``ValueError`` naming the tensor if one holds a value fp16 cannot represent.
    """
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if t.is_floating_point():
            peak = float(t.abs().max()) if t.numel() else 0.0
            if peak > FP16_MAX:
                raise ValueError(f"{source}: tensor {name!r} holds {peak:g}, beyond fp16's range; keep this file in fp32")
            t = t.to(torch.float16)
        out[name] = t.contiguous()
    return out


def portable_config(text: str) -> str:
    """A diffusers ``config.json`` without ``_name_or_path`` (the folder it was loaded from on the build machine)."""
    config = json.loads(text)
    config.pop("_name_or_path", None)
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def export_fp16(src: Path, dst: Path) -> dict[str, int]:
    """Copy the model folder ``src`` to ``dst`` with fp16 weights; returns ``{"bytes_before", "bytes_after"}``."""
    src, dst = Path(src), Path(dst)
    if not (src / "model_index.json").is_file():
        raise FileNotFoundError(f"{src} is not a diffusers model folder (no model_index.json)")
    if dst.exists():
        raise FileExistsError(f"{dst} exists; remove it or choose another --dst (nothing is overwritten)")
    before = after = 0
    tmp = dst.with_name(dst.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        if path.suffix in SKIPPED_SUFFIXES or "checkpoints" in rel.parts:
            continue
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        before += path.stat().st_size
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata()
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            save_file(half_state_dict(tensors, path), str(target), metadata=metadata)
        elif path.name == "config.json":
            target.write_text(portable_config(path.read_text()))
        else:
            shutil.copy2(path, target)
        after += target.stat().st_size
    tmp.rename(dst)
    logger.info("exported %s -> %s: %.1f MB -> %.1f MB", src, dst, before / 2**20, after / 2**20)
    return {"bytes_before": before, "bytes_after": after}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, required=True, help="a built model folder (toyworld.train_t2v --out)")
    ap.add_argument("--dst", type=Path, required=True, help="the new folder (must not exist)")
    args = ap.parse_args()
    export_fp16(args.src, args.dst)


if __name__ == "__main__":
    main()
