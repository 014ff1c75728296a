"""The ComfyUI nodes, called the way ComfyUI calls them (under inference mode), without ComfyUI installed."""

from __future__ import annotations

import json
import shutil
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
                    frame_count=6, seed=0, gradient_checkpointing=True, save_every=0, filename_prefix="tests/emb")
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
    data = json.loads(workflow.read_text())
    assert data["version"] == 0.4
    nodes = {n["id"]: n for n in data["nodes"]}
    for n in nodes.values():
        assert n["type"] in pack.NODE_CLASS_MAPPINGS or n["type"] in CORE_NODE_TYPES, n["type"]
        if n["type"] in pack.NODE_CLASS_MAPPINGS:
            cls = pack.NODE_CLASS_MAPPINGS[n["type"]]
            assert len(n["widgets_values"]) == _widget_count(cls), n["type"]
            combos = [s for sec in ("required", "optional") for s in cls.INPUT_TYPES().get(sec, {}).values() if isinstance(s[0], list)]
            for spec in combos:  # a fresh install offers every choice the example workflows name (bundled assets)
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


def test_cancel_in_the_training_node_keeps_the_file(pack, comfy_home, monkeypatch):
    bridge = pack.nodes.comfy_bridge
    (model,) = run(pack, "MI_LoadVideoModel", model="tiny-t2v", precision="fp32", attention="auto")
    calls = {"n": 0}

    class Interrupted(BaseException):  # what comfy.model_management raises
        pass

    def interrupt_on_third_check():
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupted

    monkeypatch.setattr(bridge, "throw_if_interrupted", interrupt_on_third_check)
    with pytest.raises(Interrupted):
        run(pack, "MI_TrainMotionEmbedding", model=model, frames=torch.rand(6, 32, 32, 3), **train_settings(steps=20))
    (saved,) = (comfy_home / "models" / "motion_embeddings" / "tests").glob("emb_*.safetensors")
    loaded = pack.motion_core.embedding_file.load_embedding(saved)
    assert loaded.info.steps == 3 and loaded.info.extra["interrupted"]
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
    folder = comfy_home / "models" / "diffusers" / "animatediff"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "AnimateDiffPipeline", "unet": ["diffusers", "UNetMotionModel"]}))
    (folder / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNetMotionModel"}))
    with pytest.raises(pack.motion_core.errors.ModelLoadError, match="UNetMotionModel.*AnimateDiff.*Supported"):
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
