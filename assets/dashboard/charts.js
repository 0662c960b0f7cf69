// The charts: for the chosen site, and for each of its integrations, what
// was delivered and what failed each minute (each hour over 7 days) and the
// queue's depth, over the last hour, 24 hours or 7 days, with the periods it
// was held drawn as bands (which hold, who, why, from when to when).
//
// The numbers are those of GET …/history as answered, one point a step; the
// bands those of GET …/holds. uPlot draws them (vendor/, loaded by the page
// as a classic script: window.uPlot). History is asked for on the
// dashboard's poll (app.js calls renderCharts after each) but at most every
// RANGES[range].every, and at once when the site, the period or a hold
// changes. integrations.js puts integrationChart(name) into each card: the
// same element every time, so a redrawn card keeps its chart.
//
// For tests and for a look from the console, each chart's element (a
// figure, [data-chart]) carries what it plots: `uplot` (the uPlot, whose
// `data` are the series drawn), `holds` (the bands), and `data-since` and
// `data-step` (the query that answered them).

import { $, fmtDuration, fmtNum, fmtTime, h, replace } from './dom.js';
import { api, errorText } from './api.js';
import { st } from './state.js';

/** The periods a chart can show: the step asked for, and how often to ask again. */
const RANGES = {
  '1h': { label: '1 hour', title: 'last hour', ms: 3_600_000, step: '1m', per: 'per minute', every: 10_000 },
  '24h': { label: '24 hours', title: 'last 24 hours', ms: 86_400_000, step: '1m', per: 'per minute', every: 30_000 },
  '7d': { label: '7 days', title: 'last 7 days', ms: 7 * 86_400_000, step: '1h', per: 'per hour', every: 60_000 },
};

const STORED_RANGE = 'sluice.chart-range';

// Okabe–Ito colours, told apart by more than hue: delivered a solid line,
// failed a dashed one with a dot at each failure, the queue's depth a grey
// stepped area on its own (right) axis; holds by a person a plain band,
// holds by the system (an endpoint offline, refused, the site stopped) a
// hatched one.
const COLOUR = {
  delivered: '#0072b2',
  failed: '#d55e00',
  depth: '#5f6b7a',
  person: '#e69f00',
  system: '#cc79a7',
};

const HOLD_LABEL = {
  operator: 'paused',
  'endpoint-offline': 'endpoint offline',
  unauthorized: 'unauthorized',
  'site-stopped': 'site stopped',
};

const charts = {
  site: null,          // the site the charts are of
  range: storedRange(),
  gen: 0,              // bumped when the site or the period changes: older answers are dropped
  busy: false,
  due: 0,              // when to ask for history again (ms)
  holds: '',           // the integrations' holds when last asked: a change asks again at once
  siteView: null,
  views: new Map(),    // integration name -> view
  switcher: null,
};

function storedRange() {
  try {
    const r = localStorage.getItem(STORED_RANGE);
    return r && RANGES[r] ? r : '1h';
  } catch (e) {
    return '1h';
  }
}

/** The chart of integration NAME of the chosen site: the same element each time. */
export function integrationChart(name) {
  syncSite();
  let v = charts.views.get(name);
  if (!v) {
    v = makeView(name);
    charts.views.set(name, v);
    charts.due = 0;
  }
  return v.box;
}

/**
 * After each poll: the site's chart and the period switch in their places,
 * charts of integrations gone dropped, and history asked for when due.
 */
export function renderCharts() {
  syncSite();
  if (!st.site) return;
  if (!charts.siteView) charts.siteView = makeView(null);
  const slot = $('site-chart');
  if (slot && charts.siteView.box.parentElement !== slot) replace(slot, charts.siteView.box);
  const switchSlot = $('chart-range');
  if (switchSlot) {
    if (!charts.switcher) charts.switcher = rangeSwitch();
    if (charts.switcher.parentElement !== switchSlot) replace(switchSlot, charts.switcher);
  }
  const names = new Set(st.integrations.map((i) => i.name));
  for (const [name, v] of charts.views) {
    if (!names.has(name)) {
      dropView(v);
      charts.views.delete(name);
    }
  }
  const holds = JSON.stringify(st.integrations.map((i) => [i.name, i.holds]));
  if (holds !== charts.holds) {
    charts.holds = holds;
    charts.due = 0;
  }
  if (!charts.busy && Date.now() >= charts.due) fetchAll();
}

