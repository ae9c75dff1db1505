export { age, humanDuration, humanSize, inZone } from '../../units.js';

/*
 * The console's HTML: escaped by construction (every interpolated value goes through `escape` unless it
 * is Html made here), one layout, and the units people read. No JavaScript framework, nothing from a CDN.
 */

export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

export function escape(value: unknown): string {
  return String(value ?? '').replace(
    /[&<>"']/g,
    (char) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[char]!,
  );
}

/** A template tag: values are escaped, arrays joined, Html kept as it is. */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let text = strings[0]!;
  values.forEach((value, index) => {
    const parts = Array.isArray(value) ? value : [value];
    text += parts
      .map((part) =>
        part instanceof Html ? part.text : part === undefined || part === null || part === false ? '' : escape(part),
      )
      .join('');
    text += strings[index + 1]!;
  });
  return new Html(text);
}

/** A table with its header row, scrolling sideways inside its box on a narrow screen. */
export function table(headers: string[], rows: Html[]): Html {
  return html`<div class="scroll">
    <table>
      <thead>
        <tr>
          ${headers.map((header) => html`<th>${header}</th>`)}
        </tr>
      </thead>
      <tbody>
        ${rows}
      </tbody>
    </table>
  </div>`;
}

const STYLE = `
:root { color-scheme: light dark; --accent: #2563eb; --bad: #dc2626; --good: #16a34a; --muted: #6b7280; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; }
header { display: flex; flex-wrap: wrap; gap: .2rem 1rem; align-items: baseline; padding: .7rem 1rem; border-bottom: 1px solid #8884; }
header strong { font-size: 1.1rem; margin-right: .5rem; }
header a { text-decoration: none; color: var(--accent); }
header a[aria-current] { font-weight: 600; text-decoration: underline; }
main { padding: 1rem; max-width: 1200px; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1.5rem; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #8883; vertical-align: top; }
th { font-size: .8rem; text-transform: uppercase; color: var(--muted); }
.scroll { overflow-x: auto; }
td.nowrap { white-space: nowrap; } td.wrap { overflow-wrap: anywhere; min-width: 14rem; }
.ok { color: var(--good); } .bad { color: var(--bad); } .muted { color: var(--muted); }
.notice { padding: .6rem .8rem; border-left: 4px solid var(--accent); background: #8881; margin: .5rem 0 1rem; }
.notice.bad { border-color: var(--bad); }
progress { width: 8rem; }
form.inline { display: inline-flex; gap: .3rem; flex-wrap: wrap; margin: 0 .3rem .3rem 0; }
button { font: inherit; padding: .2rem .6rem; cursor: pointer; }
input, select { font: inherit; padding: .15rem .3rem; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 420px), 1fr)); gap: 0 1.5rem; }
figure { margin: 0 0 1rem; } figcaption { font-size: .85rem; color: var(--muted); }
svg.chart { display: block; max-width: 100%; height: auto; }
pre { white-space: pre-wrap; word-break: break-word; background: #8881; padding: .6rem; }
@media (max-width: 700px) { td, th { padding: .3rem; font-size: .9rem; } main { padding: .5rem; } }
`;

const SECTIONS = [
  ['/', 'Environments'],
  ['/backups', 'Backups'],
  ['/recovery', 'Recovery'],
  ['/schedules', 'Schedules'],
  ['/jobs', 'Jobs'],
  ['/history', 'History'],
  ['/charts', 'Charts'],
] as const;

export function page(
  title: string,
  current: string,
  body: Html,
  options: { refreshSeconds?: number; readOnly?: boolean } = {},
): string {
  const nav = SECTIONS.map(([href, label]) =>
    href === current ? html`<a href="${href}" aria-current="page">${label}</a>` : html`<a href="${href}">${label}</a>`,
  );
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        ${options.refreshSeconds ? new Html(`<meta http-equiv="refresh" content="${options.refreshSeconds}">`) : ''}
        <title>${title} · dbops</title>
        <style>
          ${new Html(STYLE)}
        </style>
      </head>
      <body>
        <header><strong>dbops</strong>${nav}<a href="/admin/queues">Bull Board</a></header>
        <main>
          <h1>${title}</h1>
          ${options.readOnly ? html`<p class="notice">Read-only: set DASHBOARD_USER and DASHBOARD_PASSWORD to act from here.</p>` : ''}${body}
        </main>
      </body>
    </html>`.text;
}
