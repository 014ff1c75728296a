// Motion Inversion: live training-loss curve and embedding facts drawn on the pack's nodes.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const LOSS_EVENT = "motion_inversion.loss";
const TRAIN_NODE = "MI_TrainMotionEmbedding";
const FACT_NODES = new Set([TRAIN_NODE, "MI_SaveMotionEmbedding", "MI_LoadMotionEmbedding"]);

const LINE_H = 14; // one text line in the panel
const CURVE_H = 80; // plot area of the loss curve
const PAD = 6;

// ---- state kept on the node --------------------------------------------------------------------

function lossState(node) {
  node.miLoss ??= { steps: [], values: [], step: 0, total: 0 };
  return node.miLoss;
}

function panelHeight(node) {
  const facts = node.miFacts?.length ?? 0;
  const curve = node.miLoss?.values.length ? LINE_H + CURVE_H : 0;
  return facts || curve ? facts * LINE_H + curve + PAD * 2 : 0;
}

// A non-serialised spacer widget reserves room below the other widgets, so the layout (and the
// multiline prompt box) leaves space for the panel drawn in onDrawForeground.
function ensurePanel(node) {
  if (!node.miPanel) {
    const spacer = {
      name: "mi_panel", type: "mi_panel", value: "", serialize: false,
      options: { serialize: false }, // keeps it out of both the workflow and the prompt
      draw() {}, // drawn by onDrawForeground
      computeSize: (width) => [width ?? 0, panelHeight(node)],
    };
    const added = typeof node.addCustomWidget === "function" ? node.addCustomWidget(spacer) : null;
    node.miPanel = added ?? spacer;
  }
  // Grow the node if the panel no longer fits (never shrink what the user sized).
  const min = typeof node.computeSize === "function" ? node.computeSize() : null;
  if (min && Array.isArray(node.size) && node.size[1] < min[1]) {
    const size = [Math.max(node.size[0], min[0] ?? 0), min[1]];
    typeof node.setSize === "function" ? node.setSize(size) : (node.size = size);
  }
}

// Redraw at most once per animation frame, however fast the steps arrive.
const pendingRedraw = new Set();
const nextFrame = globalThis.requestAnimationFrame ?? ((fn) => setTimeout(fn, 16));

function scheduleRedraw(node) {
  if (pendingRedraw.has(node)) return;
  pendingRedraw.add(node);
  nextFrame(() => {
    pendingRedraw.delete(node);
    try {
      if (node.graph) node.setDirtyCanvas?.(true, true); // skip nodes deleted meanwhile
    } catch (err) {
      console.warn("motion_inversion: redraw failed", err);
    }
  });
}

// ---- server messages ---------------------------------------------------------------------------

function findNode(id) {
  const graph = app.graph;
  if (id === "" || !graph) return null;
  let node = graph.getNodeById?.(Number(id));
  if (!node || String(node.id) !== id) node = (graph._nodes ?? graph.nodes ?? []).find((n) => String(n?.id) === id);
  return node ?? null;
}

function onLossEvent(event) {
  const detail = event?.detail ?? {};
  const node = findNode(String(detail.node ?? ""));
  if (!node?.miTrainer) return; // unknown id, deleted node or another node type
  const step = Number(detail.step);
  if (!Number.isFinite(step)) return;
  const state = lossState(node);
  if (step === 1 || step < state.step) { state.steps = []; state.values = []; } // a new run
  state.steps.push(step);
  state.values.push(Number(detail.loss)); // NaN kept for the text, skipped by the plot
  state.step = step;
  state.total = Number(detail.total) || 0;
  if (state.values.length === 1) ensurePanel(node);
  scheduleRedraw(node);
}

// ---- embedding facts ---------------------------------------------------------------------------

function factLines(facts) {
  if (!facts || typeof facts !== "object") return [];
  const has = (key) => facts[key] !== undefined && facts[key] !== null && facts[key] !== "";
  const join = (...parts) => parts.filter(Boolean).join(", ");
  const lines = [
    join(has("family") && facts.family, has("base_model") && facts.base_model),
    join(has("resolution") && facts.resolution, has("frames") && `${facts.frames} frames`,
         has("steps") && `${facts.steps} steps`),
    join(has("loss") && `loss ${facts.loss}`, has("mode") && `mode ${facts.mode}`,
         has("layers") && `${facts.layers} layers`),
    has("inverted_latent") ? `inverted latent: ${facts.inverted_latent ? "yes" : "no"}` : "",
    has("file") ? `file: ${facts.file}` : "",
    facts.interrupted ? "interrupted: partial training" : "",
  ];
  return lines.filter(Boolean);
}

