"""The AnimateDiff family on a tiny random AnimateDiff folder (``AnimateDiffPipeline`` layout), through the real loader."""

from __future__ import annotations

import pytest
import torch
from conftest import moving_square_clip
from torch import nn

from motion_core import cli
from motion_core.attention import MotionAttnProcessor, PlainFrameAttnProcessor
from motion_core.diffusion import encode_frames, encode_prompt
from motion_core.embedding import EmbeddingInfo, prepare_for_sampling, zero_embedding
from motion_core.embedding_file import load_embedding, read_embedding_info
from motion_core.errors import IncompatibleEmbeddingError, InvalidSettingError
from motion_core.families import detect_family
from motion_core.families.animatediff import AnimateDiffFamily
from motion_core.model_loading import VideoModel, clear_model_cache, load_video_model
from motion_core.patching import installed_processors
from motion_core.sampling import AppliedMotion, SamplingConfig, sample_video
from motion_core.testing.tiny_models import save_tiny_animatediff_model
from motion_core.training import TrainingConfig, evaluation_loss, train_motion_embedding
from motion_core.video_io import read_video_frames

PROMPT = "a red square"


@pytest.fixture(scope="session")
def tiny_animatediff_dir(tmp_path_factory):
    return save_tiny_animatediff_model(tmp_path_factory.mktemp("models") / "tiny-animatediff", seed=0)


@pytest.fixture
def animatediff(tiny_animatediff_dir) -> VideoModel:
    clear_model_cache()
    return load_video_model(tiny_animatediff_dir, "fp32", "auto", "cpu", use_cache=False)


@pytest.fixture
def clip() -> torch.Tensor:
    return moving_square_clip(frames=6, size=32)


def config(**overrides) -> TrainingConfig:
    settings = dict(prompt=PROMPT, steps=4, learning_rate=0.05, layer_set="all", inversion_steps=0, save_every=0)
    return TrainingConfig(**{**settings, **overrides})


def small(**overrides) -> SamplingConfig:
    settings = dict(prompt=PROMPT, width=32, height=32, frames=6, steps=3, guidance_scale=3.0)
    return SamplingConfig(**{**settings, **overrides})


def _info(model: VideoModel, layer_set: str, frames: int, h: int, w: int) -> EmbeddingInfo:
    sites = model.family.select_sites(model.denoiser, layer_set, h, w)
    return EmbeddingInfo("animatediff", dict(model.identity), tuple(sites), w * 2, h * 2, frames, h, w)  # tiny VAE: 2x


