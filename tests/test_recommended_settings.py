"""A model folder's recommended settings (``motion_inversion.json``): real files read from real folders, values the
pack's defaults fill in, clear errors for bad files, warnings (not errors) for keys a newer pack may write."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import pytest

from motion_core.errors import ModelLoadError
from motion_core.model_loading import clear_model_cache, load_video_model
from motion_core.recommended_settings import (
    SETTINGS_FILE,
    RecommendedSettings,
    read_recommended_settings,
    resolve_recommended,
    resolve_sampling_recommended,
)
from motion_core.sampling import SamplingConfig
from motion_core.training import TrainingConfig

REPO = Path(__file__).resolve().parent.parent
# section.key -> the default the pack uses when the file has no value (the one source: the settings dataclasses)
BUILT_IN = {
    ("train", "width"): (SamplingConfig, "width"), ("train", "height"): (SamplingConfig, "height"),
    ("train", "frames"): (SamplingConfig, "frames"), ("train", "steps"): (TrainingConfig, "steps"),
    ("train", "learning_rate"): (TrainingConfig, "learning_rate"), ("train", "layers"): (TrainingConfig, "layer_set"),
    ("sample", "width"): (SamplingConfig, "width"), ("sample", "height"): (SamplingConfig, "height"),
    ("sample", "frames"): (SamplingConfig, "frames"), ("sample", "steps"): (SamplingConfig, "steps"),
    ("sample", "cfg"): (SamplingConfig, "guidance_scale"),
}


def field_default(owner: type, name: str):
    return next(f.default for f in dataclasses.fields(owner) if f.name == name)


def write_settings(folder: Path, content: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SETTINGS_FILE
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_a_folder_without_the_file_gives_the_packs_defaults(tmp_path):
    settings = read_recommended_settings(tmp_path)
    assert settings == RecommendedSettings() and settings.source is None
    for (section, key), (owner, name) in BUILT_IN.items():
        assert settings.from_file(section, key) is None
        assert settings.value(section, key) == field_default(owner, name), (section, key)


def test_file_values_are_used_and_missing_keys_take_the_packs_defaults(tmp_path):
    path = write_settings(tmp_path, {"format_version": 1, "train": {"width": 48, "learning_rate": 1, "layers": "all"},
                                     "sample": {"cfg": 0, "frames": 9}})
    settings = read_recommended_settings(tmp_path)
    assert settings.source == path
    assert (settings.value("train", "width"), settings.value("train", "layers"), settings.value("sample", "frames")) == (48, "all", 9)
    learning_rate, cfg = settings.value("train", "learning_rate"), settings.value("sample", "cfg")
    assert (learning_rate, cfg) == (1.0, 0.0) and isinstance(learning_rate, float) and isinstance(cfg, float)
    assert settings.value("train", "height") == field_default(SamplingConfig, "height")
    assert settings.value("sample", "steps") == field_default(SamplingConfig, "steps")
    # no format_version and no sections: version 1, every value the pack's
    write_settings(tmp_path, {})
    assert read_recommended_settings(tmp_path).value("train", "steps") == field_default(TrainingConfig, "steps")


@pytest.mark.parametrize("content, names", [
    ({"train": {"width": "32"}}, ["train.width", "whole number from 1 to 8192", "'32'"]),
    ({"train": {"width": 32.5}}, ["train.width", "whole number"]),
    ({"train": {"height": 0}}, ["train.height", "from 1"]),
    ({"train": {"frames": True}}, ["train.frames", "whole number"]),
    ({"train": {"steps": -3}}, ["train.steps"]),
    ({"train": {"steps": 10**6}}, ["train.steps", "to 100000"]),
    ({"train": {"learning_rate": 0}}, ["train.learning_rate", "above 0"]),
    ({"train": {"learning_rate": "NaN"}}, ["train.learning_rate"]),
    ('{"train": {"learning_rate": NaN}}', ["train.learning_rate", "nan"]),
    ('{"sample": {"cfg": Infinity}}', ["sample.cfg", "inf"]),
    ({"sample": {"cfg": -1}}, ["sample.cfg", "from 0 to 50"]),
    ({"sample": {"steps": 5000}}, ["sample.steps", "to 1000"]),
    ({"train": {"layers": "middle"}}, ["train.layers", "paper, paper+640, all", "'middle'"]),
    ({"train": {"layers": 3}}, ["train.layers"]),
    ({"train": [32, 32]}, ["train must be a JSON object"]),
    ([1, 2], ["must hold a JSON object"]),
    ({"format_version": 2, "train": {}}, ["format_version 2", "update the pack"]),
    ({"format_version": "1"}, ["format_version '1'"]),
    ('{"train": {"width": 32,}}', ["Cannot read", "Expecting"]),
    (b"\xff\xfe not text", ["Cannot read"]),
])
def test_bad_files_name_the_file_and_the_key(tmp_path, content, names):
    path = tmp_path / SETTINGS_FILE
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_settings(tmp_path, content)
    with pytest.raises(ModelLoadError) as error:
        read_recommended_settings(tmp_path)
    message = str(error.value)
    assert str(path) in message
    for name in names:
        assert name in message, (name, message)


def test_the_largest_size_is_the_largest_the_pack_resizes_to():
    from motion_core import frame_resize, recommended_settings

    assert recommended_settings.MAX_SIDE == frame_resize.MAX_FRAME_SIDE


def test_a_folder_named_like_the_file_is_refused(tmp_path):
    (tmp_path / SETTINGS_FILE).mkdir()
    with pytest.raises(ModelLoadError, match="not a regular file"):
        read_recommended_settings(tmp_path)


def test_unknown_keys_warn_and_the_rest_loads(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    write_settings(tmp_path, {"format_version": 1, "train": {"width": 64, "shift": 3.0}, "sample": {"sampler": "euler"},
                              "notes": "from a newer pack"})
    settings = read_recommended_settings(tmp_path)
    assert settings.value("train", "width") == 64
    for key in ("'train.shift'", "'sample.sampler'", "'notes'"):
        assert key in caplog.text and SETTINGS_FILE in caplog.text


def test_resolving_fills_only_what_was_not_given_and_says_where_each_value_came_from(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    write_settings(tmp_path, {"train": {"width": 40, "steps": 9}, "sample": {"frames": 12, "cfg": 3.5}})
    settings = read_recommended_settings(tmp_path)
    given = {"width": None, "height": None, "frames": 7, "steps": None, "learning_rate": 0.3, "layers": None}
    resolved = resolve_recommended(settings, "train", given, "m")
    assert resolved == {"width": 40, "height": field_default(SamplingConfig, "height"), "frames": 7, "steps": 9,
                        "learning_rate": 0.3, "layers": field_default(TrainingConfig, "layer_set")}
    assert f"m: recommended training settings from {SETTINGS_FILE}: width 40, steps 9" in caplog.text
    assert f"m: the pack's default training settings (no value in {SETTINGS_FILE}): height 320, layers {field_default(TrainingConfig, 'layer_set')}" in caplog.text
    # sampling: an unset frame count follows the embedding's training frames when one is applied
    unset = {"width": None, "height": None, "frames": None, "steps": None, "cfg": None}
    assert resolve_sampling_recommended(settings, unset, "m", embedding_frames=5)["frames"] == 5
    assert resolve_sampling_recommended(settings, unset, "m", embedding_frames=None)["frames"] == 12
    assert resolve_sampling_recommended(settings, {**unset, "frames": 3}, "m", embedding_frames=5)["frames"] == 3
    assert "sampling 5 frames, the embedding's training frame count" in caplog.text


def test_the_loaded_model_carries_its_folders_settings(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "tiny-with-settings")
    write_settings(folder, {"train": {"width": 24, "layers": "all"}, "sample": {"cfg": 1.5}})
    clear_model_cache()
    model = load_video_model(folder, "fp32", "sdpa", "cpu", use_cache=False)
    assert model.recommended == read_recommended_settings(folder)
    assert (model.recommended.value("train", "width"), model.recommended.value("sample", "cfg")) == (24, 1.5)
    write_settings(folder, {"sample": {"cfg": "high"}})
    with pytest.raises(ModelLoadError, match="sample.cfg"):
        load_video_model(folder, "fp32", "sdpa", "cpu", use_cache=False)


def test_the_bundled_model_recommends_its_known_good_settings():
    """toyworld/README.md: 32x32, 8 frames, 200 steps at learning rate 0.1 on every layer; 25 DDIM steps at cfg 1.5."""
    settings = read_recommended_settings(REPO / "assets" / "toyworld-t2v")
    assert dataclasses.asdict(settings.train) == {"width": 32, "height": 32, "frames": 8, "steps": 200, "learning_rate": 0.1, "layers": "all"}
    assert dataclasses.asdict(settings.sample) == {"width": 32, "height": 32, "frames": 8, "steps": 25, "cfg": 1.5}
