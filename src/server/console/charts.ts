import { type Html, html } from './html.js';

/*
 * Charts as SVG made on the server: no script, no CDN. Each scales to the width it is given (a viewBox,
 * width 100%); every axis says its unit through the same formatters as the tables; each point, bar and
 * mark carries a <title> that a browser shows on hover and a screen reader reads.
 */

const WIDTH = 800;
/** A chart that shares a row with another on a wide screen. */
const HALF_WIDTH = 520;
const PAD = { left: 78, right: 16, top: 14, bottom: 34 };
const COLORS = { line: '#2563eb', good: '#16a34a', bad: '#dc2626', muted: '#9ca3af', grid: '#8884' };

const n = (value: number) => Math.round(value * 10) / 10;

/** Up to `count` round tick values from 0 to at least max (whole numbers for counts). */
function ticks(max: number, count = 4, whole = false): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = whole ? Math.max(1, max / count) : max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const steps = whole ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10];
  const step = steps.map((k) => k * magnitude).find((candidate) => candidate >= raw)!;
  return Array.from({ length: Math.ceil(max / step) + 1 }, (_, i) => i * step);
}

const shortDate = (ms: number) => new Date(ms).toISOString().slice(5, 10);
const dayTime = (ms: number) => new Date(ms).toISOString().slice(5, 16).replace('T', ' ');

function frame(height: number, label: string, body: Html[], width = WIDTH): Html {
  return html`<figure>
    <figcaption>${label}</figcaption>
    <svg
      class="chart"
      role="img"
      aria-label="${label}"
      viewBox="0 0 ${width} ${height}"
      width="100%"
      preserveAspectRatio="xMinYMin meet"
      font-family="system-ui, sans-serif"
      font-size="12"
    >
      <title>${label}</title>
      ${body}
    </svg>
  </figure>`;
}

interface Axes {
  x(ms: number): number;
  y(value: number): number;
  marks: Html[];
}

/** Time along x (from..to), a value up y with its unit's formatter: the grid and the labels. */
function axes(
  height: number,
  from: number,
  to: number,
  yTicks: number[],
  format: (value: number) => string,
  width = WIDTH,
): Axes {
  const span = Math.max(to - from, 1);
  const top = yTicks.at(-1)!;
  const plotW = width - PAD.left - PAD.right;
  const plotH = height - PAD.top - PAD.bottom;
  const x = (ms: number) => n(PAD.left + ((ms - from) / span) * plotW);
  const y = (value: number) => n(PAD.top + plotH - (value / top) * plotH);
  const marks: Html[] = yTicks.map(
    (tick) =>
      html`<line x1="${PAD.left}" x2="${width - PAD.right}" y1="${y(tick)}" y2="${y(tick)}" stroke="${COLORS.grid}" />
        <text x="${PAD.left - 6}" y="${y(tick) + 4}" text-anchor="end" fill="currentColor">${format(tick)}</text>`,
  );
  const days = Math.max(1, Math.round(span / 86_400_000));
  const xCount = Math.min(6, days + 1);
  for (let i = 0; i < xCount; i += 1) {
    const at = from + (span * i) / Math.max(xCount - 1, 1);
    const anchor = i === 0 ? 'start' : i === xCount - 1 ? 'end' : 'middle';
    marks.push(
      html`<text x="${x(at)}" y="${height - 12}" text-anchor="${anchor}" fill="currentColor"
        >${days > 2 ? shortDate(at) : dayTime(at)}</text
      >`,
    );
  }
  return { x, y, marks };
}

export interface TimePoint {
  at: number;
  value: number | null;
  failed: boolean;
  label: string;
}