def _forward(model: VideoModel, latents: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    return model.family.predict(model, latents, torch.tensor([500]), text)


def test_an_animatediff_folder_loads_as_the_animatediff_family(animatediff, tiny_animatediff_dir):
    assert isinstance(detect_family(tiny_animatediff_dir), AnimateDiffFamily)
    assert animatediff.family.name == "animatediff" and type(animatediff.denoiser).__name__ == "UNetMotionModel"
    assert animatediff.size_multiple == 8  # the tiny VAE's 2 x three UNet levels (two downsamplings)


def test_sites_are_the_motion_modules_and_layer_sets_go_by_level(animatediff):
    family, unet = animatediff.family, animatediff.denoiser
    sites = family.find_sites(unet)
    names = [s.name for s in sites]
    assert sorted(names) == sorted(["down_blocks.0.motion_modules.0", "down_blocks.1.motion_modules.0",
                                    "down_blocks.2.motion_modules.0", "up_blocks.0.motion_modules.0",
                                    "up_blocks.0.motion_modules.1", "up_blocks.1.motion_modules.0",
                                    "up_blocks.1.motion_modules.1", "up_blocks.2.motion_modules.0",
                                    "up_blocks.2.motion_modules.1", "mid_block.motion_modules.0"])
    assert all(s.attention_names == (f"{s.name}.transformer_blocks.0.attn1", f"{s.name}.transformer_blocks.0.attn2") for s in sites)
    by_name = {s.name: s for s in sites}
    assert by_name["down_blocks.0.motion_modules.0"].channels == 16 and by_name["up_blocks.0.motion_modules.0"].channels == 32
    paper = {s.name for s in family.select_sites(unet, "paper", 8, 8)}
    assert paper == {"down_blocks.2.motion_modules.0", "up_blocks.0.motion_modules.0", "up_blocks.0.motion_modules.1"}
    wider = {s.name for s in family.select_sites(unet, "paper+640", 8, 8)}
    assert paper < wider and "down_blocks.1.motion_modules.0" in wider and "down_blocks.0.motion_modules.0" not in wider
    assert len(family.select_sites(unet, "all", 8, 8)) == len(sites)


def test_processors_go_on_the_motion_modules_only(animatediff):
    info = _info(animatediff, "paper", 6, 16, 16)
    processors = animatediff.family.build_processors(animatediff, info.blocks, grid=(6, 16, 16))
    motion = {a for s in animatediff.family.find_sites(animatediff.denoiser) for a in s.attention_names}
    assert set(processors) == motion
    selected = {a for s in info.blocks for a in s.attention_names}
    assert all(isinstance(p, MotionAttnProcessor) and not isinstance(p, PlainFrameAttnProcessor) for n, p in processors.items() if n in selected)
    assert all(isinstance(p, PlainFrameAttnProcessor) for n, p in processors.items() if n not in selected)
    spatial = {n: type(m.processor) for n, m in animatediff.denoiser.named_modules() if hasattr(m, "processor") and n not in motion}
    with installed_processors(animatediff.denoiser, processors):
        assert {n: type(m.processor) for n, m in animatediff.denoiser.named_modules() if n in spatial} == spatial


def test_zero_embeddings_give_exactly_the_unpatched_output_with_the_same_kernel(animatediff, clip):
    latents = encode_frames(animatediff, clip)
    text = torch.cat([encode_prompt(animatediff, ""), encode_prompt(animatediff, PROMPT)])  # guidance batch of 2
    batch = torch.cat([latents, latents + 0.1])
    zero = zero_embedding(_info(animatediff, "all", 6, 16, 16))
    with torch.no_grad():
        with installed_processors(animatediff.denoiser, animatediff.family.build_processors(animatediff, grid=(6, 16, 16))):
            plain = _forward(animatediff, batch, text)
        processors = animatediff.family.build_processors(animatediff, zero.info.blocks, zero.query_key, zero.value, (6, 16, 16))
        with installed_processors(animatediff.denoiser, processors):
            patched = _forward(animatediff, batch, text)
        diffusers_own = _forward(animatediff, batch, text)
    assert torch.equal(plain, patched)
    torch.testing.assert_close(plain, diffusers_own, rtol=1e-4, atol=1e-5)  # the pack's kernel vs diffusers' processors


def test_only_the_embeddings_get_gradients_and_checkpointing_keeps_them(animatediff, clip):
    latents = encode_frames(animatediff, clip)
    text = encode_prompt(animatediff, PROMPT)
    info = _info(animatediff, "all", 6, 16, 16)
    torch.manual_seed(0)
    start = zero_embedding(info)
    query_key = {k: nn.Parameter(torch.randn_like(v) * 0.1) for k, v in start.query_key.items()}
    value = {k: nn.Parameter(torch.randn_like(v) * 0.1) for k, v in start.value.items()}
    grads = []
    for checkpointing in (False, True):
        processors = animatediff.family.build_processors(animatediff, info.blocks, query_key, value, (6, 16, 16))
        with torch.enable_grad(), installed_processors(animatediff.denoiser, processors), \
                animatediff.family.gradient_checkpointing(animatediff.denoiser, checkpointing):
            _forward(animatediff, latents, text).square().mean().backward()
        grads.append({k: p.grad.clone() for k, p in [*query_key.items(), *value.items()]})
        for p in [*query_key.values(), *value.values()]:
            p.grad = None
    assert all(g.abs().sum() > 0 for g in grads[0].values())
    assert all(p.grad is None for p in animatediff.denoiser.parameters())
    assert "forward" not in vars(animatediff.denoiser.down_blocks[0].motion_modules[0])  # checkpointing taken back
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7)


def test_training_lowers_the_loss_and_the_file_loads_back(animatediff, clip, tmp_path):
    path = tmp_path / "animatediff.safetensors"
    result = train_motion_embedding(animatediff, clip, config(steps=30, learning_rate=0.05, inversion_steps=4), path)
    before = evaluation_loss(animatediff, clip, PROMPT, None)
    after = evaluation_loss(animatediff, clip, PROMPT, result.embedding)
    assert after < 0.9 * before
    info, shapes = read_embedding_info(path)
    assert (info.family, info.train_frames, info.extra["layer_set"]) == ("animatediff", 6, "all")
    assert shapes["query_key.down_blocks.0.motion_modules.0"] == (1, 6, 16)
    assert shapes["value.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1"] == (256, 6, 16)  # 16x16 latent
    assert shapes["inverted_latent"] == (4, 6, 16, 16)
    loaded = load_embedding(path)
    for name, tensor in result.embedding.value.items():
        assert torch.equal(loaded.value[name], tensor)


