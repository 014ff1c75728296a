"""The ComfyUI frontend extension (web/motion_inversion.js), run under Node.js with stubbed ComfyUI modules."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

EXTENSION = Path(__file__).resolve().parent.parent / "web" / "motion_inversion.js"

FACTS = {
    "family": "unet3d", "base_model": "zeroscope_v2_576w", "resolution": "576x320", "frames": 24,
    "steps": 400, "loss": "base", "mode": "object", "layers": 5, "inverted_latent": True,
    "file": "embedding_00001.safetensors", "interrupted": True,
}

# Stand-ins for ComfyUI's scripts/app.js and scripts/api.js that record what the extension does.
APP_STUB = """
export const calls = { extensions: [] };
export const app = {
  graph: null,
  registerExtension(ext) { calls.extensions.push(ext); },
};
"""
API_STUB = """
export const listeners = {};
export const api = {
  addEventListener(name, fn) { (listeners[name] ??= []).push(fn); },
};
"""

# Drives the extension like the frontend would and prints a JSON summary on the last line.
DRIVER = r"""
import { app, calls } from "./scripts/app.js";
import { listeners } from "./scripts/api.js";
await import("./extensions/pack/motion_inversion.mjs");

const FACTS = JSON.parse(process.argv[2]);
const out = {};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const attempt = (fn) => { try { fn(); return null; } catch (err) { return String(err?.stack ?? err); } };

out.registered = calls.extensions.map((e) => e.name);
const ext = calls.extensions[0];
out.listenersBeforeSetup = Object.keys(listeners);
await ext.setup?.(app);
out.lossListeners = (listeners["motion_inversion.loss"] ?? []).length;
const send = (detail) => { for (const fn of listeners["motion_inversion.loss"] ?? []) fn(new CustomEvent("x", { detail })); };

// A fake LiteGraph node type with just what the extension touches.
const nodes = new Map();
app.graph = { getNodeById: (id) => nodes.get(id) ?? null, _nodes: [] };
function makeNodeType() {
  function FakeNode() { this.size = [300, 120]; this.widgets = []; this.flags = {}; this.dirty = 0; }
  Object.assign(FakeNode.prototype, {
    addCustomWidget(w) { this.widgets.push(w); return w; },
    computeSize() {
      let h = 30;
      for (const w of this.widgets) h += (w.computeSize ? w.computeSize(this.size[0])[1] : 20) + 4;
      return [200, h];
    },
    setSize(s) { this.size = s; },
    setDirtyCanvas() { this.dirty++; },
  });
  return FakeNode;
}
function addNode(type, id) {
  const node = new type();
  node.id = id;
  node.graph = app.graph;
  nodes.set(id, node);
  app.graph._nodes.push(node);
  return node;
}

// A canvas context that accepts any call and records lines and texts.
function fakeContext() {
  const log = { calls: 0, lineTo: 0, texts: [] };
  const ctx = new Proxy({}, {
    get(target, key) {
      if (key === "log") return log;
      if (key in target) return target[key];
      if (key === "measureText") return (text) => ({ width: String(text).length * 6 });
      return (...args) => {
        log.calls++;
        if (key === "lineTo") log.lineTo++;
        if (key === "fillText") log.texts.push(String(args[0]));
      };
    },
    set(target, key, value) { target[key] = value; return true; },
  });
  return ctx;
}

const TrainType = makeNodeType();
let chainedExecuted = 0;
TrainType.prototype.onExecuted = () => { chainedExecuted++; };
ext.beforeRegisterNodeDef(TrainType, { name: "MI_TrainMotionEmbedding" }, app);
const OtherType = makeNodeType();
ext.beforeRegisterNodeDef(OtherType, { name: "SomethingElse" }, app);
out.otherPatched = "onDrawForeground" in OtherType.prototype || "onExecuted" in OtherType.prototype;

const node = addNode(TrainType, 7);
const other = addNode(OtherType, 8);
out.sendError = attempt(() => {
  for (let step = 1; step <= 5; step++) send({ node: "7", step, total: 400, loss: 1 / step });
});
out.history = node.miLoss?.values.slice() ?? null;
out.lastStep = node.miLoss?.step ?? null;
out.total = node.miLoss?.total ?? null;
out.dirtyRightAway = node.dirty;
await sleep(60);
out.dirtyAfterFrame = node.dirty;
const panel = node.widgets.find((w) => w.name === "mi_panel");
out.panel = panel ? { serialize: panel.serialize, optionsSerialize: panel.options?.serialize } : null;
out.fitsPanel = node.size[1] >= node.computeSize()[1];

let ctx = fakeContext();
out.drawError = attempt(() => node.onDrawForeground(ctx));
out.drawLines = ctx.log.lineTo;
out.drawTexts = ctx.log.texts;

// Unknown ids, other node types, missing fields and bare events must all be ignored quietly.
out.robustError = attempt(() => {
  send({ node: "999", step: 1, total: 3, loss: 0.5 });
  send({ node: "8", step: 1, total: 3, loss: 0.5 });
  send({});
  send(undefined);
  send({ node: "7" });
  send({ node: "7", step: 6, total: 400, loss: "nan" });
  for (const fn of listeners["motion_inversion.loss"]) fn(new Event("motion_inversion.loss"));
});
out.otherHasLoss = other.miLoss !== undefined;
out.historyAfterJunk = node.miLoss.values.length;
out.junkDrawError = attempt(() => node.onDrawForeground(fakeContext()));

