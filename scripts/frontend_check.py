"""Check the example workflows in the real ComfyUI frontend, in headless Chromium (loopback only).

What a user does by hand, scripted: open the editor, drag in each workflow, look at the widgets, press Queue.

1. Every workflow in ``workflows/`` is loaded with the frontend's own ``app.loadGraphData`` and turned into a
   prompt by the frontend (``app.graphToPrompt``); every node's inputs must equal what ``scripts/comfyui_check.py``
   reads from the file by name. A round trip of ``widgets_values`` alone would not do: the frontend assigns the
   values to widgets by position, so a misplaced extra value (``control_after_generate``, the upload button's)
   shifts every later widget and still saves back unchanged.
2. ``train_and_sample.json`` is queued from the page (with fewer training steps); the run must succeed, the
   training node must have received the live loss points over the websocket (the web extension's curve), and the
   node's saved widget values must be unchanged by the extension's panel.
3. Screenshots go to ``--out``.

Needs a running ComfyUI with this pack in ``custom_nodes`` and ``pip install playwright`` (the browser itself is
the system's Chromium, e.g. Debian's ``chromium`` package; nothing is downloaded)::

    python scripts/frontend_check.py --url http://127.0.0.1:8188 --chromium /usr/bin/chromium --steps 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from comfyui_check import to_api  # noqa: E402

logger = logging.getLogger("frontend_check")

READ_WIDGETS = "() => app.graph._nodes.map(n => [String(n.id), n.type, n.serialize().widgets_values ?? []])"
TRAIN_NODE = "MI_TrainMotionEmbedding"


def declared_inputs(node: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any] | None:
    """A prompt node's inputs that its class declares (the frontend adds its own, e.g. a video preview's)."""
    if not node:
        return None
    spec = object_info[node["class_type"]]["input"]
    names = {*spec.get("required", {}), *spec.get("optional", {})}
    return {k: v for k, v in node["inputs"].items() if k in names}


def type_problems(prompt: dict[str, Any], object_info: dict[str, Any]) -> list[str]:
    """Widget values that do not fit the type the node declares (what a value shifted by one slot looks like)."""
    kinds = {"INT": (int,), "FLOAT": (int, float), "STRING": (str,), "BOOLEAN": (bool,)}
    problems = []
    for node_id, node in prompt.items():
        spec = object_info[node["class_type"]]["input"]
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        for name, value in node["inputs"].items():
            if name not in declared or isinstance(value, list):  # undeclared (frontend's own) or a link
                continue
            kind = declared[name][0]
            if isinstance(kind, list):
                ok = value in kind
            else:
                ok = kind not in kinds or (isinstance(value, kinds[kind]) and not (kind != "BOOLEAN" and isinstance(value, bool)))
            if not ok:
                problems.append(f"node {node_id} ({node['class_type']}): {name} = {value!r} is not a valid {kind if not isinstance(kind, list) else 'choice'}")
    return problems


def compare_prompts(expected: dict[str, Any], frontend: dict[str, Any], object_info: dict[str, Any]) -> list[str]:
    """Differences between the prompt read from the file by input name and the one the frontend built."""
    problems = []
    for node_id in sorted(set(expected) | set(frontend)):
        want = declared_inputs(expected.get(node_id, {}), object_info)
        got = declared_inputs(frontend.get(node_id, {}), object_info)
        if want != got:
            problems.append(f"node {node_id} ({expected.get(node_id, frontend.get(node_id, {})).get('class_type')}): "
                            f"the file means {want} but the frontend queues {got}")
    return problems


async def wait_for_idle_queue(page: Any, timeout_s: float) -> None:
    for _ in range(int(timeout_s)):
        queue = await page.evaluate("async () => (await (await fetch('/queue')).json())")
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        await page.wait_for_timeout(1000)
    raise TimeoutError(f"the queue did not empty in {timeout_s:.0f} s")


async def check(url: str, chromium: str, steps: int, out: Path) -> list[str]:
    from playwright.async_api import async_playwright

    problems: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1800, "height": 1000})
        page_errors: list[str] = []
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        await page.goto(url)
        await page.wait_for_function("window.app && window.app.graph", timeout=120_000)
        await page.wait_for_timeout(3000)
        extensions = await page.evaluate("app.extensions.map(e => e.name)")
        if "motion_inversion.ui" not in extensions:
            problems.append("the web extension motion_inversion.ui is not registered")
        object_info = await page.evaluate("async () => (await (await fetch('/object_info')).json())")
        for path in sorted((ROOT / "workflows").glob("*.json")):
            workflow = json.loads(path.read_text())
            await page.evaluate("async (data) => { await app.loadGraphData(data); }", workflow)
            await page.wait_for_timeout(1500)
            frontend = await page.evaluate("async () => (await app.graphToPrompt()).output")
            found = compare_prompts(to_api(workflow, object_info), frontend, object_info) + type_problems(frontend, object_info)
            problems += [f"{path.name}: {p}" for p in found]
            logger.info("%s: %s", path.name, "the frontend queues what the file means" if not found else f"{len(found)} differences")
            await page.screenshot(path=str(out / f"{path.stem}.png"))
        workflow = json.loads((ROOT / "workflows" / "train_and_sample.json").read_text())
        await page.evaluate("async (data) => { await app.loadGraphData(data); }", workflow)
        await page.wait_for_timeout(1000)
        # fewer steps, and a fresh seed so that ComfyUI's cache cannot skip the training node
        await page.evaluate(
            "(steps) => { const n = app.graph._nodes.find(n => n.type === '%s');"
            " n.widgets.find(w => w.name === 'steps').value = steps;"
            " n.widgets.find(w => w.name === 'seed').value = Math.floor(Math.random() * 1e9); }" % TRAIN_NODE, steps)
        before = await page.evaluate(READ_WIDGETS)
        history_before = set(await page.evaluate("async () => Object.keys(await (await fetch('/history')).json())"))
        await page.evaluate("async () => { await app.queuePrompt(0, 1); }")
        await page.wait_for_timeout(3000)
        await wait_for_idle_queue(page, timeout_s=1200)
        await page.wait_for_timeout(1500)
        history = await page.evaluate("async () => (await (await fetch('/history')).json())")
        status = [entry["status"]["status_str"] for key, entry in history.items() if key not in history_before]
        if status != ["success"]:
            problems.append(f"queued from the page, the run ended with {status}")
        curve = await page.evaluate(
            "() => { const n = app.graph._nodes.find(n => n.type === '%s'); return n.miLoss ? n.miLoss.values.length : 0; }" % TRAIN_NODE)
        if curve < steps:
            problems.append(f"the training node received {curve} loss points for {steps} steps")
        logger.info("queued from the page: %s; %d loss points reached the training node", status, curve)
        after = await page.evaluate(READ_WIDGETS)
        if before != after:
            problems.append(f"widget values changed during the run: {before} -> {after}")
        await page.screenshot(path=str(out / "after_training.png"))
        problems += [f"page error: {e}" for e in page_errors]
        await browser.close()
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--steps", type=int, default=20, help="training steps for the queued run")
    parser.add_argument("--out", type=Path, default=ROOT / "output" / "frontend_check")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    problems = asyncio.run(check(args.url, args.chromium, args.steps, args.out))
    for problem in problems:
        logger.error(problem)
    logger.info("%d problems; screenshots in %s", len(problems), args.out)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
