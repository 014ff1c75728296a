"""Per-family recipes for :mod:`toyworld.train_t2v`: what differs between the UNet3D and the Wan toy models.

A recipe builds the denoiser, caches and normalises latents with the family's VAE, encodes prompts the way the
family's pipeline does, computes the training objective and writes the family's diffusers folder. The training
loop (sampling of clips and captions, caption dropout, optimiser, EMA, checkpoints) is shared and lives in
:mod:`toyworld.train_t2v`.

* ``unet3d``: ``UNet3DConditionModel``, x0 ("sample") prediction on a DDIM cosine schedule, latents scaled by the
  VAE's ``scaling_factor``, saved as a ``TextToVideoSDPipeline`` folder (8 frames of 32x32).
* ``wan``: ``WanTransformer3DModel`` (heads of 128 as ComfyUI infers them), rectified flow from
  :mod:`motion_core.flow_matching` (shifted sigmas, velocity target, timestep = sigma * 1000), prompts through
  :func:`motion_core.text_encoding.encode_masked_prompts` (what the Wan family samples with), latents normalised
  with the VAE config's ``latents_mean`` / ``latents_std``, saved as a ``WanPipeline`` folder with a
  ``FlowMatchEulerDiscreteScheduler`` (17 frames of 96x96).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .train_vae import WAN_FRAMES, WAN_SIZE, frames_to_images, frames_to_videos
from .world import VOCAB, render_batch

logger = logging.getLogger(__name__)

T2V_TRAIN_SEED_OFFSET = 10_000_000
MODEL_MAX_LENGTH = 16
TEXT_HIDDEN = 64

UNET_CONFIG: dict = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
    "block_out_channels": [48, 96],
    "layers_per_block": 1,
    "norm_num_groups": 16,
    "cross_attention_dim": TEXT_HIDDEN,
    "attention_head_dim": 8,
}

SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "sample",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "timestep_spacing": "trailing",
}

#: The toy-world Wan DiT: one head of 128 (ComfyUI: num_heads = dim // 128), freq_dim 256 and patch (1, 2, 2) as
#: ComfyUI fixes them, text_dim = the toy text encoder's hidden size (ComfyUI reads it from the metadata config).
#: One head (dim 128) rather than two: a training step at batch 16 and 180 tokens takes 0.33 s instead of 0.69 s on
#: 2 CPU cores, so the build affords the ~8000 steps the Latte toy needed (the motion embeddings are added before the
#: head split, so the head count does not change what they do).
WAN_TRANSFORMER_CONFIG: dict = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 1,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": TEXT_HIDDEN,
    "freq_dim": 256,
    "ffn_dim": 512,
    "num_layers": 4,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
}

#: Flow shift used in training and written into the scheduler (motion_core.flow_matching.DEFAULT_SHIFT).
WAN_FLOW_SHIFT = 3.0


def build_tokenizer():
    """The closed-vocabulary CLIPTokenizer over the world's caption words."""
    from motion_core.testing.word_tokenizer import build_word_tokenizer

    return build_word_tokenizer(VOCAB, model_max_length=MODEL_MAX_LENGTH)


