import { describe, expect, it } from 'vitest';
import { QUALIFIED_NAME, parseQualifiedName, parseSqlName } from '../src/postgres/catalog.js';

/* Table names as SQL writes them (restore --table, --schema): parsed into their names, never into SQL. */

describe('schema.table as SQL writes it', () => {
  it('reads lowercase names as they are and quoted ones unquoted', () => {
    const read = (text: string) => {
      const ref = parseQualifiedName(text);
      return ref && [ref.schema, ref.table];
    };
    expect(read('public.orders')).toEqual(['public', 'orders']);
    expect(read('"Sales"."Order Lines"')).toEqual(['Sales', 'Order Lines']);
    expect(read('"a.b"."c"')).toEqual(['a.b', 'c']);
    expect(read('public."say ""hi"""')).toEqual(['public', 'say "hi"']);
    expect(read('s.t$1')).toEqual(['s', 't$1']);
    expect(parseSqlName('"Sales"')).toBe('Sales');
  });

  it('refuses what is not one, as its pattern does', () => {
    for (const text of [
      'Sales.orders',
      'public.',
      '.orders',
      '"".orders',
      'a.b.c',
      '"open.orders',
      'public."x"y',
      ' a.b',
    ])
      expect([text, parseQualifiedName(text)]).toEqual([text, undefined]);
    for (const text of ['public.orders', '"Sales"."Order Lines"', 'public."say ""hi"""'])
      expect([text, QUALIFIED_NAME.test(text)]).toEqual([text, true]);
    for (const text of ['Sales.orders', 'a.b.c', '"".orders', 'public."x"y'])
      expect([text, QUALIFIED_NAME.test(text)]).toEqual([text, false]);
  });
});