// A new run (step 1 again) resets the history; a long run still draws.
send({ node: "7", step: 1, total: 50000, loss: 2 });
out.historyAfterReset = node.miLoss.values.length;
for (let step = 2; step <= 50000; step++) send({ node: "7", step, total: 50000, loss: Math.exp(-step / 5000) });
ctx = fakeContext();
out.longDrawError = attempt(() => node.onDrawForeground(ctx));
out.longDrawLines = ctx.log.lineTo;
out.longText = ctx.log.texts.find((t) => t.startsWith("step")) ?? null;

// Facts from onExecuted, replaced on re-execution, tolerant of odd messages.
out.factsError = attempt(() => node.onExecuted({ motion_embedding: [FACTS] }));
out.factsText = node.miFactsText ?? null;
out.chainedExecuted = chainedExecuted;
ctx = fakeContext();
out.factsDrawError = attempt(() => node.onDrawForeground(ctx));
out.factsDrawn = ctx.log.texts.join("\n");
node.onExecuted({ motion_embedding: [{ ...FACTS, resolution: "320x192", steps: 7, interrupted: undefined }] });
out.replacedText = node.miFactsText;
out.oddMessagesError = attempt(() => {
  node.onExecuted({ motion_embedding: [{}] });
  node.onExecuted({ motion_embedding: [] });
  node.onExecuted({});
  node.onExecuted(undefined);
  node.onDrawForeground(fakeContext());
  node.flags.collapsed = true;
  node.onDrawForeground(fakeContext());
});

// Deleted node: gone from the graph, a late event and a pending redraw are harmless.
const lengthBefore = node.miLoss.values.length;
nodes.delete(7);
app.graph._nodes = app.graph._nodes.filter((n) => n !== node);
node.graph = null;
out.deletedError = attempt(() => send({ node: "7", step: 50001, total: 50001, loss: 0.1 }));
out.deletedUnchanged = node.miLoss.values.length === lengthBefore;
await sleep(60);

console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def node_bin() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    return node


def test_extension_is_valid_es_module(node_bin, tmp_path):
    copy = tmp_path / "motion_inversion.mjs"
    shutil.copy(EXTENSION, copy)
    proc = subprocess.run([node_bin, "--check", str(copy)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_extension_imports_comfyui_modules_by_standard_paths():
    source = EXTENSION.read_text(encoding="utf-8")
    assert 'from "../../scripts/app.js"' in source
    assert 'from "../../scripts/api.js"' in source
    assert "fetch(" not in source and "XMLHttpRequest" not in source  # no network calls


@pytest.fixture(scope="module")
def driven(node_bin, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("web")
    (root / "scripts").mkdir()
    (root / "scripts" / "app.js").write_text(APP_STUB, encoding="utf-8")
    (root / "scripts" / "api.js").write_text(API_STUB, encoding="utf-8")
    (root / "package.json").write_text('{"type": "module"}', encoding="utf-8")
    pack = root / "extensions" / "pack"
    pack.mkdir(parents=True)
    shutil.copy(EXTENSION, pack / "motion_inversion.mjs")
    (root / "driver.mjs").write_text(DRIVER, encoding="utf-8")
    proc = subprocess.run([node_bin, str(root / "driver.mjs"), json.dumps(FACTS)], capture_output=True, text=True,
                          timeout=120, cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_registers_extension_and_loss_listener(driven):
    assert driven["registered"] == ["motion_inversion.ui"]
    assert driven["lossListeners"] == 1
    assert driven["otherPatched"] is False


def test_loss_events_build_history_and_draw(driven):
    assert driven["sendError"] is None
    assert driven["history"] == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert driven["lastStep"] == 5 and driven["total"] == 400
    # Redraws are throttled to one per frame.
    assert driven["dirtyRightAway"] == 0 and driven["dirtyAfterFrame"] == 1
    assert driven["panel"] == {"serialize": False, "optionsSerialize": False}
    assert driven["fitsPanel"] is True
    assert driven["drawError"] is None
    assert driven["drawLines"] >= 4
    assert any(t.startswith("step 5/400") and "loss 0.2000" in t for t in driven["drawTexts"])


def test_bad_or_unknown_messages_are_ignored(driven):
    assert driven["robustError"] is None
    assert driven["otherHasLoss"] is False
    assert driven["historyAfterJunk"] == 6  # only the well-formed step 6 (its NaN loss kept for the text)
    assert driven["junkDrawError"] is None
    assert driven["deletedError"] is None and driven["deletedUnchanged"] is True


def test_new_run_resets_and_long_runs_draw(driven):
    assert driven["historyAfterReset"] == 1
    assert driven["longDrawError"] is None
    assert 0 < driven["longDrawLines"] < 5000  # downsampled to the plot width
    assert driven["longText"].startswith("step 50000/50000")


def test_on_executed_shows_embedding_facts(driven):
    assert driven["factsError"] is None
    assert driven["chainedExecuted"] >= 1
    text = driven["factsText"]
    for part in ("576x320", "400", "zeroscope_v2_576w", "unet3d", "24 frames", "embedding_00001.safetensors",
                 "interrupted"):
        assert part in text
    assert driven["factsDrawError"] is None
    assert "576x320" in driven["factsDrawn"]
    assert "320x192" in driven["replacedText"] and "576x320" not in driven["replacedText"]
    assert "interrupted" not in driven["replacedText"]
    assert driven["oddMessagesError"] is None
