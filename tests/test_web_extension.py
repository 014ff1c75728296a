"""The ComfyUI frontend extension (web/motion_inversion.js), run under Node.js with stub ComfyUI modules."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

EXTENSION = Path(__file__).resolve().parent.parent / "web" / "motion_inversion.js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

FACTS = {
    "family": "unet3d", "base_model": "zeroscope_v2_576w", "resolution": "576x320", "frames": 24,
    "steps": 400, "loss": "base", "mode": "object", "layers": 5, "inverted_latent": True,
    "file": "embedding_00001.safetensors", "interrupted": True,
}

APP_STUB = """
export const calls = { extensions: [] };
const nodes = new Map();
export const app = {
  graph: {
    getNodeById(id) { return nodes.get(id) ?? null; },
    add(node) { nodes.set(node.id, node); node.graph = this; },
    remove(node) { nodes.delete(node.id); node.graph = null; },
  },
  registerExtension(ext) { calls.extensions.push(ext); },
};
"""

API_STUB = """
export const listeners = {};
export const api = {
  addEventListener(name, fn) { (listeners[name] ??= []).push(fn); },
};
"""

DRIVER = r"""
import { app, calls } from "./scripts/app.js";
import { listeners } from "./scripts/api.js";

const FACTS = JSON.parse(process.argv[2]);
const out = { errors: [] };
const check = (cond, msg) => { if (!cond) throw new Error("assertion failed: " + msg); };

// Animation frames are queued so throttling can be observed, then flushed by hand.
const frames = [];
globalThis.requestAnimationFrame = (fn) => { frames.push(fn); return frames.length; };
const flush = () => { while (frames.length) frames.shift()(); };

await import("./extensions/pack/motion_inversion.mjs");
check(calls.extensions.length === 1, "registerExtension called once");
const ext = calls.extensions[0];
check(ext.name === "motion_inversion.ui", "extension name");
ext.setup?.(app);
check((listeners["motion_inversion.loss"] ?? []).length === 1, "loss listener registered in setup");
const emit = (detail) => { for (const fn of listeners["motion_inversion.loss"]) fn(new CustomEvent("motion_inversion.loss", { detail })); };

// A minimal LiteGraph-like node class, with earlier handlers that must stay chained.
function makeType() {
  class FakeNode {
    constructor() { this.size = [240, 120]; this.widgets = []; this.dirty = 0; this.prevDraws = 0; this.prevExec = 0; this.flags = {}; }
    addCustomWidget(w) { this.widgets.push(w); return w; }
    computeSize() {
      let h = 60;
      for (const w of this.widgets) h += w.computeSize ? w.computeSize(this.size[0])[1] : 20;
      return [200, h];
    }
    setSize(s) { this.size = [s[0], s[1]]; }
    setDirtyCanvas() { this.dirty++; }
  }
  FakeNode.prototype.onDrawForeground = function () { this.prevDraws++; };
  FakeNode.prototype.onExecuted = function () { this.prevExec++; };
  return FakeNode;
}

const calls2d = {};
const ctx = new Proxy({ measureText: () => ({ width: 10 }) }, {
  get(t, k) {
    if (k in t) return t[k];
    return (...args) => { calls2d[k] = (calls2d[k] ?? 0) + 1; if (k === "fillText") (calls2d.texts ??= []).push(String(args[0])); };
  },
  set(t, k, v) { t[k] = v; return true; },
});
const draw = (node) => { calls2d.texts = []; node.onDrawForeground(ctx); return calls2d.texts.slice(); };

// --- training node: live loss curve
const Train = makeType();
await ext.beforeRegisterNodeDef(Train, { name: "MI_TrainMotionEmbedding" }, app);
const train = new Train();
train.id = 7;
app.graph.add(train);
const h0 = train.size[1];
const losses = [0.9, 0.5, 0.3, 0.2, 0.15];
losses.forEach((loss, i) => emit({ node: "7", step: i + 1, total: 400, loss }));
out.lossCount = train.miLoss?.values?.length ?? 0;
out.framesRequested = frames.length;
flush();
out.dirtyAfterFlush = train.dirty;
out.grew = train.size[1] > h0;
const texts = draw(train);
out.curveText = texts.join("\n");
out.strokes = calls2d.stroke ?? 0;
out.prevDraws = train.prevDraws;
out.saveRestoreBalanced = (calls2d.save ?? 0) === (calls2d.restore ?? 0);