/** Another site: its charts start afresh. */
function syncSite() {
  if (charts.site === st.site) return;
  charts.site = st.site;
  charts.gen += 1;
  charts.due = 0;
  charts.holds = '';
  for (const v of charts.views.values()) dropView(v);
  charts.views.clear();
  if (charts.siteView) {
    dropView(charts.siteView);
    charts.siteView = null;
  }
}

function setRange(key) {
  if (!RANGES[key] || key === charts.range) return;
  charts.range = key;
  try {
    localStorage.setItem(STORED_RANGE, key);
  } catch (e) { /* a private window keeps it for this page only */ }
  charts.gen += 1;
  charts.due = 0;
  for (const v of allViews()) titleOf(v);
  renderCharts();
}

function rangeSwitch() {
  return h('div', { class: 'segmented chart-range', role: 'radiogroup', 'aria-label': 'Period of the charts' },
    Object.entries(RANGES).map(([key, r]) => h('label', null,
      h('input', {
        type: 'radio', name: 'chart-range', value: key, checked: key === charts.range,
        dataset: { range: key }, onchange: () => setRange(key),
      }),
      r.label)));
}

const allViews = () => (charts.siteView ? [charts.siteView, ...charts.views.values()] : [...charts.views.values()]);

/** A chart's element: its title, the plot, the hold under the cursor, the periods held. */
function makeView(name) {
  const v = {
    name,
    title: h('span', { class: 'chart-title' }),
    plot: h('div', { class: 'chart-plot' }),
    hover: h('p', { class: 'chart-hover small' }),
    list: h('ul', { class: 'chart-holds small' }),
    note: h('p', { class: 'chart-note muted small' }),
    u: null,
    data: null,
    holds: [],
    range: null,
    observer: null,
  };
  v.box = h('figure', {
    class: `chart ${name === null ? 'site-chart' : 'integration-chart'}`,
    dataset: { chart: name === null ? '' : name },
  }, h('figcaption', null, v.title), v.note, v.plot, v.hover, v.list);
  v.note.hidden = true;
  v.hover.hidden = true;
  v.list.hidden = true;
  v.box.holds = [];
  titleOf(v);
  v.observer = new ResizeObserver(() => draw(v));
  v.observer.observe(v.plot);
  return v;
}

function titleOf(v) {
  const range = RANGES[charts.range];
  v.title.textContent = v.name === null
    ? `All integrations of ${st.site}, ${range.title}`
    : `Activity of ${v.name}, ${range.title}`;
}

function dropView(v) {
  v.observer.disconnect();
  if (v.u) v.u.destroy();
  v.u = null;
  v.box.uplot = null;
  v.box.remove();
}

async function fetchAll() {
  const gen = charts.gen;
  const key = charts.range;
  const range = RANGES[key];
  const views = allViews();
  if (!views.length) return;
  charts.busy = true;
  const since = new Date(Date.now() - range.ms).toISOString();
  const q = new URLSearchParams({ since, step: range.step });
  const site = `/sites/${encodeURIComponent(st.site)}`;
  await Promise.all(views.map(async (v) => {
    const path = v.name === null ? site : `${site}/integrations/${encodeURIComponent(v.name)}`;
    try {
      const [points, holds] = await Promise.all([
        api('GET', `${path}/history?${q}`),
        api('GET', `${path}/holds?${new URLSearchParams({ since })}`),
      ]);
      if (gen === charts.gen) show(v, key, since, points, holds);
    } catch (e) {
      if (gen === charts.gen) showTrouble(v, e);
    }
  }));
  charts.busy = false;
  if (gen === charts.gen) {
    charts.due = Date.now() + range.every;
  } else {
    charts.due = 0;
    if (st.running) renderCharts();
  }
}

