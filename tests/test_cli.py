"""The command line: defaults from the core's dataclasses, help on every option, outputs that never destroy
a user's file, Ctrl-C that keeps the work, and bad input refused before any work. Real tiny model folders,
real videos and real embedding files, through ``motion_core.cli.main`` (and once ``python -m motion_core``)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from motion_core import cli
from motion_core.embedding import EMBEDDING_DEFAULT_MODE, MODE_CHOICES
from motion_core.embedding_file import load_embedding, read_embedding_info
from motion_core.model_loading import load_video_model
from motion_core.sampling import AppliedMotion, SamplingConfig
from motion_core.training import TrainingConfig
from motion_core.video_io import DEFAULT_FPS, read_video_frames, write_video

REPO = Path(__file__).resolve().parent.parent
# Fast runs on the tiny model: no DDIM inversion, no recomputation.
FAST = ["--inversion-steps", "0", "--gradient-checkpointing", "off"]

# option -> the dataclass field that is its one default (written out here, so the test does not trust the CLI's table)
TRAIN_OPTIONS = {
    "--width": (SamplingConfig, "width"), "--height": (SamplingConfig, "height"), "--frames": (SamplingConfig, "frames"),
    "--steps": (TrainingConfig, "steps"), "--lr": (TrainingConfig, "learning_rate"),
    "--weight-decay": (TrainingConfig, "weight_decay"), "--loss": (TrainingConfig, "loss"),
    "--layers": (TrainingConfig, "layer_set"), "--seed": (TrainingConfig, "seed"),
    "--gradient-checkpointing": (TrainingConfig, "gradient_checkpointing"), "--save-every": (TrainingConfig, "save_every"),
    "--inversion": (TrainingConfig, "inversion"), "--inversion-steps": (TrainingConfig, "inversion_steps"),
    "--lora-rank": (TrainingConfig, "lora_rank"), "--lora-lr": (TrainingConfig, "lora_learning_rate"),
    "--lora-off-probability": (TrainingConfig, "lora_off_probability"),
    "--appearance-augmentation": (TrainingConfig, "appearance_augmentation"),
    "--value-static-penalty": (TrainingConfig, "value_static_penalty"),
}
SAMPLE_OPTIONS = {
    "--negative-prompt": (SamplingConfig, "negative_prompt"), "--width": (SamplingConfig, "width"),
    "--height": (SamplingConfig, "height"), "--frames": (SamplingConfig, "frames"), "--steps": (SamplingConfig, "steps"),
    "--cfg": (SamplingConfig, "guidance_scale"), "--seed": (SamplingConfig, "seed"),
    "--scheduler": (SamplingConfig, "scheduler"), "--noise-prior": (SamplingConfig, "noise_prior"),
    "--strength": (AppliedMotion, "strength"), "--mode": (AppliedMotion, "mode"),
    "--start-percent": (AppliedMotion, "start_percent"), "--end-percent": (AppliedMotion, "end_percent"),
}
MINIMAL = {
    "train": ["train", "--model", "m", "--video", "v.mp4", "--prompt", "p", "--out", "o.safetensors"],
    "sample": ["sample", "--model", "m", "--prompt", "p", "--out", "o.mp4"],
}


def dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def parsed_defaults(command: str) -> dict[str, object]:
    return vars(cli.build_parser().parse_args(MINIMAL[command]))


def field_of(owner: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(owner) if f.name == name)


def changed(value):
    """A different value of the same type (what a maintainer changing the dataclass default would write)."""
    if isinstance(value, float):
        return value + 0.25
    if isinstance(value, int):
        return value + 7
    return f"{value}-changed"


def patch_defaults(monkeypatch, function, **changes) -> None:
    """Change the defaults of ``function``'s parameters (what editing its signature would do)."""
    params = inspect.signature(function).parameters.values()
    positional = [p for p in params if p.default is not p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
    monkeypatch.setattr(function, "__defaults__", tuple(changes.get(p.name, p.default) for p in positional))


# ----- defaults and help -----
@pytest.mark.parametrize("command, options", [("train", TRAIN_OPTIONS), ("sample", SAMPLE_OPTIONS)])
def test_parser_defaults_are_the_dataclass_defaults(command, options, monkeypatch):
    # every field of the configs is an option (so this test sees every shared default)
    trained = {name for owner, name in TRAIN_OPTIONS.values() if owner is TrainingConfig}
    assert trained == {f.name for f in dataclasses.fields(TrainingConfig)} - {"prompt"}
    sampled = {(SamplingConfig, f.name) for f in dataclasses.fields(SamplingConfig) if f.name != "prompt"}
    applied = {(AppliedMotion, f.name) for f in dataclasses.fields(AppliedMotion) if f.name != "embedding"}
    assert set(SAMPLE_OPTIONS.values()) == sampled | applied
    defaults = parsed_defaults(command)
    for flag, (owner, name) in options.items():
        assert defaults[dest(flag)] == field_of(owner, name).default, flag
    # A literal typed into the CLI would not follow a change of the dataclass default: change them all and look.
    for owner, name in options.values():
        field = field_of(owner, name)
        monkeypatch.setattr(field, "default", changed(field.default))
    defaults = parsed_defaults(command)
    for flag, (owner, name) in options.items():
        assert defaults[dest(flag)] == field_of(owner, name).default, f"{flag} does not follow {owner.__name__}.{name}"


def test_loader_defaults_come_from_the_loaders(monkeypatch):
    train, sample = parsed_defaults("train"), parsed_defaults("sample")
    for defaults in (train, sample):
        assert (defaults["precision"], defaults["attention"]) == ("auto", "auto")
    assert (train["start_frame"], train["stride"], train["resize"], sample["fps"]) == (0, 1, "crop", DEFAULT_FPS)
    patch_defaults(monkeypatch, load_video_model, precision="fp32", attention="sdpa")
    patch_defaults(monkeypatch, read_video_frames, start_frame=3, frame_stride=2, resize_mode="pad")
    patch_defaults(monkeypatch, write_video, fps=12.0)
    train, sample = parsed_defaults("train"), parsed_defaults("sample")
    for defaults in (train, sample):
        assert (defaults["precision"], defaults["attention"]) == ("fp32", "sdpa")
    assert (train["start_frame"], train["stride"], train["resize"], sample["fps"]) == (3, 2, "pad", 12.0)


def test_checkpointing_and_inversion_choices():
    parser = cli.build_parser()
    assert parser.parse_args([*MINIMAL["train"], "--no-checkpointing"]).gradient_checkpointing == "off"
    for choice in ("auto", "on", "off"):
        assert parser.parse_args([*MINIMAL["train"], "--gradient-checkpointing", choice]).gradient_checkpointing == choice
    assert parser.parse_args([*MINIMAL["train"], "--inversion", "embedded"]).inversion == "embedded"
    with pytest.raises(SystemExit):
        parser.parse_args([*MINIMAL["train"], "--inversion", "sideways"])


def test_every_option_has_help_and_mode_offers_the_embedding_default():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest} has no help"
    mode = next(a for a in commands["sample"]._actions if a.dest == "mode")
    assert tuple(mode.choices) == MODE_CHOICES and mode.default == EMBEDDING_DEFAULT_MODE


