"""Check the example workflows in the real ComfyUI frontend, in headless Chromium (loopback only).

What a user does by hand, scripted: open the editor, drag in each workflow, look at the widgets, press Queue.

1. Every workflow in ``workflows/`` (and each ``--workflow FILE``) is loaded with the frontend's own ``app.loadGraphData`` and turned into a
   prompt by the frontend (``app.graphToPrompt``); every node's inputs must equal what ``scripts/comfyui_check.py``
   reads from the file by name. A round trip of ``widgets_values`` alone would not do: the frontend assigns the
   values to widgets by position, so a misplaced extra value (``control_after_generate``, the upload button's)
   shifts every later widget and still saves back unchanged. The files an earlier release saved
   (``tests/data/released_workflows/``, where present) must mean what they meant then: their values under the
   widget names the nodes had then, today's defaults for widgets added since.
2. Every workflow is queued from the page (training with ``--steps`` steps, fresh seeds so that ComfyUI's cache
   cannot skip a node); each run must succeed and every output node must have produced images. The training node
   must have received the live loss points over the websocket (the web extension's curve), and the nodes' saved
   widget values must be unchanged by the extension's panel.
3. A second browser (another ComfyUI client, with the same workflow open) must receive none of those loss points:
   a prompt's progress belongs to the client that queued it.
4. The training node is converted into a subgraph (execution ids like ``"9:3"``) and queued again: the loss points
   must still reach the node inside the subgraph.
5. Errors thrown in the page, and console errors or warnings that name the pack or come from its extension, are
   problems. Screenshots and the whole console go to ``--out``.

Needs a running ComfyUI with this pack in ``custom_nodes`` and ``pip install playwright`` (the browser itself is
the system's Chromium, e.g. Debian's ``chromium`` package; nothing is downloaded)::

    python scripts/frontend_check.py --url http://127.0.0.1:8188 --chromium /usr/bin/chromium --steps 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from build_workflows import has_seed_control, is_widget, spec_options  # noqa: E402
from comfyui_check import to_api  # noqa: E402

logger = logging.getLogger("frontend_check")

TRAIN_NODE = "MI_TrainMotionEmbedding"
TRAIN_NODES = (TRAIN_NODE, "MI_TrainMotionEmbeddingNative")  # the nodes that send live loss
TRAIN_WORKFLOW = "train_and_sample.json"
# Workflow files as an earlier release saved them, and the widget inputs (name, kind) the nodes had then
RELEASED = ROOT / "tests" / "data" / "released_workflows"
RELEASED_WIDGETS = RELEASED / "widget_inputs.json"
# Console lines naming the pack's extension (its file lies under extensions/ComfyUI-MotionInversion/) or node types
PACK_MARK = re.compile(r"motion_inversion|MotionInversion|\bMI_[A-Z]")

# Installed once per page: every node of the graph, those inside subgraphs included (``app.graph.nodes`` holds only
# the root graph's; ``_nodes`` is the older frontends' name for it).
HELPERS = """() => {
  window.miAllNodes = () => {
    const nodes = [...(app.graph.nodes ?? app.graph._nodes)];
    for (const subgraph of app.graph.subgraphs?.values?.() ?? []) nodes.push(...subgraph.nodes);
    return nodes;
  };
  window.miLossPoints = (type) => window.miAllNodes().filter(n => n.type === type)
    .map(n => n.miLoss ? n.miLoss.values.length : 0);
}"""
READ_WIDGETS = "() => window.miAllNodes().map(n => [String(n.id), n.type, n.serialize().widgets_values ?? []])"
SET_WIDGETS = """(changes) => {
  for (const [type, name, value] of changes)
    for (const node of window.miAllNodes().filter(n => n.type === type)) {
      const widget = node.widgets?.find(w => w.name === name);
      if (widget) widget.value = value;
    }
}"""
SEED_WIDGETS = """() => window.miAllNodes().flatMap(n => (n.widgets ?? []).filter(w => w.name === 'seed').map(w => n.type))"""
TO_SUBGRAPH = """(type) => {
  const node = (app.graph.nodes ?? app.graph._nodes).find(n => n.type === type);
  const result = app.graph.convertToSubgraph(new Set([node]));
  return result ? String(result.node.id) : null;
}"""
VERSIONS = """async () => ({
  served: window.__COMFYUI_FRONTEND_VERSION__ ?? null,
  system: (await (await fetch('/system_stats')).json()).system,
})"""


def declared_inputs(node: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any] | None:
    """A prompt node's inputs that its class declares (the frontend adds its own, e.g. a video preview's)."""
    if not node:
        return None
    spec = object_info[node["class_type"]]["input"]
    names = {*spec.get("required", {}), *spec.get("optional", {})}
    return {k: v for k, v in node["inputs"].items() if k in names}


def type_problems(prompt: dict[str, Any], object_info: dict[str, Any],
                  kinds_then: dict[tuple[str, str], str] | None = None) -> list[str]:
    """Widget values that do not fit the type the node declares (what a value shifted by one slot looks like).

    ``kinds_then`` ((node type, input name) -> kind) replaces the declared kind for a file saved when the input had
    another kind: such a file keeps its old value (e.g. a boolean for what is now a choice), which the node accepts.
    """
    kinds = {"INT": (int,), "FLOAT": (int, float), "STRING": (str,), "BOOLEAN": (bool,)}
    problems = []
    for node_id, node in prompt.items():
        spec = object_info[node["class_type"]]["input"]
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        for name, value in node["inputs"].items():
            if name not in declared or isinstance(value, list):  # undeclared (frontend's own) or a link
                continue
            kind = (kinds_then or {}).get((node["class_type"], name), declared[name][0])
            choices = kind if isinstance(kind, list) else spec_options(declared[name]).get("options") if kind == "COMBO" else None
            if choices is not None:
                ok = value in choices
            else:
                ok = kind not in kinds or (isinstance(value, kinds[kind]) and not (kind != "BOOLEAN" and isinstance(value, bool)))
            if not ok:
                expected = kind if choices is None else "choice"
                problems.append(f"node {node_id} ({node['class_type']}): {name} = {value!r} is not a valid {expected}")
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


def widget_default(spec: list[Any]) -> Any:
    """The value the editor gives a widget that a file has no value for."""
    options = spec_options(spec)
    if "default" in options:
        return options["default"]
    choices = spec[0] if isinstance(spec[0], list) else options.get("options")  # old and new combo formats
    return choices[0] if choices else None


def released_meaning(workflow: dict[str, Any], object_info: dict[str, Any], released: dict[str, Any]) -> dict[str, Any]:
    """What a file saved by an earlier release means: its widget values under the widget names the nodes had then
    (``released``: node type -> [[name, kind], ...] in editor order), the current defaults for widgets added since.

    Assigning the values to today's widgets instead would hide exactly what this is for: a widget inserted or
    retyped since then, which shifts or changes the meaning of the values after it.
    """
    prompt = to_api(workflow, object_info)  # the links and the core nodes
    for node in workflow["nodes"]:
        if node["type"] not in released:
            continue
        declared = object_info[node["type"]]["input"]
        specs = {**declared.get("required", {}), **declared.get("optional", {})}
        slots: list[str | None] = []
        for name, _kind in released[node["type"]]:
            slots.append(name)
            if name in specs and has_seed_control(name, spec_options(specs[name])):
                slots.append(None)
        values = {name: value for name, value in zip(slots, node.get("widgets_values", [])) if name is not None}
        inputs = {name: value for name, value in prompt[str(node["id"])]["inputs"].items() if isinstance(value, list)}
        for name, spec in specs.items():
            if name in inputs or not is_widget(spec):
                continue
            inputs[name] = migrated(values[name], spec) if name in values else widget_default(spec)
        prompt[str(node["id"])]["inputs"] = inputs
    return prompt


def migrated(value: Any, spec: list[Any]) -> Any:
    """A released value as the pack's web extension shows it today: a switch saved as true / false that became an
    on / off choice (gradient checkpointing, now auto / on / off) reads as "on" / "off"."""
    choices = spec[0] if isinstance(spec[0], list) else spec_options(spec).get("options") or []
    if isinstance(value, bool) and {"on", "off"} <= set(choices):
        return "on" if value else "off"
    return value


def workflow_files(extra: list[Path] = ()) -> list[tuple[str, Path]]:
    """(label, path) of the current example workflows, of ``extra`` ones, and of those an earlier release saved."""
    files = [(path.name, path) for path in sorted((ROOT / "workflows").glob("*.json"))]
    files += [(f"extra {path.name}", path) for path in extra]
    if RELEASED_WIDGETS.exists():
        files += [(f"released {path.name}", path) for path in sorted(RELEASED.glob("*.json")) if path != RELEASED_WIDGETS]
    return files


def file_problems(label: str, workflow: dict[str, Any], frontend: dict[str, Any], object_info: dict[str, Any]) -> list[str]:
    """How the prompt the frontend built differs from what the file means, and values of the wrong type."""
    if not label.startswith("released "):
        return compare_prompts(to_api(workflow, object_info), frontend, object_info) + type_problems(frontend, object_info)
    released = {kind: widgets for kind, widgets in json.loads(RELEASED_WIDGETS.read_text()).items() if kind != "_about"}
    # Retyped values are migrated (see migrated()), so what the editor queues must fit today's types.
    return (compare_prompts(released_meaning(workflow, object_info, released), frontend, object_info)
            + type_problems(frontend, object_info))


def output_problems(workflow: dict[str, Any], entry: dict[str, Any], object_info: dict[str, Any]) -> list[str]:
    """Output nodes of the workflow that produced no images in the run's history entry."""
    problems = []
    for node in workflow["nodes"]:
        if object_info[node["type"]].get("output_node"):
            images = entry.get("outputs", {}).get(str(node["id"]), {}).get("images", [])
            if not images:
                problems.append(f"output node {node['id']} ({node['type']}) produced no images")
    return problems


