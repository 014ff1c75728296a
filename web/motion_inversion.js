// Motion Inversion frontend: a live loss curve on the training node and embedding facts on the
// train / save / load nodes. No network calls, no libraries: only ComfyUI's app and api objects.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EXT_NAME = "motion_inversion.ui";
const LOSS_EVENT = "motion_inversion.loss";
const TRAIN_NODE = "MI_TrainMotionEmbedding";
const TRAIN_NODES = new Set([TRAIN_NODE, "MI_TrainMotionEmbeddingNative"]); // nodes that send live loss
const FACT_NODES = new Set([...TRAIN_NODES, "MI_SaveMotionEmbedding", "MI_LoadMotionEmbedding"]);

const LINE_H = 14; // one text line
const PLOT_H = 70; // height of the curve's plot area
const PAD = 6;
const MAX_POINTS = 20000; // keep memory bounded on very long runs
const FONT = "11px sans-serif";

// ---------------------------------------------------------------- helpers
const isNum = (v) => typeof v === "number" && Number.isFinite(v);

function fmtLoss(v) {
  if (!isNum(v)) return "?";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(3) : v.toPrecision(4);
}

// Trailing moving average; the window grows with the run so long runs stay readable.
function movingAverage(values, win) {
  const out = new Array(values.length);
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    sum += values[i];
    if (i >= win) sum -= values[i - win];
    out[i] = sum / Math.min(i + 1, win);
  }
  return out;
}

// Turn the facts dict from the server into display lines; unknown or missing fields are skipped.
function factLines(f) {
  if (!f || typeof f !== "object") return [];
  const has = (k) => f[k] !== undefined && f[k] !== null && f[k] !== "";
  const join = (parts) => parts.filter(Boolean).join("  ·  ");
  const lines = [
    join([has("family") && `${f.family}`, has("base_model") && `${f.base_model}`]),
    join([has("resolution") && `${f.resolution}`, has("frames") && `${f.frames} frames`, has("steps") && `${f.steps} steps`]),
    join([has("loss") && `loss ${f.loss}`, has("mode") && `mode ${f.mode}`, has("layers") && `${f.layers} layers`]),
    has("inverted_latent") ? `inverted latent: ${f.inverted_latent ? "yes" : "no"}` : "",
    has("file") ? `file ${f.file}` : "",
    f.interrupted ? "interrupted: partial embedding" : "",
  ];
  return lines.filter((l) => l);
}

// ---------------------------------------------------------------- layout

function panelHeight(node) {
  const facts = node.miFacts?.length ?? 0;
  const curve = node.miLoss?.values?.length ? PLOT_H + LINE_H + PAD : 0;
  return facts || curve ? facts * LINE_H + curve + PAD * 2 : 0;
}

// A spacer widget (never serialised) reserves room below the real widgets, so the layout
// (including DOM widgets like the multiline prompt) leaves space for what we draw.
function reserveSpace(node) {
  if (!node.miSpacer) {
    const spacer = {
      name: "mi_panel", type: "mi_panel", value: "", serialize: false,
      options: { serialize: false },
      draw() {},
      computeSize: (w) => [w ?? 0, panelHeight(node)],
    };
    node.miSpacer = (typeof node.addCustomWidget === "function" && node.addCustomWidget(spacer)) || spacer;
  }
  try {
    const min = typeof node.computeSize === "function" ? node.computeSize() : null;
    const need = min ? min[1] : panelHeight(node);
    if (node.size && node.size.length >= 2) {
      if (node.size[1] < need) {
        const size = [Math.max(node.size[0], min?.[0] ?? 0), need];
        if (typeof node.setSize === "function") node.setSize(size);
        else node.size = size;
      }
    }
  } catch (err) {
    console.warn("motion_inversion: resize failed", err);
  }
}

// At most one redraw per animation frame, however fast steps arrive.
function requestRedraw(node) {
  const redraw = () => {
    node.miRedrawPending = false;
    if (node.graph === null) return; // removed from the graph meanwhile
    try {
      node.setDirtyCanvas?.(true, true);
    } catch (err) {
      console.warn("motion_inversion: redraw failed", err);
    }
  };
  if (typeof requestAnimationFrame !== "function") return redraw();
  if (node.miRedrawPending) return;
  node.miRedrawPending = true;
  requestAnimationFrame(redraw);
}

// ---------------------------------------------------------------- drawing

function drawCurve(ctx, st, x, y, w, h) {
  ctx.fillStyle = "rgba(0,0,0,0.25)";
  ctx.fillRect(x, y, w, h);
  ctx.strokeStyle = "rgba(255,255,255,0.15)";
  ctx.strokeRect(x, y, w, h);

  const logs = st.values.map((v) => Math.log10(Math.max(v, 1e-12)));
  if (logs.length >= 2) {
    let lo = Infinity, hi = -Infinity;
    for (const v of logs) { if (v < lo) lo = v; if (v > hi) hi = v; }
    if (hi - lo < 1e-6) { lo -= 0.5; hi += 0.5; }
    const n = logs.length;
    const total = Math.max(st.total || 0, n);
    const px = (i) => x + 2 + ((w - 4) * i) / Math.max(total - 1, 1);
    const py = (v) => y + h - 3 - ((h - 6) * (v - lo)) / (hi - lo);
    const stride = Math.max(1, Math.floor(n / Math.max(w, 1))); // ~one point per pixel
    const line = (vals, style, width) => {
      ctx.beginPath();
      ctx.strokeStyle = style;
      ctx.lineWidth = width;
      ctx.moveTo(px(0), py(vals[0]));
      for (let i = stride; i < n; i += stride) ctx.lineTo(px(i), py(vals[i]));
      ctx.lineTo(px(n - 1), py(vals[n - 1]));
      ctx.stroke();
    };
    line(logs, "rgba(120,170,255,0.35)", 1);
    line(movingAverage(logs, Math.max(1, Math.min(50, Math.round(n / 20)))), "#ffb347", 2);
    ctx.fillStyle = "rgba(255,255,255,0.45)";
    ctx.textAlign = "right";
    ctx.fillText(fmtLoss(10 ** hi), x + w - 3, y + 11);
    ctx.fillText(fmtLoss(10 ** lo), x + w - 3, y + h - 4);
    ctx.textAlign = "left";
  }
}