# ----- real runs -----
@pytest.fixture
def reference_video(tmp_path, reference_clip) -> Path:
    return write_video(reference_clip, tmp_path / "reference.mp4")


def train_args(model_dir: Path, video: Path, out: Path, *extra: object, steps: int = 2) -> list[str]:
    args = ["train", "--model", model_dir, "--video", video, "--prompt", "a red square", "--out", out, "--width", "32",
            "--height", "32", "--frames", "6", "--steps", steps, "--lr", "0.1", "--layers", "all", "--device", "cpu",
            *FAST, *extra]
    return [str(a) for a in args]


def sample_args(model_dir: Path, out: Path, *extra: object) -> list[str]:
    args = ["sample", "--model", model_dir, "--prompt", "a blue circle", "--out", out, "--width", "32", "--height", "32",
            "--frames", "4", "--steps", "2", "--cfg", "2", "--device", "cpu", *extra]
    return [str(a) for a in args]


@pytest.fixture
def trained_file(tiny_model_dir, reference_video, tmp_path) -> Path:
    out = tmp_path / "good.safetensors"
    assert cli.main(train_args(tiny_model_dir, reference_video, out)) == 0
    return out


def test_an_existing_out_is_refused_without_overwrite(tiny_model_dir, reference_video, trained_file, tmp_path, caplog):
    before = trained_file.read_bytes()
    assert cli.main(train_args(tiny_model_dir, reference_video, trained_file, steps=3)) == 2
    assert "already exists" in caplog.text and "--overwrite" in caplog.text
    assert trained_file.read_bytes() == before
    clip = write_video(read_video_frames(reference_video).frames, tmp_path / "keep.gif")
    kept = clip.read_bytes()
    assert cli.main(sample_args(tiny_model_dir, clip)) == 2
    assert clip.read_bytes() == kept


