"""ComfyUI's own Wan MODEL as a :class:`~motion_core.native_training.ForeignWan`: what training through it needs.

The mechanics follow core's LoRA trainer (``comfy_extras/nodes_train.py``): autograd outside ``inference_mode``,
``comfy.model_management.in_training`` on while it runs (ComfyUI's fused RoPE kernel has no backward; its training
path is plain torch), the model loaded through ``load_models_gpu``. Two differences: the MODEL is not deep-copied
(only the embeddings train, so a patched clone is enough), and weights that ComfyUI loaded as inference tensors are
turned into normal tensors in place (same values; autograd must save them for the backward pass). The embeddings go
in through :func:`.native_wan.patch_wan_model`, the hook sampling uses, so training and sampling run one code path.
On exit, also on Cancel or an error, the clone is unloaded through ComfyUI, which puts the model's own self-attention
methods back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from ..motion_core.comfy_layout import COMFY_WAN_PATCH_SIZE
from ..motion_core.errors import InvalidSettingError
from ..motion_core.families.wan_native import TrainableWanMotion
from ..motion_core.native_training import ForeignWan, VelocityFn
from .native_wan import patch_wan_model, wan_transformer

logger = logging.getLogger(__name__)

# ComfyUI latent-format keys of image-to-video conditioning, which the training forward does not pass on.
IMAGE_TO_VIDEO_KEYS = ("concat_latent_image", "clip_vision_output", "reference_latents")


def _normal_tensors(module: torch.nn.Module) -> int:
    """Replace parameters and buffers that are inference tensors with normal copies (same values, no gradient);
    returns how many. Autograd cannot save an inference tensor, and ComfyUI loads weights under inference_mode."""
    count = 0
    with torch.no_grad():
        for child in module.modules():
            for name, tensor in list(child._parameters.items()):
                if tensor is not None and tensor.is_inference():
                    child._parameters[name] = torch.nn.Parameter(tensor.clone(), requires_grad=False)
                    count += 1
            for name, tensor in list(child._buffers.items()):
                if tensor is not None and tensor.is_inference():
                    child._buffers[name] = tensor.clone()
                    count += 1
    return count


def _checkpointed(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``forward`` recomputed in the backward pass instead of keeping its activations."""

    def run(*args: Any, **kwargs: Any) -> torch.Tensor:
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def _flow_sampling(model_patcher: Any) -> Any:
    sampling = model_patcher.get_model_object("model_sampling")
    import comfy.model_sampling  # type: ignore[import-not-found]

    if not isinstance(sampling, comfy.model_sampling.CONST) or not hasattr(sampling, "shift"):
        raise InvalidSettingError(
            f"This MODEL samples with {type(sampling).__name__}, not a flow schedule; motion embeddings train on Wan's "
            "flow matching (a Wan 2.1/2.2 model, optionally through ModelSamplingSD3 for its shift)."
        )
    return sampling


def comfy_wan(model_patcher: Any, name: str = "ComfyUI Wan MODEL") -> ForeignWan:
    """The :class:`ForeignWan` of a ComfyUI MODEL holding a Wan 2.1/2.2 text-to-video transformer."""
    import comfy.model_management  # type: ignore[import-not-found]

    patch = COMFY_WAN_PATCH_SIZE[1:]
    diffusion_model = wan_transformer(model_patcher, patch)
    sampling = _flow_sampling(model_patcher)
    blocks = diffusion_model.blocks
    widths = [int(block.self_attn.q.in_features) for block in blocks]
    ffn = getattr(blocks[0], "ffn", None)
    ffn_dim = int(ffn[0].out_features) if ffn is not None else 4 * widths[0]
    device = model_patcher.load_device
    base = model_patcher.model
    scale = int(getattr(getattr(base, "latent_format", None), "spacial_downscale_ratio", 8))

    @contextlib.contextmanager
    def running(motion: TrainableWanMotion, checkpointing: bool) -> Iterator[VelocityFn]:
        patched = patch_wan_model(model_patcher, motion)
        if checkpointing:
            for index in range(min(motion.block_indices), len(blocks)):
                patched.add_object_patch(f"diffusion_model.blocks.{index}.forward", _checkpointed(blocks[index].forward))
        was_training = comfy.model_management.in_training
        try:
            comfy.model_management.load_models_gpu([patched], force_full_load=True)
            converted = _normal_tensors(patched.model.diffusion_model)
            if converted:
                logger.info("Made %d inference-mode weight tensors of the Wan model usable by autograd (values unchanged).", converted)
            comfy.model_management.in_training = True
            yield _velocity(patched)
        finally:
            comfy.model_management.in_training = was_training
            comfy.model_management.unload_model_and_clones(patched)

    return ForeignWan(
        name=name,
        widths=widths,
        ffn_dim=ffn_dim,
        patch=patch,
        shift=float(sampling.shift),
        spatial_scale=scale,
        device=device,
        dtype=model_patcher.model_dtype(),
        running=running,
        free_bytes=lambda: int(comfy.model_management.get_free_memory(device)),
        identity={"blocks": len(blocks), "dim": widths[0], "ffn_dim": ffn_dim, "loaded_through": "comfyui"},
    )