function showTrouble(v, e) {
  if (e.status === 401) return;
  v.note.textContent = e.status === 409 ? errorText(e) : `Cannot load the history: ${errorText(e)}`;
  v.note.hidden = false;
  // With no history kept there is nothing to plot; with a passing trouble
  // the last chart stays.
  if (e.status === 409 && v.u) {
    v.u.destroy();
    v.u = null;
    v.box.uplot = null;
  }
}

const seconds = (iso) => Date.parse(iso) / 1000;

function show(v, key, since, points, holds) {
  v.note.hidden = true;
  const data = [
    points.map((p) => seconds(p.at)),
    points.map((p) => p.delivered),
    points.map((p) => p.failed),
    points.map((p) => p.depth),
  ];
  const end = data[0].length ? data[0][data[0].length - 1] + stepSeconds(key) : Date.now() / 1000;
  v.holds = bands(holds, Math.max(end, Date.now() / 1000));
  v.data = data;
  Object.assign(v.box.dataset, { range: key, since, step: RANGES[key].step });
  v.box.holds = holds;
  if (v.range !== key && v.u) {
    v.u.destroy();
    v.u = null;
  }
  v.range = key;
  draw(v);
  listHolds(v);
}

/**
 * The bands of HOLDS (the API's periods, oldest first), an ongoing one up to
 * END. One stop of the site holds each of its integrations alike: on the
 * site's chart, periods alike but for the integration are one band.
 */
function bands(holds, end) {
  const out = new Map();
  for (const hold of holds) {
    const same = JSON.stringify([hold.kind, hold.by, hold.reason, hold.since, hold.until]);
    const band = out.get(same);
    if (band) {
      if (hold.integration) band.integrations.push(hold.integration);
      continue;
    }
    out.set(same, {
      ...hold,
      integrations: hold.integration ? [hold.integration] : [],
      from: seconds(hold.since),
      to: hold.until ? seconds(hold.until) : end,
    });
  }
  return [...out.values()].sort((a, b) => a.from - b.from);
}

const stepSeconds = (key) => (RANGES[key].step === '1h' ? 3600 : 60);

/** Draws (or redraws) V's chart at its element's width, once it has one. */
function draw(v) {
  if (!v.data) return;
  const width = Math.floor(v.plot.clientWidth);
  if (width < 50) return;
  const height = v.name === null ? 220 : 150;
  if (!v.u) {
    v.u = new window.uPlot(options(v, width, height), v.data, v.plot);
    v.u.ctx.canvas.setAttribute('role', 'img');
    v.box.uplot = v.u;
  } else if (v.u.width !== width || v.u.height !== height) {
    v.u.setSize({ width, height });
    v.u.setData(v.data);
  } else {
    v.u.setData(v.data);
  }
  v.u.ctx.canvas.setAttribute('aria-label', summary(v));
}

const total = (list) => list.reduce((a, n) => a + (n || 0), 0);

function lastDepth(data) {
  for (let k = data[3].length - 1; k >= 0; k -= 1) if (data[3][k] !== null) return data[3][k];
  return null;
}

/** What the chart shows, in words (the canvas's accessible name). */
function summary(v) {
  const range = RANGES[v.range];
  const d = v.data;
  const depth = lastDepth(d);
  const who = v.name === null ? `All integrations of ${st.site}` : v.name;
  let text = `${who}, ${range.title}: ${fmtNum(total(d[1]))} delivered, ${fmtNum(total(d[2]))} failed`
    + `; ${depth === null ? 'no queue recorded' : `${fmtNum(depth)} in the queue now`}`;
  if (v.holds.length) text += `; held ${v.holds.length} time${v.holds.length === 1 ? '' : 's'} (listed below)`;
  return text;
}

// Whole numbers on the count axes, and compact ones (1.2k) where room is short.
const INTS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7].map((e) => m * e)).sort((a, b) => a - b);
const compact = (n) => (n >= 10_000 ? `${+(n / 1000).toFixed(n >= 100_000 ? 0 : 1)}k` : String(n));
const upTo = (u, min, max) => [0, Math.max(1, Math.ceil((max || 0) * 1.1))];