function showFacts(node, message) {
  const list = message?.motion_embedding;
  if (!Array.isArray(list)) return; // some other output: keep what is shown
  node.miFacts = factLines(list[0]); // replaces the previous run's facts
  node.miFactsText = node.miFacts.join("\n");
  ensurePanel(node);
  scheduleRedraw(node);
}

// ---- drawing -----------------------------------------------------------------------------------

function fitText(ctx, text, maxWidth) {
  if (typeof ctx.measureText !== "function" || maxWidth <= 0) return text;
  let out = text;
  while (out.length > 1 && ctx.measureText(out).width > maxWidth) out = out.slice(0, -2) + "…";
  return out;
}

function formatLoss(value) {
  return Number.isFinite(value) ? value.toPrecision(4) : String(value);
}

// Loss curve in log10 space: faint raw values plus a trailing moving average.
function drawCurve(ctx, state, x, y, w, h) {
  ctx.fillStyle = "#181818";
  ctx.fillRect(x, y, w, h);
  const logs = state.values.map((v) => (v > 0 && Number.isFinite(v) ? Math.log10(v) : NaN));
  const finite = logs.filter(Number.isFinite);
  if (!finite.length) return;
  let lo = finite.reduce((a, b) => Math.min(a, b)), hi = finite.reduce((a, b) => Math.max(a, b));
  if (hi - lo < 1e-6) { lo -= 0.5; hi += 0.5; }

  const win = Math.max(1, Math.min(50, Math.round(logs.length / 20)));
  const smooth = [];
  let sum = 0, count = 0;
  logs.forEach((v, i) => {
    if (Number.isFinite(v)) { sum += v; count++; }
    const old = logs[i - win];
    if (i >= win && Number.isFinite(old)) { sum -= old; count--; }
    smooth.push(count ? sum / count : NaN);
  });

  const span = Math.max(logs.length, state.total - state.steps[0] + 1, 2) - 1;
  const stride = Math.max(1, Math.ceil(logs.length / (w * 2)));
  const line = (series, color, width) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.beginPath();
    let pen = false;
    for (let i = 0; i < series.length; i += stride) {
      if (!Number.isFinite(series[i])) { pen = false; continue; }
      const px = x + (i / span) * w;
      const py = y + h - ((series[i] - lo) / (hi - lo)) * h;
      pen ? ctx.lineTo(px, py) : ctx.moveTo(px, py);
      pen = true;
    }
    ctx.stroke();
  };
  line(logs, "rgba(110,150,210,0.45)", 1);
  line(smooth, "#ffb347", 1.5);

  ctx.fillStyle = "#888";
  ctx.font = "10px sans-serif";
  ctx.textAlign = "right";
  ctx.fillText(formatLoss(10 ** hi), x + w - 3, y + 11);
  ctx.fillText(formatLoss(10 ** lo), x + w - 3, y + h - 3);
}

function drawPanel(node, ctx) {
  if (node.flags?.collapsed || !ctx || !Array.isArray(node.size)) return;
  const height = panelHeight(node);
  if (!height) return;
  const width = node.size[0] - 20;
  let y = node.miPanel?.y ?? node.miPanel?.last_y ?? node.size[1] - height;
  y = Math.max(0, Math.min(y, node.size[1] - height)) + PAD;
  const x = 10;
  ctx.save();
  try {
    ctx.font = "11px sans-serif";
    ctx.textAlign = "left";
    ctx.textBaseline = "alphabetic";
    ctx.fillStyle = "#bbb";
    for (const text of node.miFacts ?? []) {
      ctx.fillText(fitText(ctx, text, width), x, y + LINE_H - 3);
      y += LINE_H;
    }
    const state = node.miLoss;
    if (state?.values.length) {
      const last = state.values[state.values.length - 1];
      const total = state.total ? `/${state.total}` : "";
      ctx.fillStyle = "#ddd";
      ctx.fillText(fitText(ctx, `step ${state.step}${total}  loss ${formatLoss(last)}`, width), x, y + LINE_H - 3);
      drawCurve(ctx, state, x, y + LINE_H, width, CURVE_H);
    }
  } finally {
    ctx.restore();
  }
}

// ---- registration ------------------------------------------------------------------------------

app.registerExtension({
  name: "motion_inversion.ui",

  setup() {
    api.addEventListener(LOSS_EVENT, (event) => {
      try {
        onLossEvent(event);
      } catch (err) {
        console.warn("motion_inversion: bad loss message", err); // never break the websocket handler
      }
    });
  },

  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!FACT_NODES.has(nodeData?.name)) return;
    const proto = nodeType.prototype;
    if (nodeData.name === TRAIN_NODE) proto.miTrainer = true; // accepts loss events

    const onExecuted = proto.onExecuted;
    proto.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      showFacts(this, message);
    };

    const onDrawForeground = proto.onDrawForeground;
    proto.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      drawPanel(this, ctx);
    };
  },
});