/** A value over time (a backup's size, its duration), failures marked on the time axis in red. */
export function timeSeriesChart(label: string, points: TimePoint[], format: (value: number) => string): Html {
  const height = 200;
  if (points.length === 0) return html`<p class="muted">${label}: nothing yet.</p>`;
  const times = points.map((point) => point.at);
  // The points' own span, at least an hour, with a margin each side so that none sits on the frame.
  const span = Math.max(Math.max(...times) - Math.min(...times), 3_600_000);
  const middle = (Math.max(...times) + Math.min(...times)) / 2;
  const from = middle - span * 0.55;
  const to = middle + span * 0.55;
  const values = points.filter((point) => point.value !== null).map((point) => point.value!);
  const frameAxes = axes(height, from, to, ticks(Math.max(...values, 0)), format, HALF_WIDTH);
  const { x, y } = frameAxes;
  const good = points.filter((point) => !point.failed && point.value !== null);
  const path = good.map((point, i) => `${i === 0 ? 'M' : 'L'}${x(point.at)},${y(point.value!)}`).join(' ');
  const baseline = y(0);
  return frame(
    height,
    label,
    [
      ...frameAxes.marks,
      html`<path d="${path}" fill="none" stroke="${COLORS.line}" stroke-width="2" />`,
      ...good.map(
        (point) =>
          html`<circle cx="${x(point.at)}" cy="${y(point.value!)}" r="3.5" fill="${COLORS.line}"
            ><title>${point.label}</title></circle
          >`,
      ),
      ...points
        .filter((point) => point.failed)
        .map(
          (point) =>
            html`<g class="failure"
              ><path
                d="M${x(point.at) - 5},${baseline - 5} l10,10 m0,-10 l-10,10"
                stroke="${COLORS.bad}"
                stroke-width="2.5"
              /><title>${point.label}</title></g
            >`,
        ),
    ],
    HALF_WIDTH,
  );
}

export interface DayCounts {
  day: number;
  completed: number;
  failed: number;
  cancelled: number;
}

/** Jobs per day, stacked by outcome, with a legend. */
export function jobsPerDayChart(label: string, days: DayCounts[]): Html {
  const height = 220;
  if (days.length === 0) return html`<p class="muted">${label}: nothing yet.</p>`;
  const from = days[0]!.day;
  const to = days.at(-1)!.day + 86_400_000;
  const top = Math.max(...days.map((day) => day.completed + day.failed + day.cancelled), 1);
  const frameAxes = axes(height, from, to, ticks(top, 4, true), (value) => `${value} jobs`);
  const { x, y } = frameAxes;
  const barW = Math.max(2, n(((WIDTH - PAD.left - PAD.right) / days.length) * 0.7));
  const bars: Html[] = [];
  for (const day of days) {
    let base = 0;
    for (const [outcome, color] of [
      ['completed', COLORS.good],
      ['failed', COLORS.bad],
      ['cancelled', COLORS.muted],
    ] as const) {
      const count = day[outcome];
      if (count === 0) continue;
      bars.push(
        html`<rect
          x="${x(day.day) + 1}"
          y="${y(base + count)}"
          width="${barW}"
          height="${n(y(base) - y(base + count))}"
          fill="${color}"
          ><title>${shortDate(day.day)}: ${count} ${outcome}</title></rect
        >`,
      );
      base += count;
    }
  }
  const legend = (['completed', 'failed', 'cancelled'] as const).map(
    (outcome, i) =>
      html`<rect
          x="${PAD.left + i * 110}"
          y="2"
          width="10"
          height="10"
          fill="${outcome === 'completed' ? COLORS.good : outcome === 'failed' ? COLORS.bad : COLORS.muted}"
        /><text x="${PAD.left + i * 110 + 14}" y="11" fill="currentColor">${outcome}</text>`,
  );
  return frame(height, label, [...frameAxes.marks, ...bars, ...legend]);
}

export interface TimelineRow {
  name: string;
  runs: number[];
}

/** When each schedule runs next, over a window from now: one row per schedule, a tick per run. */
export function timelineChart(label: string, rows: TimelineRow[], from: number, to: number): Html {
  if (rows.length === 0) return html`<p class="muted">${label}: no schedules.</p>`;
  const rowH = 26;
  const height = PAD.top + rows.length * rowH + PAD.bottom;
  const frameAxes = axes(height, from, to, [0], () => '');
  const { x } = frameAxes;
  const body: Html[] = [...frameAxes.marks.slice(1)];
  rows.forEach((row, i) => {
    const mid = PAD.top + i * rowH + rowH / 2;
    body.push(
      html`<text x="${PAD.left - 6}" y="${mid + 4}" text-anchor="end" fill="currentColor"
          >${row.name.length > 10 ? `${row.name.slice(0, 9)}…` : row.name}<title>${row.name}</title></text
        >
        <line x1="${PAD.left}" x2="${WIDTH - PAD.right}" y1="${mid}" y2="${mid}" stroke="${COLORS.grid}" />`,
    );
    for (const run of row.runs)
      body.push(
        html`<rect x="${x(run) - 1.5}" y="${mid - 8}" width="3" height="16" fill="${COLORS.line}"
          ><title>${row.name}: ${dayTime(run)} UTC</title></rect
        >`,
      );
  });
  return frame(height, label, body);
}