@pytest.mark.parametrize("loss", ["debiased_temporal", "debiased_hybrid"])
def test_the_debiased_losses_train_on_animatediff(animatediff, clip, loss):
    result = train_motion_embedding(animatediff, clip, config(steps=2, loss=loss, lora_rank=2, layer_set="paper"))
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    assert result.embedding.info.default_mode == ("camera" if loss == "debiased_hybrid" else "raw")


def test_an_embedding_resamples_to_other_frame_counts_and_sizes(animatediff, clip):
    trained = train_motion_embedding(animatediff, clip, config(steps=2, inversion_steps=2)).embedding
    prepared = prepare_for_sampling(trained, 9, 12, 16, "object")
    assert prepared.inverted_latent.shape == (4, 9, 12, 16)
    frames = sample_video(animatediff, small(frames=9, width=64, height=96), AppliedMotion(trained))
    assert frames.shape == (9, 96, 64, 3) and torch.isfinite(frames).all()


def test_more_frames_than_the_motion_modules_know_are_refused(animatediff):
    with pytest.raises(InvalidSettingError, match="32 frame positions; 33 frames"):
        sample_video(animatediff, small(frames=33, steps=1))


def test_embeddings_do_not_cross_families(animatediff, tiny_model, clip, reference_clip):
    ours = train_motion_embedding(animatediff, clip, config(steps=1)).embedding
    theirs = train_motion_embedding(tiny_model, reference_clip, config(steps=1, layer_set="paper")).embedding
    with pytest.raises(IncompatibleEmbeddingError, match="'unet3d' model.*'animatediff' model"):
        sample_video(animatediff, small(), AppliedMotion(theirs))
    with pytest.raises(IncompatibleEmbeddingError, match="'animatediff' model.*'unet3d' model"):
        sample_video(tiny_model, small(), AppliedMotion(ours))


def test_cli_trains_and_samples_an_animatediff_folder(tiny_animatediff_dir, tmp_path):
    from motion_core.video_io import write_video

    video = tmp_path / "ref.mp4"
    write_video(moving_square_clip(frames=6, size=32), video, 8.0)
    embedding, out = tmp_path / "ad.safetensors", tmp_path / "out.mp4"
    common = ["--model", str(tiny_animatediff_dir), "--device", "cpu", "--width", "32", "--height", "32", "--prompt", PROMPT]
    assert cli.main(["train", *common, "--video", str(video), "--out", str(embedding), "--frames", "6", "--steps", "3",
                     "--inversion-steps", "2"]) == 0
    assert cli.main(["sample", *common, "--embedding", str(embedding), "--out", str(out), "--frames", "6", "--steps", "2"]) == 0
    assert read_video_frames(out).frames.shape == (6, 32, 32, 3)


def test_the_nodes_list_load_train_and_sample_an_animatediff_folder(pack, tiny_animatediff_dir, tmp_path):
    import shutil

    from motion_core.video_io import write_video

    bridge = pack.nodes.comfy_bridge
    bridge.use_standalone_folders(tmp_path)
    shutil.copytree(tiny_animatediff_dir, tmp_path / "models" / "diffusers" / "tiny-animatediff")
    (tmp_path / "input").mkdir()
    write_video(moving_square_clip(frames=6, size=32), tmp_path / "input" / "square.mp4", 8.0)
    pack.motion_core.model_loading.clear_model_cache()
    assert "tiny-animatediff" in bridge.list_video_models()

    def run(name, **kwargs):
        cls = pack.NODE_CLASS_MAPPINGS[name]
        with torch.inference_mode():  # as ComfyUI's executor does
            out = getattr(cls(), cls.FUNCTION)(**kwargs)
        return out["result"] if isinstance(out, dict) and "result" in out else out

    (model,) = run("MI_LoadVideoModel", model="tiny-animatediff", precision="fp32", attention="auto")
    assert model.model.family.name == "animatediff"
    frames, _, _ = run("MI_LoadVideoFrames", video="square.mp4", start_frame=0, frame_stride=1, frame_count=6,
                       width=32, height=32, resize_mode="crop")
    embedding, _ = run("MI_TrainMotionEmbedding", model=model, frames=frames, prompt=PROMPT, steps=2, learning_rate=0.05,
                       loss="base", layers="auto", width=32, height=32, frame_count=6, seed=0,
                       gradient_checkpointing="auto", save_every=0, filename_prefix="tests/animatediff")
    assert embedding.info.family == "animatediff" and embedding.info.extra["layer_set"] == "paper"
    (applied,) = run("MI_ApplyMotionEmbedding", model=model, motion_embedding=embedding, strength=1.0, mode="object")
    (video,) = run("MI_MotionSampler", model=applied, prompt="a blue circle", negative_prompt="", width=32, height=32,
                   frames=6, steps=2, cfg=3.0, seed=0, scheduler="ddim", noise_prior=0.5)
    assert video.shape == (6, 32, 32, 3) and torch.isfinite(video).all()