def test_an_input_is_never_written_over_even_with_overwrite(tiny_model_dir, reference_video, trained_file, tmp_path, caplog):
    video_bytes, embedding_bytes = reference_video.read_bytes(), trained_file.read_bytes()
    hard_link = tmp_path / "same_video.safetensors"
    os.link(reference_video, hard_link)
    for out in (reference_video, hard_link, tmp_path / "." / reference_video.name):
        assert cli.main(train_args(tiny_model_dir, reference_video, out, "--overwrite")) == 2
        assert "is the input video" in caplog.text
    resume_into_itself = train_args(tiny_model_dir, reference_video, trained_file, "--overwrite", "--resume", trained_file)
    assert cli.main(resume_into_itself) == 2
    assert "is the embedding to resume" in caplog.text
    assert cli.main(sample_args(tiny_model_dir, trained_file, "--embedding", trained_file, "--overwrite")) == 2
    assert "is the embedding file" in caplog.text
    assert reference_video.read_bytes() == video_bytes and trained_file.read_bytes() == embedding_bytes


def test_overwrite_replaces_the_file_once_the_run_is_finished(tiny_model_dir, reference_video, trained_file, tmp_path):
    assert read_embedding_info(trained_file)[0].steps == 2
    assert cli.main(train_args(tiny_model_dir, reference_video, trained_file, "--overwrite", steps=3)) == 0
    assert read_embedding_info(trained_file)[0].steps == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.safetensors", "reference.mp4"]


