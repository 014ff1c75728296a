"""The Latte family on a tiny random Latte folder (``LattePipeline`` layout, T5 text encoder), through the real loader."""

from __future__ import annotations

import pytest
import torch
from conftest import moving_square_clip
from torch import nn

from motion_core import cli
from motion_core.families.block_stack import TRAINING_BYTES_PER_EMBEDDING_VALUE, embedding_training_bytes
from motion_core.attention import MotionAttnProcessor, PlainFrameAttnProcessor
from motion_core.diffusion import encode_frames, encode_prompt
from motion_core.embedding import EmbeddingInfo, zero_embedding
from motion_core.embedding_file import load_embedding, read_embedding_info
from motion_core.errors import IncompatibleEmbeddingError, InvalidSettingError
from motion_core.families import detect_family
from motion_core.families.latte import LatteFamily
from motion_core.model_loading import VideoModel, clear_model_cache, load_video_model
from motion_core.patching import installed_processors
from motion_core.sampling import AppliedMotion, SamplingConfig, sample_video
from motion_core.testing.tiny_models import save_tiny_latte_model
from motion_core.training import TrainingConfig, evaluation_loss, train_motion_embedding
from motion_core.video_io import read_video_frames

PROMPT = "a red square"
FRAMES = 6  # the tiny model's video_length: a Latte model runs exactly that many frames


@pytest.fixture(scope="session")
def tiny_latte_dir(tmp_path_factory):
    return save_tiny_latte_model(tmp_path_factory.mktemp("models") / "tiny-latte", seed=0)


@pytest.fixture
def latte(tiny_latte_dir) -> VideoModel:
    clear_model_cache()
    return load_video_model(tiny_latte_dir, "fp32", "auto", "cpu", use_cache=False)


@pytest.fixture
def clip() -> torch.Tensor:
    return moving_square_clip(frames=FRAMES, size=32)


def config(**overrides) -> TrainingConfig:
    settings = dict(prompt=PROMPT, steps=4, learning_rate=0.05, layer_set="all", inversion_steps=0, save_every=0)
    return TrainingConfig(**{**settings, **overrides})


def small(**overrides) -> SamplingConfig:
    settings = dict(prompt=PROMPT, width=32, height=32, frames=FRAMES, steps=3, guidance_scale=3.0)
    return SamplingConfig(**{**settings, **overrides})


def _info(model: VideoModel, layer_set: str, h: int, w: int) -> EmbeddingInfo:
    sites = model.family.select_sites(model.denoiser, layer_set, h, w)
    return EmbeddingInfo("latte", dict(model.identity), tuple(sites), w * 2, h * 2, FRAMES, h, w)  # tiny VAE: 2x


