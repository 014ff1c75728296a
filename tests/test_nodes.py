"""The ComfyUI nodes, called the way ComfyUI calls them (under inference mode), without ComfyUI installed."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
CORE_NODE_TYPES = {"PreviewImage", "SaveAnimatedWEBP"}
CUSTOM_TYPES = {"MI_MODEL", "MOTION_EMBEDDING"}


def write_square_video(path: Path, frames: int = 10, size: int = 48) -> Path:
    """An H.264 clip of a bright square moving right, written with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10"}
        for i in range(frames):
            image = np.zeros((size, size, 3), np.uint8)
            image[16:32, 2 + 3 * i : 18 + 3 * i] = (230, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def comfy_home(pack, tmp_path, tiny_model_dir):
    """Standalone ComfyUI-like folders with the tiny model installed and a video in input/."""
    bridge = pack.nodes.comfy_bridge
    bridge.use_standalone_folders(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "diffusers" / "tiny-t2v")
    (tmp_path / "input").mkdir()
    write_square_video(tmp_path / "input" / "square.mp4")
    pack.motion_core.model_loading.clear_model_cache()
    return tmp_path


def node(pack, name):
    return pack.NODE_CLASS_MAPPINGS[name]()


def run(pack, name, **kwargs):
    cls = pack.NODE_CLASS_MAPPINGS[name]
    with torch.inference_mode():  # as ComfyUI's executor does
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
    return out["result"] if isinstance(out, dict) and "result" in out else out


def train_settings(**overrides):
    settings = dict(prompt="a red square", steps=3, learning_rate=0.1, loss="base", layers="all", width=32, height=32,
                    frame_count=6, seed=0, gradient_checkpointing="auto", save_every=0, filename_prefix="tests/emb")
    settings.update(overrides)
    return settings


def sample_settings(**overrides):
    settings = dict(prompt="a blue circle", negative_prompt="", width=32, height=32, frames=6, steps=3, cfg=4.0, seed=0,
                    scheduler="ddim", noise_prior=0.5)
    settings.update(overrides)
    return settings


def test_every_node_is_declared_completely(pack):
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert pack.WEB_DIRECTORY == "./web"
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("MI_")
        assert cls.CATEGORY.startswith("motion_inversion/") and len(cls.DESCRIPTION) > 40
        assert callable(getattr(cls, cls.FUNCTION))
        assert isinstance(cls.RETURN_TYPES, tuple)
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, item in spec.get(section, {}).items():
                assert len(item) == 2 and item[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def _widget_count(cls) -> int:
    count = 0
    for section in ("required", "optional"):
        for name, spec in cls.INPUT_TYPES().get(section, {}).items():
            if isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                count += 1 + bool(spec[1].get("control_after_generate")) + bool(spec[1].get("video_upload"))
    return count


@pytest.mark.parametrize("workflow", sorted((REPO / "workflows").glob("*.json")), ids=lambda p: p.name)
def test_example_workflows_match_the_registered_nodes(pack, workflow, comfy_home):
    check_graph(pack, json.loads(workflow.read_text()), bundled_choices=True, core_types=CORE_NODE_TYPES)


def test_the_native_wan_graph_matches_the_registered_nodes(pack):
    """The native Wan graph (not an example workflow until a toy Wan is bundled; a real ComfyUI runs it in
    tests/test_comfyui_integration.py) links the nodes as they are registered."""
    build = _build_workflows_module()
    files = build.NativeWanFiles("wan.safetensors", "wan_vae.safetensors", "wan-folder", "clip.mp4", 32, 9)
    graph = build.wan_native_train_and_sample(pack, files)
    check_graph(pack, graph, bundled_choices=False, core_types=set(build.CORE_NODES))
    types = {n["type"] for n in graph["nodes"]}
    assert {"MI_TrainMotionEmbeddingNative", "MI_ApplyMotionEmbeddingNative", "MI_MotionStartNoise", "UNETLoader",
            "SamplerCustomAdvanced"} <= types


def check_graph(pack, data: dict, bundled_choices: bool, core_types: set[str]) -> None:
    """Every node is registered (or one of ``core_types``) with its widget count, slot types and outputs; links agree
    on both ends; every required custom input is connected. ``bundled_choices``: every combo value names a choice a
    fresh install offers."""
    assert data["version"] == 0.4
    nodes = {n["id"]: n for n in data["nodes"]}
    for n in nodes.values():
        assert n["type"] in pack.NODE_CLASS_MAPPINGS or n["type"] in core_types, n["type"]
        if n["type"] in pack.NODE_CLASS_MAPPINGS:
            cls = pack.NODE_CLASS_MAPPINGS[n["type"]]
            assert len(n["widgets_values"]) == _widget_count(cls), n["type"]
            combos = [s for sec in ("required", "optional") for s in cls.INPUT_TYPES().get(sec, {}).values() if isinstance(s[0], list)]
            for spec in combos if bundled_choices else ():  # a fresh install offers every choice the example workflows name
                assert set(spec[0]) & set(n["widgets_values"]), (n["type"], spec[0], n["widgets_values"])
            declared = {name: s[0] for sec in ("required", "optional") for name, s in cls.INPUT_TYPES().get(sec, {}).items()}
            for slot in n["inputs"]:
                assert declared[slot["name"]] == slot["type"]
            assert [o["type"] for o in n["outputs"]] == list(cls.RETURN_TYPES)
    for link_id, src, src_slot, dst, dst_slot, kind in data["links"]:
        assert nodes[src]["outputs"][src_slot]["type"] == kind
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["type"] == kind and nodes[dst]["inputs"][dst_slot]["link"] == link_id
    for n in nodes.values():  # every required custom input is connected
        for slot in n["inputs"]:
            if slot["type"] in CUSTOM_TYPES | {"IMAGE"} and slot["name"] != "resume_from":
                assert slot["link"] is not None, (n["type"], slot["name"])


def test_graph_train_apply_sample_save_load(pack, comfy_home):
    bridge = pack.nodes.comfy_bridge
    assert "tiny-t2v" in bridge.list_video_models()
    (model,) = run(pack, "MI_LoadVideoModel", model="tiny-t2v", precision="fp32", attention="auto")
    frames, fps, count = run(pack, "MI_LoadVideoFrames", video="square.mp4", start_frame=0, frame_stride=1, frame_count=6,
                             width=32, height=32, resize_mode="crop")
    assert frames.shape == (6, 32, 32, 3) and count == 6 and fps == pytest.approx(8.0)
    embedding, curve = run(pack, "MI_TrainMotionEmbedding", model=model, frames=frames, **train_settings())
    assert curve.shape[0] == 1 and curve.shape[-1] == 3
    saved = list((comfy_home / "models" / "motion_embeddings" / "tests").glob("emb_*.safetensors"))
    assert len(saved) == 1 and embedding.info.steps == 3
    (applied,) = run(pack, "MI_ApplyMotionEmbedding", model=model, motion_embedding=embedding, strength=1.0, mode="object")
    (video,) = run(pack, "MI_MotionSampler", model=applied, **sample_settings())
    assert video.shape == (6, 32, 32, 3)
    out = node(pack, "MI_SaveMotionEmbedding").save(embedding, "shared/walk")
    assert out["ui"]["motion_embedding"][0]["frames"] == 6
    assert "shared/walk_00001.safetensors" in bridge.list_embeddings()
    (loaded,) = run(pack, "MI_LoadMotionEmbedding", embedding="shared/walk_00001.safetensors")
    for name, tensor in embedding.value.items():
        assert torch.equal(loaded.value[name], tensor)


def test_two_apply_nodes_on_one_model_do_not_interfere(pack, comfy_home):
    (model,) = run(pack, "MI_LoadVideoModel", model="tiny-t2v", precision="fp32", attention="auto")
    frames = torch.rand(6, 32, 32, 3)
    emb_a, _ = run(pack, "MI_TrainMotionEmbedding", model=model, frames=frames, **train_settings(seed=1))
    emb_b, _ = run(pack, "MI_TrainMotionEmbedding", model=model, frames=frames.flip(0), **train_settings(seed=2))
    (base_before,) = run(pack, "MI_MotionSampler", model=model, **sample_settings())
    (with_a,) = run(pack, "MI_ApplyMotionEmbedding", model=model, motion_embedding=emb_a, strength=1.0, mode="raw")
    (with_b,) = run(pack, "MI_ApplyMotionEmbedding", model=model, motion_embedding=emb_b, strength=1.0, mode="raw")
    (video_a,) = run(pack, "MI_MotionSampler", model=with_a, **sample_settings())
    (video_b,) = run(pack, "MI_MotionSampler", model=with_b, **sample_settings())
    (video_a_again,) = run(pack, "MI_MotionSampler", model=with_a, **sample_settings())
    (base_after,) = run(pack, "MI_MotionSampler", model=model, **sample_settings())
    assert torch.equal(video_a, video_a_again)
    assert not torch.equal(video_a, video_b)
    assert torch.equal(base_before, base_after)
    assert model.motion is None and with_a.model is model.model


class Interrupted(BaseException):  # what comfy.model_management raises on Cancel
    pass


def press_cancel_at_check(monkeypatch, bridge, n: int) -> None:
    """Make ComfyUI's Cancel check raise the ``n``-th time it runs (once per step of the plain inversion, which
    runs first, then once per training step: see :func:`cancel_at_training_step`)."""
    calls = {"n": 0}

    def check():
        calls["n"] += 1
        if calls["n"] == n:
            raise Interrupted

    monkeypatch.setattr(bridge, "throw_if_interrupted", check)


def cancel_at_training_step(monkeypatch, pack, n: int) -> None:
    """Press Cancel during training step ``n`` (after the plain inversion's progress checks)."""
    inversion_checks = pack.motion_core.training.TrainingConfig(prompt="x").inversion_steps
    press_cancel_at_check(monkeypatch, pack.nodes.comfy_bridge, inversion_checks + n)


def test_cancel_in_the_training_node_keeps_the_file(pack, comfy_home, monkeypatch):
    (model,) = run(pack, "MI_LoadVideoModel", model="tiny-t2v", precision="fp32", attention="auto")
    cancel_at_training_step(monkeypatch, pack, 3)
    with pytest.raises(Interrupted):
        run(pack, "MI_TrainMotionEmbedding", model=model, frames=torch.rand(6, 32, 32, 3), **train_settings(steps=20))
    (saved,) = (comfy_home / "models" / "motion_embeddings" / "tests").glob("emb_*.safetensors")
    loaded = pack.motion_core.embedding_file.load_embedding(saved)
    assert loaded.info.steps == 3 and loaded.info.extra["interrupted"]
    assert loaded.inverted_latent is not None and loaded.training_state  # the start latent and the resume state are kept
    monkeypatch.undo()
    (video,) = run(pack, "MI_MotionSampler", model=model, **sample_settings())  # the model still works
    assert video.shape == (6, 32, 32, 3)


@pytest.mark.parametrize("prefix", ["../../escape", "/etc/passwd", "..\\..\\win", "a/../../b", "con:evil\x00name", ""])
def test_filename_prefixes_never_leave_the_embeddings_folder(pack, comfy_home, prefix):
    (model,) = run(pack, "MI_LoadVideoModel", model="tiny-t2v", precision="fp32", attention="auto")
    embedding, _ = run(pack, "MI_TrainMotionEmbedding", model=model, frames=torch.rand(6, 32, 32, 3),
                       **train_settings(steps=1, filename_prefix=prefix))
    node(pack, "MI_SaveMotionEmbedding").save(embedding, prefix)
    root = (comfy_home / "models" / "motion_embeddings").resolve()
    written = [p for p in comfy_home.rglob("*.safetensors") if "diffusers" not in p.parts]
    assert len(written) == 2
    assert all(root in p.resolve().parents for p in written)


def test_training_frames_from_other_nodes_are_fitted(pack, comfy_home):
    (model,) = run(pack, "MI_LoadVideoModel", model="tiny-t2v", precision="fp32", attention="auto")
    odd_batch = torch.rand(9, 50, 70, 3)  # e.g. VideoHelperSuite output at the source size
    embedding, _ = run(pack, "MI_TrainMotionEmbedding", model=model, frames=odd_batch, **train_settings(width=36, height=30))
    assert (embedding.info.train_width, embedding.info.train_height, embedding.info.train_frames) == (40, 32, 6)
    with pytest.raises(pack.motion_core.errors.VideoInputError, match="has 4 frames"):
        run(pack, "MI_TrainMotionEmbedding", model=model, frames=torch.rand(4, 32, 32, 3), **train_settings())


def test_unsupported_model_folder_names_what_it_found(pack, comfy_home):
    folder = comfy_home / "models" / "diffusers" / "cogvideox"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline", "transformer": ["diffusers", "CogVideoXTransformer3DModel"]}))
    (folder / "transformer" / "config.json").write_text(json.dumps({"_class_name": "CogVideoXTransformer3DModel"}))
    with pytest.raises(pack.motion_core.errors.ModelLoadError, match="CogVideoXTransformer3DModel.*CogVideoX.*Supported.*LatteTransformer3DModel"):
        run(pack, "MI_LoadVideoModel", model="cogvideox", precision="auto", attention="auto")
    incomplete = comfy_home / "models" / "diffusers" / "animatediff"  # a supported denoiser without the other parts
    (incomplete / "unet").mkdir(parents=True)
    (incomplete / "model_index.json").write_text(json.dumps({"_class_name": "AnimateDiffPipeline", "unet": ["diffusers", "UNetMotionModel"]}))
    (incomplete / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNetMotionModel"}))
    with pytest.raises(pack.motion_core.errors.ModelLoadError, match="animatediff is missing vae, text_encoder, tokenizer, scheduler"):
        run(pack, "MI_LoadVideoModel", model="animatediff", precision="auto", attention="auto")


def test_sample_clips_are_copied_to_the_input_folder_without_overwriting(pack, comfy_home):
    """The frontend previews input-folder files only: the bundled clip is copied there, a user's file is kept."""
    bridge = pack.nodes.comfy_bridge
    bundled = sorted(p for p in bridge.BUNDLED_CLIPS_DIR.iterdir() if p.suffix == ".mp4")
    assert bundled, "the pack ships sample clips"
    taken = comfy_home / "input" / bundled[1].name
    taken.write_bytes(b"the user's own file")
    videos = bridge.list_videos()
    copied = comfy_home / "input" / bundled[0].name
    assert copied.read_bytes() == bundled[0].read_bytes() and videos[bundled[0].name] == copied
    assert taken.read_bytes() == b"the user's own file", "an existing file is never overwritten"
    assert videos[bundled[1].name + bridge.BUNDLED_SUFFIX] == bundled[1]
    assert not list((comfy_home / "input").glob(".*.partial"))
    frames, fps, count = run(pack, "MI_LoadVideoFrames", video=bundled[0].name, start_frame=0, frame_stride=1,
                             frame_count=8, width=32, height=32, resize_mode="crop")
    assert tuple(frames.shape) == (8, 32, 32, 3) and count == 8


def assert_same_embedding(actual, expected) -> None:
    assert actual.info.steps == expected.info.steps
    for name in expected.query_key:
        torch.testing.assert_close(actual.query_key[name], expected.query_key[name], rtol=1e-5, atol=1e-7)
    for name in expected.value:
        torch.testing.assert_close(actual.value[name], expected.value[name], rtol=1e-5, atol=1e-7)


def assert_no_leftovers(root: Path) -> None:
    """No optimiser side file and no hidden partial file beside the embeddings."""
    assert not list(root.rglob("*.resume")), list(root.rglob("*.resume"))
    assert not list(root.rglob(".*.partial")), list(root.rglob(".*.partial"))


def test_resume_through_the_node_from_its_output_matches_an_uninterrupted_run(pack, comfy_home):
    """Train n steps, feed its output to a second Train as resume_from up to 2n: the same embedding as 2n at once."""
    (model,) = run(pack, "MI_LoadVideoModel", model="tiny-t2v", precision="fp32", attention="auto")
    frames = torch.rand(6, 32, 32, 3, generator=torch.Generator().manual_seed(7))
    straight, _ = run(pack, "MI_TrainMotionEmbedding", model=model, frames=frames, **train_settings(steps=6, filename_prefix="tests/straight"))
    first, _ = run(pack, "MI_TrainMotionEmbedding", model=model, frames=frames, **train_settings(steps=3, filename_prefix="tests/first"))
    resumed, _ = run(pack, "MI_TrainMotionEmbedding", model=model, frames=frames, resume_from=first,
                     **train_settings(steps=6, filename_prefix="tests/resumed"))
    assert first.info.steps == 3
    assert_same_embedding(resumed, straight)
    assert_no_leftovers(comfy_home / "models" / "motion_embeddings")


def test_resume_through_the_node_from_a_cancelled_file_matches_an_uninterrupted_run(pack, comfy_home, monkeypatch):
    """A run cancelled at step n, loaded with Load Motion Embedding and resumed to 2n: the same as 2n at once."""
    (model,) = run(pack, "MI_LoadVideoModel", model="tiny-t2v", precision="fp32", attention="auto")
    frames = torch.rand(6, 32, 32, 3, generator=torch.Generator().manual_seed(7))
    straight, _ = run(pack, "MI_TrainMotionEmbedding", model=model, frames=frames, **train_settings(steps=6, filename_prefix="tests/straight"))
    cancel_at_training_step(monkeypatch, pack, 3)
    with pytest.raises(Interrupted):
        run(pack, "MI_TrainMotionEmbedding", model=model, frames=frames, **train_settings(steps=6, filename_prefix="tests/cancelled"))
    monkeypatch.undo()
    (saved,) = (comfy_home / "models" / "motion_embeddings" / "tests").glob("cancelled_*.safetensors")
    (loaded,) = run(pack, "MI_LoadMotionEmbedding", embedding=f"tests/{saved.name}")
    assert loaded.info.steps == 3 and loaded.info.extra["interrupted"]
    resumed, _ = run(pack, "MI_TrainMotionEmbedding", model=model, frames=frames, resume_from=loaded,
                     **train_settings(steps=6, filename_prefix="tests/resumed"))
    assert_same_embedding(resumed, straight)
    assert_no_leftovers(comfy_home / "models" / "motion_embeddings")


def test_load_node_lists_embedding_files_only(pack, comfy_home):
    """A folder that happens to be named like an embedding is not offered (loading it could only fail)."""
    bridge = pack.nodes.comfy_bridge
    folder = comfy_home / "models" / "motion_embeddings"
    (folder / "x.safetensors").mkdir(parents=True)
    (folder / "sub" / "y.safetensors").mkdir(parents=True)
    bundled = next(bridge.BUNDLED_EMBEDDINGS_DIR.glob("*.safetensors"))
    shutil.copyfile(bundled, folder / "sub" / "real.safetensors")
    (choices,) = pack.NODE_CLASS_MAPPINGS["MI_LoadMotionEmbedding"].INPUT_TYPES()["required"]["embedding"][:1]
    assert "sub/real.safetensors" in choices
    assert "x.safetensors" not in choices and "sub/y.safetensors" not in choices
    (loaded,) = run(pack, "MI_LoadMotionEmbedding", embedding="sub/real.safetensors")
    assert loaded.info.steps > 0


def test_sample_clips_are_copied_once_per_input_folder(pack, comfy_home, monkeypatch):
    """The node list is rebuilt on every INPUT_TYPES / VALIDATE_INPUTS / IS_CHANGED: the samples are copied on the
    first only, and a sample the user deleted stays deleted (it is listed from the pack instead)."""
    bridge = pack.nodes.comfy_bridge
    frames_node = pack.NODE_CLASS_MAPPINGS["MI_LoadVideoFrames"]
    bundled = sorted(p.name for p in bridge.BUNDLED_CLIPS_DIR.iterdir() if p.suffix == ".mp4")
    copies: list[str] = []
    real_copy = shutil.copyfile

    def counting_copy(source, target, *args, **kwargs):
        copies.append(Path(source).name)
        return real_copy(source, target, *args, **kwargs)

    monkeypatch.setattr(bridge.shutil, "copyfile", counting_copy)
    for _ in range(3):
        frames_node.INPUT_TYPES()
        assert frames_node.VALIDATE_INPUTS(video=bundled[0]) is True
        frames_node.IS_CHANGED(video=bundled[0])
    assert sorted(copies) == bundled
    (comfy_home / "input" / bundled[0]).unlink()
    names = frames_node.INPUT_TYPES()["required"]["video"][0]
    assert not (comfy_home / "input" / bundled[0]).exists() and sorted(copies) == bundled
    assert bundled[0] + bridge.BUNDLED_SUFFIX in names and bundled[1] in names
    other = comfy_home / "other_input"  # another input folder gets its own copies, once
    bridge.use_standalone_folders(other)
    frames_node.INPUT_TYPES()
    frames_node.INPUT_TYPES()
    assert sorted(copies) == sorted(bundled * 2)
    assert all((other / "input" / name).read_bytes() == (bridge.BUNDLED_CLIPS_DIR / name).read_bytes() for name in bundled)


def test_custom_events_go_to_the_browser_that_queued_the_prompt(pack, monkeypatch):
    """Like core's progress messages, addressed to the prompt's client id rather than broadcast."""
    bridge = pack.nodes.comfy_bridge
    sent = []

    class Server:  # the part of server.PromptServer the bridge uses
        client_id = "browser-a"

        def send_sync(self, event, data, sid=None):
            sent.append((event, data, sid))

    monkeypatch.setattr(bridge, "PromptServer", type("PromptServer", (), {"instance": Server()}))
    bridge.send_event("motion_inversion.loss", {"node": "5:3"})
    assert sent == [("motion_inversion.loss", {"node": "5:3"}, "browser-a")]


def test_training_asks_comfyui_for_the_room_it_needs_not_everything(pack, tiny_model):
    """ComfyUI is asked to free the training estimate, plus the weights where they are not on the device yet."""
    training = pack.nodes.training_nodes
    estimate = pack.motion_core.memory_estimate.estimate_training_bytes
    config = pack.motion_core.training.TrainingConfig(prompt="x", layer_set="all")
    clip = torch.rand(6, 32, 64, 3)
    latent_h, latent_w = tiny_model.latent_size(64, 32)
    assert training.training_room(tiny_model, clip, config) == estimate(tiny_model, 6, latent_h, latent_w, False, "all")
    config.gradient_checkpointing = "on"
    assert training.training_room(tiny_model, clip, config) == estimate(tiny_model, 6, latent_h, latent_w, True, "all")
    elsewhere = dataclasses.replace(tiny_model, device=torch.device("meta"))  # its weights are still on the CPU
    weights = sum(t.numel() * t.element_size() for m in (tiny_model.unet, tiny_model.vae, tiny_model.text_encoder)
                  for t in [*m.parameters(), *m.buffers()])
    assert training.training_room(elsewhere, clip, config) == estimate(elsewhere, 6, latent_h, latent_w, True, "all") + weights


def test_widget_defaults_come_from_the_core(pack):
    """One source for each default: the core's settings dataclasses (the CLI reads the same ones)."""
    core = pack.motion_core
    train = pack.NODE_CLASS_MAPPINGS["MI_TrainMotionEmbedding"].INPUT_TYPES()
    train_inputs = {**train["required"], **train["optional"]}
    sample_inputs = pack.NODE_CLASS_MAPPINGS["MI_MotionSampler"].INPUT_TYPES()["required"]
    apply_inputs = pack.NODE_CLASS_MAPPINGS["MI_ApplyMotionEmbedding"].INPUT_TYPES()["required"]
    training = core.training.TrainingConfig(prompt="x")
    sampling = core.sampling.SamplingConfig(prompt="x")
    auto = pack.nodes.auto_widgets
    expected = [
        (train_inputs, {"loss": training.loss, "seed": training.seed, "save_every": training.save_every,
                        "gradient_checkpointing": training.gradient_checkpointing, "inversion": training.inversion}),
        (sample_inputs, {"negative_prompt": sampling.negative_prompt, "seed": sampling.seed, "scheduler": sampling.scheduler,
                         "noise_prior": sampling.noise_prior}),
        (apply_inputs, {"strength": core.sampling.AppliedMotion(embedding=None).strength}),
    ]
    for inputs, defaults in expected:
        assert {name: inputs[name][1]["default"] for name in defaults} == defaults
    # The model-dependent widgets default to auto (the model's recommended value); without a motion_inversion.json
    # that is the core's default, which the tooltip names (the values themselves: test_recommended_settings.py).
    with_auto = [
        (train_inputs, "steps", auto.AUTO, training.steps), (train_inputs, "learning_rate", auto.AUTO, training.learning_rate),
        (train_inputs, "width", auto.AUTO, sampling.width), (train_inputs, "height", auto.AUTO, sampling.height),
        (train_inputs, "frame_count", auto.AUTO_FRAME_COUNT, sampling.frames), (sample_inputs, "width", auto.AUTO, sampling.width),
        (sample_inputs, "height", auto.AUTO, sampling.height), (sample_inputs, "frames", auto.AUTO, sampling.frames),
        (sample_inputs, "steps", auto.AUTO, sampling.steps), (sample_inputs, "cfg", auto.AUTO_CFG, sampling.guidance_scale),
    ]
    for inputs, name, auto_value, core_default in with_auto:
        options = inputs[name][1]
        assert options["default"] == options["min"] == auto_value, name
        assert f"default {core_default})" in options["tooltip"], (name, options["tooltip"])
    assert train_inputs["layers"][0] == list(core.families.LAYER_CHOICES) and training.layer_set == auto.AUTO_LAYERS
    assert set(core.temporal_layers.LAYER_SETS) < set(core.families.LAYER_CHOICES)
    assert train_inputs["layers"][1]["default"] == auto.AUTO_LAYERS and "family's default" in train_inputs["layers"][1]["tooltip"]
    assert train_inputs["gradient_checkpointing"][0] == list(core.training.CHECKPOINTING_CHOICES)
    assert train_inputs["gradient_checkpointing"][1]["default"] == "auto" and training.save_every == 100
    assert train_inputs["inversion"][0] == list(core.training.INVERSION_CHOICES)
    widgets = [name for name, spec in train_inputs.items() if isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")]
    assert widgets[-1] == "inversion", "a new widget goes after every existing one (saved workflows list values by position)"


def test_save_node_writes_the_embedding_without_the_optimiser_state(pack, comfy_home):
    (model,) = run(pack, "MI_LoadVideoModel", model="tiny-t2v", precision="fp32", attention="auto")
    embedding, _ = run(pack, "MI_TrainMotionEmbedding", model=model, frames=torch.rand(6, 32, 32, 3), **train_settings(steps=2))
    assert embedding.training_state  # the in-memory result can be trained further exactly
    node(pack, "MI_SaveMotionEmbedding").save(embedding, "kept/shared")
    (saved,) = (comfy_home / "models" / "motion_embeddings" / "kept").glob("shared_*.safetensors")
    loaded = pack.motion_core.embedding_file.load_embedding(saved)
    assert loaded.training_state == {}
    assert all(torch.equal(loaded.value[k], v) for k, v in embedding.value.items())


# ----- auto widgets: the model's recommended settings (motion_inversion.json) -----
RECOMMENDED = {
    "format_version": 1,
    "train": {"width": 24, "height": 16, "frames": 6, "steps": 2, "learning_rate": 0.05, "layers": "all"},
    "sample": {"width": 16, "height": 24, "frames": 4, "steps": 2, "cfg": 2.0},
}


def widget_defaults(pack, name: str) -> dict:
    """What a freshly added node holds: every widget's default (a combo's first choice when it names none)."""
    spec = pack.NODE_CLASS_MAPPINGS[name].INPUT_TYPES()
    return {key: item[1].get("default", item[0][0] if isinstance(item[0], list) else None)
            for section in ("required", "optional") for key, item in spec.get(section, {}).items()
            if isinstance(item[0], list) or item[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")}


@pytest.fixture
def recommending_model(pack, comfy_home, tiny_model_dir):
    """The tiny model installed as "tiny-rec" with a motion_inversion.json, loaded through the node."""
    folder = shutil.copytree(tiny_model_dir, comfy_home / "models" / "diffusers" / "tiny-rec")
    (folder / "motion_inversion.json").write_text(json.dumps(RECOMMENDED))
    (model,) = run(pack, "MI_LoadVideoModel", model="tiny-rec", precision="fp32", attention="auto")
    return model


def bundled_clip_frames(pack):
    """The bundled clip through Load Video Frames with every widget at its default: all 8 frames at 32x32."""
    clip = "toyworld_red_square_bounce.mp4"  # the UNet3D toy's clip (the folder also holds the 17-frame Wan clips)
    assert (pack.nodes.comfy_bridge.BUNDLED_CLIPS_DIR / clip).is_file()
    frames, _, count = run(pack, "MI_LoadVideoFrames", **{**widget_defaults(pack, "MI_LoadVideoFrames"), "video": clip})
    assert tuple(frames.shape) == (8, 32, 32, 3) and count == 8
    return frames


def test_default_widgets_train_on_the_bundled_clip_at_the_models_recommended_settings(pack, recommending_model):
    frames = bundled_clip_frames(pack)
    settings = {**widget_defaults(pack, "MI_TrainMotionEmbedding"), "prompt": "a red square"}
    embedding, _ = run(pack, "MI_TrainMotionEmbedding", model=recommending_model, frames=frames, **settings)
    info = embedding.info
    assert (info.train_width, info.train_height, info.train_frames, info.steps) == (24, 16, 6, 2)
    assert (info.extra["learning_rate"], info.extra["layer_set"]) == (0.05, "all")
    # explicit values win, and 0 keeps meaning "every frame given"
    settings.update(width=32, height=32, frame_count=0, steps=1, learning_rate=0.2, layers="paper")
    embedding, _ = run(pack, "MI_TrainMotionEmbedding", model=recommending_model, frames=frames, **settings)
    info = embedding.info
    assert (info.train_width, info.train_height, info.train_frames, info.steps) == (32, 32, 8, 1)
    assert (info.extra["learning_rate"], info.extra["layer_set"]) == (0.2, "paper")
    with pytest.raises(pack.motion_core.errors.VideoInputError, match="has 4 frames but tiny-rec's recommended training frame count is 6"):
        run(pack, "MI_TrainMotionEmbedding", model=recommending_model, frames=frames[:4],
            **{**widget_defaults(pack, "MI_TrainMotionEmbedding"), "prompt": "a red square"})


def test_the_bundled_model_trains_with_default_widgets_on_its_bundled_clip(pack, comfy_home):
    """The chain that failed with the paper's 576x320, 24 frames: now every widget may stay at its default
    (steps lowered here only to keep the test short; the model recommends 200)."""
    (model,) = run(pack, "MI_LoadVideoModel", **{**widget_defaults(pack, "MI_LoadVideoModel"), "model": "toyworld-t2v (bundled demo)"})
    settings = {**widget_defaults(pack, "MI_TrainMotionEmbedding"), "prompt": "a red square", "steps": 2}
    embedding, _ = run(pack, "MI_TrainMotionEmbedding", model=model, frames=bundled_clip_frames(pack), **settings)
    info = embedding.info
    assert (info.train_width, info.train_height, info.train_frames, info.steps) == (32, 32, 8, 2)
    assert (info.extra["learning_rate"], info.extra["layer_set"]) == (0.1, "all")


def test_sampler_auto_values_use_the_models_recommended_settings_and_explicit_values_win(pack, recommending_model):
    auto = widget_defaults(pack, "MI_MotionSampler")
    auto.update(prompt="a blue circle")
    (video,) = run(pack, "MI_MotionSampler", model=recommending_model, **auto)
    assert tuple(video.shape) == (4, 24, 16, 3)
    typed = {**auto, "width": 16, "height": 24, "frames": 4, "steps": 2, "cfg": 2.0}
    (typed_video,) = run(pack, "MI_MotionSampler", model=recommending_model, **typed)
    assert torch.equal(video, typed_video)  # the recommended steps and cfg too
    (other_steps,) = run(pack, "MI_MotionSampler", model=recommending_model, **{**auto, "steps": 1})
    assert not torch.equal(video, other_steps)
    # cfg 0 keeps its meaning (no text guidance), as in workflows saved before auto existed
    (unguided,) = run(pack, "MI_MotionSampler", model=recommending_model, **{**auto, "cfg": 0.0})
    config = pack.motion_core.sampling.SamplingConfig("a blue circle", "", 16, 24, 4, 2, 0.0)
    assert torch.equal(unguided, pack.motion_core.sampling.sample_video(recommending_model.model, config))
    # with an embedding applied, auto frames are its training frames (6 here)
    embedding, _ = run(pack, "MI_TrainMotionEmbedding", model=recommending_model, frames=torch.rand(6, 32, 32, 3),
                       **{**widget_defaults(pack, "MI_TrainMotionEmbedding"), "prompt": "a red square", "steps": 1})
    (applied,) = run(pack, "MI_ApplyMotionEmbedding", model=recommending_model, motion_embedding=embedding, strength=1.0, mode="object")
    (video,) = run(pack, "MI_MotionSampler", model=applied, **auto)
    assert tuple(video.shape) == (6, 24, 16, 3)
    (video,) = run(pack, "MI_MotionSampler", model=applied, **{**auto, "frames": 3, "width": 32})
    assert tuple(video.shape) == (3, 24, 32, 3)


def _build_workflows_module():
    if "build_workflows" in sys.modules:
        return sys.modules["build_workflows"]
    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "scripts" / "build_workflows.py")
    build = importlib.util.module_from_spec(spec)
    sys.modules["build_workflows"] = build  # its dataclasses look their module up there
    spec.loader.exec_module(build)
    return build


def test_example_workflows_are_what_the_build_script_writes(pack):
    build = _build_workflows_module()
    assert sorted(p.stem for p in (REPO / "workflows").glob("*.json")) == sorted(build.BUILDERS)
    for name, builder in build.BUILDERS.items():
        written = json.dumps(builder(pack), indent=2) + "\n"
        assert (REPO / "workflows" / f"{name}.json").read_text() == written, f"re-run python scripts/build_workflows.py ({name})"
