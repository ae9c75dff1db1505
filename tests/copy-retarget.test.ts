import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { CopyRetarget } from '../src/backups/copy-retarget.js';

// The shape of `pg_restore --data-only --file=-`: settings, comments, each table's COPY and rows.
const script = [
  '\\restrict abc',
  "SET client_encoding = 'UTF8';",
  '--',
  '-- Data for Name: orders; Type: TABLE DATA; Schema: public; Owner: app',
  '--',
  '',
  'COPY public.orders (id, note) FROM stdin;',
  '1\tCOPY public.orders (id) FROM stdin;',
  '2\t\\\\.',
  '\\.x\tnot the end',
  '3\t\\N',
  '\\.',
  '',
  'COPY "Sales"."Order Lines" (id, "Qty") FROM stdin;',
  '\\.',
  '',
  'COPY public.empty_ones FROM stdin;',
  '7',
  '\\.',
  '',
  '\\unrestrict abc',
  '',
].join('\n');

const targets = new Map([
  ['public.orders', 'public.orders_back'],
  ['"Sales"."Order Lines"', '"Sales"."Order Lines_back"'],
  ['public.empty_ones', 'public.empty_ones_back'],
]);

const expected = script
  .replace('COPY public.orders (id, note)', 'COPY public.orders_back (id, note)')
  .replace('COPY "Sales"."Order Lines" (id', 'COPY "Sales"."Order Lines_back" (id')
  .replace('COPY public.empty_ones FROM', 'COPY public.empty_ones_back FROM');

async function through(chunks: Buffer[], map = targets): Promise<{ out: string; loaded: string[] }> {
  const retarget = new CopyRetarget(map);
  const out = await text(Readable.from(chunks).pipe(retarget));
  return { out, loaded: retarget.loaded };
}

describe('CopyRetarget', () => {
  it('points each COPY at its table and passes everything else as it is, however the script is cut', async () => {
    const bytes = Buffer.from(script);
    expect(expected).not.toEqual(script);
    for (let cut = 0; cut <= bytes.length; cut += 1) {
      const result = await through([bytes.subarray(0, cut), bytes.subarray(cut)]);
      expect(result.out, `cut at ${cut}`).toEqual(expected);
      expect(result.loaded).toEqual([...targets.values()]);
    }
    const byByte = await through([...bytes].map((byte) => Buffer.from([byte])));
    expect(byByte.out).toEqual(expected);
  });

  it('refuses a COPY of a table not asked for, and a script that ends inside the rows', async () => {
    await expect(through([Buffer.from(script)], new Map([['public.orders', 'public.x']]))).rejects.toThrow(
      'the archive script loads a table not asked for: COPY "Sales"."Order Lines"',
    );
    await expect(through([Buffer.from('COPY public.orders (id) FROM stdin;\n1\n')])).rejects.toThrow(
      "the archive script ended inside a table's rows",
    );
  });
});