def build_text_encoder(tokenizer, seed: int):
    """A tiny CLIPTextModel (hidden 64, 2 layers) matching ``tokenizer``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MODEL_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(cfg)


def write_slow_tokenizer_files(tokenizer_dir: Path) -> None:
    """Add ``vocab.json`` and ``merges.txt`` beside ``tokenizer.json``.

    transformers 5 saves only ``tokenizer.json``; the slow ``CLIPTokenizer`` of transformers 4.x needs the two
    classic files, so writing them keeps the folder loadable by older installs (ComfyUI often has 4.x).
    """
    data = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    model = data["model"]
    (tokenizer_dir / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def prefix_text_encoder_keys(text_encoder_dir: Path) -> None:
    """Store the text encoder's weights under ``text_model.*`` names.

    transformers 5 saves ``CLIPTextModel`` weights without the ``text_model.`` prefix; transformers 4.x then
    silently initialises every weight at random. The prefixed names (as in every published CLIP text
    encoder, ZeroScope's included) load correctly in both.
    """
    from safetensors.torch import load_file, save_file

    path = text_encoder_dir / "model.safetensors"
    state = load_file(str(path))
    fixed = {(k if k.startswith("text_model.") else "text_model." + k): v.contiguous() for k, v in state.items()}
    save_file(fixed, str(path), metadata={"format": "pt"})


@torch.no_grad()
def cache_posteriors(
    render: Callable[[list[int]], tuple[torch.Tensor, list[str]]],
    posterior: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    num_clips: int,
    seed: int,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The training clips of ``seed`` rendered ``chunk`` at a time and their VAE posteriors kept (any family).

    Args:
        render: seeds -> ``([B, F, H, W, 3]`` frames, captions).
        posterior: frames -> posterior ``(mean, std)``, each ``[B, C, F', h, w]``.

    Returns:
        ``(mean [N, C, F', h, w], std, captions)`` for ``num_clips`` clips.
    """
    means, stds, caps = [], [], []
    base = T2V_TRAIN_SEED_OFFSET + seed * 1_000_000
    for start in range(0, num_clips, chunk):
        seeds = list(range(base + start, base + min(start + chunk, num_clips)))
        frames, captions = render(seeds)
        mean, std = posterior(frames)
        means.append(mean)
        stds.append(std)
        caps.extend(captions)
        if start % (chunk * 20) == 0:
            logger.info("cached %d / %d clips", start + len(seeds), num_clips)
    return torch.cat(means), torch.cat(stds), caps


@dataclass
class Objective:
    """One training batch's outcome: per-sample losses ``[B]`` and a noise-level quarter ``[B]`` (0..3)."""

    per_sample: torch.Tensor
    quarter: torch.Tensor


@dataclass
class Unet3dRecipe:
    """The UNet3D demo model (``assets/toyworld-t2v``)."""

    name: str = "unet3d"
    model_key: str = "unet"
    params_key: str = "unet_params"
    vae: object = None
    scheduler: object = None
    extra_info: dict = field(default_factory=dict)

    def load_vae(self, out: Path) -> None:
        """Read the VAE written by :mod:`toyworld.train_vae` and make the scheduler."""
        from diffusers import AutoencoderKL, DDIMScheduler

        self.vae = AutoencoderKL.from_pretrained(out / "vae").eval()
        self.scheduler = DDIMScheduler(**SCHEDULER_CONFIG)

    def build_model(self, seed: int):
        """A fresh UNet3DConditionModel with :data:`UNET_CONFIG`."""
        from diffusers import UNet3DConditionModel

        torch.manual_seed(seed)
        return UNet3DConditionModel(**UNET_CONFIG)

    def cache_name(self, seed: int, num_clips: int) -> str:
        return f"latents_seed{seed}_n{num_clips}.pt"

    def cache_latents(self, num_clips: int, seed: int, chunk: int = 250) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Render clips and cache their VAE posteriors: ``(mean [N, 4, F, 8, 8], std, captions)``, unscaled."""
        return cache_posteriors(lambda seeds: render_batch(seeds)[:2], self._posterior, num_clips, seed, chunk)

    def _posterior(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, F, H, W, 3]`` clips -> posterior ``(mean, std)``, each ``[B, 4, F, h, w]`` (frames encoded one by one)."""
        b, f = frames.shape[:2]
        post = self.vae.encode(frames_to_images(frames)).latent_dist  # [B*F, 4, h, w]
        return tuple(t.reshape(b, f, *t.shape[1:]).permute(0, 2, 1, 3, 4).contiguous() for t in (post.mean, post.std))

    def normalise(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> the unit-std latents the denoiser sees."""
        return latents * float(self.vae.config.scaling_factor)

    def encode_text(self, tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
        """``B`` prompts -> ``[B, 16, 64]`` CLIP hidden states (TextToVideoSDPipeline's encoding, no mask)."""
        ids = tokenizer(
            prompts, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True, return_tensors="pt"
        ).input_ids
        return text_encoder(ids)[0]

    def objective(self, model, x0: torch.Tensor, enc_fn, g: torch.Generator) -> Objective:
        """x0 prediction at a uniform timestep; ``enc_fn()`` gives the text states (called after the draws)."""
        batch = x0.shape[0]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (batch,), generator=g)
        noisy = self.scheduler.add_noise(x0, noise, t)
        pred = model(noisy, t, encoder_hidden_states=enc_fn()).sample
        per = ((pred - x0) ** 2).mean(dim=(1, 2, 3, 4))
        quarter = (t * 4 // self.scheduler.config.num_train_timesteps).clamp(max=3)
        return Objective(per, quarter)

    def save(self, out: Path, text_encoder, tokenizer, model) -> None:
        """Write a complete diffusers ``TextToVideoSDPipeline`` folder."""
        from diffusers import TextToVideoSDPipeline

        pipe = TextToVideoSDPipeline(
            vae=self.vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=model, scheduler=self.scheduler
        )
        pipe.save_pretrained(out)


#: The toy-world AnimateDiff: an SD-style 2-D UNet at the UNet3D toy's widths plus a motion adapter with a motion
#: module after every ResNet (and a mid one), as AnimateDiff's; trained from scratch together.
ANIMATEDIFF_UNET_CONFIG: dict = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [48, 96],
    "layers_per_block": 1,
    "norm_num_groups": 16,
    "cross_attention_dim": TEXT_HIDDEN,
    "attention_head_dim": 8,
}
ANIMATEDIFF_ADAPTER_CONFIG: dict = {
    "block_out_channels": [48, 96],
    "motion_layers_per_block": 1,
    "motion_mid_block_layers_per_block": 1,
    "motion_num_attention_heads": 4,
    "motion_norm_num_groups": 16,
    "motion_max_seq_length": 32,
    "use_motion_mid_block": True,
}


@dataclass
class AnimateDiffRecipe(Unet3dRecipe):
    """The toy-world AnimateDiff (``assets/toyworld-animatediff``): the UNet3D toy's VAE, text encoder recipe,
    objective and 8 frames of 32x32, with a ``UNetMotionModel`` (2-D UNet + motion modules) as the denoiser."""

    name: str = "animatediff"

    def __post_init__(self) -> None:
        self.extra_info = {"family": "animatediff", "unet_config": ANIMATEDIFF_UNET_CONFIG,
                           "motion_adapter_config": ANIMATEDIFF_ADAPTER_CONFIG}

    def build_model(self, seed: int):
        """A fresh ``UNetMotionModel`` from :data:`ANIMATEDIFF_UNET_CONFIG` and :data:`ANIMATEDIFF_ADAPTER_CONFIG`."""
        from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**ANIMATEDIFF_UNET_CONFIG)
        return UNetMotionModel.from_unet2d(unet, MotionAdapter(**ANIMATEDIFF_ADAPTER_CONFIG))

    def objective(self, model, x0: torch.Tensor, enc_fn, g: torch.Generator) -> Objective:
        """As the UNet3D toy's, with the prompt given once per frame (``UNetMotionModel`` folds frames into the batch)."""
        frames = x0.shape[2]
        return super().objective(model, x0, lambda: enc_fn().repeat_interleave(frames, dim=0), g)

    def save(self, out: Path, text_encoder, tokenizer, model) -> None:
        """Write a complete diffusers ``AnimateDiffPipeline`` folder (``unet/`` holds the motion modules)."""
        from diffusers import AnimateDiffPipeline

        pipe = AnimateDiffPipeline(vae=self.vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=model,
                                   motion_adapter=None, scheduler=self.scheduler)
        pipe.save_pretrained(out)


#: The toy-world Latte: 4 pairs of spatial + temporal transformer blocks 96 wide (4 heads), patch 2 on the 8x8 latent
#: (Latte-1's patch; 16 tokens per frame: a quarter of patch 1's cost per step, which at patch 1 needed ~110 minutes
#: to draw square corners; patch 2 passes its check in one 43-minute build), the 8 toy frames as its frame-position table, a learned-variance half in the output as
#: Latte-1 has (LattePipeline reads the first half; the second is left untrained).
LATTE_TRANSFORMER_CONFIG: dict = {
    "num_attention_heads": 4,
    "attention_head_dim": 24,
    "in_channels": 4,
    "out_channels": 8,
    "num_layers": 4,
    "cross_attention_dim": 96,
    "sample_size": 8,
    "patch_size": 2,
    "activation_fn": "gelu-approximate",
    "norm_type": "ada_norm_single",
    "caption_channels": TEXT_HIDDEN,
    "video_length": 8,
}


@dataclass
class LatteRecipe(Unet3dRecipe):
    """The toy-world Latte (``assets/toyworld-latte``): the UNet3D toy's VAE, text encoder recipe, objective and
    8 frames of 32x32, with a ``LatteTransformer3DModel`` as the denoiser, called as the Latte family calls it
    (:func:`motion_core.families.latte.latte_forward`: padding-zeroed prompt with its mask)."""

    name: str = "latte"
    model_key: str = "transformer"
    params_key: str = "transformer_params"

    def __post_init__(self) -> None:
        self.extra_info = {"family": "latte", "transformer_config": LATTE_TRANSFORMER_CONFIG}

    def build_model(self, seed: int):
        """A fresh ``LatteTransformer3DModel`` from :data:`LATTE_TRANSFORMER_CONFIG`, its output projection zeroed
        (as DiT's adaLN-zero: the first prediction is 0, not the random init's large output)."""
        from diffusers import LatteTransformer3DModel

        torch.manual_seed(seed)
        model = LatteTransformer3DModel(**LATTE_TRANSFORMER_CONFIG)
        torch.nn.init.zeros_(model.proj_out.weight)
        torch.nn.init.zeros_(model.proj_out.bias)
        return model

    def encode_text(self, tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
        """``B`` prompts -> ``[B, 16, 64]``, padded positions exactly zero (the Latte family's encoding)."""
        from motion_core.families.latte import LATTE_TEXT_POSITIONS
        from motion_core.text_encoding import encode_masked_prompts

        return encode_masked_prompts(tokenizer, text_encoder, prompts, LATTE_TEXT_POSITIONS)

    def objective(self, model, x0: torch.Tensor, enc_fn, g: torch.Generator) -> Objective:
        """x0 prediction at a uniform timestep, as the UNet3D toy's, through the Latte family's model call."""
        from motion_core.families.latte import latte_forward

        batch = x0.shape[0]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (batch,), generator=g)
        noisy = self.scheduler.add_noise(x0, noise, t)
        pred = latte_forward(model, noisy, t, enc_fn())
        per = ((pred - x0) ** 2).mean(dim=(1, 2, 3, 4))
        quarter = (t * 4 // self.scheduler.config.num_train_timesteps).clamp(max=3)
        return Objective(per, quarter)

    def save(self, out: Path, text_encoder, tokenizer, model) -> None:
        """Write a complete diffusers ``LattePipeline`` folder."""
        from diffusers import LattePipeline

        LattePipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=self.vae, transformer=model,
                      scheduler=self.scheduler).save_pretrained(out)


@dataclass
class WanRecipe:
    """The toy-world Wan (``assets/toyworld-wan``): rectified flow on a Wan 2.1-format DiT and VAE."""

    name: str = "wan"
    model_key: str = "transformer"
    params_key: str = "transformer_params"
    shift: float = WAN_FLOW_SHIFT
    vae: object = None
    scheduler: object = None
    extra_info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.extra_info = {
            "family": "wan",
            "objective": "rectified flow, velocity target (motion_core.flow_matching), timestep = sigma * 1000",
            "flow_shift": self.shift,
            "transformer_config": WAN_TRANSFORMER_CONFIG,
            "frames": WAN_FRAMES,
            "height": WAN_SIZE,
            "width": WAN_SIZE,
            "settings_note": "motion_inversion.json: the sample values come from toyworld.check_model; the train "
            "values are provisional until the Wan motion-transfer benchmark fixes them",
        }

    def load_vae(self, out: Path) -> None:
        """Read the Wan VAE written by ``toyworld.train_vae --kind wan`` and make the flow scheduler."""
        from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler

        self.vae = AutoencoderKLWan.from_pretrained(out / "vae").eval()
        self.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=self.shift)
        cfg = self.vae.config
        self._mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
        self._std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)

    def build_model(self, seed: int):
        """A fresh WanTransformer3DModel with :data:`WAN_TRANSFORMER_CONFIG`, its output projection zeroed.

        A zero output layer (as in DiT's adaLN-zero) starts the velocity prediction at 0 instead of the random
        init's large outputs (a first-step loss near 28 instead of 2 in a smoke run).
        """
        from diffusers import WanTransformer3DModel

        torch.manual_seed(seed)
        model = WanTransformer3DModel(**WAN_TRANSFORMER_CONFIG)
        torch.nn.init.zeros_(model.proj_out.weight)
        torch.nn.init.zeros_(model.proj_out.bias)
        return model

    def cache_name(self, seed: int, num_clips: int) -> str:
        return f"wan_latents_seed{seed}_n{num_clips}.pt"

    def cache_latents(self, num_clips: int, seed: int, chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Render 17-frame 96x96 clips and cache their posteriors: ``(mean [N, 16, 5, 12, 12], std, captions)``, raw."""

        def render(seeds: list[int]) -> tuple[torch.Tensor, list[str]]:
            return render_batch(seeds, num_frames=WAN_FRAMES, height=WAN_SIZE, width=WAN_SIZE)[:2]

        return cache_posteriors(render, self._posterior, num_clips, seed, chunk)

    def _posterior(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, F, H, W, 3]`` clips -> posterior ``(mean, std)``, each ``[B, 16, F', h, w]``."""
        post = self.vae.encode(frames_to_videos(frames)).latent_dist
        return post.mean.contiguous(), post.std.contiguous()

    def normalise(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents -> ``(z - latents_mean) / latents_std`` per channel (what WanPipeline undoes before decoding)."""
        return (latents - self._mean) / self._std

    def encode_text(self, tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
        """``B`` prompts -> ``[B, 16, 64]``, padded positions exactly zero (the Wan family's encoding)."""
        from motion_core.text_encoding import encode_masked_prompts

        return encode_masked_prompts(tokenizer, text_encoder, prompts)

    def objective(self, model, x0: torch.Tensor, enc_fn, g: torch.Generator) -> Objective:
        """Velocity MSE at shifted uniform noise levels (the one objective in motion_core.flow_matching)."""
        from motion_core import flow_matching as fm

        noise = torch.randn(x0.shape, generator=g)
        sigma = fm.draw_sigmas(x0.shape[0], self.shift, g)
        noisy = fm.noisy_latents(x0, noise, sigma)
        pred = model(noisy, fm.model_timestep(sigma), enc_fn()).sample
        per = ((pred - fm.velocity_target(x0, noise)) ** 2).mean(dim=(1, 2, 3, 4))
        return Objective(per, (sigma * 4).long().clamp(max=3))

    def save(self, out: Path, text_encoder, tokenizer, model) -> None:
        """Write a complete diffusers ``WanPipeline`` folder."""
        from diffusers import WanPipeline

        pipe = WanPipeline(
            tokenizer=tokenizer, text_encoder=text_encoder, vae=self.vae, scheduler=self.scheduler, transformer=model
        )
        pipe.save_pretrained(out)


RECIPES = {"unet3d": Unet3dRecipe, "wan": WanRecipe, "animatediff": AnimateDiffRecipe, "latte": LatteRecipe}


def make_recipe(family: str, **kwargs):
    """A fresh recipe for ``family`` (a key of :data:`RECIPES`); ``kwargs`` go to its constructor (e.g. ``shift``)."""
    if family not in RECIPES:
        raise ValueError(f"unknown toy-model family {family!r}; expected one of {sorted(RECIPES)}")
    return RECIPES[family](**kwargs)
