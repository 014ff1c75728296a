"""The Wan family on tiny random Wan folders, loaded through the real loader (``WanPipeline`` layout)."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import moving_square_clip
from torch import nn

from motion_core import cli
from motion_core.families.block_stack import TRAINING_BYTES_PER_EMBEDDING_VALUE, embedding_training_bytes
from motion_core.diffusion import encode_frames, encode_prompt
from motion_core.embedding import EmbeddingInfo, prepare_for_sampling, zero_embedding
from motion_core.embedding_file import load_embedding, read_embedding_info
from motion_core.errors import IncompatibleEmbeddingError, InvalidSettingError
from motion_core.families import ALL_LAYER_SETS, ALL_SCHEDULERS
from motion_core.families.wan import WanFamily, value_grid_level
from motion_core.families.wan_attention import WanMotionAttnProcessor
from motion_core.model_loading import VideoModel, clear_model_cache, load_video_model
from motion_core.patching import installed_processors
from motion_core.sampling import AppliedMotion, SamplingConfig, sample_video
from motion_core.testing.tiny_models import TINY_WAN_CONFIG, save_tiny_wan_model
from motion_core.training import TrainingConfig, evaluation_loss, train_motion_embedding
from motion_core.video_io import read_video_frames

PROMPT = "a red square"


@pytest.fixture(scope="session")
def tiny_wan_dir(tmp_path_factory):
    return save_tiny_wan_model(tmp_path_factory.mktemp("models") / "tiny-wan", seed=0)


@pytest.fixture
def wan(tiny_wan_dir) -> VideoModel:
    clear_model_cache()
    return load_video_model(tiny_wan_dir, "fp32", "auto", "cpu", use_cache=False)


@pytest.fixture
def clip() -> torch.Tensor:
    return moving_square_clip(frames=9, size=32)


def config(**overrides) -> TrainingConfig:
    settings = dict(prompt=PROMPT, steps=4, learning_rate=0.05, layer_set="all", inversion_steps=0, save_every=0)
    return TrainingConfig(**{**settings, **overrides})


def small(**overrides) -> SamplingConfig:
    settings = dict(prompt=PROMPT, width=32, height=32, frames=9, steps=3, guidance_scale=3.0, scheduler="euler")
    return SamplingConfig(**{**settings, **overrides})


def _info(model: VideoModel, layer_set: str, latent: tuple[int, int, int]) -> EmbeddingInfo:
    frames, h, w = latent
    sites = model.family.select_sites(model.denoiser, layer_set, h, w)
    return EmbeddingInfo("wan", dict(model.identity), tuple(sites), w * 8, h * 8, 1 + 4 * (frames - 1), h, w, latent_frames=frames)


def _forward(model: VideoModel, latents: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    return model.family.predict(model, latents, torch.tensor([0.6]), text)


def test_a_wan_folder_loads_as_the_wan_family(wan):
    assert wan.family.name == "wan" and isinstance(wan.family, WanFamily)
    assert wan.unet is wan.denoiser and type(wan.denoiser).__name__ == "WanTransformer3DModel"
    assert (wan.size_multiple, wan.vae_scale_factor, wan.latent_channels) == (16, 8, 16)
    assert wan.family.shift(wan) == 3.0  # FlowMatchEulerDiscreteScheduler's ``shift``
    assert not any(p.requires_grad for p in wan.denoiser.parameters())


def test_a_tiny_wan_folder_of_another_text_dim_gets_a_text_encoder_that_wide(tmp_path):
    # What benchmarks/bench_training.py --family wan builds at Wan 2.1's text_dim 4096, here at 48.
    folder = save_tiny_wan_model(tmp_path / "wide-text", config={**TINY_WAN_CONFIG, "text_dim": 48})
    model = load_video_model(folder, "fp32", "auto", "cpu", use_cache=False)
    text = encode_prompt(model, PROMPT)
    assert text.shape[-1] == model.text_encoder.config.hidden_size == model.denoiser.config.text_dim == 48
    assert _forward(model, torch.randn(1, 16, 2, 4, 4), text).shape == (1, 16, 2, 4, 4)


def test_the_shift_of_a_unipc_scheduler_config_sets_the_schedules(tmp_path):
    from motion_core import flow_matching as fm

    model = load_video_model(save_tiny_wan_model(tmp_path / "unipc-wan", scheduler="unipc"), "fp32", "auto", "cpu", use_cache=False)
    assert type(model.scheduler).__name__ == "UniPCMultistepScheduler" and model.family.shift(model) == 5.0
    assert model.family.make_sampler(model, "euler", 4, 0).sigmas == pytest.approx(fm.sampling_sigmas(4, 5.0).tolist())
    draws = torch.cat([model.family.draw_timestep(model, torch.Generator().manual_seed(i)) for i in range(200)])
    assert draws.median() > 0.7  # shift 5 bends uniform draws toward the noisy end (unshifted median 0.5)


def test_layer_sets_are_fractions_of_depth_and_the_value_grid_stays_small():
    from diffusers import WanTransformer3DModel

    family = WanFamily()
    deep = WanTransformer3DModel(**{**TINY_WAN_CONFIG, "num_layers": 6})
    picked = {name: [s.name for s in family.select_sites(deep, name, 4, 4)] for name in family.layer_sets}
    assert picked == {
        "alternate": ["blocks.0", "blocks.2", "blocks.4"],
        "all": [f"blocks.{i}" for i in range(6)],
        "first_half": ["blocks.0", "blocks.1", "blocks.2"],
        "last_half": ["blocks.3", "blocks.4", "blocks.5"],
    }
    assert all(s.attention_names == (f"{s.name}.attn1",) and s.channels == 24 for s in family.find_sites(deep))
    # Wan 2.1 at 480x832: latent 60x104 -> tokens 30x52 -> value grid 8x13; a 64x64 toy keeps its 4x4 tokens.
    level = value_grid_level(60, 104)
    assert level == 3 and family.select_sites(deep, "all", 60, 104)[0].grid(60, 104) == (8, 13)
    assert value_grid_level(8, 8) == 1
    assert set(family.layer_sets) <= set(ALL_LAYER_SETS) and "euler" in ALL_SCHEDULERS


def test_processors_go_only_on_the_selected_attn1(wan):
    processors = wan.family.build_processors(wan, _info(wan, "alternate", (3, 4, 4)).blocks, grid=(3, 4, 4))
    assert set(processors) == {"blocks.0.attn1"}
    before = {name: type(m.processor) for name, m in wan.denoiser.named_modules() if hasattr(m, "processor")}
    with installed_processors(wan.denoiser, processors):
        now = {name: type(m.processor) for name, m in wan.denoiser.named_modules() if hasattr(m, "processor")}
        assert now["blocks.0.attn1"] is WanMotionAttnProcessor
        assert {k: v for k, v in now.items() if k != "blocks.0.attn1"} == {k: v for k, v in before.items() if k != "blocks.0.attn1"}
    assert {name: type(m.processor) for name, m in wan.denoiser.named_modules() if hasattr(m, "processor")} == before


def test_zero_embeddings_give_exactly_the_unpatched_output(wan, clip):
    latents = encode_frames(wan, clip)
    text = torch.cat([encode_prompt(wan, ""), encode_prompt(wan, PROMPT)])  # guidance batch of 2
    batch = torch.cat([latents, latents + 0.1])
    grid = tuple(latents.shape[2:])
    zero = zero_embedding(_info(wan, "all", grid))
    with torch.no_grad():
        plain = _forward(wan, batch, text)
        with installed_processors(wan.denoiser, wan.family.build_processors(wan, zero.info.blocks, zero.query_key, zero.value, grid)):
            patched = _forward(wan, batch, text)
    assert torch.equal(plain, patched)


def test_only_the_embeddings_get_gradients_and_checkpointing_keeps_them(wan, clip):
    latents = encode_frames(wan, clip)
    text = encode_prompt(wan, PROMPT)
    grid = tuple(latents.shape[2:])
    info = _info(wan, "all", grid)
    torch.manual_seed(0)
    start = zero_embedding(info)
    query_key = {k: nn.Parameter(torch.randn_like(v) * 0.1) for k, v in start.query_key.items()}
    value = {k: nn.Parameter(torch.randn_like(v) * 0.1) for k, v in start.value.items()}
    grads = []
    for checkpointing in (False, True):
        processors = wan.family.build_processors(wan, info.blocks, query_key, value, grid)
        with torch.enable_grad(), installed_processors(wan.denoiser, processors), wan.family.gradient_checkpointing(wan.denoiser, checkpointing):
            assert wan.denoiser.is_gradient_checkpointing == checkpointing
            _forward(wan, latents, text).square().mean().backward()
        grads.append({k: p.grad.clone() for k, p in [*query_key.items(), *value.items()]})
        for p in [*query_key.values(), *value.values()]:
            p.grad = None
    assert not wan.denoiser.is_gradient_checkpointing
    assert all(g.abs().sum() > 0 for g in grads[0].values())
    assert all(p.grad is None for p in wan.denoiser.parameters())
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7)


def test_training_lowers_the_loss_on_a_fixed_clip_and_saves_format_3(wan, clip, tmp_path):
    path = tmp_path / "wan.safetensors"
    result = train_motion_embedding(wan, clip, config(steps=30, learning_rate=0.05, inversion_steps=4), path)
    before = evaluation_loss(wan, clip, PROMPT, None)
    after = evaluation_loss(wan, clip, PROMPT, result.embedding)
    assert after < 0.9 * before
    info, shapes = read_embedding_info(path)
    assert (info.family, info.train_frames, info.latent_frames, info.frames) == ("wan", 9, 3, 3)
    assert info.extra["flow_shift"] == 3.0 and info.extra["layer_set"] == "all"
    assert shapes["query_key.blocks.0"] == (1, 3, 24) and shapes["value.blocks.0.attn1"] == (4, 3, 24)
    assert shapes["inverted_latent"] == (16, 3, 4, 4)
    # the memory estimate counts exactly the values trained (value, gradient and two AdamW moments each)
    state = embedding_training_bytes(wan.family.select_sites(wan.denoiser, "all", 4, 4), 3, 4, 4)  # latent frames, grid
    assert state == TRAINING_BYTES_PER_EMBEDDING_VALUE * result.embedding.num_parameters
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        assert handle.metadata()["format_version"] == "3" and handle.metadata()["latent_frames"] == "3"
    loaded = load_embedding(path)
    for name, tensor in result.embedding.value.items():
        assert torch.equal(loaded.value[name], tensor)
    assert torch.equal(loaded.inverted_latent, result.embedding.inverted_latent)


def test_a_bf16_wan_model_trains_and_samples_with_fp32_embeddings(tiny_wan_dir, clip):
    model = load_video_model(tiny_wan_dir, "bf16", "auto", "cpu", use_cache=False)
    assert model.denoiser.dtype == torch.bfloat16 and model.denoiser.scale_shift_table.dtype == torch.float32  # kept fp32
    result = train_motion_embedding(model, clip, config(steps=3, inversion_steps=2))
    assert all(t.dtype == torch.float32 for t in result.embedding.value.values())
    assert result.losses[-1] < result.losses[0]
    frames = sample_video(model, small(steps=2), AppliedMotion(result.embedding))
    assert frames.shape == (9, 32, 32, 3) and torch.isfinite(frames).all()


def test_resuming_an_interrupted_wan_run_matches_an_uninterrupted_one(wan, clip, tmp_path):
    full = train_motion_embedding(wan, clip, config(steps=6))
    path = tmp_path / "part.safetensors"

    def stop_at_three(done, total, loss):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_motion_embedding(wan, clip, config(steps=6), path, on_step=stop_at_three)
    partial = load_embedding(path)
    assert partial.info.steps == 3 and partial.info.latent_frames == 3 and partial.training_state
    resumed = train_motion_embedding(wan, clip, config(steps=6), resume=partial)
    assert resumed.losses == pytest.approx(full.losses[3:], rel=1e-5)
    for name, tensor in full.embedding.query_key.items():
        torch.testing.assert_close(resumed.embedding.query_key[name], tensor, rtol=1e-5, atol=1e-7)


def test_flow_inversion_walks_the_sampler_sigmas_up_to_one(wan, clip):
    seen: list[float] = []
    handle = wan.denoiser.register_forward_pre_hook(lambda m, args, kwargs: seen.append(float(kwargs["timestep"][0])), with_kwargs=True)
    try:
        inverted = wan.family.invert(wan, encode_frames(wan, clip), encode_prompt(wan, ""), 5)
    finally:
        handle.remove()
    sampler = wan.family.make_sampler(wan, "euler", 5, 0)
    assert seen == pytest.approx(sorted(s * 1000 for s in sampler.sigmas[1:]), rel=1e-6)  # 0 first, never 1000
    assert seen[0] == 0.0 and inverted.shape == (1, 16, 3, 4, 4) and torch.isfinite(inverted).all()


def test_frames_are_rounded_to_one_plus_four_k_with_a_message(wan, caplog):
    with caplog.at_level(logging.INFO, logger="motion_core"):
        result = train_motion_embedding(wan, moving_square_clip(frames=11, size=32), config(steps=1))
        frames = sample_video(wan, small(frames=8, guidance_scale=1.0))
    assert "using 9 of the 11 frames" in caplog.text and "using 5 of the 8 frames" in caplog.text
    assert (result.embedding.info.train_frames, result.embedding.info.latent_frames) == (9, 3)
    assert frames.shape == (5, 32, 32, 3)
    with pytest.raises(InvalidSettingError, match="at least 5 frames"):
        train_motion_embedding(wan, moving_square_clip(frames=4, size=32), config(steps=1))


def test_an_embedding_resamples_to_other_frame_counts_and_sizes(wan, clip):
    trained = train_motion_embedding(wan, clip, config(steps=2, inversion_steps=2)).embedding
    prepared = prepare_for_sampling(trained, 4, 6, 8, "object")
    assert prepared.value["blocks.0.attn1"].shape == (12, 4, 24) and prepared.inverted_latent.shape == (16, 4, 6, 8)
    frames = sample_video(wan, small(frames=13, width=64, height=48), AppliedMotion(trained))
    assert frames.shape == (13, 48, 64, 3) and torch.isfinite(frames).all()


def test_embeddings_do_not_cross_families(wan, tiny_model, clip, reference_clip):
    wan_embedding = train_motion_embedding(wan, clip, config(steps=1)).embedding
    unet_embedding = train_motion_embedding(tiny_model, reference_clip, config(steps=1, layer_set="paper")).embedding
    with pytest.raises(IncompatibleEmbeddingError, match="'unet3d' model.*'wan' model"):
        sample_video(wan, small(), AppliedMotion(unet_embedding))
    with pytest.raises(IncompatibleEmbeddingError, match="'wan' model.*'unet3d' model"):
        sample_video(tiny_model, SamplingConfig(prompt=PROMPT, width=32, height=32, frames=6, steps=2), AppliedMotion(wan_embedding))


@pytest.mark.parametrize(
    "overrides, message",
    [({"loss": "debiased_hybrid"}, "not available for Wan.*debiased_temporal"), ({"layer_set": "paper"}, "alternate, all")],
)
def test_unet3d_only_training_settings_are_refused_on_wan(wan, clip, overrides, message):
    with pytest.raises(InvalidSettingError, match=message):
        train_motion_embedding(wan, clip, config(**overrides))


def test_unimplemented_schedulers_are_refused_on_wan(wan):
    with pytest.raises(InvalidSettingError, match="'ddim' is not available for wan models; choose one of euler"):
        sample_video(wan, small(scheduler="ddim"))


def test_cli_trains_and_samples_a_wan_folder(tiny_wan_dir, tmp_path):
    from motion_core.video_io import write_video

    video = tmp_path / "ref.mp4"
    write_video(moving_square_clip(frames=9, size=32), video, 8.0)
    embedding, out = tmp_path / "wan.safetensors", tmp_path / "out.mp4"
    common = ["--model", str(tiny_wan_dir), "--device", "cpu", "--width", "32", "--height", "32", "--prompt", PROMPT]
    assert cli.main(["train", *common, "--video", str(video), "--out", str(embedding), "--frames", "9", "--steps", "3",
                     "--layers", "alternate", "--inversion-steps", "2"]) == 0
    assert cli.main(["sample", *common, "--embedding", str(embedding), "--out", str(out), "--frames", "9",
                     "--steps", "2", "--scheduler", "euler"]) == 0
    frames = read_video_frames(out).frames
    assert frames.shape == (9, 32, 32, 3)


def test_the_nodes_list_load_train_and_sample_a_wan_folder(pack, tiny_wan_dir, tmp_path):
    import shutil

    from motion_core.video_io import write_video

    bridge = pack.nodes.comfy_bridge
    bridge.use_standalone_folders(tmp_path)
    shutil.copytree(tiny_wan_dir, tmp_path / "models" / "diffusers" / "tiny-wan")
    (tmp_path / "input").mkdir()
    write_video(moving_square_clip(frames=9, size=32), tmp_path / "input" / "square.mp4", 8.0)
    pack.motion_core.model_loading.clear_model_cache()
    assert "tiny-wan" in bridge.list_video_models()
    train_inputs = pack.NODE_CLASS_MAPPINGS["MI_TrainMotionEmbedding"].INPUT_TYPES()["required"]
    sample_inputs = pack.NODE_CLASS_MAPPINGS["MI_MotionSampler"].INPUT_TYPES()["required"]
    assert {"paper", "alternate", "last_half"} <= set(train_inputs["layers"][0]) and "euler" in sample_inputs["scheduler"][0]

    def run(name, **kwargs):
        cls = pack.NODE_CLASS_MAPPINGS[name]
        with torch.inference_mode():  # as ComfyUI's executor does
            out = getattr(cls(), cls.FUNCTION)(**kwargs)
        return out["result"] if isinstance(out, dict) and "result" in out else out

    (model,) = run("MI_LoadVideoModel", model="tiny-wan", precision="fp32", attention="auto")
    assert model.model.family.name == "wan"
    frames, _, _ = run("MI_LoadVideoFrames", video="square.mp4", start_frame=0, frame_stride=1, frame_count=9,
                           width=32, height=32, resize_mode="crop")
    embedding, _ = run("MI_TrainMotionEmbedding", model=model, frames=frames, prompt=PROMPT, steps=2, learning_rate=0.05,
                       loss="debiased_temporal", layers="alternate", width=32, height=32, frame_count=9, seed=0,
                       gradient_checkpointing="auto", save_every=0, filename_prefix="tests/wan")
    assert (embedding.info.family, embedding.info.latent_frames) == ("wan", 3)
    (applied,) = run("MI_ApplyMotionEmbedding", model=model, motion_embedding=embedding, strength=1.0, mode="object")
    (video,) = run("MI_MotionSampler", model=applied, prompt="a blue circle", negative_prompt="", width=32, height=32,
                   frames=9, steps=2, cfg=3.0, seed=0, scheduler="euler", noise_prior=0.5)
    assert video.shape == (9, 32, 32, 3) and torch.isfinite(video).all()


def test_auto_layer_set_and_scheduler_are_each_familys_own_default(wan, tiny_model, clip, reference_clip):
    """The dataclass defaults ("auto") work on both families: Wan resolves them to alternate/euler, UNet3D to the
    paper's layer set and DDIM, and the resolved layer set (not "auto") is what the embedding file records."""
    wan_run = train_motion_embedding(wan, clip, TrainingConfig(prompt=PROMPT, steps=1, inversion_steps=0, save_every=0))
    assert TrainingConfig(prompt=PROMPT).layer_set == SamplingConfig(prompt=PROMPT).scheduler == "auto"
    assert wan_run.embedding.info.extra["layer_set"] == "alternate"
    assert [b.name for b in wan_run.embedding.info.blocks] == [b.name for b in wan.family.select_sites(wan.denoiser, "alternate", 4, 4)]
    frames = sample_video(wan, small(scheduler="auto", steps=1), AppliedMotion(wan_run.embedding))
    assert frames.shape == (9, 32, 32, 3)
    unet_run = train_motion_embedding(tiny_model, reference_clip, TrainingConfig(prompt=PROMPT, steps=1, inversion_steps=0, save_every=0))
    assert unet_run.embedding.info.extra["layer_set"] == "paper"
    assert tiny_model.family.resolve_scheduler("auto") == "ddim"