// unknown node, garbage events, missing fields: all ignored without throwing
emit({ node: "999", step: 1, total: 10, loss: 1.0 });
emit({ node: "7", step: 6 });  // no loss
emit({ step: 6, loss: 1 });     // no node
emit(undefined);
emit({ node: "7", step: 6, total: 400, loss: "nan?" });
out.lossCountAfterJunk = train.miLoss.values.length;

// a new run (step goes back to 1) resets the curve
emit({ node: "7", step: 1, total: 50, loss: 2.0 });
emit({ node: "7", step: 2, total: 50, loss: 1.0 });
out.lossCountAfterReset = train.miLoss.values.length;
flush();

// facts from onExecuted, chained with the earlier handler, replacing earlier facts
train.onExecuted({ motion_embedding: [FACTS] });
out.prevExec = train.prevExec;
out.factsText = (train.miFacts ?? []).join("\n");
out.drawnAfterFacts = draw(train).join("\n");
train.onExecuted({ motion_embedding: [{ resolution: "320x192", steps: 30 }] });
out.replacedFacts = train.miFacts.join("\n");
train.onExecuted({});            // no facts: keeps what is shown
train.onExecuted(undefined);
out.factsAfterEmpty = train.miFacts.length;
train.flags.collapsed = true;
out.collapsedTexts = draw(train).length;
train.flags.collapsed = false;

// a deleted node receives nothing and its pending redraw is skipped
emit({ node: "7", step: 3, total: 50, loss: 0.5 });
app.graph.remove(train);
const dirtyBefore = train.dirty;
flush();
out.dirtyAfterRemoval = train.dirty - dirtyBefore;
emit({ node: "7", step: 4, total: 50, loss: 0.4 });
out.lossCountAfterRemoval = train.miLoss.values.length;

// load node: facts only; loss events addressed to it are ignored
const Load = makeType();
await ext.beforeRegisterNodeDef(Load, { name: "MI_LoadMotionEmbedding" }, app);
const load = new Load();
load.id = 8;
app.graph.add(load);
emit({ node: "8", step: 1, total: 10, loss: 1.0 });
out.loadHasLoss = Boolean(load.miLoss);
load.onExecuted({ motion_embedding: [{ file: "walk.safetensors" }] });
out.loadTexts = draw(load).join("\n");

// other node types are left alone
const Other = makeType();
const before = Other.prototype.onExecuted;
await ext.beforeRegisterNodeDef(Other, { name: "KSampler" }, app);
out.otherUntouched = Other.prototype.onExecuted === before;