function drawPanel(node, ctx) {
  const h = panelHeight(node);
  if (!h || !node.size) return;
  const w = node.size[0];
  let y = node.size[1] - h + PAD;
  const x = PAD;
  const innerW = Math.max(w - PAD * 2, 10);
  ctx.save();
  ctx.font = FONT;
  ctx.textAlign = "left";
  ctx.textBaseline = "alphabetic";
  for (const line of node.miFacts ?? []) {
    ctx.fillStyle = line.startsWith("interrupted") ? "#ff9a6a" : "#bbb";
    ctx.fillText(line, x, y + 10, innerW);
    y += LINE_H;
  }
  const st = node.miLoss;
  if (st?.values?.length) {
    ctx.fillStyle = "#ddd";
    const last = st.values[st.values.length - 1];
    ctx.fillText(`step ${st.step}/${st.total || "?"}  loss ${fmtLoss(last)}`, x, y + 10, innerW);
    y += LINE_H + PAD / 2;
    drawCurve(ctx, st, x, y, innerW, PLOT_H);
  }
  ctx.restore();
}

// ---------------------------------------------------------------- events

// One graph's node by its local id: frontends key nodes by number (older) or by string (newer).
function localNode(graph, id) {
  const byString = graph?.getNodeById?.(id);
  if (byString) return byString;
  return /^-?\d+$/.test(id) ? graph?.getNodeById?.(Number(id)) ?? null : null;
}

// A node by its execution id, as the frontend resolves core's messages: "12" in the root graph,
// "5:3" is node 3 inside the subgraph of node 5 (any depth).
function nodeByExecutionId(root, executionId) {
  const path = String(executionId).split(":");
  let graph = root;
  for (const hostId of path.slice(0, -1)) {
    graph = localNode(graph, hostId)?.subgraph;
    if (!graph) return null;
  }
  return localNode(graph, path[path.length - 1]);
}

function onLoss(event) {
  const d = event?.detail;
  const id = d?.display_node ?? d?.node; // the node shown for it (an expanded node is shown by its parent)
  if (id === undefined || id === null || id === "") return;
  const node = nodeByExecutionId(app.rootGraph ?? app.graph, id);
  if (!node || !TRAIN_NODES.has(node.miKind)) return; // unknown or deleted node, or not ours
  const step = Number(d.step);
  const loss = Number(d.loss);
  if (!Number.isFinite(step) || !Number.isFinite(loss)) return;
  let st = node.miLoss;
  if (!st || step === 1 || step < st.step) st = node.miLoss = { values: [], step: 0, total: 0 };
  st.values.push(loss);
  if (st.values.length > MAX_POINTS) st.values.splice(0, st.values.length - MAX_POINTS);
  st.step = step;
  st.total = Number.isFinite(Number(d.total)) ? Number(d.total) : st.total;
  reserveSpace(node);
  requestRedraw(node);
}

app.registerExtension({
  name: EXT_NAME,

  setup() {
    api.addEventListener(LOSS_EVENT, onLoss);
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    const kind = nodeData?.name;
    if (!FACT_NODES.has(kind)) return;
    const proto = nodeType.prototype;

    proto.miKind = kind; // lets the loss listener ignore nodes that are not ours

    if (kind === TRAIN_NODE) {
      // Workflows saved before checkpointing became auto / on / off store true / false: show what the server runs.
      const prevConfigured = proto.onAfterGraphConfigured;
      proto.onAfterGraphConfigured = function () {
        const r = prevConfigured?.apply(this, arguments);
        const w = this.widgets?.find((x) => x.name === "gradient_checkpointing");
        if (w && typeof w.value === "boolean") w.value = w.value ? "on" : "off";
        return r;
      };
    }

    const prevExecuted = proto.onExecuted;
    proto.onExecuted = function (message) {
      const r = prevExecuted?.apply(this, arguments);
      const facts = message?.motion_embedding?.[0];
      if (facts && typeof facts === "object") {
        this.miFacts = factLines(facts);
        reserveSpace(this);
        requestRedraw(this);
      }
      return r;
    };

    const prevDraw = proto.onDrawForeground;
    proto.onDrawForeground = function (ctx) {
      const r = prevDraw?.apply(this, arguments);
      if (this.flags?.collapsed || !ctx) return r;
      try {
        drawPanel(this, ctx);
      } catch (err) {
        console.warn("motion_inversion: draw failed", err);
      }
      return r;
    };
  },
});