async def open_editor(browser: Any, url: str, console: list[str], page_errors: list[str], name: str) -> Any:
    """A new browser context (so a new ComfyUI client id) with the editor loaded and the helpers installed."""
    context = await browser.new_context(viewport={"width": 1800, "height": 1000})
    page = await context.new_page()
    page.on("pageerror", lambda error: page_errors.append(f"{name}: {error}"))
    page.on("console", lambda message: console.append(
        f"{name} [{message.type}] {message.text} (at {message.location.get('url')})"))
    await page.goto(url)
    await page.wait_for_function("window.app && window.app.graph", timeout=120_000)
    await page.wait_for_timeout(3000)
    await page.evaluate(HELPERS)
    return page


async def load_workflow(page: Any, workflow: dict[str, Any]) -> None:
    await page.evaluate("async (data) => { await app.loadGraphData(data); }", workflow)
    await page.wait_for_timeout(1500)


async def screenshot(page: Any, path: Path) -> None:
    await page.keyboard.press("Escape")  # a first-run dialog (templates, what's new) would hide the graph
    await page.wait_for_timeout(300)
    await page.screenshot(path=str(path))


async def wait_for_idle_queue(page: Any, timeout_s: float) -> None:
    for _ in range(int(timeout_s)):
        queue = await page.evaluate("async () => (await (await fetch('/queue')).json())")
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        await page.wait_for_timeout(1000)
    raise TimeoutError(f"the queue did not empty in {timeout_s:.0f} s")


