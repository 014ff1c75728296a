"""The toy world at 1 + 4k frames and 64x64 / 96x96, the Wan VAE's latent-normalisation fold, the toy trainers'
Wan options, the fp16 export of a built folder, and the size budget of the bundled models.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan

from toyworld import world
from toyworld.metrics import self_check

ASSETS = Path(__file__).resolve().parent.parent / "assets"

# sha256 over the default world's clips (frames, centres, caption, size, meta) for a few seeds and the reference
# trajectories, computed with the world as it was before it learned other canvases (commit 8011c6a).
DEFAULT_WORLD_DIGEST = "5c527378fb6990b5cbc6c6a82c93e6b4c2c57003ac62a4544e717d1689db949f"


def test_default_world_renders_exactly_the_clips_it_always_rendered():
    digest = hashlib.sha256()
    for seed in [0, 1, 7, 123, 1_000_000, 10_000_000, 12_300_042]:
        clip = world.random_clip(seed)
        digest.update(clip.frames.numpy().tobytes())
        digest.update(clip.centres.numpy().tobytes())
        digest.update(repr((clip.caption, clip.size, sorted(clip.meta.items()))).encode())
    for name, path in world.reference_trajectories().items():
        digest.update(name.encode())
        digest.update(path.numpy().tobytes())
    assert digest.hexdigest() == DEFAULT_WORLD_DIGEST


@pytest.mark.parametrize("size", [64, 96])
def test_a_17_frame_clip_scales_object_and_speed_with_the_canvas(size):
    scale = size / 32  # world.canvas_scale: 2 at 64x64, 3 at the toy-world Wan's 96x96
    clips = [world.random_clip(500 + i, num_frames=17, height=size, width=size) for i in range(12)]
    assert clips[0].frames.shape == (17, size, size, 3)
    assert all(8 * scale <= c.size <= 10 * scale for c in clips)  # (9 +- 1) * scale
    speeds = torch.cat([(c.centres[1:] - c.centres[:-1]).norm(dim=1) for c in clips])
    assert scale - 1e-4 <= float(speeds.median()) <= 3 * scale + 1e-4  # (1..3 px/frame) * scale, bounces shorten some
    assert float(speeds.max()) <= 3 * scale + 1e-4
    assert all(abs(c.meta["turn"]) <= 0.5 * 7 / 16 + 1e-9 for c in clips)  # a curve turns as much in total as at 8 frames
    paths = world.reference_trajectories(17, size)
    assert all(p.shape == (17, 2) for p in paths.values())
    x = paths["bounce"][:, 0]
    assert float(x.max()) <= size - 4.5 * scale + 1e-4 and float(x[x.argmax() + 1]) < float(x.max())  # right-wall bounce
    assert float((x[1] - x[0])) == pytest.approx(3 * scale)  # 3 px/frame at 32


@pytest.mark.parametrize("size", [64, 96])
def test_detector_finds_colour_shape_and_position_on_the_larger_canvas(size):
    result = self_check(num_clips=24, num_frames=17, size=size)
    assert result["colour_acc"] == result["shape_acc"] == result["presence"] == 1.0
    # the triangle's area centroid sits size/6 below its box centre: 3 px at 64, 4.5 at 96
    assert result["centroid_err_px"] < size / 32


def test_the_model_check_samples_at_the_geometry_the_folder_was_trained_at(tmp_path):
    from toyworld.check_model import trained_geometry
    from toyworld.train_vae import WAN_FRAMES, WAN_SIZE

    (tmp_path / "train_info.json").write_text(json.dumps({"family": "wan", "frames": 17, "height": 64, "width": 64}))
    assert trained_geometry(tmp_path, "WanPipeline") == (17, 64)  # a build from before the world moved to 96x96
    assert trained_geometry(tmp_path / "elsewhere", "WanPipeline") == (WAN_FRAMES, WAN_SIZE) == (17, 96)
    assert trained_geometry(ASSETS / "toyworld-t2v", "TextToVideoSDPipeline") == (8, 32)


def _tiny_wan_vae():
    from toyworld.train_vae import WAN_VAE_CONFIG

    torch.manual_seed(0)
    return AutoencoderKLWan(**{**WAN_VAE_CONFIG, "base_dim": 4}).eval()


def test_latent_fold_hits_the_wan_constants_and_keeps_reconstructions():
    from toyworld.train_vae import _encode_means, fold_latent_normalisation, frames_to_videos

    vae = _tiny_wan_vae()
    frames, _, _ = world.render_batch([11, 12, 13], num_frames=9, height=32, width=32)
    x = frames_to_videos(frames)
    with torch.no_grad():
        before = _encode_means(vae, x, 8)
        rec_before = vae.decode(before).sample
        mean, std = before.mean(dim=(0, 2, 3, 4)), before.std(dim=(0, 2, 3, 4))
        fold_latent_normalisation(vae, mean, std)
        post = vae.encode(x).latent_dist
        after = post.mean
        rec_after = vae.decode(after).sample
    target_mean = torch.tensor(vae.config.latents_mean)
    target_std = torch.tensor(vae.config.latents_std)
    assert torch.allclose(after.mean(dim=(0, 2, 3, 4)), target_mean, atol=1e-4)
    assert torch.allclose(after.std(dim=(0, 2, 3, 4)), target_std, rtol=1e-4)
    normalised = (after - target_mean.view(1, -1, 1, 1, 1)) / target_std.view(1, -1, 1, 1, 1)
    per_channel = normalised.std(dim=(0, 2, 3, 4))
    assert abs(float(normalised.mean())) < 1e-4 and torch.allclose(per_channel, torch.ones(16), atol=1e-4)
    assert (rec_after - rec_before).abs().max() < 1e-4
    # The posterior's spread scales with the mean: std' = a * std (the logvar shift).
    a = target_std / std
    z = vae.config.z_dim
    with torch.no_grad():
        unfolded_logvar = _tiny_wan_vae().encode(x).latent_dist.logvar
    assert torch.allclose(post.logvar, unfolded_logvar + 2 * a.log().view(1, z, 1, 1, 1), atol=1e-4)


# ---------------------------------------------------------------- bundled assets and the trainer

def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_bundled_models_fit_the_size_budget():
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total <= 48 * 2**20

def test_fp16_export_halves_the_weights_and_keeps_everything_else(tmp_path):
    from toyworld.export_fp16 import export_fp16

    src = tmp_path / "build"
    vae = _tiny_wan_vae()
    vae.save_pretrained(src / "vae")
    config = _json(src / "vae" / "config.json")
    (src / "vae" / "config.json").write_text(json.dumps({**config, "_name_or_path": str(tmp_path / "builder's folder")}))
    (src / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline", "vae": ["diffusers", "AutoencoderKLWan"]}))
    (src / "latents.pt").write_bytes(b"trainer scratch")
    sizes = export_fp16(src, tmp_path / "bundle")
    assert sizes["bytes_after"] < 0.6 * sizes["bytes_before"]
    assert not (tmp_path / "bundle" / "latents.pt").exists()
    # the configs as they were, less the build machine's path
    assert _json(tmp_path / "bundle" / "vae" / "config.json") == {k: v for k, v in config.items() if k != "_name_or_path"}
    half = AutoencoderKLWan.from_pretrained(tmp_path / "bundle" / "vae", torch_dtype=torch.float32).eval()
    assert {p.dtype for p in half.parameters()} == {torch.float32}
    for (name, a), b in zip(vae.state_dict().items(), half.state_dict().values()):
        assert torch.equal(a.half().float(), b), name  # exactly the fp16 rounding, nothing else
    with pytest.raises(FileExistsError, match="nothing is overwritten"):
        export_fp16(src, tmp_path / "bundle")


def test_fp16_export_refuses_a_weight_beyond_fp16s_range(tmp_path):
    from toyworld.export_fp16 import half_state_dict

    with pytest.raises(ValueError, match="'big'.*fp32"):
        half_state_dict({"ok": torch.ones(2), "big": torch.tensor([1e6])}, tmp_path / "x.safetensors")
    kept = half_state_dict({"ids": torch.arange(3), "w": torch.ones(2)}, tmp_path / "x.safetensors")
    assert kept["ids"].dtype == torch.int64 and kept["w"].dtype == torch.float16


def test_wan_trainer_writes_a_wan_pipeline_folder_that_diffusers_loads(tmp_path):
    """Two steps of the generalised trainer on a tiny random Wan VAE: the folder is a WanPipeline with the recipe."""
    from toyworld.check_model import load_pipeline
    from toyworld.train_t2v import train_t2v

    _tiny_wan_vae().save_pretrained(tmp_path / "vae")
    summary = train_t2v(tmp_path, tmp_path / "work", steps=2, batch=2, num_clips=3, warmup=1, save_every=2, threads=1,
                        family="wan", shift=2.0)
    assert summary["steps"] == 2 and summary["final_loss"] > 0
    info = _json(tmp_path / "train_info.json")
    assert (info["family"], info["flow_shift"], info["step"]) == ("wan", 2.0, 2)
    pipe = load_pipeline(tmp_path)
    assert type(pipe).__name__ == "WanPipeline" and pipe.scheduler.config.shift == 2.0
    assert pipe.transformer.config.attention_head_dim == 128
    assert pipe.transformer.config.text_dim == pipe.text_encoder.config.hidden_size


def test_decoder_only_vae_training_keeps_the_encoder_and_so_every_cached_latent(tmp_path):
    """``--decoder-only``: two steps change the decoder and leave encoder, quant_conv and latents bit for bit alone."""
    from toyworld.train_vae import VAE_KINDS, frames_to_videos, train_vae

    _tiny_wan_vae().save_pretrained(tmp_path / "start" / "vae")
    start = VAE_KINDS["wan"].load(tmp_path / "start" / "vae")
    log = train_vae(tmp_path / "tuned", steps=2, batch=2, num_clips=3, lr=1e-2, threads=1, kind="wan", eval_clips=2,
                    window=9, crop=64, edge_weight=2.0, init_from=tmp_path / "start" / "vae", decoder_only=True)
    tuned = VAE_KINDS["wan"].load(tmp_path / "tuned" / "vae")
    before, after = start.state_dict(), tuned.state_dict()
    encoder_side = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder_side = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder_side and all(torch.equal(before[k], after[k]) for k in encoder_side)
    assert any(not torch.equal(before[k], after[k]) for k in decoder_side)
    frames, _, _ = world.render_batch([21], num_frames=17, height=64, width=64)
    with torch.no_grad():
        x = frames_to_videos(frames)
        assert torch.equal(start.encode(x).latent_dist.mean, tuned.encode(x).latent_dist.mean)
    assert log["decoder_only"] is True and log["crop"] == 64 and log["edge_weight"] == 2.0
    assert "edge" in log["history"][0]


def test_single_frame_windows_train_the_spatial_path_and_leave_the_temporal_convs(tmp_path):
    """``window=1``: every window is a first frame, which the Wan VAE encodes without its temporal convolutions."""
    from toyworld.train_vae import VAE_KINDS, train_vae

    _tiny_wan_vae().save_pretrained(tmp_path / "start" / "vae")
    start = VAE_KINDS["wan"].load(tmp_path / "start" / "vae").state_dict()
    log = train_vae(tmp_path / "tuned", steps=2, batch=2, num_clips=3, lr=1e-2, threads=1, kind="wan", eval_clips=2,
                    window=1, crop=48, init_from=tmp_path / "start" / "vae")
    tuned = VAE_KINDS["wan"].load(tmp_path / "tuned" / "vae").state_dict()
    temporal = [k for k in start if ".time_conv." in k]
    spatial = [k for k in start if k.startswith(("encoder.conv_in", "decoder.conv_out"))]
    assert temporal and all(torch.equal(start[k], tuned[k]) for k in temporal)
    assert spatial and all(not torch.equal(start[k], tuned[k]) for k in spatial)
    assert (log["window"], log["crop"]) == (1, 48)
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        train_vae(tmp_path / "bad", steps=1, kind="wan", window=4)


def test_decoder_only_needs_a_trained_vae(tmp_path):
    from toyworld.train_vae import train_vae

    with pytest.raises(ValueError, match="init_from"):
        train_vae(tmp_path, steps=1, kind="wan", decoder_only=True)


def test_whole_frame_windows_and_the_outline_term():
    """``crop`` >= the frame keeps whole frames; the outline term is zero for a perfect reconstruction and sees corners."""
    from toyworld.train_vae import _wan_window, spatial_gradient_l1

    clips = torch.rand(3, 3, 17, 64, 64) * 2 - 1
    g = torch.Generator().manual_seed(0)
    windows = _wan_window(clips, g, 9, 64)
    assert windows.shape == (3, 3, 9, 64, 64)
    starts = torch.randint(17 - 9 + 1, (3,), generator=torch.Generator().manual_seed(0)).tolist()
    assert all(torch.equal(w, c[:, s : s + 9]) for w, c, s in zip(windows, clips, starts))
    assert _wan_window(clips, torch.Generator().manual_seed(0), 5, 32).shape == (3, 3, 5, 32, 32)
    square = torch.zeros(1, 1, 16, 16)
    square[..., 4:12, 4:12] = 1.0
    rounded = square.clone()
    rounded[..., [4, 4, 11, 11], [4, 11, 4, 11]] = 0.0  # the four corner pixels cut off
    assert float(spatial_gradient_l1(square, square)) == 0.0
    assert float(spatial_gradient_l1(rounded, square)) > 0.0
