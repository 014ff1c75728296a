"""Write the example workflows in ``workflows/`` (ComfyUI editor format, version 0.4) from the node definitions.

Widget values are listed in the order of each node's widget inputs, as the editor saves them; seed inputs are
followed by their "control after generate" value, and an upload button's value ("image") comes after all the
node's other widgets (the frontend adds the button last).
Re-run after changing a node's inputs, then check the diff: released workflows must keep loading.

    python scripts/build_workflows.py
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
DEMO_MODEL = "toyworld-t2v (bundled demo)"
DEMO_CLIP = "toyworld_red_square_bounce.mp4"
DEMO_EMBEDDING = "toyworld_red_square_bounce.safetensors (bundled demo)"

# The bundled toy-world model's settings come from its motion_inversion.json (32x32, 8 frames, 200 steps, learning
# rate 0.1, layers all; sampling 25 steps, cfg 1.5): the size, frame, steps, learning-rate, layers and cfg widgets
# stay at auto, so the examples show what a freshly added node does.
DEMO_TRAIN = {"prompt": "a red square", "save_every": 50, "filename_prefix": "motion_inversion/demo"}
DEMO_SAMPLE = {"prompt": "a blue circle"}

CORE_NODES: dict[str, dict[str, Any]] = {
    # Core ComfyUI nodes used by the examples: (input name, type) in order, widget names in order, outputs.
    "PreviewImage": {"inputs": [("images", "IMAGE")], "widgets": [], "outputs": []},
    "SaveAnimatedWEBP": {"inputs": [("images", "IMAGE")], "widgets": ["filename_prefix", "fps", "lossless", "quality", "method"],
                         "outputs": [("IMAGE", "images")]},
    # the native Wan path (ComfyUI 0.3.x definitions)
    "UNETLoader": {"inputs": [], "widgets": ["unet_name", "weight_dtype"], "outputs": [("MODEL", "MODEL")]},
    "VAELoader": {"inputs": [], "widgets": ["vae_name"], "outputs": [("VAE", "VAE")]},
    "VAEEncode": {"inputs": [("pixels", "IMAGE"), ("vae", "VAE")], "widgets": [], "outputs": [("LATENT", "LATENT")]},
    "VAEDecode": {"inputs": [("samples", "LATENT"), ("vae", "VAE")], "widgets": [], "outputs": [("IMAGE", "IMAGE")]},
    "CFGGuider": {"inputs": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")], "widgets": ["cfg"],
                  "outputs": [("GUIDER", "GUIDER")]},
    "KSamplerSelect": {"inputs": [], "widgets": ["sampler_name"], "outputs": [("SAMPLER", "SAMPLER")]},
    "BasicScheduler": {"inputs": [("model", "MODEL")], "widgets": ["scheduler", "steps", "denoise"], "outputs": [("SIGMAS", "SIGMAS")]},
    "EmptyHunyuanLatentVideo": {"inputs": [], "widgets": ["width", "height", "length", "batch_size"], "outputs": [("LATENT", "LATENT")]},
    "SamplerCustomAdvanced": {"inputs": [("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                                         ("latent_image", "LATENT")], "widgets": [],
                              "outputs": [("LATENT", "output"), ("LATENT", "denoised_output")]},
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def load_pack():
    """The pack as the package ``motion_inversion_pack`` (loaded once per process)."""
    if "motion_inversion_pack" in sys.modules:
        return sys.modules["motion_inversion_pack"]
    spec = importlib.util.spec_from_file_location("motion_inversion_pack", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["motion_inversion_pack"] = module
    spec.loader.exec_module(module)
    return module


def spec_options(spec: tuple | list) -> dict[str, Any]:
    """The options dict of an input spec (``INPUT_TYPES`` entry or ``/object_info`` entry), or ``{}``."""
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_widget(spec: tuple | list) -> bool:
    """Whether the editor shows this input as a widget (a combo list or a plain value type not forced to a socket)."""
    kind = spec[0]
    return isinstance(kind, list) or (kind in WIDGET_TYPES and not spec_options(spec).get("forceInput"))


def has_seed_control(name: str, options: dict[str, Any]) -> bool:
    """Whether the editor adds a "control after generate" widget (and saved value) after this input."""
    return bool(options.get("control_after_generate")) or name in ("seed", "noise_seed")


def widget_values(node_class: type, values: dict[str, Any]) -> list[Any]:
    """Values in widget order, with the extra values the editor stores for seed controls and upload buttons."""
    out: list[Any] = []
    upload: list[Any] = []
    inputs = node_class.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, spec in inputs.get(section, {}).items():
            if not is_widget(spec):
                continue
            options = spec_options(spec)
            default = options.get("default", spec[0][0] if isinstance(spec[0], list) and spec[0] else None)
            out.append(values.get(name, default))
            if has_seed_control(name, options):
                out.append("fixed")
            if options.get("video_upload") or options.get("image_upload"):
                upload.append("image")  # the frontend adds the upload button after every other widget
    return out + upload


@dataclass
class Graph:
    pack: Any
    nodes: list[dict[str, Any]] = field(default_factory=list)
    links: list[list[Any]] = field(default_factory=list)

    def _slots(self, node_type: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        if node_type in CORE_NODES:
            core = CORE_NODES[node_type]
            return core["inputs"], core["outputs"]
        cls = self.pack.NODE_CLASS_MAPPINGS[node_type]
        spec = cls.INPUT_TYPES()
        inputs = [(name, s[0]) for section in ("required", "optional") for name, s in spec.get(section, {}).items() if not is_widget(s)]
        names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
        return inputs, list(zip(cls.RETURN_TYPES, names))

    def add(self, node_type: str, pos: tuple[int, int], values: dict[str, Any] | None = None, size=(320, 260)) -> int:
        node_id = len(self.nodes) + 1
        inputs, outputs = self._slots(node_type)
        if node_type in CORE_NODES:
            widgets = [values[name] for name in CORE_NODES[node_type]["widgets"]] if values else []
        else:
            widgets = widget_values(self.pack.NODE_CLASS_MAPPINGS[node_type], values or {})
        self.nodes.append({
            "id": node_id, "type": node_type, "pos": list(pos), "size": list(size), "flags": {}, "order": node_id - 1, "mode": 0,
            "inputs": [{"name": name, "type": kind, "link": None} for name, kind in inputs],
            "outputs": [{"name": name, "type": kind, "links": [], "slot_index": i} for i, (kind, name) in enumerate(outputs)],
            "properties": {"Node name for S&R": node_type},
            "widgets_values": widgets,
        })
        return node_id

    def link(self, source: int, output_slot: int, target: int, input_name: str) -> None:
        link_id = len(self.links) + 1
        src, dst = self.nodes[source - 1], self.nodes[target - 1]
        slot = next(i for i, item in enumerate(dst["inputs"]) if item["name"] == input_name)
        kind = src["outputs"][output_slot]["type"]
        src["outputs"][output_slot]["links"].append(link_id)
        dst["inputs"][slot]["link"] = link_id
        self.links.append([link_id, source, output_slot, target, slot, kind])

    def to_json(self) -> dict[str, Any]:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes, "links": self.links,
                "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def add_save_webp(g: "Graph", position: tuple[int, int], prefix: str) -> int:
    """A core Save Animated WEBP node with the examples' settings (8 fps, lossless)."""
    settings = {"filename_prefix": prefix, "fps": 8.0, "lossless": True, "quality": 90, "method": "default"}
    return g.add("SaveAnimatedWEBP", position, settings, (360, 420))