async def queue_from_page(page: Any) -> list[dict[str, Any]]:
    """Press Queue on what the page shows, wait until the server is idle; the history entries of this run."""
    history_before = set(await page.evaluate("async () => Object.keys(await (await fetch('/history')).json())"))
    await page.evaluate("async () => { await app.queuePrompt(0, 1); }")
    await page.wait_for_timeout(3000)
    await wait_for_idle_queue(page, timeout_s=1200)
    await page.wait_for_timeout(1500)  # the last websocket messages
    history = await page.evaluate("async () => (await (await fetch('/history')).json())")
    return [entry for key, entry in history.items() if key not in history_before]


async def fresh_seeds(page: Any, steps: int) -> None:
    """New seeds on every seed widget (ComfyUI's cache would skip an unchanged node) and the training steps."""
    types = await page.evaluate(SEED_WIDGETS)
    changes = [[kind, "seed", random.randrange(10**9)] for kind in sorted(set(types))]
    await page.evaluate(SET_WIDGETS, changes + [[kind, "steps", steps] for kind in TRAIN_NODES])


async def check_loading(page: Any, object_info: dict[str, Any], out: Path, extra: list[Path]) -> list[str]:
    """Step 1: the frontend queues what each file means."""
    problems = []
    for label, path in workflow_files(extra):
        workflow = json.loads(path.read_text())
        await load_workflow(page, workflow)
        frontend = await page.evaluate("async () => (await app.graphToPrompt()).output")
        found = file_problems(label, workflow, frontend, object_info)
        problems += [f"{label}: {p}" for p in found]
        logger.info("%s: %s", label, "the frontend queues what the file means" if not found else f"{len(found)} differences")
        await screenshot(page, out / f"{label.replace(' ', '_').removesuffix('.json')}.png")
    return problems