def test_an_sd15_checkpoint_and_a_motion_module_load_as_the_same_model(animatediff, tmp_path):
    """Single files in the layouts ComfyUI users keep (SD1.5 checkpoint keys; original motion-module keys with
    their position tables) load through diffusers' converters into exactly the folder's model."""
    from motion_core.model_loading import load_animatediff_files_model
    from motion_core.testing.sd_single_files import save_part_configs, save_single_files
    from motion_core.testing.tiny_models import build_tiny_animatediff_parts

    parts = build_tiny_animatediff_parts(seed=0)  # the same weights the folder fixture saved
    checkpoint, module = save_single_files(parts, tmp_path / "sd15.safetensors", tmp_path / "mm_tiny.safetensors")
    configs = save_part_configs(parts, tmp_path / "configs")
    from safetensors import safe_open

    with safe_open(str(checkpoint), "pt") as handle:
        keys = list(handle.keys())
    assert any(k.startswith("model.diffusion_model.input_blocks.1.1.") for k in keys)
    assert any(k.startswith("first_stage_model.encoder.down.0.block.0.") for k in keys)
    with safe_open(str(module), "pt") as handle:
        assert any(".temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe" in k for k in handle.keys())

    config_file = configs / "tokenizer" / "tokenizer_config.json"  # a tokenizer saying 8192, as ComfyUI's sd1_tokenizer does
    config_file.write_text(config_file.read_text().replace('"model_max_length": 12', '"model_max_length": 8192'))
    assert '"model_max_length": 8192' in config_file.read_text()
    model = load_animatediff_files_model(checkpoint, module, configs / "tokenizer", "fp32", "auto", "cpu", config_dir=configs)
    assert model.tokenizer.model_max_length == model.text_encoder.config.max_position_embeddings == 12
    assert model.family.name == "animatediff" and model.name == "sd15 + mm_tiny"
    assert model.identity["architecture"] == animatediff.identity["architecture"]  # embeddings move between the two
    for ours, theirs in ((model.denoiser, animatediff.denoiser), (model.vae, animatediff.vae), (model.text_encoder, animatediff.text_encoder)):
        state = theirs.state_dict()
        assert ours.state_dict().keys() == state.keys()
        assert all(torch.equal(tensor, state[key]) for key, tensor in ours.state_dict().items())
    clip = moving_square_clip(frames=6, size=32)
    trained = train_motion_embedding(animatediff, clip, config(steps=2)).embedding
    assert torch.equal(sample_video(model, small(steps=2, seed=4), AppliedMotion(trained)),
                       sample_video(animatediff, small(steps=2, seed=4), AppliedMotion(trained)))


