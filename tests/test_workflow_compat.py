"""Workflows saved with an earlier release still load, validate and mean the same on the current nodes.

``tests/data/released_workflows/`` holds ``workflows/*.json`` as released at commit c3d7e8d and the widget inputs
(name, kind) the nodes had then. A saved workflow stores only a list of widget values per node, matched to the
widgets by position, so a renamed, reordered or retyped widget silently changes what an old file means.
:func:`comfy_validation_errors` applies ComfyUI's own checks (``execution.validate_inputs``): value conversion,
min/max and combo lists for every input that ``VALIDATE_INPUTS`` does not take, then ``VALIDATE_INPUTS`` itself.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
RELEASED = REPO / "tests" / "data" / "released_workflows"
RELEASED_WIDGETS: dict[str, list[list[str]]] = json.loads((RELEASED / "widget_inputs.json").read_text())
RELEASED_FILES = sorted(RELEASED.glob("*_sample.json"))
CORE_NODE_TYPES = {"PreviewImage", "SaveAnimatedWEBP"}
CONVERT = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def _build_workflows():
    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "scripts" / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_workflows", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


BUILD = _build_workflows()


def input_specs(cls) -> dict[str, tuple]:
    spec = cls.INPUT_TYPES()
    return {name: item for section in ("required", "optional") for name, item in spec.get(section, {}).items()}


def widget_slots(cls) -> list[str | None]:
    """The node's widgets in the editor's order: an input name, or ``None`` for a seed's "control after generate"
    and for an upload button (added after every other widget)."""
    slots: list[str | None] = []
    uploads = 0
    for name, spec in input_specs(cls).items():
        if BUILD.is_widget(spec):
            slots.append(name)
            options = BUILD.spec_options(spec)
            if BUILD.has_seed_control(name, options):
                slots.append(None)
            uploads += bool(options.get("video_upload") or options.get("image_upload"))
    return slots + [None] * uploads


def saved_values_to_inputs(cls, widgets_values: list[Any]) -> dict[str, Any]:
    """What the editor queues for a node loaded from a file: saved values by position, defaults for widgets the
    file does not have (added after it was saved)."""
    slots = widget_slots(cls)
    assert len(widgets_values) <= len(slots), f"{cls.__name__}: the file has more widget values than the node has widgets"
    inputs: dict[str, Any] = {}
    for index, name in enumerate(slots):
        if name is None:
            continue
        spec = input_specs(cls)[name]
        default = BUILD.spec_options(spec).get("default", spec[0][0] if isinstance(spec[0], list) else None)
        inputs[name] = widgets_values[index] if index < len(widgets_values) else default
    return inputs


def validate_inputs_args(cls) -> tuple[list[str], bool]:
    """The inputs ComfyUI hands to ``VALIDATE_INPUTS`` (and so does not check itself), and whether it takes ``**kwargs``."""
    function = getattr(cls, "VALIDATE_INPUTS", None)
    if function is None:
        return [], False
    argspec = inspect.getfullargspec(function)
    return argspec.args, argspec.varkw is not None


def comfy_validation_errors(cls, inputs: dict[str, Any], linked: frozenset[str] = frozenset()) -> list[str]:
    """ComfyUI's checks of a prompt's inputs for one node (``linked`` inputs come from other nodes: ``None`` here)."""
    args, has_kwargs = validate_inputs_args(cls)
    errors: list[str] = []
    spec = cls.INPUT_TYPES()
    values: dict[str, Any] = {}
    for section in ("required", "optional"):
        for name, (kind, *rest) in spec.get(section, {}).items():
            options = rest[0] if rest else {}
            if name in linked:
                values[name] = None
                continue
            if name not in inputs:
                if section == "required":
                    errors.append(f"{name}: required input is missing")
                continue
            value = inputs[name]
            if isinstance(kind, str) and kind in CONVERT:
                try:
                    value = CONVERT[kind](value)
                except (TypeError, ValueError) as exc:
                    errors.append(f"{name}: cannot convert {value!r} to {kind} ({exc})")
                    continue
            values[name] = value
            if name in args or has_kwargs:
                continue
            if "min" in options and value < options["min"]:
                errors.append(f"{name}: {value} is smaller than min {options['min']}")
            elif "max" in options and value > options["max"]:
                errors.append(f"{name}: {value} is bigger than max {options['max']}")
            elif isinstance(kind, list) and value not in kind:
                errors.append(f"{name}: {value!r} is not in {kind}")
    if args or has_kwargs:
        taken = {name: value for name, value in values.items() if name in args or has_kwargs}
        result = cls.VALIDATE_INPUTS(**taken)
        if result is not True:
            errors.append(f"VALIDATE_INPUTS: {result}")
    return errors


@pytest.fixture
def fresh_install(pack, tmp_path):
    """Empty ComfyUI-like folders: only what the pack brings is offered (bundled model, clips, embedding)."""
    pack.nodes.comfy_bridge.use_standalone_folders(tmp_path)
    return tmp_path


def _pack_nodes(workflow: Path):
    return [n for n in json.loads(workflow.read_text())["nodes"] if n["type"] not in CORE_NODE_TYPES]


def test_the_released_files_are_the_released_workflows():
    assert [p.name for p in RELEASED_FILES] == ["load_embedding_and_sample.json", "train_and_sample.json"]
    kinds = {n["type"] for p in RELEASED_FILES for n in _pack_nodes(p)}
    assert kinds <= set(RELEASED_WIDGETS) and len(kinds) == 6


@pytest.mark.parametrize("workflow", RELEASED_FILES, ids=lambda p: p.name)
def test_released_widget_values_land_on_the_inputs_they_meant(pack, workflow):
    """Each saved value goes to the widget of the same name as when the file was saved; a widget whose kind
    changed since is validated by the node itself (it takes it in ``VALIDATE_INPUTS``)."""
    for node in _pack_nodes(workflow):
        cls = pack.NODE_CLASS_MAPPINGS[node["type"]]
        now = [name for name in widget_slots(cls) if name is not None]
        then = RELEASED_WIDGETS[node["type"]]
        assert now[: len(then)] == [name for name, _ in then], node["type"]
        args, _ = validate_inputs_args(cls)
        for name, kind in then:
            spec = input_specs(cls)[name]
            kind_now = "COMBO" if isinstance(spec[0], list) else spec[0]
            assert kind_now == kind or name in args, f"{node['type']}.{name}: {kind} -> {kind_now}"


@pytest.mark.parametrize("workflow", RELEASED_FILES, ids=lambda p: p.name)
def test_released_workflows_validate_as_comfyui_would(pack, workflow, fresh_install):
    data = json.loads(workflow.read_text())
    nodes = {n["id"]: n for n in data["nodes"]}
    for node in _pack_nodes(workflow):
        cls = pack.NODE_CLASS_MAPPINGS[node["type"]]
        linked = frozenset(slot["name"] for slot in node["inputs"] if slot["link"] is not None)
        inputs = saved_values_to_inputs(cls, node["widgets_values"])
        assert comfy_validation_errors(cls, inputs, linked) == [], node["type"]
        declared = input_specs(cls)
        for slot in node["inputs"]:  # sockets keep their names and types
            assert declared[slot["name"]][0] == slot["type"], (node["type"], slot["name"])
        assert [o["type"] for o in node["outputs"]] == list(cls.RETURN_TYPES)[: len(node["outputs"])]
    for _, src, src_slot, dst, dst_slot, kind in data["links"]:  # every link still joins outputs and inputs of its type
        if nodes[src]["type"] in pack.NODE_CLASS_MAPPINGS:
            assert pack.NODE_CLASS_MAPPINGS[nodes[src]["type"]].RETURN_TYPES[src_slot] == kind
        if nodes[dst]["type"] in pack.NODE_CLASS_MAPPINGS:
            target = input_specs(pack.NODE_CLASS_MAPPINGS[nodes[dst]["type"]])
            assert target[nodes[dst]["inputs"][dst_slot]["name"]][0] == kind


def test_comfyui_still_checks_every_input_the_node_does_not_validate_itself(pack, fresh_install):
    """``VALIDATE_INPUTS`` turns ComfyUI's min/max/combo checks off for each input it takes (all with ``**kwargs``)."""
    frames = pack.NODE_CLASS_MAPPINGS["MI_LoadVideoFrames"]
    video = next(iter(pack.nodes.comfy_bridge.list_videos()))
    good = dict(video=video, start_frame=0, frame_stride=1, frame_count=8, width=32, height=32, resize_mode="crop")
    assert comfy_validation_errors(frames, good) == []
    for bad in (dict(frame_count=-3), dict(frame_stride=0), dict(width=99_999), dict(resize_mode="zoom")):
        assert comfy_validation_errors(frames, {**good, **bad}), bad
    assert comfy_validation_errors(frames, {**good, "video": "missing.mp4"}) == ["VALIDATE_INPUTS: Video 'missing.mp4' is not in the input folder."]
    assert comfy_validation_errors(frames, {k: v for k, v in good.items() if k != "video"}, frozenset({"video"})) == []

    train = pack.NODE_CLASS_MAPPINGS["MI_TrainMotionEmbedding"]
    inputs = saved_values_to_inputs(train, [])
    assert validate_inputs_args(train) == (["cls", "gradient_checkpointing"], False)
    for setting in (True, False, "auto", "on", "off"):  # true/false: workflows saved when it was a switch
        assert comfy_validation_errors(train, {**inputs, "gradient_checkpointing": setting}, frozenset({"model", "frames"})) == []
    assert comfy_validation_errors(train, {**inputs, "gradient_checkpointing": "sometimes"}, frozenset({"model", "frames"}))
    assert comfy_validation_errors(train, {**inputs, "steps": -1}, frozenset({"model", "frames"}))  # 0 is auto since issue 10
    assert comfy_validation_errors(train, {**inputs, "inversion": "sideways"}, frozenset({"model", "frames"}))
    without_new_widget = {k: v for k, v in inputs.items() if k != "inversion"}  # an API prompt saved before it existed
    assert comfy_validation_errors(train, without_new_widget, frozenset({"model", "frames"})) == []


