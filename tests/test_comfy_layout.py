"""The diffusers -> ComfyUI single-file converter for Wan 2.1 (motion_core/comfy_layout.py), checked without ComfyUI.

Round trip: tiny random diffusers models -> our converter -> diffusers' own original->diffusers converters
(``diffusers.loaders.single_file_utils``, what ``from_single_file`` runs on a ComfyUI / original Wan file) -> a fresh
model: every tensor and the forward output must be identical. tests/test_comfy_layout_integration.py loads the
files in a real ComfyUI.
"""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers
from safetensors import safe_open
from safetensors.torch import load_file

from motion_core.cli import main
from motion_core.comfy_layout import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    check_transformer_config,
    check_vae_config,
    export_comfy,
    transformer_to_comfy,
    vae_to_comfy,
)
from motion_core.errors import InvalidSettingError, ModelLoadError
from motion_core.testing.tiny_models import save_tiny_wan_model
from motion_core.testing.tiny_wan_files import (
    TINY_COMFY_WAN_DIT,
    TINY_WAN_VAE,
    build_tiny_wan_transformer,
    build_tiny_wan_vae,
    save_tiny_wan_folder,
)


@pytest.fixture(scope="module")
def wan_models():
    return build_tiny_wan_transformer(0), build_tiny_wan_vae(0)


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory, wan_models):
    return save_tiny_wan_folder(tmp_path_factory.mktemp("models") / "tiny-wan", *wan_models)


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, tensor in a.items():
        assert torch.equal(tensor, b[key]), key


def _dit_output(model: WanTransformer3DModel) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    latent = torch.randn(1, 16, 3, 8, 8, generator=generator)
    context = torch.randn(1, 7, model.config.text_dim, generator=generator)
    with torch.no_grad():
        return model(latent, torch.tensor([637.0]), context).sample


@pytest.mark.parametrize("overrides", [{}, {"cross_attn_norm": False, "eps": 1e-5, "num_attention_heads": 2}],
                         ids=["wan21", "no-cross-norm-two-heads"])
def test_dit_round_trip_through_diffusers_single_file_converter_is_exact(overrides):
    model = build_tiny_wan_transformer(3, **overrides)
    converted, metadata = transformer_to_comfy(model.state_dict(), model.config)
    # ComfyUI's names: the cross-attention norm is norm3 there (diffusers' norm2), the final modulation head.modulation.
    assert "head.modulation" in converted and "blocks.1.self_attn.q.weight" in converted
    assert not any(".norm2." in key for key in converted)
    if model.config.cross_attn_norm:
        assert torch.equal(converted["blocks.0.norm3.weight"], model.blocks[0].norm2.weight)
    else:
        assert not any(".norm3." in key for key in converted)
    expected = {"text_dim": 32, "freq_dim": 32}
    if overrides:
        expected.update(eps=1e-5, cross_attn_norm=False)
    assert json.loads(metadata["config"]) == {"transformer": expected}

    back = convert_wan_transformer_to_diffusers(dict(converted))
    fresh = WanTransformer3DModel(**{**TINY_COMFY_WAN_DIT, **overrides}).eval()
    fresh.load_state_dict(back, strict=True)
    _assert_same_tensors(fresh.state_dict(), model.state_dict())
    assert torch.equal(_dit_output(fresh), _dit_output(model))


def test_vae_round_trip_through_diffusers_single_file_converter_is_exact():
    vae = build_tiny_wan_vae(4)
    converted = vae_to_comfy(vae.state_dict(), vae.config)
    # The one residual block with a shortcut in the decoder: diffusers' up level 1, resnet 0 = original index 4.
    assert torch.equal(converted["decoder.upsamples.4.shortcut.weight"], vae.decoder.up_blocks[1].resnets[0].conv_shortcut.weight)
    assert "decoder.upsamples.11.resample.1.weight" in converted and "decoder.head.0.gamma" in converted

    fresh = AutoencoderKLWan(**TINY_WAN_VAE).eval()
    fresh.load_state_dict(convert_wan_vae_to_diffusers(dict(converted)), strict=True)
    _assert_same_tensors(fresh.state_dict(), vae.state_dict())
    clip = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        latent = vae.encode(clip).latent_dist.mode()
        assert torch.equal(fresh.encode(clip).latent_dist.mode(), latent)
        assert torch.equal(fresh.decode(latent).sample, vae.decode(latent).sample)