def train_and_sample(pack, model_name: str = DEMO_MODEL, prefix: str = "motion_inversion/demo") -> dict[str, Any]:
    """Load Video Model -> Load Video Frames -> Train -> Apply -> Motion Sampler -> Save Animated WEBP on ``model_name``
    (the bundled UNet3D demo, or another family's bundled toy: same clip and prompts, its own settings file)."""
    g = Graph(pack)
    model = g.add("MI_LoadVideoModel", (40, 40), {"model": model_name}, (320, 110))
    frames = g.add("MI_LoadVideoFrames", (40, 200), {"video": DEMO_CLIP}, (320, 330))
    train = g.add("MI_TrainMotionEmbedding", (400, 40), {**DEMO_TRAIN, "filename_prefix": prefix}, (360, 520))
    curve = g.add("PreviewImage", (800, 40), None, (360, 260))
    apply = g.add("MI_ApplyMotionEmbedding", (800, 340), {"strength": 1.0}, (320, 130))
    sampler = g.add("MI_MotionSampler", (1160, 40), DEMO_SAMPLE, (340, 480))
    save = add_save_webp(g, (1540, 40), prefix)
    g.link(model, 0, train, "model")
    g.link(frames, 0, train, "frames")
    g.link(train, 1, curve, "images")
    g.link(model, 0, apply, "model")
    g.link(train, 0, apply, "motion_embedding")
    g.link(apply, 0, sampler, "model")
    g.link(sampler, 0, save, "images")
    return g.to_json()