@pytest.mark.parametrize("mode", ["object", "raw", "camera"])
def test_block_motion_gives_every_block_the_inputs_the_diffusers_processors_use(wan, mode):
    """The native (ComfyUI) path's per-block inputs are the diffusers processors' inputs, at another grid and strength."""
    from motion_core.families.wan_native import WanBlockMotion
    from motion_core.motion_math import TokenLayout, motion_inputs

    trained = zero_embedding(_info(wan, "alternate", (3, 4, 4)))
    generator = torch.Generator().manual_seed(0)
    for tensor in [*trained.query_key.values(), *trained.value.values()]:
        tensor.copy_(torch.randn(tensor.shape, generator=generator))
    grid = (2, 6, 4)  # latent frames and size other than the training ones: both paths resample
    prepared = prepare_for_sampling(trained, *grid, mode, 0.7)
    processors = wan.family.build_processors(wan, trained.info.blocks, prepared.query_key, prepared.value, grid)
    motion = WanBlockMotion(trained, mode, 0.7)
    tokens = (2, 3, 2)
    hidden = torch.randn(2, 12, wan.denoiser.blocks[0].attn1.to_q.in_features, generator=generator)
    assert motion.block_indices == [int(b.name.split(".")[1]) for b in trained.info.blocks] and len(motion.block_indices) < len(wan.denoiser.blocks)
    for index in range(len(wan.denoiser.blocks)):
        qk_input, value_input = motion.inputs(index, hidden, tokens)
        processor = processors.get(f"blocks.{index}.attn1")
        if processor is None:
            assert qk_input is hidden and value_input is hidden
            continue
        expected = motion_inputs(hidden, processor.query_key, processor.value, processor.value_grid, TokenLayout(2, (3, 2), True))
        assert torch.equal(qk_input, expected[0]) and torch.equal(value_input, expected[1])
        assert not torch.equal(qk_input, hidden)