const pad = (n) => String(n).padStart(2, '0');
const hhmm = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}`;
const day = (d) => `${pad(d.getDate())}-${d.toLocaleString('en', { month: 'short' })}`;

/** Time ticks: 14:05, or the date at midnight and when ticks are days apart. */
function timeTicks(u, splits, axis, space, incr) {
  return splits.map((s) => {
    const d = new Date(s * 1000);
    return incr >= 86_400 || (d.getHours() === 0 && d.getMinutes() === 0) ? day(d) : hhmm(d);
  });
}

/** The legend's values: under the cursor its step; elsewhere the period's totals and the depth now. */
function legendValue(v, kind) {
  return (u, val, sidx, idx) => {
    if (idx === null || idx === undefined) {
      if (kind === 'time') return `${RANGES[v.range].title}, in all`;
      if (kind === 'depth') {
        const depth = lastDepth(u.data);
        return depth === null ? '—' : `${fmtNum(depth)} now`;
      }
      return fmtNum(total(u.data[sidx]));
    }
    if (kind === 'time') {
      const d = new Date(val * 1000);
      const to = new Date((val + stepSeconds(v.range)) * 1000);
      return `${day(d)} ${hhmm(d)}–${hhmm(to)}`;
    }
    return val === null || val === undefined ? '—' : fmtNum(val);
  };
}

function options(v, width, height) {
  const range = RANGES[v.range];
  const axis = { stroke: '#5f6b7a', grid: { stroke: '#e2e7ee', width: 1 }, ticks: { stroke: '#e2e7ee', width: 1 }, font: '11px system-ui, sans-serif', labelFont: '600 11px system-ui, sans-serif' };
  return {
    width,
    height,
    cursor: { y: false, drag: { x: false, y: false, setScale: false }, points: { size: 7 } },
    legend: { live: true },
    scales: {
      // Up to the end of the current step: a hold begun in it shows.
      x: { time: true, range: (u, min, max) => [min, max + stepSeconds(v.range)] },
      n: { range: upTo },
      depth: { range: upTo },
    },
    axes: [
      { ...axis, label: 'time (local)', labelSize: 16, size: 34, values: timeTicks },
      { ...axis, scale: 'n', label: range.per, labelSize: 18, incrs: INTS, size: 44, values: (u, splits) => splits.map(compact) },
      { ...axis, scale: 'depth', side: 1, label: 'queue depth', labelSize: 18, incrs: INTS, size: 44, grid: { show: false }, values: (u, splits) => splits.map(compact) },
    ],
    series: [
      { label: 'time', value: legendValue(v, 'time') },
      {
        label: 'delivered', scale: 'n', stroke: COLOUR.delivered, width: 2,
        fill: 'rgba(0, 114, 178, .07)', points: { show: false }, value: legendValue(v, 'count'),
      },
      {
        label: 'failed', scale: 'n', stroke: COLOUR.failed, width: 2, dash: [6, 4],
        points: { show: false, size: 6, fill: COLOUR.failed, filter: failures }, value: legendValue(v, 'count'),
      },
      {
        label: 'queue depth', scale: 'depth', stroke: COLOUR.depth, width: 1.5,
        fill: 'rgba(95, 107, 122, .14)', paths: window.uPlot.paths.stepped({ align: 1 }),
        points: { show: false }, value: legendValue(v, 'depth'),
      },
    ],
    hooks: {
      drawClear: [(u) => drawHolds(u, v)],
      setCursor: [(u) => hoverHold(u, v)],
    },
  };
}

/** A dot at each step that had failures: one is seen even in a long period. */
function failures(u, sidx) {
  const out = [];
  u.data[sidx].forEach((n, k) => { if (n > 0) out.push(k); });
  return out;
}

/** The narrowest band, in CSS pixels: a hold of seconds still shows. */
const MIN_BAND = 3;

const isPerson = (kind) => kind === 'operator';

let hatch = null;
function hatchPattern(ctx) {
  if (!hatch) {
    const tile = document.createElement('canvas');
    tile.width = 8;
    tile.height = 8;
    const t = tile.getContext('2d');
    t.fillStyle = 'rgba(204, 121, 167, .12)';
    t.fillRect(0, 0, 8, 8);
    t.strokeStyle = 'rgba(204, 121, 167, .55)';
    t.lineWidth = 1.5;
    t.beginPath();
    t.moveTo(-2, 10);
    t.lineTo(10, -2);
    t.moveTo(-2, 2);
    t.lineTo(2, -2);
    t.moveTo(6, 10);
    t.lineTo(10, 6);
    t.stroke();
    hatch = tile;
  }
  return ctx.createPattern(hatch, 'repeat');
}

/** The bands, under the series: each hold's period, clipped to the plot. */
function drawHolds(u, v) {
  if (!v.holds.length || !u.data[0].length) return;
  const { ctx, bbox } = u;
  const ratio = window.uPlot.pxRatio || 1;
  const left = bbox.left;
  const right = bbox.left + bbox.width;
  ctx.save();
  for (const hold of v.holds) {
    const x0 = Math.max(left, u.valToPos(hold.from, 'x', true));
    const x1 = Math.min(right, u.valToPos(hold.to, 'x', true));
    if (x1 < left || x0 > right) continue;
    const w = Math.max(x1 - x0, MIN_BAND * ratio);
    ctx.fillStyle = isPerson(hold.kind) ? 'rgba(230, 159, 0, .16)' : hatchPattern(ctx);
    ctx.fillRect(x0, bbox.top, w, bbox.height);
    ctx.fillStyle = isPerson(hold.kind) ? COLOUR.person : COLOUR.system;
    ctx.fillRect(x0, bbox.top, w, 3 * ratio);
  }
  ctx.restore();
}

function holdWords(hold, site) {
  const what = HOLD_LABEL[hold.kind] || hold.kind;
  // A stop of the site holds them all: no need to name each.
  const who = site && hold.kind !== 'site-stopped' && hold.integrations.length ? `${hold.integrations.join(', ')} ` : '';
  const reason = hold.reason ? `: ${hold.reason}` : '';
  return `${who}${what} by ${hold.by}${reason}`;
}

function holdPeriod(hold) {
  const length = hold.until ? fmtDuration(hold.to - hold.from) : null;
  return hold.until ? `${fmtTime(hold.since)} → ${fmtTime(hold.until)} (${length})` : `since ${fmtTime(hold.since)}, still held`;
}

/**
 * Under the cursor, the holds whose bands it is on (as drawn: at least
 * MIN_BAND wide, a pixel to spare): who held it, why, when.
 */
function hoverHold(u, v) {
  let text = '';
  const left = u.cursor.left;
  if (left !== null && left !== undefined && left >= 0 && v.holds.length) {
    text = v.holds.filter((hd) => {
      const x0 = u.valToPos(hd.from, 'x');
      const x1 = Math.max(u.valToPos(hd.to, 'x'), x0 + MIN_BAND);
      return x0 - 1 <= left && left <= x1 + 1;
    }).map((hd) => `Held here — ${holdWords(hd, v.name === null)} (${holdPeriod(hd)})`).join(' · ');
  }
  if (v.hover.textContent !== text) v.hover.textContent = text;
  v.hover.hidden = !text;
}

const LISTED = 4;

/** The periods held, newest first, in words: who, why, from when to when. */
function listHolds(v) {
  const list = [...v.holds].reverse();
  const shown = list.slice(0, LISTED);
  replace(v.list, shown.map((hold) => h('li', { class: isPerson(hold.kind) ? 'person' : 'system', dataset: { kind: hold.kind } },
    h('span', { class: 'hold-swatch', 'aria-hidden': 'true' }),
    h('strong', null, holdWords(hold, v.name === null)),
    h('span', { class: 'muted' }, ` — ${holdPeriod(hold)}`))),
  list.length > LISTED ? h('li', { class: 'muted' }, `and ${list.length - LISTED} earlier`) : null);
  v.list.hidden = !list.length;
}