def load_embedding_and_sample(pack) -> dict[str, Any]:
    g = Graph(pack)
    model = g.add("MI_LoadVideoModel", (40, 40), {"model": DEMO_MODEL}, (320, 110))
    embedding = g.add("MI_LoadMotionEmbedding", (40, 200), {"embedding": DEMO_EMBEDDING}, (320, 90))
    apply = g.add("MI_ApplyMotionEmbedding", (400, 40), {"strength": 1.0}, (320, 130))
    sampler = g.add("MI_MotionSampler", (760, 40), {**DEMO_SAMPLE, "prompt": "a green triangle"}, (340, 480))
    save = add_save_webp(g, (1140, 40), "motion_inversion/from_embedding")
    g.link(model, 0, apply, "model")
    g.link(embedding, 0, apply, "motion_embedding")
    g.link(apply, 0, sampler, "model")
    g.link(sampler, 0, save, "images")
    return g.to_json()


@dataclass(frozen=True)
class NativeWanFiles:
    """What the native Wan graph loads: the DiT and VAE for core's loaders (``models/diffusion_models``,
    ``models/vae``), a Load Video Model folder whose text encoder makes the CONDITIONING (the toy models' CLIP, which
    ComfyUI's CLIP loaders cannot read; a real Wan uses Load CLIP + CLIP Text Encode instead), and the reference clip.
    Sizes: the reference is resized to ``size`` square, ``frames`` frames (1 + 4k), and sampled at the same."""

    diffusion_model: str
    vae: str
    text_model: str
    clip: str
    size: int
    frames: int
    train_steps: int = 200
    sample_steps: int = 20
    prefix: str = "motion_inversion/native"