console.log(JSON.stringify(out));
"""


@pytest.fixture()
def sandbox(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(APP_STUB)
    (tmp_path / "scripts" / "api.js").write_text(API_STUB)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    ext_dir = tmp_path / "extensions" / "pack"
    ext_dir.mkdir(parents=True)
    shutil.copy(EXTENSION, ext_dir / "motion_inversion.mjs")
    (tmp_path / "driver.mjs").write_text(DRIVER)
    return tmp_path


def test_extension_parses(tmp_path: Path) -> None:
    copy = tmp_path / "motion_inversion.mjs"
    shutil.copy(EXTENSION, copy)
    proc = subprocess.run([NODE, "--check", str(copy)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_extension_is_small_and_offline() -> None:
    text = EXTENSION.read_text()
    assert len(text.splitlines()) <= 260
    for banned in ("fetch(", "XMLHttpRequest", "WebSocket", "http://", "https://"):
        assert banned not in text
    imports = [line for line in text.splitlines() if line.startswith("import ")]
    assert imports == [
        'import { app } from "../../scripts/app.js";',
        'import { api } from "../../scripts/api.js";',
    ]


def run_driver(sandbox: Path) -> dict:
    proc = subprocess.run([NODE, "driver.mjs", json.dumps(FACTS)], cwd=sandbox,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_loss_curve_and_facts_under_node(sandbox: Path) -> None:
    out = run_driver(sandbox)
    # live loss curve
    assert out["lossCount"] == 5
    assert out["framesRequested"] == 1, "redraws are throttled to one per animation frame"
    assert out["dirtyAfterFlush"] == 1
    assert out["grew"]
    assert "step 5/400" in out["curveText"] and "loss 0.1500" in out["curveText"]
    assert out["strokes"] >= 2  # raw curve and moving average
    assert out["prevDraws"] == 1
    assert out["saveRestoreBalanced"]
    # robustness
    assert out["lossCountAfterJunk"] == 5
    assert out["lossCountAfterReset"] == 2
    assert out["dirtyAfterRemoval"] == 0
    assert out["lossCountAfterRemoval"] == 3
    assert out["loadHasLoss"] is False
    assert out["otherUntouched"]
    # embedding facts
    assert out["prevExec"] == 1
    facts = out["factsText"]
    for part in ("576x320", "400", "24 frames", "zeroscope_v2_576w", "unet3d", "loss base", "mode object",
                 "5 layers", "inverted latent: yes", "embedding_00001.safetensors", "interrupted"):
        assert part in facts, part
    assert "576x320" in out["drawnAfterFacts"] and "step 2/50" in out["drawnAfterFacts"]
    assert "320x192" in out["replacedFacts"] and "576x320" not in out["replacedFacts"]
    assert out["factsAfterEmpty"] == 1
    assert out["collapsedTexts"] == 0
    assert "walk.safetensors" in out["loadTexts"] and "step" not in out["loadTexts"]


NO_RAF_DRIVER = r"""
import { app, calls } from "./scripts/app.js";
import { listeners } from "./scripts/api.js";
delete globalThis.requestAnimationFrame;
await import("./extensions/pack/motion_inversion.mjs");
const ext = calls.extensions[0];
ext.setup();
const emit = (detail) => listeners["motion_inversion.loss"].forEach((fn) => fn(new CustomEvent("x", { detail })));
function T() { this.size = [200, 80]; this.dirty = 0; }
T.prototype.setDirtyCanvas = function () { this.dirty++; };  // no computeSize/addCustomWidget/setSize
await ext.beforeRegisterNodeDef(T, { name: "MI_TrainMotionEmbedding" }, app);
const node = new T();
node.id = 3;
app.graph.add(node);
for (const s of [1, 2, 3, 4, 5]) emit({ node: "3", step: s, total: 5, loss: 1 / s });
const first = node.miLoss.values.length;
emit({ node: "3", step: 2, total: 5, loss: 0.7 });  // step went back: a new run
const ctx = new Proxy({}, { get: (t, k) => (k in t ? t[k] : () => ({ width: 10 })), set: (t, k, v) => ((t[k] = v), true) });
node.onDrawForeground(ctx);
node.onExecuted({ motion_embedding: [null] });
node.onExecuted({ motion_embedding: [] });
node.onExecuted({ motion_embedding: [{}] });
console.log(JSON.stringify({ first, after: node.miLoss.values.length, dirty: node.dirty, grew: node.size[1] > 80,
                             facts: node.miFacts }));
