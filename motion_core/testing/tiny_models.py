"""Build tiny random-weight text-to-video models and save them as standard diffusers folders.

The folders have the layout of ZeroScope / ModelScope (``model_index.json`` naming
``TextToVideoSDPipeline`` with ``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``), so
tests exercise the same loader users hit. Everything is built from config in a second or two on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

WORDS = ("a", "red", "green", "blue", "square", "circle", "triangle", "dog", "cat", "running", "on", "the", "beach")

# ZeroScope v2 576w unet config, as published with the model (block types and widths are what matter here).
ZEROSCOPE_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 64,
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "downsample_padding": 1,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 32,
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
}

TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
    "block_out_channels": [16, 32, 32],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
}


def build_tiny_unet(seed: int = 0, config: dict[str, Any] | None = None):
    """A random UNet3DConditionModel (about 0.3 M parameters by default)."""
    from diffusers import UNet3DConditionModel

    torch.manual_seed(seed)
    unet = UNet3DConditionModel(**(config or TINY_UNET_CONFIG))
    # diffusers zero-initialises proj_out of temporal blocks, which would make every temporal layer a no-op
    # and hide bugs in attention patching; give them small random weights instead.
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "temp_attentions" in name and "proj_out" in name or name.startswith("transformer_in.proj_out"):
                param.normal_(0.0, 0.2)
    return unet.eval()


def build_tiny_text_encoder(tokenizer, hidden_size: int = 32):
    """A random 2-layer CLIP text encoder for ``tokenizer`` whose features are ``hidden_size`` wide (32 by default;
    4096 gives the width of Wan's UMT5 features for a full-size Wan transformer's ``text_dim``)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=12,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()