def wan_native_train_and_sample(pack, files: NativeWanFiles) -> dict[str, Any]:
    """Train through ComfyUI's own Wan MODEL and sample with core SamplerCustomAdvanced: Load Diffusion Model + Load
    VAE + VAE Encode of the reference -> Train (native) -> Apply (native) -> CFGGuider -> SamplerCustomAdvanced with
    Motion Start Noise -> VAE Decode -> Save Animated WEBP. Not in :data:`BUILDERS` until a toy-world Wan is bundled
    for it to run on as is (issue 10); scripts/comfy_native_server_check.py runs it on a tiny random Wan."""
    g = Graph(pack)
    unet = g.add("UNETLoader", (40, 40), {"unet_name": files.diffusion_model, "weight_dtype": "default"}, (320, 110))
    vae = g.add("VAELoader", (40, 190), {"vae_name": files.vae}, (320, 80))
    text_model = g.add("MI_LoadVideoModel", (40, 310), {"model": files.text_model}, (320, 110))
    clip = g.add("MI_LoadVideoFrames", (40, 460), {"video": files.clip, "frame_count": files.frames, "width": files.size,
                                                   "height": files.size}, (320, 330))
    encode = g.add("VAEEncode", (400, 460), None, (220, 60))
    positive = g.add("MI_EncodePromptWithModel", (400, 40), {"prompt": "a red square"}, (320, 130))
    empty = g.add("MI_EncodePromptWithModel", (400, 210), {"prompt": ""}, (320, 130))
    train = g.add("MI_TrainMotionEmbeddingNative", (760, 40), {"steps": files.train_steps, "save_every": 50,
                                                              "filename_prefix": files.prefix}, (360, 420))
    curve = g.add("PreviewImage", (1160, 40), None, (360, 260))
    apply = g.add("MI_ApplyMotionEmbeddingNative", (1160, 340), {"strength": 1.0}, (320, 130))
    prompt = g.add("MI_EncodePromptWithModel", (1160, 520), {"prompt": "a blue circle"}, (320, 130))
    guider = g.add("CFGGuider", (1520, 40), {"cfg": 1.0}, (300, 100))
    noise = g.add("MI_MotionStartNoise", (1520, 180), None, (320, 130))
    sampler = g.add("KSamplerSelect", (1520, 350), {"sampler_name": "euler"}, (300, 60))
    sigmas = g.add("BasicScheduler", (1520, 450), {"scheduler": "simple", "steps": files.sample_steps, "denoise": 1.0}, (300, 110))
    latent = g.add("EmptyHunyuanLatentVideo", (1520, 600), {"width": files.size, "height": files.size, "length": files.frames,
                                                            "batch_size": 1}, (300, 130))
    sample = g.add("SamplerCustomAdvanced", (1880, 40), None, (300, 120))
    decode = g.add("VAEDecode", (1880, 200), None, (220, 60))
    save = add_save_webp(g, (2160, 40), files.prefix)
    for source, slot, target, name in (
        (clip, 0, encode, "pixels"), (vae, 0, encode, "vae"), (text_model, 0, positive, "model"), (text_model, 0, empty, "model"),
        (text_model, 0, prompt, "model"), (unet, 0, train, "model"), (encode, 0, train, "reference"), (positive, 0, train, "positive"),
        (empty, 0, train, "inversion_conditioning"), (train, 1, curve, "images"), (unet, 0, apply, "model"),
        (train, 0, apply, "motion_embedding"), (apply, 0, guider, "model"), (prompt, 0, guider, "positive"), (empty, 0, guider, "negative"),
        (train, 0, noise, "motion_embedding"), (apply, 0, sigmas, "model"), (noise, 0, sample, "noise"), (guider, 0, sample, "guider"),
        (sampler, 0, sample, "sampler"), (sigmas, 0, sample, "sigmas"), (latent, 0, sample, "latent_image"),
        (sample, 0, decode, "samples"), (vae, 0, decode, "vae"), (decode, 0, save, "images"),
    ):
        g.link(source, slot, target, name)
    return g.to_json()


#: Every example workflow: file name (without .json) -> builder.
#: Family -> its bundled toy-world model (the UNet3D toy's world and clip geometry): one example workflow each.
FAMILY_DEMOS = {"animatediff": "toyworld-animatediff (bundled demo)", "latte": "toyworld-latte (bundled demo)"}


def family_train_and_sample(family: str):
    """The builder of ``train_and_sample_<family>.json``: :func:`train_and_sample` on that family's toy model."""
    return lambda pack: train_and_sample(pack, FAMILY_DEMOS[family], f"motion_inversion/{family}")


BUILDERS = {
    "train_and_sample": train_and_sample,
    "load_embedding_and_sample": load_embedding_and_sample,
    **{f"train_and_sample_{family}": family_train_and_sample(family) for family in FAMILY_DEMOS},
}


def main() -> None:
    pack = load_pack()
    WORKFLOWS.mkdir(exist_ok=True)
    for name, build in BUILDERS.items():
        path = WORKFLOWS / f"{name}.json"
        path.write_text(json.dumps(build(pack), indent=2) + "\n")
        sys.stdout.write(f"wrote {path.relative_to(ROOT)}\n")


if __name__ == "__main__":
    main()
