/*
 * The entries of an archive's table of contents a few tables need, for a table restore: rather than
 * every definition of the backup (on a database of thousands of tables, most of the time), the
 * schemas, extensions, types, domains and collations, the tables themselves, the sequences their
 * columns' defaults name, and their rows. The table of contents does not say what depends on what: a
 * definition this leaves out (a function a check calls, a type built on functions) makes the restore
 * fail, and the caller then restores every definition instead.
 */

export interface TableName {
  schema: string;
  table: string;
  /** A partition restored with its partitioned table (also wanted): attached to it, as in the backup. */
  attached?: boolean;
}

/** Entry types kept whole: what a table's columns may be made of, none of which is another table. */
const BUILDING_BLOCKS = ['SCHEMA', 'EXTENSION', 'SHELL TYPE', 'TYPE', 'DOMAIN', 'COLLATION', 'PROCEDURAL LANGUAGE'];
/** Entry types named by schema and name, longest first (a type's name may have spaces). */
const NAMED = ['TABLE ATTACH', 'TABLE DATA', 'TABLE', 'SEQUENCE', ...BUILDING_BLOCKS];

interface TocEntry {
  line: string;
  type: string;
  /** `schema.name`, unquoted, for the types in NAMED. */
  name?: string;
}

/** `215; 1259 25275 TABLE public customer postgres`: an entry's type and `schema.name` (the owner last). */
function parseEntry(line: string): TocEntry {
  const rest = /^\d+; \d+ \d+ (.*)$/.exec(line)?.[1] ?? '';
  const type = NAMED.find((candidate) => rest.startsWith(`${candidate} `));
  if (!type) return { line, type: '' };
  const words = rest.slice(type.length + 1).split(' ');
  // schema, name (which may hold spaces), owner
  return { line, type, name: `${words[0]}.${words.slice(1, -1).join(' ')}` };
}

/** The lines of the wanted tables' definitions: what to read their SQL from (sequenceNamesIn). */
export function tableDefinitionLines(toc: string[], tables: TableName[]): string[] {
  const wanted = new Set(tables.map((table) => `${table.schema}.${table.table}`));
  return toc
    .map(parseEntry)
    .flatMap((entry) => (entry.type === 'TABLE' && wanted.has(entry.name!) ? [entry.line] : []));
}

/** The sequences the SQL's column defaults draw from, as `schema.name` (pg_dump qualifies them). */
export function sequenceNamesIn(sql: string): Set<string> {
  return new Set([...sql.matchAll(/nextval\('([^']+)'::regclass\)/g)].map((match) => match[1]!.replace(/"/g, '')));
}

/**
 * The entries to restore for `tables`: building blocks, the tables, the sequences named, the tables'
 * rows unless `rows` is false, and the attachment of each partition restored with its partitioned table.
 */
export function tableRestoreLines(toc: string[], tables: TableName[], sequences: Set<string>, rows = true): string[] {
  const wanted = new Set(tables.map((table) => `${table.schema}.${table.table}`));
  const attached = new Set(tables.filter((table) => table.attached).map((table) => `${table.schema}.${table.table}`));
  return toc
    .map(parseEntry)
    .filter(
      (entry) =>
        BUILDING_BLOCKS.includes(entry.type) ||
        ((entry.type === 'TABLE' || (rows && entry.type === 'TABLE DATA')) && wanted.has(entry.name!)) ||
        (entry.type === 'TABLE ATTACH' && attached.has(entry.name!)) ||
        (entry.type === 'SEQUENCE' && sequences.has(entry.name!)),
    )
    .map((entry) => entry.line);
}

/** The entries of the wanted tables' rows (a partitioned table has none of its own: its partitions do). */
export function tableDataLines(toc: string[], tables: TableName[]): string[] {
  const wanted = new Set(tables.map((table) => `${table.schema}.${table.table}`));
  return toc
    .map(parseEntry)
    .flatMap((entry) => (entry.type === 'TABLE DATA' && wanted.has(entry.name!) ? [entry.line] : []));
}