def build_tiny_pipeline_parts(
    seed: int = 0, prediction_type: str = "epsilon", unet_config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Random tiny ``unet``, ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler`` objects.

    ``unet_config`` replaces :data:`TINY_UNET_CONFIG` (e.g. to build a model of another architecture).
    """
    from diffusers import AutoencoderKL, DDIMScheduler

    from ..testing.word_tokenizer import build_word_tokenizer

    unet = build_tiny_unet(seed, unet_config)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    ).eval()
    tokenizer = build_word_tokenizer(WORDS, model_max_length=12)
    torch.manual_seed(seed + 2)
    text_encoder = build_tiny_text_encoder(tokenizer)
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        prediction_type=prediction_type,
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def save_tiny_model(
    folder: str | Path, seed: int = 0, prediction_type: str = "epsilon", unet_config: dict[str, Any] | None = None
) -> Path:
    """Save a tiny random text-to-video model as a diffusers folder and return its path.

    ``unet_config`` replaces :data:`TINY_UNET_CONFIG` for the UNet.
    """
    from diffusers import TextToVideoSDPipeline

    folder = Path(folder)
    pipe = TextToVideoSDPipeline(**build_tiny_pipeline_parts(seed, prediction_type, unet_config))
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# A tiny SD1.5-style UNet and motion adapter (AnimateDiff): 3 levels, a motion module after every ResNet, a mid one.
TINY_ANIMATEDIFF_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [16, 32, 32],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
}
TINY_MOTION_ADAPTER_CONFIG: dict[str, Any] = {
    "block_out_channels": [16, 32, 32],
    "motion_layers_per_block": 1,
    "motion_transformer_layers_per_block": 1,
    "motion_mid_block_layers_per_block": 1,
    "motion_num_attention_heads": 2,
    "motion_norm_num_groups": 8,
    "motion_max_seq_length": 32,
    "use_motion_mid_block": True,
}


# Stable Diffusion 1.5's UNet and the AnimateDiff v2 motion adapter (mm_sd_v15_v2), as their configs give them
# (cross_attention_dim is CLIP ViT-L's 768; benchmarks pair it with a narrower tiny text encoder and override it).
SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
ANIMATEDIFF_V2_ADAPTER_CONFIG: dict[str, Any] = {
    "block_out_channels": [320, 640, 1280, 1280],
    "motion_layers_per_block": 2,
    "motion_mid_block_layers_per_block": 1,
    "motion_num_attention_heads": 8,
    "motion_norm_num_groups": 32,
    "motion_max_seq_length": 32,
    "use_motion_mid_block": True,
}


def save_animatediff_sd15_model(folder: str | Path, cross_attention_dim: int = 32) -> Path:
    """A random-weight AnimateDiff folder with the full SD1.5 UNet and v2 motion adapter architecture (about 1.3 B
    parameters) and the tiny VAE / text encoder (so ``cross_attention_dim`` is the tiny encoder's width): for
    benchmarks of the real architecture's cost."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    folder = save_tiny_animatediff_model(folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**SD15_UNET_CONFIG, "cross_attention_dim": cross_attention_dim})
    motion = UNetMotionModel.from_unet2d(unet, MotionAdapter(**ANIMATEDIFF_V2_ADAPTER_CONFIG))
    motion.save_pretrained(folder / "unet", safe_serialization=True)
    return folder


def build_tiny_animatediff_parts(seed: int = 0) -> dict[str, Any]:
    """Random tiny ``unet`` (SD-style ``UNet2DConditionModel``), ``motion_adapter`` and the tiny VAE, CLIP, tokenizer
    and DDIM scheduler of :func:`build_tiny_pipeline_parts`: the parts of an ``AnimateDiffPipeline``."""
    from diffusers import MotionAdapter, UNet2DConditionModel

    parts = build_tiny_pipeline_parts(seed)
    torch.manual_seed(seed)
    parts["unet"] = UNet2DConditionModel(**TINY_ANIMATEDIFF_UNET_CONFIG).eval()
    torch.manual_seed(seed + 3)
    adapter = MotionAdapter(**TINY_MOTION_ADAPTER_CONFIG).eval()
    # AnimateDiff starts its motion modules' output projections at zero, which would make every motion module a
    # no-op and hide bugs in attention patching; give them small random weights instead.
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if "proj_out" in name:
                param.normal_(0.0, 0.2)
    parts["motion_adapter"] = adapter
    return parts


def save_tiny_animatediff_model(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny random AnimateDiff model as a diffusers ``AnimateDiffPipeline`` folder and return its path."""
    from diffusers import AnimateDiffPipeline

    folder = Path(folder)
    AnimateDiffPipeline(**build_tiny_animatediff_parts(seed)).save_pretrained(folder, safe_serialization=True)
    return folder


# A Latte transformer small enough to run in milliseconds: 2 layers (spatial + temporal) of 2 heads x 8, patch 2,
# learned variance (out_channels twice the latent channels, as Latte-1), 6 frame positions.
TINY_LATTE_CONFIG: dict[str, Any] = {
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "in_channels": 4,
    "out_channels": 8,
    "num_layers": 2,
    "cross_attention_dim": 16,
    "sample_size": 8,
    "patch_size": 2,
    "activation_fn": "gelu-approximate",
    "norm_type": "ada_norm_single",
    "caption_channels": 32,
    "video_length": 6,
}


# Latte-1's transformer (maxin-cn/Latte-1): 28 pairs of spatial + temporal blocks 1152 wide, patch 2, learned
# variance, T5 XXL features (4096) projected to the width, 16 frame positions. Benchmarks pair it with the tiny T5
# (caption_channels overridden) and may shorten video_length to run a CPU-sized clip.
LATTE_1_CONFIG: dict[str, Any] = {
    "num_attention_heads": 16,
    "attention_head_dim": 72,
    "in_channels": 4,
    "out_channels": 8,
    "num_layers": 28,
    "cross_attention_dim": 1152,
    "sample_size": 64,
    "patch_size": 2,
    "attention_bias": True,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "norm_type": "ada_norm_single",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "caption_channels": 4096,
    "video_length": 16,
}


def build_tiny_t5_encoder(tokenizer, d_model: int = 32):
    """A random 2-layer T5 encoder over ``tokenizer``'s ids (Latte-1's text encoder is a T5 v1.1 XXL encoder)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_ff=64, d_kv=8, num_layers=2, num_heads=2,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return T5EncoderModel(config).eval()


def build_tiny_latte_parts(seed: int = 0, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Random tiny ``transformer`` (``LatteTransformer3DModel``), a tiny T5 text encoder over the word tokenizer, and
    the tiny VAE and DDIM scheduler of :func:`build_tiny_pipeline_parts`: the parts of a ``LattePipeline``."""
    from diffusers import LatteTransformer3DModel

    parts = build_tiny_pipeline_parts(seed)
    del parts["unet"]
    torch.manual_seed(seed)
    parts["transformer"] = LatteTransformer3DModel(**(config or TINY_LATTE_CONFIG)).eval()
    torch.manual_seed(seed + 2)
    parts["text_encoder"] = build_tiny_t5_encoder(parts["tokenizer"])
    return parts


def save_tiny_latte_model(folder: str | Path, seed: int = 0, config: dict[str, Any] | None = None) -> Path:
    """Save a tiny random Latte model as a diffusers ``LattePipeline`` folder and return its path."""
    from diffusers import LattePipeline

    folder = Path(folder)
    LattePipeline(**build_tiny_latte_parts(seed, config)).save_pretrained(folder, safe_serialization=True)
    return folder


# A Wan transformer small enough to build and run in milliseconds (24 k parameters): 2 blocks of 2 heads x 12.
TINY_WAN_CONFIG: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 32,
    "freq_dim": 32,
    "ffn_dim": 48,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 32,
}
# Wan 2.1 T2V 1.3B transformer config (diffusers' convert_wan_to_diffusers.py, "Wan-T2V-1.3B"; 1,418,996,800
# parameters): for benchmarks of the full architecture with random weights, not for tests.
WAN_T2V_1_3B_CONFIG: dict[str, Any] = {
    **TINY_WAN_CONFIG,
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "rope_max_seq_len": 1024,
}
# A Wan 2.1-layout VAE with base width 8 (0.9 M parameters): 16 latent channels, 4x temporal, 8x spatial.
TINY_WAN_VAE_CONFIG: dict[str, Any] = {
    "base_dim": 8,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 1,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
}


def build_tiny_wan_parts(seed: int = 0, config: dict[str, Any] | None = None, scheduler: str = "flow_match_euler") -> dict[str, Any]:
    """Random tiny ``transformer``, ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler`` of a Wan pipeline.

    ``config`` replaces :data:`TINY_WAN_CONFIG`; ``scheduler`` is ``flow_match_euler`` (shift 3) or ``unipc``
    (Wan's default, ``flow_shift`` 5) to exercise both ways a flow shift is stored. The tiny text encoder's
    width follows the config's ``text_dim`` (32 for the tiny config, 4096 for :data:`WAN_T2V_1_3B_CONFIG`).
    """
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanTransformer3DModel

    parts = build_tiny_pipeline_parts(seed)
    text_dim = int((config or TINY_WAN_CONFIG)["text_dim"])
    if text_dim != parts["text_encoder"].config.hidden_size:
        torch.manual_seed(seed + 2)
        parts["text_encoder"] = build_tiny_text_encoder(parts["tokenizer"], text_dim)
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(**(config or TINY_WAN_CONFIG)).eval()
    with torch.no_grad():  # larger self-attention outputs, so that what the motion sites do shows clearly in the output
        for block in transformer.blocks:
            block.attn1.to_out[0].weight.normal_(0.0, 0.2)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(**TINY_WAN_VAE_CONFIG).eval()
    if scheduler == "unipc":
        flow = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    else:
        flow = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return {
        "transformer": transformer, "vae": vae, "text_encoder": parts["text_encoder"], "tokenizer": parts["tokenizer"],
        "scheduler": flow,
    }


def save_tiny_wan_model(
    folder: str | Path, seed: int = 0, config: dict[str, Any] | None = None, scheduler: str = "flow_match_euler"
) -> Path:
    """Save a tiny random Wan text-to-video model as a diffusers ``WanPipeline`` folder and return its path."""
    from diffusers import WanPipeline

    folder = Path(folder)
    WanPipeline(**build_tiny_wan_parts(seed, config, scheduler)).save_pretrained(folder, safe_serialization=True)
    return folder