def test_block_motion_acts_only_inside_its_sigma_window(wan):
    """The native Apply's start/end percent: inside the noise-level window the inputs are the full patch's, outside
    (and while disabled) the plain input; a call that names no noise level (training) gets the embeddings."""
    from motion_core.families.wan_native import WanBlockMotion

    trained = zero_embedding(_info(wan, "alternate", (3, 4, 4)))
    generator = torch.Generator().manual_seed(1)
    for tensor in [*trained.query_key.values(), *trained.value.values()]:
        tensor.copy_(torch.randn(tensor.shape, generator=generator))
    motion = WanBlockMotion(trained, "object", 1.0)
    index = motion.block_indices[0]
    hidden = torch.randn(1, 3 * 2 * 2, wan.denoiser.blocks[index].attn1.to_q.in_features, generator=generator)
    full = motion.inputs(index, hidden, (3, 2, 2))
    motion.sigma_window = (1.0, 0.6)
    for sigma, acts in [(1.0, True), (0.8, True), (0.6, True), (0.59, False), (0.1, False), (None, True)]:
        qk_input, value_input = motion.inputs(index, hidden, (3, 2, 2), sigma)
        if acts:
            assert torch.equal(qk_input, full[0]) and torch.equal(value_input, full[1]), sigma
        else:
            assert qk_input is hidden and value_input is hidden, sigma
    motion.enabled = False
    assert motion.inputs(index, hidden, (3, 2, 2), 0.8)[0] is hidden