def _velocity(patched: Any) -> VelocityFn:
    """The raw output (velocity) of the patched MODEL's transformer, as ComfyUI's ``BaseModel._apply_model`` calls it
    (its input scaling, timestep and dtype) but before it is turned into a denoised latent: training and the inversion
    (whose first call is at sigma 0) need the velocity itself."""
    base = patched.model
    sampling = base.model_sampling
    device = patched.load_device
    options = dict(patched.model_options.get("transformer_options", {}))

    def velocity(noisy: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        dtype = base.get_dtype_inference()
        sigma = sigma.to(device, torch.float32)
        x = sampling.calculate_input(sigma, noisy.to(device))
        timestep = sampling.timestep(sigma).float()
        out = base.diffusion_model(x.to(dtype), timestep, context=text.to(device, dtype), transformer_options=dict(options))
        return out.float()

    return velocity


def reference_latent(model_patcher: Any, latent: dict[str, Any]) -> torch.Tensor:
    """The LATENT of core VAE Encode ``{"samples": (1, C, F', h, w)}`` in the space the model samples in
    (``process_latent_in``: Wan's per-channel normalisation), as a normal fp32 tensor."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 5:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise InvalidSettingError(
            f"The reference must be a video LATENT (batch, channels, frames, height, width), got {shape}: encode the clip's "
            "frames with VAE Encode and a Wan VAE (Load VAE)."
        )
    if samples.shape[0] != 1:
        raise InvalidSettingError(f"The reference LATENT holds {samples.shape[0]} videos; give it one.")
    channels = int(model_patcher.get_model_object("diffusion_model").patch_embedding.in_channels)
    if samples.shape[1] != channels:
        raise InvalidSettingError(
            f"The reference LATENT has {samples.shape[1]} channels but this Wan model takes {channels}: encode it with "
            "the VAE that goes with the model (Wan 2.1 VAE: 16 channels; Wan 2.2 5B VAE: 48)."
        )
    return model_patcher.model.process_latent_in(samples.clone().float()).float()


def conditioning_tensor(model_patcher: Any, conditioning: Any, what: str) -> torch.Tensor:
    """The ``(1, L, D)`` text embedding of a text-to-video CONDITIONING ``[[tensor, {...}], ...]`` (its first entry)."""
    if not isinstance(conditioning, list) or not conditioning or not isinstance(conditioning[0][0], torch.Tensor):
        raise InvalidSettingError(f"The {what} must be a CONDITIONING (CLIP Text Encode, or Encode Prompt with Video Model).")
    tensor, extras = conditioning[0][0], conditioning[0][1]
    if len(conditioning) > 1:
        logger.warning("The %s holds %d entries; training uses the first.", what, len(conditioning))
    image_keys = [key for key in IMAGE_TO_VIDEO_KEYS if key in extras]
    if image_keys:
        raise InvalidSettingError(
            f"The {what} carries image-to-video inputs ({', '.join(image_keys)}); training through the native MODEL "
            "supports Wan text-to-video models. Use a CLIP Text Encode conditioning on a text-to-video model."
        )
    width = int(model_patcher.get_model_object("diffusion_model").text_embedding[0].in_features)
    if tensor.ndim != 3 or tensor.shape[-1] != width:
        raise InvalidSettingError(
            f"The {what} is {tuple(tensor.shape)}, but this Wan model reads text embeddings {width} wide: encode the "
            "prompt with the text encoder that goes with the model (UMT5-XXL for Wan 2.1/2.2)."
        )
    return tensor[:1].clone().float()
