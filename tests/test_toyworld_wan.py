"""The toy world at 1 + 4k frames and 64x64, the Wan VAE's latent-normalisation fold, and the bundled toy-world Wan.

The bundled folder is checked the way ComfyUI and diffusers will read it: diffusers' WanPipeline loads and runs it,
the DiT has heads of 128 and the fixed fields ComfyUI assumes, the VAE has the fields ComfyUI's Wan 2.1 loader fixes,
and its raw latents match the Wan 2.1 constants (the fold).
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


def test_a_17_frame_64px_clip_scales_object_and_speed_with_the_canvas():
    clips = [world.random_clip(500 + i, num_frames=17, height=64, width=64) for i in range(12)]
    assert clips[0].frames.shape == (17, 64, 64, 3)
    assert all(16.0 <= c.size <= 20.0 for c in clips)  # (9 +- 1) * 2
    speeds = torch.cat([(c.centres[1:] - c.centres[:-1]).norm(dim=1) for c in clips])
    assert 2.0 - 1e-4 <= float(speeds.median()) <= 6.0 + 1e-4  # (1..3 px/frame) * 2, bounces shorten a few steps
    assert float(speeds.max()) <= 6.0 + 1e-4
    assert all(abs(c.meta["turn"]) <= 0.5 * 7 / 16 + 1e-9 for c in clips)  # a curve turns as much in total as at 8 frames
    paths = world.reference_trajectories(17, 64)
    assert all(p.shape == (17, 2) for p in paths.values())
    x = paths["bounce"][:, 0]
    assert float(x.max()) <= 64 - 9.0 + 1e-4 and float(x[x.argmax() + 1]) < float(x.max())  # bounces off the right wall
    assert float((x[1] - x[0])) == pytest.approx(6.0)  # 3 px/frame at 32 -> 6 at 64


def test_detector_finds_colour_shape_and_position_on_the_larger_canvas():
    result = self_check(num_clips=24, num_frames=17, size=64)
    assert result["colour_acc"] == result["shape_acc"] == result["presence"] == 1.0
    assert result["centroid_err_px"] < 2.0  # the triangle's area centroid sits size/6 = 3 px below its box centre


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