def test_block_motion_refuses_an_embedding_of_another_family(tiny_model, reference_clip):
    from motion_core.families.wan_native import WanBlockMotion

    unet = train_motion_embedding(tiny_model, reference_clip, TrainingConfig(prompt=PROMPT, steps=1, inversion_steps=0, save_every=0))
    with pytest.raises(InvalidSettingError, match="trained on a unet3d model"):
        WanBlockMotion(unet.embedding, "object", 1.0)


def test_motion_start_noise_blends_the_resampled_inverted_start_with_seeded_noise(pack, wan, clip):
    """MI_MotionStartNoise: prior 0 is plain seeded noise (core RandomNoise's draw: checked against ComfyUI in
    test_comfy_native_wan_integration.py), prior p the same blend the diffusers path starts from, at the latent's size."""
    from motion_core.embedding import resample_latent

    refused = pack.motion_core.errors.InvalidSettingError  # the pack's own copy of the class

    run = train_motion_embedding(wan, clip, config(steps=2, inversion_steps=3))
    inverted = run.embedding.inverted_latent
    assert inverted is not None and inverted.shape[1:] == (3, 4, 4)
    node = pack.NODE_CLASS_MAPPINGS["MI_MotionStartNoise"]()
    latent = {"samples": torch.zeros(1, 16, 5, 6, 4)}
    seeded = torch.randn(1, 16, 5, 6, 4, generator=torch.Generator().manual_seed(7))
    (plain,) = node.make(run.embedding, 0.0, 7)
    assert torch.equal(plain.generate_noise(latent), seeded) and plain.seed == 7
    (blended,) = node.make(run.embedding, 0.5, 7)
    expected = 0.5**0.5 * resample_latent(inverted, 5, 6, 4).unsqueeze(0) + 0.5**0.5 * seeded
    assert torch.allclose(blended.generate_noise(latent), expected, atol=1e-6)
    with pytest.raises(refused, match="video latents"):
        blended.generate_noise({"samples": torch.zeros(1, 4, 8, 8)})
    with pytest.raises(refused, match="another VAE"):
        blended.generate_noise({"samples": torch.zeros(1, 4, 5, 6, 4)})
    no_start = train_motion_embedding(wan, clip, config(steps=1, inversion_steps=0)).embedding
    with pytest.raises(refused, match="no inverted start latent"):
        node.make(no_start, 0.5, 7)


def test_encode_prompt_with_model_gives_the_familys_masked_encoding_as_conditioning(pack, tiny_wan_dir):
    """MI_EncodePromptWithModel: CONDITIONING ``[[cond (1, L, D), {}]]`` equal to what the diffusers path conditions on."""
    loaded = pack.motion_core.model_loading.load_video_model(tiny_wan_dir, "fp32", "auto", "cpu", use_cache=False)
    node = pack.NODE_CLASS_MAPPINGS["MI_EncodePromptWithModel"]()
    (conditioning,) = node.encode(pack.nodes.handles.MotionModel(loaded), PROMPT)
    [[cond, extra]] = conditioning
    assert extra == {} and cond.dtype == torch.float32
    assert torch.equal(cond, loaded.family.encode_prompt(loaded, PROMPT).float())
    (empty,) = node.encode(pack.nodes.handles.MotionModel(loaded), "")
    assert not torch.equal(empty[0][0], cond)