def _run(pack, name: str, **kwargs):
    cls = pack.NODE_CLASS_MAPPINGS[name]
    with torch.inference_mode():
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
    return out["result"] if isinstance(out, dict) and "result" in out else out


def test_released_training_settings_still_run(pack, fresh_install, tiny_model_dir):
    """The released example's Train node (gradient checkpointing saved as ``false``) runs, on the tiny model."""
    shutil.copytree(tiny_model_dir, fresh_install / "models" / "diffusers" / "tiny-t2v")
    pack.motion_core.model_loading.clear_model_cache()
    saved = next(n for n in _pack_nodes(RELEASED / "train_and_sample.json") if n["type"] == "MI_TrainMotionEmbedding")
    settings = saved_values_to_inputs(pack.NODE_CLASS_MAPPINGS["MI_TrainMotionEmbedding"], saved["widgets_values"])
    assert settings["gradient_checkpointing"] is False and settings["inversion"] == "plain"
    settings.update(steps=2, frame_count=6, filename_prefix="compat/old")
    (model,) = _run(pack, "MI_LoadVideoModel", model="tiny-t2v", precision="fp32", attention="auto")
    embedding, _ = _run(pack, "MI_TrainMotionEmbedding", model=model, frames=torch.rand(6, 32, 32, 3), **settings)
    assert embedding.info.steps == 2 and embedding.info.train_frames == 6