"""


def test_without_animation_frames_and_sparse_nodes(sandbox: Path) -> None:
    (sandbox / "driver.mjs").write_text(NO_RAF_DRIVER)
    out = run_driver(sandbox)
    assert out == {"first": 5, "after": 1, "dirty": 7, "grew": True, "facts": []}


SUBGRAPH_DRIVER = r"""
import { app, calls } from "./scripts/app.js";
import { listeners } from "./scripts/api.js";
delete globalThis.requestAnimationFrame;
await import("./extensions/pack/motion_inversion.mjs");
const ext = calls.extensions[0];
ext.setup();
const emit = (detail) => listeners["motion_inversion.loss"].forEach((fn) => fn(new CustomEvent("x", { detail })));
function T() { this.size = [200, 80]; }
T.prototype.setDirtyCanvas = function () {};
await ext.beforeRegisterNodeDef(T, { name: "MI_TrainMotionEmbedding" }, app);
// A subgraph keyed by string ids (as the newest frontend keys nodes), inside another one.
const graphOf = (entries) => ({ getNodeById: (id) => entries.get(id) ?? null });
const make = (id) => Object.assign(new T(), { id });
const inner = make("3"), deep = make("3"), root3 = make(3);
const innerGraph = graphOf(new Map([["3", inner], ["4", { id: "4", subgraph: graphOf(new Map([["3", deep]])) }]]));
app.graph.add({ id: 5, subgraph: innerGraph });  // a subgraph node in the root graph (numeric ids there)
app.graph.add(root3);
emit({ node: "5:3", step: 1, total: 4, loss: 0.5 });
emit({ node: "5:4:3", step: 1, total: 4, loss: 0.4 });
emit({ node: "5:4:3", step: 2, total: 4, loss: 0.3 });
emit({ node: "5:3.0.1", display_node: "5:3", step: 2, total: 4, loss: 0.25 });  // an expanded node: shown by its parent
emit({ node: "7:3", step: 1, total: 4, loss: 0.9 });   // no such host: ignored
emit({ node: "3:3", step: 1, total: 4, loss: 0.9 });   // host is not a subgraph node: ignored
const count = (n) => n.miLoss?.values?.length ?? 0;
console.log(JSON.stringify({ inner: count(inner), deep: count(deep), root: count(root3) }));
"""


LEGACY_CHECKPOINTING_DRIVER = r"""
import { app, calls } from "./scripts/app.js";
await import("./extensions/pack/motion_inversion.mjs");
const ext = calls.extensions[0];
function T() { this.size = [200, 80]; }
T.prototype.onAfterGraphConfigured = function () { this.chained = true; };
await ext.beforeRegisterNodeDef(T, { name: "MI_TrainMotionEmbedding" }, app);
const shown = [];
for (const value of [false, true, "auto", "off"]) {
  const node = Object.assign(new T(), { widgets: [{ name: "steps", value: 3 }, { name: "gradient_checkpointing", value }] });
  node.onAfterGraphConfigured();
  shown.push([node.widgets[1].value, node.widgets[0].value, node.chained]);
}
console.log(JSON.stringify(shown));
"""


def test_checkpointing_saved_as_a_boolean_shows_as_on_or_off(sandbox: Path) -> None:
    """A workflow saved when the widget was a switch loads with the choice the server runs, not 'false'."""
    (sandbox / "driver.mjs").write_text(LEGACY_CHECKPOINTING_DRIVER)
    assert run_driver(sandbox) == [["off", 3, True], ["on", 3, True], ["auto", 3, True], ["off", 3, True]]


def test_loss_curve_reaches_a_node_inside_a_subgraph(sandbox: Path) -> None:
    """Inside a subgraph the server names the node by its execution id path ("5:3"), as core's own messages do."""
    (sandbox / "driver.mjs").write_text(SUBGRAPH_DRIVER)
    assert run_driver(sandbox) == {"inner": 2, "deep": 2, "root": 0}


NATIVE_TRAIN_DRIVER = r"""
import { app, calls } from "./scripts/app.js";
import { listeners } from "./scripts/api.js";
await import("./extensions/pack/motion_inversion.mjs");
const ext = calls.extensions[0];
ext.setup();
const emit = (detail) => listeners["motion_inversion.loss"].forEach((fn) => fn(new CustomEvent("x", { detail })));
function T() { this.size = [200, 80]; }
T.prototype.setDirtyCanvas = function () {};
await ext.beforeRegisterNodeDef(T, { name: "MI_TrainMotionEmbeddingNative" }, app);
function Other() { this.size = [200, 80]; }
await ext.beforeRegisterNodeDef(Other, { name: "KSampler" }, app);
const node = Object.assign(new T(), { id: 4 });
const other = Object.assign(new Other(), { id: 5 });
app.graph.add(node);
app.graph.add(other);
for (const s of [1, 2, 3]) { emit({ node: "4", step: s, total: 3, loss: 1 / s }); emit({ node: "5", step: s, total: 3, loss: 1 }); }
node.onExecuted({ motion_embedding: [{ family: "wan", steps: 3 }] });
console.log(JSON.stringify({ native: node.miLoss?.values?.length ?? 0, other: other.miLoss?.values?.length ?? 0,
                             facts: (node.miFacts ?? []).join(" ") }));
"""


def test_the_native_training_node_gets_the_live_loss_curve_and_facts(sandbox: Path) -> None:
    (sandbox / "driver.mjs").write_text(NATIVE_TRAIN_DRIVER)
    out = run_driver(sandbox)
    assert out["native"] == 3 and out["other"] == 0
    assert "wan" in out["facts"]