def _forward(model: VideoModel, latents: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    return model.family.predict(model, latents, torch.tensor([500]), text)


def test_a_latte_folder_loads_as_the_latte_family(latte, tiny_latte_dir):
    assert isinstance(detect_family(tiny_latte_dir), LatteFamily)
    assert latte.family.name == "latte" and type(latte.denoiser).__name__ == "LatteTransformer3DModel"
    assert type(latte.text_encoder).__name__ == "T5EncoderModel"  # the class model_index.json names
    assert latte.size_multiple == 4  # the tiny VAE's 2 x patch 2


def test_sites_are_the_temporal_blocks_and_the_value_grid_is_at_most_two_a_side(latte):
    family, transformer = latte.family, latte.denoiser
    sites = family.find_sites(transformer)
    assert [s.name for s in sites] == ["temporal_transformer_blocks.0", "temporal_transformer_blocks.1"]
    assert all(s.attention_names == (f"{s.name}.attn1",) and s.channels == 16 for s in sites)
    assert family.layer_sets[0] == "all" and len(family.select_sites(transformer, "all", 8, 8)) == 2
    assert [s.name for s in family.select_sites(transformer, "alternate", 8, 8)] == ["temporal_transformer_blocks.0"]
    assert [s.name for s in family.select_sites(transformer, "last_half", 8, 8)] == ["temporal_transformer_blocks.1"]
    # the patch grid halved to LATTE_VALUE_GRID_MAX_SIDE (2) on its longer side
    assert family.select_sites(transformer, "all", 16, 16)[0].grid(16, 16) == (2, 2)  # 8x8 patches
    assert family.select_sites(transformer, "all", 64, 48)[0].grid(64, 48) == (2, 2)  # 32x24 patches
    assert family.select_sites(transformer, "all", 8, 4)[0].grid(8, 4) == (2, 1)  # 4x2 patches
    with pytest.raises(InvalidSettingError, match="Unknown layer set 'paper' for latte"):
        family.select_sites(transformer, "paper", 8, 8)


def test_processors_go_on_the_temporal_attention_only(latte):
    info = _info(latte, "alternate", 16, 16)
    processors = latte.family.build_processors(latte, info.blocks, grid=(FRAMES, 16, 16))
    assert set(processors) == {"temporal_transformer_blocks.0.attn1", "temporal_transformer_blocks.1.attn1"}
    assert type(processors["temporal_transformer_blocks.0.attn1"]) is MotionAttnProcessor
    assert isinstance(processors["temporal_transformer_blocks.1.attn1"], PlainFrameAttnProcessor)
    spatial = {n: type(m.processor) for n, m in latte.denoiser.named_modules() if hasattr(m, "processor") and n not in processors}
    with installed_processors(latte.denoiser, processors):
        assert {n: type(m.processor) for n, m in latte.denoiser.named_modules() if n in spatial} == spatial


def test_zero_embeddings_give_exactly_the_unpatched_output_with_the_same_kernel(latte, clip):
    latents = encode_frames(latte, clip)
    text = torch.cat([encode_prompt(latte, ""), encode_prompt(latte, PROMPT)])  # guidance batch of 2
    batch = torch.cat([latents, latents + 0.1])
    zero = zero_embedding(_info(latte, "all", 16, 16))
    with torch.no_grad():
        with installed_processors(latte.denoiser, latte.family.build_processors(latte, grid=(FRAMES, 16, 16))):
            plain = _forward(latte, batch, text)
        processors = latte.family.build_processors(latte, zero.info.blocks, zero.query_key, zero.value, (FRAMES, 16, 16))
        with installed_processors(latte.denoiser, processors):
            patched = _forward(latte, batch, text)
        diffusers_own = _forward(latte, batch, text)
    assert torch.equal(plain, patched)
    torch.testing.assert_close(plain, diffusers_own, rtol=1e-4, atol=1e-5)  # the pack's kernel vs diffusers' processors


def test_the_prompt_mask_gives_what_the_latte_pipeline_gives(latte, clip):
    """LattePipeline cuts a single prompt's padding off and reads the noise from the first half of a learned-variance
    output; the family masks the padding instead (so a guided batch keeps each prompt's own mask)."""
    latents = encode_frames(latte, clip)
    text = encode_prompt(latte, PROMPT)
    real = int((text.abs().amax(-1) > 0).sum())
    assert 0 < real < text.shape[1] and torch.count_nonzero(text[:, real:]) == 0
    with torch.no_grad():
        ours = _forward(latte, latents, text)
        pipeline = latte.denoiser(latents, timestep=torch.tensor([500]), encoder_hidden_states=text[:, :real]).sample
        unmasked = latte.denoiser(latents, timestep=torch.tensor([500]), encoder_hidden_states=text).sample
    assert pipeline.shape[1] == 2 * ours.shape[1]
    torch.testing.assert_close(ours, pipeline[:, :4], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(ours, unmasked[:, :4], rtol=1e-3, atol=1e-4)  # the mask matters
    guided = _forward(latte, torch.cat([latents, latents]), torch.cat([encode_prompt(latte, ""), text]))
    torch.testing.assert_close(guided[1:], ours, rtol=1e-4, atol=1e-5)


def test_only_the_embeddings_get_gradients_and_checkpointing_keeps_them(latte):
    # 40x40 latent: 20x20 patches and a 2x2 value grid, brought to the patches inside the processor
    latents = torch.randn(1, 4, FRAMES, 40, 40)
    text = encode_prompt(latte, PROMPT)
    info = _info(latte, "all", 40, 40)
    assert info.blocks[0].grid(40, 40) == (2, 2)
    torch.manual_seed(0)
    start = zero_embedding(info)
    query_key = {k: nn.Parameter(torch.randn_like(v) * 0.1) for k, v in start.query_key.items()}
    value = {k: nn.Parameter(torch.randn_like(v) * 0.1) for k, v in start.value.items()}
    assert value["temporal_transformer_blocks.0.attn1"].shape == (4, FRAMES, 16)
    grads = []
    for checkpointing in (False, True):
        processors = latte.family.build_processors(latte, info.blocks, query_key, value, (FRAMES, 40, 40))
        with torch.enable_grad(), installed_processors(latte.denoiser, processors), \
                latte.family.gradient_checkpointing(latte.denoiser, checkpointing):
            _forward(latte, latents, text).square().mean().backward()
        grads.append({k: p.grad.clone() for k, p in [*query_key.items(), *value.items()]})
        for p in [*query_key.values(), *value.values()]:
            p.grad = None
    assert all(g.abs().sum() > 0 for g in grads[0].values())
    assert all(p.grad is None for p in latte.denoiser.parameters())
    assert not latte.denoiser.gradient_checkpointing  # switched back off
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7)


def test_training_lowers_the_loss_and_the_file_loads_back(latte, clip, tmp_path):
    path = tmp_path / "latte.safetensors"
    result = train_motion_embedding(latte, clip, config(steps=30, learning_rate=0.05, inversion_steps=4), path)
    before = evaluation_loss(latte, clip, PROMPT, None)
    after = evaluation_loss(latte, clip, PROMPT, result.embedding)
    assert after < 0.9 * before
    info, shapes = read_embedding_info(path)
    assert (info.family, info.train_frames, info.extra["layer_set"]) == ("latte", FRAMES, "all")
    assert shapes["query_key.temporal_transformer_blocks.0"] == (1, FRAMES, 16)
    assert shapes["value.temporal_transformer_blocks.0.attn1"] == (4, FRAMES, 16)  # 16x16 latent: 8x8 patches, 2x2 grid
    assert shapes["inverted_latent"] == (4, FRAMES, 16, 16)
    # the pre-flight estimate counts exactly the values trained (value, gradient and two AdamW moments each)
    state = embedding_training_bytes(latte.family.select_sites(latte.denoiser, "all", 16, 16), FRAMES, 16, 16)
    assert state == TRAINING_BYTES_PER_EMBEDDING_VALUE * result.embedding.num_parameters
    loaded = load_embedding(path)
    for name, tensor in result.embedding.value.items():
        assert torch.equal(loaded.value[name], tensor)


@pytest.mark.parametrize("loss", ["debiased_temporal", "debiased_hybrid"])
def test_the_debiased_losses_train_on_latte(latte, clip, loss):
    result = train_motion_embedding(latte, clip, config(steps=2, loss=loss, lora_rank=2, layer_set="alternate"))
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    assert result.embedding.info.default_mode == ("camera" if loss == "debiased_hybrid" else "raw")


def test_an_embedding_samples_at_other_sizes_and_other_frame_counts_are_refused(latte, clip):
    trained = train_motion_embedding(latte, clip, config(steps=2, inversion_steps=2)).embedding
    frames = sample_video(latte, small(width=64, height=96), AppliedMotion(trained))
    assert frames.shape == (FRAMES, 96, 64, 3) and torch.isfinite(frames).all()
    euler = sample_video(latte, small(scheduler="euler", steps=2), AppliedMotion(trained))  # float timesteps
    assert euler.shape == (FRAMES, 32, 32, 3) and torch.isfinite(euler).all()
    with pytest.raises(InvalidSettingError, match="runs exactly 6 frames.*7 were asked for"):
        sample_video(latte, small(frames=7, steps=1))
    with pytest.raises(InvalidSettingError, match="runs exactly 6 frames"):
        train_motion_embedding(latte, moving_square_clip(frames=5, size=32), config(steps=1))


def test_embeddings_do_not_cross_families(latte, tiny_model, clip, reference_clip):
    ours = train_motion_embedding(latte, clip, config(steps=1)).embedding
    theirs = train_motion_embedding(tiny_model, reference_clip, config(steps=1, layer_set="paper")).embedding
    with pytest.raises(IncompatibleEmbeddingError, match="'unet3d' model.*'latte' model"):
        sample_video(latte, small(), AppliedMotion(theirs))
    with pytest.raises(IncompatibleEmbeddingError, match="'latte' model.*'unet3d' model"):
        sample_video(tiny_model, small(), AppliedMotion(ours))


def test_cli_trains_and_samples_a_latte_folder(tiny_latte_dir, tmp_path):
    from motion_core.video_io import write_video

    video = tmp_path / "ref.mp4"
    write_video(moving_square_clip(frames=FRAMES, size=32), video, 8.0)
    embedding, out = tmp_path / "latte.safetensors", tmp_path / "out.mp4"
    common = ["--model", str(tiny_latte_dir), "--device", "cpu", "--width", "32", "--height", "32", "--prompt", PROMPT]
    assert cli.main(["train", *common, "--video", str(video), "--out", str(embedding), "--frames", str(FRAMES),
                     "--steps", "3", "--inversion-steps", "2"]) == 0
    assert cli.main(["sample", *common, "--embedding", str(embedding), "--out", str(out), "--frames", str(FRAMES),
                     "--steps", "2"]) == 0
    assert read_video_frames(out).frames.shape == (FRAMES, 32, 32, 3)


def test_the_nodes_list_load_train_and_sample_a_latte_folder(pack, tiny_latte_dir, tmp_path):
    import shutil

    from motion_core.video_io import write_video

    bridge = pack.nodes.comfy_bridge
    bridge.use_standalone_folders(tmp_path)
    shutil.copytree(tiny_latte_dir, tmp_path / "models" / "diffusers" / "tiny-latte")
    (tmp_path / "input").mkdir()
    write_video(moving_square_clip(frames=FRAMES, size=32), tmp_path / "input" / "square.mp4", 8.0)
    pack.motion_core.model_loading.clear_model_cache()
    assert "tiny-latte" in bridge.list_video_models()

    def run(name, **kwargs):
        cls = pack.NODE_CLASS_MAPPINGS[name]
        with torch.inference_mode():  # as ComfyUI's executor does
            out = getattr(cls(), cls.FUNCTION)(**kwargs)
        return out["result"] if isinstance(out, dict) and "result" in out else out

    (model,) = run("MI_LoadVideoModel", model="tiny-latte", precision="fp32", attention="auto")
    assert model.model.family.name == "latte"
    frames, _, _ = run("MI_LoadVideoFrames", video="square.mp4", start_frame=0, frame_stride=1, frame_count=FRAMES,
                       width=32, height=32, resize_mode="crop")
    embedding, _ = run("MI_TrainMotionEmbedding", model=model, frames=frames, prompt=PROMPT, steps=2, learning_rate=0.05,
                       loss="base", layers="auto", width=32, height=32, frame_count=FRAMES, seed=0,
                       gradient_checkpointing="auto", save_every=0, filename_prefix="tests/latte")
    assert embedding.info.family == "latte" and embedding.info.extra["layer_set"] == "all"
    (applied,) = run("MI_ApplyMotionEmbedding", model=model, motion_embedding=embedding, strength=1.0, mode="object")
    (video,) = run("MI_MotionSampler", model=applied, prompt="a blue circle", negative_prompt="", width=32, height=32,
                   frames=FRAMES, steps=2, cfg=3.0, seed=0, scheduler="ddim", noise_prior=0.5)
    assert video.shape == (FRAMES, 32, 32, 3) and torch.isfinite(video).all()