def test_export_writes_both_files_where_comfyui_looks_and_never_replaces_unasked(wan_folder, wan_models, tmp_path):
    paths = export_comfy(wan_folder, tmp_path / "models")
    assert paths.transformer == tmp_path / "models" / "diffusion_models" / "tiny-wan.safetensors"
    assert paths.vae == tmp_path / "models" / "vae" / "tiny-wan.safetensors"
    dit, vae = wan_models  # the models the folder was saved from
    expected, metadata = transformer_to_comfy(dit.state_dict(), dit.config)
    _assert_same_tensors(load_file(paths.transformer), expected)
    with safe_open(str(paths.transformer), framework="pt") as handle:
        assert handle.metadata() == metadata
    _assert_same_tensors(load_file(paths.vae), vae_to_comfy(vae.state_dict(), vae.config))

    paths.vae.write_bytes(b"the user's own file")
    with pytest.raises(InvalidSettingError, match="already exist"):
        export_comfy(wan_folder, tmp_path / "models")
    assert paths.vae.read_bytes() == b"the user's own file"
    export_comfy(wan_folder, tmp_path / "models", overwrite=True)
    _assert_same_tensors(load_file(paths.vae), vae_to_comfy(vae.state_dict(), vae.config))


@pytest.mark.parametrize(("config", "reason"), [
    ({"attention_head_dim": 12, "num_attention_heads": 2}, "heads of 12"),
    ({"patch_size": [1, 4, 4]}, "patch_size"),
    ({"image_dim": 1280, "added_kv_proj_dim": 5120}, "image conditioning"),
])
def test_a_dit_comfyui_would_misread_is_refused_with_the_reason(config, reason):
    with pytest.raises(ModelLoadError, match=reason):
        check_transformer_config({**TINY_COMFY_WAN_DIT, **config})


@pytest.mark.parametrize(("config", "field"), [
    ({"num_res_blocks": 1}, "num_res_blocks"),
    ({"dim_mult": [1, 2, 4]}, "dim_mult"),
    ({"temperal_downsample": [False, False, True]}, "temperal_downsample"),
    ({"attn_scales": [0.5]}, "attn_scales"),
    ({"z_dim": 48}, "z_dim"),
    ({"decoder_base_dim": 16}, "decoder_base_dim"),
    ({"latents_mean": [0.0] * 16}, "latents_mean"),
    ({"is_residual": True}, "is_residual"),
])
def test_a_vae_comfyui_would_build_otherwise_is_refused_naming_the_field(config, field):
    with pytest.raises(ModelLoadError, match=field):
        check_vae_config({**TINY_WAN_VAE, **config})
    check_vae_config({**TINY_WAN_VAE, "latents_mean": list(WAN21_LATENTS_MEAN)})  # Wan 2.1's own statistics pass


def test_wan21_latent_statistics_are_diffusers_defaults():
    # diffusers' WanPipeline and ComfyUI's Wan21 latent format normalise with the same constants (ComfyUI's side is
    # checked in test_comfy_layout_integration.py): a VAE whose config keeps them means the same latents on both.
    parameters = inspect.signature(AutoencoderKLWan.__init__).parameters
    assert tuple(parameters["latents_mean"].default) == WAN21_LATENTS_MEAN
    assert tuple(parameters["latents_std"].default) == WAN21_LATENTS_STD


def test_refused_folder_writes_nothing_and_unknown_weights_are_not_dropped(tmp_path, tiny_model_dir):
    with pytest.raises(ModelLoadError, match="no transformer/ folder"):  # a UNet3D folder has no Wan DiT
        export_comfy(tiny_model_dir, tmp_path / "models")
    wan_family_model = save_tiny_wan_model(tmp_path / "family-tiny-wan")  # a whole WanPipeline folder, heads of 12
    with pytest.raises(ModelLoadError, match="heads of 12"):
        export_comfy(wan_family_model, tmp_path / "models")
    wan_family_dit = save_tiny_wan_model(tmp_path / "family-tiny-wan-128", config={**TINY_COMFY_WAN_DIT, "text_dim": 32})
    with pytest.raises(ModelLoadError, match="num_res_blocks"):  # its VAE has one residual block per level
        export_comfy(wan_family_dit, tmp_path / "models")
    folder = save_tiny_wan_folder(tmp_path / "heads12", build_tiny_wan_transformer(0, attention_head_dim=12, num_attention_heads=2),
                                  build_tiny_wan_vae(0))
    with pytest.raises(ModelLoadError, match="heads of 12"):
        export_comfy(folder, tmp_path / "models")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*.safetensors"))

    vae = build_tiny_wan_vae(0)
    weights = {**vae.state_dict(), "decoder.extra.weight": torch.zeros(1)}
    with pytest.raises(ModelLoadError, match="decoder.extra.weight"):
        vae_to_comfy(weights, vae.config)


def test_export_comfy_command(wan_folder, tmp_path):
    out = tmp_path / "models"
    assert main(["export-comfy", "--model", str(wan_folder), "--out-dir", str(out), "--name", "toy"]) == 0
    assert (out / "diffusion_models" / "toy.safetensors").is_file() and (out / "vae" / "toy.safetensors").is_file()
    assert main(["export-comfy", "--model", str(wan_folder), "--out-dir", str(out), "--name", "toy"]) == 2
    assert main(["export-comfy", "--model", str(wan_folder), "--out-dir", str(out), "--name", "toy", "--overwrite"]) == 0
