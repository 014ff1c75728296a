"""Motion embeddings on ComfyUI's own Wan MODEL: a ``ModelPatcher`` clone whose selected self-attentions add them.

The hook (why this one: docs/design/native_wan.md) is an object patch of ``diffusion_model.blocks.{i}.self_attn.forward``
on a clone of the MODEL: the module tree and the weights stay as they are, so LoRA and low-VRAM weight patches (keyed by
``...self_attn.q.weight``) still apply; attention still goes through ComfyUI's ``optimized_attention`` with the same
``transformer_options``, so an attention override (sage, sparse) and the ``attn1_patch`` hooks still run; ComfyUI puts
the original method back when it unpatches, and the MODEL the node got is never changed. The replacement runs ComfyUI's
``WanSelfAttention.forward`` with one difference: q/k are projected from the input plus the query-key embedding and v
from the input plus the value embedding (:class:`motion_core.families.wan_native.WanBlockMotion`, the math the
diffusers path uses). ComfyUI is imported only when a patch is made.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import torch

from ..motion_core.errors import InvalidSettingError

logger = logging.getLogger(__name__)

#: The parameters of ComfyUI's ``WanSelfAttention.forward`` that the replacement re-implements.
SELF_ATTENTION_SIGNATURE = ("x", "freqs", "transformer_options")


def _check_self_attention(attention: Any) -> None:
    """Refuse a ComfyUI whose Wan self-attention differs from the one the replacement was written against."""
    names = tuple(inspect.signature(attention.forward).parameters)
    needed = ("q", "k", "v", "o", "norm_q", "norm_k", "num_heads", "head_dim")
    if names != SELF_ATTENTION_SIGNATURE or not all(hasattr(attention, name) for name in needed):
        raise InvalidSettingError(
            f"This ComfyUI's Wan self-attention ({type(attention).__module__}.{type(attention).__name__}, forward{names}) "
            "is not the one the motion patch knows (forward(x, freqs, transformer_options), ComfyUI 0.3.x); "
            "update the pack or use the diffusers-path nodes."
        )


def motion_self_attention(attention: Any, motion: Any, block_index: int) -> Callable[..., torch.Tensor]:
    """ComfyUI's ``WanSelfAttention.forward`` for ``attention`` with ``motion``'s embeddings of ``block_index``.

    ``motion``: anything with ``inputs(block_index, x, token_grid, sigma)`` (the embeddings' q/k and v inputs). The
    returned function takes ``x`` ``(B, F'*h*w, C)``, RoPE ``freqs`` and ``transformer_options`` (whose ``grid_sizes``
    ComfyUI's ``WanModel`` sets to the token grid ``(F', h, w)`` and whose ``sigmas`` ComfyUI's sampler sets to the
    call's noise level) and returns ``(B, F'*h*w, C)``.
    """
    from comfy.ldm.flux.math import apply_rope1  # type: ignore[import-not-found]
    from comfy.ldm.modules.attention import optimized_attention  # type: ignore[import-not-found]

    def forward(x: torch.Tensor, freqs: torch.Tensor, transformer_options: dict | None = None) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        patches = options.get("patches", {})
        b, s, n, d = *x.shape[:2], attention.num_heads, attention.head_dim
        grid = options.get("grid_sizes")
        if grid is None:
            raise InvalidSettingError(
                "ComfyUI's Wan model ran its self-attention without transformer_options['grid_sizes']; the motion patch "
                "needs that ComfyUI (0.3.x) behaviour. Update the pack or ComfyUI."
            )
        sigmas = options.get("sigmas")  # set by ComfyUI's sampler for each model call
        sigma = float(sigmas.flatten()[0]) if isinstance(sigmas, torch.Tensor) and sigmas.numel() else None
        qk_input, value_input = motion.inputs(block_index, x, tuple(grid), sigma)
        q = apply_rope1(attention.norm_q(attention.q(qk_input)).view(b, s, n, d), freqs)
        k = apply_rope1(attention.norm_k(attention.k(qk_input)).view(b, s, n, d), freqs)
        out = optimized_attention(q.view(b, s, n * d), k.view(b, s, n * d), attention.v(value_input).view(b, s, n * d),
                                  heads=n, transformer_options=options)
        for patch in patches.get("attn1_patch", []):
            out = patch({"x": out, "q": q, "k": k, "transformer_options": options})
        return attention.o(out)

    return forward


def wan_transformer(model_patcher: Any, patch: tuple[int, int]) -> Any:
    """The ``WanModel`` inside a ComfyUI MODEL, checked to be a Wan transformer with ``patch`` ``(ph, pw)`` tokens."""
    diffusion_model = model_patcher.get_model_object("diffusion_model")
    if getattr(diffusion_model, "blocks", None) is None or not hasattr(diffusion_model, "patch_embedding"):
        raise InvalidSettingError(
            f"This MODEL ({type(diffusion_model).__name__}) is not a Wan transformer; motion embeddings of family wan "
            "need a Wan 2.1/2.2 model (Load Diffusion Model with a Wan file)."
        )
    found = tuple(getattr(diffusion_model, "patch_size", (1, *patch)))[1:]
    if found != tuple(patch):
        raise InvalidSettingError(
            f"This Wan model patches {found[0]}x{found[1]} pixels of latent per token; the motion patch knows "
            f"{patch[0]}x{patch[1]} (Wan 2.1/2.2 text-to-video)."
        )
    return diffusion_model


def _check_sites(blocks: Any, motion: Any) -> None:
    """Every block ``motion`` has embeddings for exists, has the self-attention the replacement knows, at its width."""
    missing = [i for i in motion.block_indices if i >= len(blocks)]
    if missing:
        raise InvalidSettingError(
            f"The motion embedding has sites on blocks {missing}, but this Wan model has {len(blocks)} blocks: "
            "it was trained on a different Wan model."
        )
    for index in motion.block_indices:
        _check_self_attention(blocks[index].self_attn)
        width = blocks[index].self_attn.q.in_features
        if width != motion.channels(index):
            raise InvalidSettingError(
                f"The motion embedding was trained on a Wan model {motion.channels(index)} wide, but this one is {width} "
                "wide: it was trained on a different Wan model."
            )


def sigma_window(model_patcher: Any, start_percent: float, end_percent: float) -> tuple[float, float] | None:
    """``(highest, lowest)`` noise level of a start/end percent window on this MODEL's sampling, as ComfyUI's
    ControlNet computes its timestep range (``model_sampling.percent_to_sigma``); ``None`` for the whole run (0, 1)."""
    if start_percent <= 0.0 and end_percent >= 1.0:
        return None
    sampling = model_patcher.get_model_object("model_sampling")
    return float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent))


def patch_wan_model(model_patcher: Any, motion: Any) -> Any:
    """A clone of ``model_patcher`` (ComfyUI MODEL of a Wan transformer) with ``motion`` on its selected blocks.

    ``motion``: a :class:`~motion_core.families.wan_native.WanBlockMotion` (sampling) or ``TrainableWanMotion``
    (training). Raises :class:`InvalidSettingError` when the MODEL is not a Wan transformer with those blocks.
    """
    blocks = wan_transformer(model_patcher, motion.patch).blocks
    _check_sites(blocks, motion)
    patched = model_patcher.clone()
    for index in motion.block_indices:
        attention = blocks[index].self_attn
        patched.add_object_patch(f"diffusion_model.blocks.{index}.self_attn.forward", motion_self_attention(attention, motion, index))
    logger.info("Motion embedding on the self-attention of Wan blocks %s.", motion.block_indices)
    return patched