class CtrlCAfterFirstStep(logging.Handler):
    """Sends this process a real SIGINT when the CLI logs its first training step."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("step 1/"):
            signal.raise_signal(signal.SIGINT)


@pytest.fixture
def python_sigint():
    """SIGINT raises KeyboardInterrupt here, as in a terminal, also when the test run was started as a background job
    (bash starts those with SIGINT ignored, and Python keeps an ignored SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _default_sigint() -> None:
    """In a child before it runs Python: SIGINT back to its default, so that Python installs its own handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_with_overwrite_keeps_the_old_file_and_says_where_the_new_one_is(
    tiny_model_dir, reference_video, trained_file, tmp_path, caplog, python_sigint
):
    caplog.set_level(logging.INFO, logger="motion_core")
    before = trained_file.read_bytes()
    handler = CtrlCAfterFirstStep()
    logging.getLogger("motion_core").addHandler(handler)
    try:
        code = cli.main(train_args(tiny_model_dir, reference_video, trained_file, "--overwrite", "--save-every", "1", steps=50))
    finally:
        logging.getLogger("motion_core").removeHandler(handler)
    assert code == 130
    assert trained_file.read_bytes() == before  # neither the periodic nor the interrupted save touched it
    unfinished = tmp_path / "good.unfinished.safetensors"
    interrupted = load_embedding(unfinished)
    assert 1 <= interrupted.info.steps < 50
    last = caplog.records[-1].getMessage()
    assert str(unfinished) in last and f"{trained_file} was left as it was" in last


def test_ctrl_c_in_a_real_process_exits_130_with_one_line_and_keeps_the_embedding(tiny_model_dir, reference_video, tmp_path):
    out = tmp_path / "run.safetensors"
    stderr_path = tmp_path / "stderr.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = train_args(tiny_model_dir, reference_video, out, "--save-every", "0", steps=2000)
    command = [sys.executable, "-m", "motion_core", *args]
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                                   preexec_fn=_default_sigint)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    output = []
    try:
        while True:  # wait for the first step's log line (a guard, not a timing: the run has 2000 steps)
            line = lines.get(timeout=600)
            assert line is not None, "".join(output) + stderr_path.read_text()
            output.append(line)
            if line.startswith("step "):
                break
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    while (line := lines.get(timeout=60)) is not None:
        output.append(line)
    stderr_text = stderr_path.read_text()
    assert code == 130, "".join(output) + stderr_text
    assert "Traceback" not in stderr_text and "KeyboardInterrupt" not in stderr_text
    assert output[-1].startswith("Interrupted") and str(out) in output[-1]
    assert 1 <= load_embedding(out).info.steps < 2000


def test_an_unwritable_out_is_refused_before_the_model_is_loaded(tiny_model_dir, reference_video, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("a file, not a folder")
    assert cli.main(train_args(tiny_model_dir, reference_video, not_a_folder / "e.safetensors")) == 2
    assert "is a file, not a folder" in caplog.text
    assert cli.main(sample_args(tiny_model_dir, not_a_folder / "deeper" / "clip.mp4")) == 2
    assert caplog.text.count("is a file, not a folder") == 2
    assert "Loading" not in caplog.text  # the model was never loaded


def test_sizes_are_rounded_like_the_node_does(tiny_model_dir, reference_video, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    out = tmp_path / "odd.safetensors"
    args = train_args(tiny_model_dir, reference_video, out)
    args[args.index("--width") + 1], args[args.index("--height") + 1] = "30", "34"
    assert cli.main(args) == 0
    info = read_embedding_info(out)[0]
    assert (info.train_width, info.train_height) == (32, 32)
    assert "30x34" in caplog.text and "32x32" in caplog.text
    clip = tmp_path / "odd.mp4"
    args = sample_args(tiny_model_dir, clip, "--embedding", out)
    args[args.index("--width") + 1], args[args.index("--height") + 1] = "30", "26"
    assert cli.main(args) == 0
    assert read_video_frames(clip).frames.shape[1:3] == (24, 32)
    assert "30x26" in caplog.text and "32x24" in caplog.text


def test_a_size_that_cannot_fit_is_refused_before_sampling(tiny_model_dir, tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("MOTION_INVERSION_SKIP_MEMORY_CHECK", raising=False)
    out = tmp_path / "huge.mp4"
    args = sample_args(tiny_model_dir, out)
    args[args.index("--width") + 1], args[args.index("--height") + 1] = "100000", "3200"
    assert cli.main(args) == 2
    assert "100000x3200" in caplog.text and "needs at least" in caplog.text
    assert not out.exists()


@pytest.mark.parametrize("fps", ["inf", "nan", "0.001", "1e9"])
def test_a_frame_rate_no_file_can_hold_is_refused_with_the_arguments(tiny_model_dir, tmp_path, fps, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(sample_args(tiny_model_dir, tmp_path / "clip.mp4", "--fps", fps))
    assert stop.value.code == 2
    assert "Frame rate must be" in capsys.readouterr().err


def test_fifos_and_folders_are_named_as_what_they_are(tiny_model_dir, reference_video, trained_file, tmp_path, caplog):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    for path, kind in ((fifo, "named pipe (FIFO)"), (folder, "is a folder")):
        caplog.clear()
        assert cli.main(sample_args(tiny_model_dir, tmp_path / "c.mp4", "--embedding", path)) == 2
        assert kind in caplog.text and str(path) in caplog.text
        caplog.clear()
        assert cli.main(train_args(tiny_model_dir, reference_video, tmp_path / "e.safetensors", "--resume", path)) == 2
        assert kind in caplog.text
        caplog.clear()
        assert cli.main(train_args(tiny_model_dir, path, tmp_path / "e.safetensors")) == 2
        assert kind in caplog.text
        caplog.clear()
        assert cli.main(["info", str(path)]) == 2
        assert kind in caplog.text
    assert cli.main(train_args(tiny_model_dir, reference_video, folder)) == 2
    assert "is a folder" in caplog.text
    shutil.rmtree(folder)


# ----- the model's recommended settings (motion_inversion.json) -----
RECOMMENDED = {
    "format_version": 1,
    "train": {"width": 32, "height": 24, "frames": 5, "steps": 3, "learning_rate": 0.05, "layers": "all"},
    "sample": {"width": 24, "height": 16, "frames": 4, "steps": 2, "cfg": 2.0},
}


@pytest.fixture
def recommending_model_dir(tiny_model_dir, tmp_path) -> Path:
    """The tiny model with a motion_inversion.json of its own."""
    folder = shutil.copytree(tiny_model_dir, tmp_path / "tiny-recommending")
    (folder / "motion_inversion.json").write_text(json.dumps(RECOMMENDED))
    return folder


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_and_sample_need_no_other_flag_and_use_the_models_recommended_settings(
    recommending_model_dir, reference_video, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    model = str(recommending_model_dir)
    out = tmp_path / "auto.safetensors"
    assert cli.main(["train", "--model", model, "--video", str(reference_video), "--prompt", "a red square", "--out", str(out)]) == 0
    info = read_embedding_info(out)[0]
    assert (info.train_width, info.train_height, info.train_frames, info.steps) == (32, 24, 5, 3)
    assert (info.extra["learning_rate"], info.extra["layer_set"]) == (0.05, "all")
    assert ("tiny-recommending: recommended training settings from motion_inversion.json: width 32, height 24, frames 5, "
            "steps 3, learning_rate 0.05, layers all") in caplog.text
    # the same embedding as with every value typed out
    typed = tmp_path / "typed.safetensors"
    assert cli.main(["train", "--model", model, "--video", str(reference_video), "--prompt", "a red square", "--out", str(typed),
                     "--width", "32", "--height", "24", "--frames", "5", "--steps", "3", "--lr", "0.05", "--layers", "all"]) == 0
    auto_embedding, typed_embedding = load_embedding(out), load_embedding(typed)
    assert same_tensors(auto_embedding.query_key, typed_embedding.query_key) and same_tensors(auto_embedding.value, typed_embedding.value)

    # sampling with the embedding: the recommended size, steps and cfg; the embedding's 5 training frames
    clip = tmp_path / "auto.gif"
    assert cli.main(["sample", "--model", model, "--embedding", str(out), "--prompt", "a blue circle", "--out", str(clip)]) == 0
    frames = read_video_frames(clip).frames
    assert tuple(frames.shape) == (5, 16, 24, 3)
    assert "sampling 5 frames, the embedding's training frame count" in caplog.text
    typed_clip = tmp_path / "typed.gif"
    assert cli.main(["sample", "--model", model, "--embedding", str(out), "--prompt", "a blue circle", "--out", str(typed_clip),
                     "--width", "24", "--height", "16", "--frames", "5", "--steps", "2", "--cfg", "2"]) == 0
    assert torch.equal(read_video_frames(typed_clip).frames, frames)
    # without an embedding: the model's recommended frame count
    plain = tmp_path / "plain.gif"
    assert cli.main(["sample", "--model", model, "--prompt", "a blue circle", "--out", str(plain)]) == 0
    assert tuple(read_video_frames(plain).frames.shape) == (4, 16, 24, 3)


def test_explicit_flags_win_over_the_models_recommended_settings(recommending_model_dir, reference_video, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    model = str(recommending_model_dir)
    out = tmp_path / "typed.safetensors"
    args = ["train", "--model", model, "--video", str(reference_video), "--prompt", "a red square", "--out", str(out),
            "--width", "16", "--frames", "6", "--steps", "2", "--lr", "0.2", "--layers", "paper", *FAST]
    assert cli.main(args) == 0
    info = read_embedding_info(out)[0]
    assert (info.train_width, info.train_height, info.train_frames, info.steps) == (16, 24, 6, 2)
    assert (info.extra["learning_rate"], info.extra["layer_set"]) == (0.2, "paper")
    assert "recommended training settings from motion_inversion.json: height 24\n" in caplog.text  # only the one not given
    clip = tmp_path / "typed.gif"
    assert cli.main(["sample", "--model", model, "--embedding", str(out), "--prompt", "a blue circle", "--out", str(clip),
                     "--frames", "3", "--height", "32", "--steps", "1", "--cfg", "1"]) == 0
    assert tuple(read_video_frames(clip).frames.shape) == (3, 32, 24, 3)


def test_a_malformed_settings_file_is_refused_before_any_work(recommending_model_dir, reference_video, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    settings = recommending_model_dir / "motion_inversion.json"
    settings.write_text(json.dumps({"format_version": 1, "train": {"steps": "many"}}))
    out = tmp_path / "e.safetensors"
    train = ["train", "--model", str(recommending_model_dir), "--video", str(reference_video), "--prompt", "p", "--out", str(out)]
    assert cli.main(train) == 2
    assert f"{settings}: train.steps must be a whole number from 1 to 100000, got 'many'" in caplog.records[-1].getMessage()
    settings.write_text(json.dumps({"format_version": 7}))
    assert cli.main(["sample", "--model", str(recommending_model_dir), "--prompt", "p", "--out", str(tmp_path / "c.gif")]) == 2
    assert "format_version 7 is not one this pack reads" in caplog.records[-1].getMessage()
    assert "Loading" not in caplog.text and not out.exists()


def test_help_says_which_options_take_the_models_recommended_value(capsys):
    recommended = {"train": ["--width", "--height", "--frames", "--steps", "--lr", "--layers"],
                   "sample": ["--width", "--height", "--frames", "--steps", "--cfg"]}
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction)).choices
    for command, flags in recommended.items():
        sub = commands[command]
        text = sub.format_help().replace("\n", " ")
        text = " ".join(text.split())
        for action in sub._actions:
            flag = action.option_strings[0] if action.option_strings else None
            marked = action.help is not None and "the model's recommended value (motion_inversion.json)" in action.help
            assert marked == (flag in flags), (command, flag)
        assert "--width WIDTH " in text and "(default: the model's recommended value (motion_inversion.json), else 576)" in text