def test_files_that_are_not_an_sd15_checkpoint_or_a_motion_module_are_refused(tmp_path):
    from safetensors.torch import save_file

    from motion_core.errors import ModelLoadError
    from motion_core.families.animatediff_files import adapter_config, read_state_dict
    from motion_core.model_loading import load_animatediff_files_model

    save_file({"some.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelLoadError, match="not a Stable Diffusion checkpoint"):
        load_animatediff_files_model(tmp_path / "other.safetensors", tmp_path / "other.safetensors", tmp_path, "fp32", "auto", "cpu")
    with pytest.raises(ModelLoadError, match="not an AnimateDiff motion module"):
        adapter_config({"some.weight": torch.zeros(2)}, {"block_out_channels": [8, 8]})
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="Could not read broken.safetensors"):
        read_state_dict(tmp_path / "broken.safetensors")
    torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": 3}, tmp_path / "lightning.ckpt")
    assert set(read_state_dict(tmp_path / "lightning.ckpt")) == {"w"}
    with pytest.raises(ModelLoadError, match="expected a .safetensors"):
        (tmp_path / "model.gguf").write_bytes(b"x")
        read_state_dict(tmp_path / "model.gguf")


def test_the_loader_node_reads_a_checkpoint_and_a_motion_module_and_trains_on_them(pack, tmp_path, monkeypatch):
    """As in ComfyUI: files in models/checkpoints and models/animatediff_models, the SD1 tokenizer ComfyUI ships
    (here the standalone folders' models/sd1_tokenizer), the pack's part configs (here the tiny model's)."""
    from motion_core.testing.sd_single_files import save_part_configs, save_single_files
    from motion_core.testing.tiny_models import build_tiny_animatediff_parts

    bridge = pack.nodes.comfy_bridge
    bridge.use_standalone_folders(tmp_path)
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "animatediff_models").mkdir()
    parts = build_tiny_animatediff_parts(seed=1)
    save_single_files(parts, models / "checkpoints" / "tiny_sd15.safetensors", models / "animatediff_models" / "mm_tiny.safetensors")
    configs = save_part_configs(parts, tmp_path / "configs")
    (configs / "tokenizer").rename(models / "sd1_tokenizer")
    import importlib

    monkeypatch.setattr(importlib.import_module(f"{pack.__name__}.motion_core.families.animatediff_files"), "SD15_CONFIGS", configs)
    inputs = pack.NODE_CLASS_MAPPINGS["MI_LoadAnimateDiffModel"].INPUT_TYPES()["required"]
    assert inputs["checkpoint"][0] == ["tiny_sd15.safetensors"] and inputs["motion_module"][0] == ["mm_tiny.safetensors"]

    node = pack.NODE_CLASS_MAPPINGS["MI_LoadAnimateDiffModel"]()
    with torch.inference_mode():  # as ComfyUI's executor does
        (model,) = node.load("tiny_sd15.safetensors", "mm_tiny.safetensors", "fp32", "auto")
        with pytest.raises(pack.motion_core.errors.ModelLoadError, match="'gone.ckpt' was not found"):
            node.load("tiny_sd15.safetensors", "gone.ckpt", "fp32", "auto")
    assert model.model.family.name == "animatediff"
    training = pack.motion_core.training
    settings = training.TrainingConfig(prompt=PROMPT, steps=2, layer_set="all", inversion_steps=0, save_every=0)
    result = training.train_motion_embedding(model.model, moving_square_clip(frames=6, size=32), settings)
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))


def test_cli_trains_and_samples_from_a_checkpoint_and_a_motion_module(tmp_path, monkeypatch, caplog):
    import motion_core.families.animatediff_files as files
    from motion_core.testing.sd_single_files import save_part_configs, save_single_files
    from motion_core.testing.tiny_models import build_tiny_animatediff_parts
    from motion_core.video_io import write_video

    parts = build_tiny_animatediff_parts(seed=2)
    checkpoint, module = save_single_files(parts, tmp_path / "sd15.safetensors", tmp_path / "mm.safetensors")
    configs = save_part_configs(parts, tmp_path / "configs")
    monkeypatch.setattr(files, "SD15_CONFIGS", configs)
    video = tmp_path / "ref.mp4"
    write_video(moving_square_clip(frames=6, size=32), video, 8.0)
    embedding, out = tmp_path / "ad.safetensors", tmp_path / "out.mp4"
    common = ["--model", str(checkpoint), "--motion-module", str(module), "--tokenizer", str(configs / "tokenizer"),
              "--device", "cpu", "--width", "32", "--height", "32", "--prompt", PROMPT]
    assert cli.main(["train", *common, "--video", str(video), "--out", str(embedding), "--frames", "6", "--steps", "2",
                     "--inversion-steps", "2"]) == 0
    assert read_embedding_info(embedding)[0].base_model["name"] == "sd15 + mm"
    assert cli.main(["sample", *common, "--embedding", str(embedding), "--out", str(out), "--frames", "6", "--steps", "2"]) == 0
    assert read_video_frames(out).frames.shape == (6, 32, 32, 3)
    no_tokenizer = [a for a in common if a not in ("--tokenizer", str(configs / "tokenizer"))]
    assert cli.main(["sample", *no_tokenizer, "--out", str(tmp_path / "x.mp4"), "--frames", "6", "--steps", "1"]) == 2
    assert "--motion-module needs --tokenizer" in caplog.text