async def check_runs(page: Any, object_info: dict[str, Any], steps: int, out: Path, extra: list[Path]) -> list[str]:
    """Step 2: each workflow queued from the page runs and writes its outputs; the loss curve fills."""
    problems = []
    for label, path in workflow_files(extra):
        workflow = json.loads(path.read_text())
        await load_workflow(page, workflow)
        await fresh_seeds(page, steps)
        before = await page.evaluate(READ_WIDGETS)
        entries = await queue_from_page(page)
        status = [entry["status"]["status_str"] for entry in entries]
        found = [] if status == ["success"] else [f"queued from the page, the run ended with {status}"]
        found += [p for entry in entries for p in output_problems(workflow, entry, object_info)]
        trainers = [kind for kind in TRAIN_NODES if any(node["type"] == kind for node in workflow["nodes"])]
        points = [n for kind in trainers for n in await page.evaluate("(type) => window.miLossPoints(type)", kind)]
        if trainers and points != [steps]:
            found.append(f"the training node received {points} loss points for {steps} steps")
        if before != await page.evaluate(READ_WIDGETS):
            found.append(f"widget values changed during the run: {before} -> {await page.evaluate(READ_WIDGETS)}")
        logger.info("%s queued from the page: %s; loss points per training node %s", label, status, points)
        problems += [f"{label}: {p}" for p in found]
        await screenshot(page, out / f"{label.replace(' ', '_').removesuffix('.json')}_run.png")
    return problems


async def check_subgraph(page: Any, steps: int, out: Path) -> list[str]:
    """Step 4: the training node inside a subgraph still gets its loss curve."""
    await load_workflow(page, json.loads((ROOT / "workflows" / TRAIN_WORKFLOW).read_text()))
    await fresh_seeds(page, steps)
    subgraph_id = await page.evaluate(TO_SUBGRAPH, TRAIN_NODE)
    if subgraph_id is None:
        return ["the frontend could not convert the training node into a subgraph"]
    entries = await queue_from_page(page)
    status = [entry["status"]["status_str"] for entry in entries]
    points = await page.evaluate("(type) => window.miLossPoints(type)", TRAIN_NODE)
    logger.info("training node inside subgraph %s, queued from the page: %s; loss points %s", subgraph_id, status, points)
    await screenshot(page, out / "subgraph_run.png")
    problems = [] if status == ["success"] else [f"queued from the page, the run ended with {status}"]
    if points != [steps]:
        problems.append(f"the training node received {points} loss points for {steps} steps")
    return [f"training node inside a subgraph: {p}" for p in problems]


async def check(url: str, chromium: str, steps: int, out: Path, extra: list[Path] = ()) -> list[str]:
    from playwright.async_api import async_playwright

    problems: list[str] = []
    console: list[str] = []
    page_errors: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = await open_editor(browser, url, console, page_errors, "page")
        versions = await page.evaluate(VERSIONS)
        logger.info("ComfyUI %s serves frontend %s (its requirements pin %s)", versions["system"].get("comfyui_version"),
                    versions["served"], versions["system"].get("required_frontend_version"))
        if "motion_inversion.ui" not in await page.evaluate("app.extensions.map(e => e.name)"):
            problems.append("the web extension motion_inversion.ui is not registered")
        object_info = await page.evaluate("async () => (await (await fetch('/object_info')).json())")
        problems += await check_loading(page, object_info, out, extra)
        observer = await open_editor(browser, url, console, page_errors, "other client")
        await load_workflow(observer, json.loads((ROOT / "workflows" / TRAIN_WORKFLOW).read_text()))
        problems += await check_runs(page, object_info, steps, out, extra)
        overheard = await observer.evaluate("(type) => window.miLossPoints(type)", TRAIN_NODE)
        logger.info("another client with the same workflow open received %s loss points", overheard)
        if any(overheard):
            problems.append(f"another client received {overheard} loss points of a prompt it did not queue")
        problems += await check_subgraph(page, steps, out)
        await browser.close()
    (out / "console.log").write_text("\n".join(console) + "\n")
    problems += [f"page error: {e}" for e in page_errors]
    problems += [f"console: {line}" for line in console
                 if ("[error]" in line or "[warning]" in line) and PACK_MARK.search(line)]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--steps", type=int, default=20, help="training steps for the queued runs")
    parser.add_argument("--out", type=Path, default=ROOT / "output" / "frontend_check")
    parser.add_argument("--workflow", type=Path, action="append", default=[],
                        help="also load and queue this editor-format workflow (steps 1 and 2; repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    problems = asyncio.run(check(args.url, args.chromium, args.steps, args.out, args.workflow))
    for problem in problems:
        logger.error(problem)
    logger.info("%d problems; screenshots and console in %s", len(problems), args.out)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