def test_apply_uses_the_embeddings_own_mode_by_default(pack, fresh_install):
    """``embedding default`` (the default) is the mode the file recommends; ``object`` from old workflows still works."""
    EMBEDDING_DEFAULT_MODE = pack.motion_core.embedding.EMBEDDING_DEFAULT_MODE
    apply = pack.NODE_CLASS_MAPPINGS["MI_ApplyMotionEmbedding"]
    mode_spec = input_specs(apply)["mode"]
    assert mode_spec[0] == list(pack.motion_core.embedding.MODE_CHOICES) and mode_spec[0][0] == mode_spec[1]["default"] == EMBEDDING_DEFAULT_MODE
    (model,) = _run(pack, "MI_LoadVideoModel", model="toyworld-t2v (bundled demo)", precision="fp32", attention="auto")
    (embedding,) = _run(pack, "MI_LoadMotionEmbedding", embedding="toyworld_red_square_bounce.safetensors (bundled demo)")
    camera_first = embedding.with_info(default_mode="camera")
    settings = dict(prompt="a blue circle", negative_prompt="", width=32, height=32, frames=8, steps=3, cfg=1.5, seed=0,
                    scheduler="ddim", noise_prior=0.5)
    videos = {}
    for mode in (EMBEDDING_DEFAULT_MODE, "camera", "object"):
        (applied,) = _run(pack, "MI_ApplyMotionEmbedding", model=model, motion_embedding=camera_first, strength=1.0, mode=mode)
        assert applied.motion.mode == ("camera" if mode == EMBEDDING_DEFAULT_MODE else mode)
        (videos[mode],) = _run(pack, "MI_MotionSampler", model=applied, **settings)
    assert torch.equal(videos[EMBEDDING_DEFAULT_MODE], videos["camera"])
    assert not torch.equal(videos["camera"], videos["object"])
