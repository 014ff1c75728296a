"""Train a motion embedding through ComfyUI's own Wan MODEL with the ``MI_TrainMotionEmbeddingNative`` node (CPU, fp32).

Runs under ComfyUI's Python. Used by tests/test_comfy_native_wan_integration.py, which compares the result with
training through diffusers' transformer on the same latents, prompt and seed:

    COMFYUI_DIR/.venv/bin/python scripts/comfy_wan_training_check.py --comfyui-dir COMFYUI_DIR \
        --transformer DIT.safetensors --inputs IN.safetensors --steps 4 --work-dir DIR --out OUT.safetensors

Inputs: ``latents`` (1, 16, F', h, w) in the model's sampling space, ``text`` and ``empty`` (1, L, text_dim), ``probe``
(a latent the plain MODEL is run on before and after). The model is loaded and the node called under
``torch.inference_mode()``, as ComfyUI's executor does. Runs: ``plain`` (checkpointing off), ``checkpointed`` (on),
and a run cancelled through ComfyUI's interrupt flag at step 2 (the flag is set where the node reports step 2).
Outputs: each run's embedding tensors (``plain.query_key.*`` ...), inverted latents, and ``probe_before`` /
``probe_after`` (the plain MODEL's output); metadata ``report`` (JSON): the saved files, the cancelled file's steps,
whether the MODEL has no object patch and its own self-attention methods afterwards, ``in_training`` afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui-dir", required=True, type=Path)
    parser.add_argument("--transformer", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    sys.path.insert(0, str(args.comfyui_dir.resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before model_management reads it
    import comfy.model_management
    import comfy.sd
    import folder_paths

    from build_workflows import load_pack  # scripts/ is on sys.path when a script here runs

    pack = load_pack()
    from motion_inversion_pack.motion_core.embedding_file import load_embedding
    from motion_inversion_pack.nodes import comfy_bridge

    folder_paths.add_model_folder_path("motion_embeddings", str(args.work_dir), is_default=True)
    inputs = load_file(args.inputs)
    with torch.inference_mode():
        model = comfy.sd.load_diffusion_model(args.transformer)
    blocks = model.model.diffusion_model.blocks
    originals = {i: block.self_attn.forward for i, block in enumerate(blocks)}

    def probe() -> torch.Tensor:
        with torch.inference_mode():
            comfy.model_management.load_models_gpu([model])
            return model.model.diffusion_model(inputs["probe"], torch.tensor([500.0]), inputs["text"]).float().clone()

    train = pack.NODE_CLASS_MAPPINGS["MI_TrainMotionEmbeddingNative"]().train
    latent_format = model.model.latent_format
    reference = {"samples": latent_format.process_out(inputs["latents"].clone())}  # what VAE Encode gives

    def run(checkpointing: str, prefix: str):
        with torch.inference_mode():
            return train(model, reference, [[inputs["text"], {}]], args.steps, 0.05, "alternate", "base", 0, checkpointing,
                         0, prefix, inversion_conditioning=[[inputs["empty"], {}]], unique_id="7")

    outputs = {"probe_before": probe()}
    report: dict[str, object] = {"shift": float(model.get_model_object("model_sampling").shift)}
    for name, checkpointing in (("plain", "off"), ("checkpointed", "on")):
        result = run(checkpointing, f"check/{name}")
        embedding = result["result"][0]
        report[f"{name}_file"] = result["ui"]["motion_embedding"][0]
        outputs.update({f"{name}.query_key.{k}": v for k, v in embedding.query_key.items()})
        outputs.update({f"{name}.value.{k}": v for k, v in embedding.value.items()})
        outputs[f"{name}.inverted"] = embedding.inverted_latent
        outputs[f"{name}.loss_curve"] = result["result"][1]

    send = comfy_bridge.send_event

    def interrupt_at_two(event, data):
        send(event, data)
        if data["step"] == 2:
            comfy.model_management.interrupt_current_processing(True)

    comfy_bridge.send_event = interrupt_at_two
    try:
        run("off", "check/cancelled")
        report["cancelled"] = False
    except comfy.model_management.InterruptProcessingException:
        report["cancelled"] = True
    finally:
        comfy.model_management.interrupt_current_processing(False)
        comfy_bridge.send_event = send
    saved = sorted(args.work_dir.glob("check/cancelled*.safetensors"))
    report["cancelled_files"] = [p.name for p in saved]
    report["cancelled_steps"] = load_embedding(saved[0]).info.steps if saved else None

    outputs["probe_after"] = probe()
    report["input_model_object_patches"] = sorted(model.object_patches)
    report["forwards_restored"] = all(blocks[i].self_attn.forward == originals[i] for i in originals)
    report["in_training_after"] = bool(comfy.model_management.in_training)
    save_file({k: v.contiguous() for k, v in outputs.items()}, args.out, metadata={"report": json.dumps(report)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
