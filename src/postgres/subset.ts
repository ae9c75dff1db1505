import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { copyColumnList, tableRefOf } from './catalog.js';
import { TEXT_FORMAT_SETTINGS, quoteIdent } from './client.js';

/*
 * A subset of a copy, chosen on the source in the copy's snapshot and moved alone: the rows the rules
 * choose in the named tables, optionally every row that references them (transitively, `withChildren`),
 * plus every row these reference, transitively along foreign keys (what `rest: all` keeps of the
 * other tables counts as chosen too), so that every foreign key holds. The chosen rows are listed
 * (partition, ctid) in temporary tables of the source session, round by round, each round following
 * the keys from the rows the last one added only; then each table's chosen rows are copied (`COPY
 * (SELECT … WHERE ctid = ANY …)`, a TID scan) into the target, named column by column. A table no
 * key links to another's chosen rows is not listed: its rule is read as it is copied. The time
 * goes with the rows chosen, not with the source's size. The target's foreign keys are added after
 * (postgres/parallel-copy.ts copyAroundSchema), each validated.
 */

export interface SubsetRule {
  /** `schema.table`, unquoted. */
  table: string;
  /** An SQL condition on the table's rows. */
  where?: string;
  /** Or a share of its rows, in percent: a repeatable sample, or the first in `orderBy`. */
  percent?: number;
  /** With `percent`: an SQL ORDER BY list; the first `percent` % of the rows in that order. */
  orderBy?: string;
}

export interface SubsetOptions {
  /** A table no rule names and no chosen row reaches: copied whole (`all`) or empty (`empty`). */
  rest: 'all' | 'empty';
  /** Also every row that references a chosen row, transitively (before following references up). */
  withChildren: boolean;
  onStep?: (step: string) => void;
}

export interface SubsetTable {
  table: string;
  rows: number;
}

interface ForeignKey {
  name: string;
  /** The relation the key is on: a table, or a partition (a key can be declared on one partition alone). */
  child: string;
  /** The subset's table it belongs to: itself, or its partitioned table. */
  childTable: string;
  parent: string;
  parentTable: string;
  childColumns: string[];
  parentColumns: string[];
}

/**
 * One table of the subset: kept whole; the rows listed in its temporary table; or the rows of its one
 * rule, read as it is copied, when no foreign key leads to or from its chosen rows (nothing is followed
 * from them, nothing added to them: a list would only cost its writing).
 */
interface Chosen {
  table: string;
  /** Its rows (a partitioned table's through it; another table's own, ONLY), as SQL. */
  rows: string;
  /** Its rows live in partitions: a row address (ctid) names a row only with its partition (tableoid). */
  partitioned: boolean;
  keep: { whole: true } | { whole: false; list: string } | { whole: false; rule: SubsetRule };
}

const quoted = (table: string) => tableRefOf(table).sql;

/** Tables (a partitioned table once, not its partitions) and the foreign keys between them. */
interface Graph {
  tables: string[];
  partitioned: Set<string>;
  keys: ForeignKey[];
}

async function readGraph(client: pg.ClientBase): Promise<Graph> {
  const { rows: tables } = await client.query<{ name: string; partitioned: boolean }>(
    `SELECT n.nspname || '.' || c.relname AS name, c.relkind = 'p' AS partitioned FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence <> 't'
        AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
      ORDER BY 1`,
  );
  // Keys declared on a partitioned table are cloned onto each partition (conparentid set): the parent's is
  // the one. A key declared on a partition itself stands for that partition's rows only.
  const { rows: keys } = await client.query<ForeignKey>(
    `SELECT con.conname AS name,
            cn.nspname || '.' || cc.relname AS child, pn.nspname || '.' || pc.relname AS parent,
            (SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = coalesce(pg_partition_root(cc.oid), cc.oid)) AS "childTable",
            (SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = coalesce(pg_partition_root(pc.oid), pc.oid)) AS "parentTable",
            ARRAY(SELECT attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                    JOIN pg_attribute ON attrelid = con.conrelid AND attnum = k.n ORDER BY k.i)::text[] AS "childColumns",
            ARRAY(SELECT attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                    JOIN pg_attribute ON attrelid = con.confrelid AND attnum = k.n ORDER BY k.i)::text[] AS "parentColumns"
       FROM pg_constraint con
       JOIN pg_class cc ON cc.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
       JOIN pg_class pc ON pc.oid = con.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
      WHERE con.contype = 'f' AND con.conparentid = 0
      ORDER BY 2, 1`,
  );
  return {
    tables: tables.map((row) => row.name),
    partitioned: new Set(tables.filter((row) => row.partitioned).map((row) => row.name)),
    keys,
  };
}

/**
 * A condition on `alias`'s rows: listed in `list` (those of its entries where `condition` holds). A
 * TID scan finds them; the partition is checked only where rows live in several (`partitioned`).
 */
function listedRows(list: string, partitioned: boolean, alias: string, condition: string): string {
  const byAddress = `${alias}.ctid = ANY (ARRAY(SELECT id FROM ${list} WHERE ${condition}))`;
  return partitioned
    ? `${byAddress} AND (${alias}.tableoid, ${alias}.ctid) IN (SELECT part, id FROM ${list} WHERE ${condition})`
    : byAddress;
}

/** The rows `table`'s rules read: a partitioned table's through it, another table's own (ONLY). */
const tableRows = (table: string, partitioned: Set<string>) =>
  `${partitioned.has(table) ? '' : 'ONLY '}${quoted(table)}`;

/**
 * What the subset needs to know of the source before it chooses: its tables and keys, and how many rows
 * each percentage in an order takes. Read by the session that then chooses (planSubset sets it up to
 * read every row), early enough to run while the schema is restored: the count is a scan of the whole
 * table, the rows moved are not.
 */
export interface SubsetPlan {
  rules: SubsetRule[];
  graph: Graph;
  /** The rows a `percent` + `orderBy` rule takes. */
  limits: Map<SubsetRule, number>;
}

export async function planSubset(snapshotSession: pg.ClientBase, rules: SubsetRule[]): Promise<SubsetPlan> {
  const graph = await readGraph(snapshotSession);
  const missing = rules.filter((rule) => !graph.tables.includes(rule.table)).map((rule) => rule.table);
  if (missing.length)
    throw new Error(`--subset names ${[...new Set(missing)].join(', ')}, which the copy does not have`);
  // As the choosing session reads: every row, or an error where a policy would hide some.
  await snapshotSession.query('SET row_security = off');
  const limits = new Map<SubsetRule, number>();
  for (const rule of rules) {
    if (rule.percent === undefined || rule.orderBy === undefined) continue;
    const { rows } = await snapshotSession.query<{ n: string }>(
      `SELECT ceil(count(*) * ${rule.percent} / 100.0)::bigint AS n FROM ${tableRows(rule.table, graph.partitioned)}`,
    );
    limits.set(rule, Number(rows[0]!.n));
  }
  return { rules, graph, limits };
}

/** The rows a rule chooses, as `SELECT <columns> …` (by default their addresses). */
function ruleRows(plan: SubsetPlan, rule: SubsetRule, rows: string, columns = 'tableoid, ctid'): string {
  if (rule.percent === undefined) return `SELECT ${columns} FROM ${rows} WHERE (${rule.where})`;
  if (rule.orderBy === undefined)
    // Repeatable: the same rows of the same data, every time.
    return `SELECT ${columns} FROM ${rows} TABLESAMPLE BERNOULLI (${rule.percent}) REPEATABLE (0)`;
  return `SELECT ${columns} FROM ${rows} ORDER BY ${rule.orderBy} LIMIT ${plan.limits.get(rule)!}`;
}

/**
 * Chooses the subset's rows in the transaction `session` has open (the one that exported the copy's
 * snapshot, read-write: the lists are temporary tables). Tables kept whole are not listed.
 */
async function choose(session: pg.ClientBase, plan: SubsetPlan, options: SubsetOptions): Promise<Chosen[]> {
  const { rules } = plan;
  const { tables, partitioned, keys } = plan.graph;
  const named = new Set(rules.map((rule) => rule.table));
  const whole = (table: string) => !named.has(table) && options.rest === 'all';
  const chosen = new Map<string, Chosen>();
  for (const [index, table] of tables.entries()) {
    const rows = tableRows(table, partitioned);
    if (whole(table)) {
      chosen.set(table, { table, rows, partitioned: partitioned.has(table), keep: { whole: true } });
      continue;
    }
    const own = rules.filter((rule) => rule.table === table);
    if (
      own.length === 1 &&
      !keys.some((key) => key.parentTable === table) &&
      keys.every((key) => key.childTable !== table || whole(key.parentTable))
    ) {
      chosen.set(table, { table, rows, partitioned: partitioned.has(table), keep: { whole: false, rule: own[0]! } });
      continue;
    }
    const list = `pg_temp.dbops_keep_${index}`;
    await session.query(`CREATE TEMP TABLE dbops_keep_${index} (part oid, id tid, round int)`);
    chosen.set(table, { table, rows, partitioned: partitioned.has(table), keep: { whole: false, list } });
  }
  // No index on the lists: each is read whole, by hash joins (an index cost more to keep than it saved).
  const listed = new Set<string>();
  const add = async (table: Chosen, select: string, round: number) => {
    if (!('list' in table.keep)) return 0;
    // Each select yields a row once; only rows already listed must be left out.
    const unlisted = listed.has(table.table)
      ? `WHERE NOT EXISTS (SELECT 1 FROM ${table.keep.list} q WHERE q.part = s.tableoid AND q.id = s.ctid)`
      : '';
    const result = await session.query(
      `INSERT INTO ${table.keep.list} (part, id, round) SELECT s.tableoid, s.ctid, ${round} FROM (${select}) s ${unlisted}`,
    );
    listed.add(table.table);
    // Temporary tables are never analysed on their own: the next round's plans need their size.
    if (result.rowCount) await session.query(`ANALYZE ${table.keep.list}`);
    return result.rowCount ?? 0;
  };
  for (const rule of rules) await add(chosen.get(rule.table)!, ruleRows(plan, rule, chosen.get(rule.table)!.rows), 0);

  /**
   * The rows of `relation` (the table, or one of its partitions) added to `table`'s list since round
   * `since` (all its rows when kept whole and `since` is 0), aliased `alias`.
   */
  const relationRows = (table: Chosen, relation: string) =>
    relation === table.table ? table.rows : `ONLY ${quoted(relation)}`;
  const frontier = (table: Chosen, relation: string, since: number, alias: string): string | undefined => {
    if (table.keep.whole) return since === 0 ? `${relationRows(table, relation)} ${alias}` : undefined;
    // A table whose rows are its rule's has no key to a table whose rows are chosen: nothing to follow.
    if (!('list' in table.keep)) return undefined;
    return `${relationRows(table, relation)} ${alias} WHERE ${listedRows(table.keep.list, table.partitioned, alias, `round >= ${since}`)}`;
  };
  const columns = (alias: string, names: string[]) => names.map((name) => `${alias}.${quoteIdent(name)}`).join(', ');
  let round = 1;
  if (options.withChildren) {
    for (let added = 1, since = 0; added > 0; since = round, round += 1) {
      options.onStep?.(`following references down (round ${round})`);
      added = 0;
      for (const key of keys) {
        const parent = chosen.get(key.parentTable)!;
        const child = chosen.get(key.childTable)!;
        // Children of the chosen rows only: a table kept whole for `rest` is not a reason to take its children.
        if (parent.keep.whole || child.keep.whole) continue;
        added += await add(
          child,
          `SELECT c.tableoid, c.ctid FROM ${relationRows(child, key.child)} c
            WHERE (${columns('c', key.childColumns)}) IN (SELECT ${columns('p', key.parentColumns)} FROM ${frontier(parent, key.parent, since, 'p')})`,
          round,
        );
      }
    }
  }
  for (let added = 1, since = 0; added > 0; since = round, round += 1) {
    options.onStep?.(`following references up (round ${round})`);
    added = 0;
    for (const key of keys) {
      const from = frontier(chosen.get(key.childTable)!, key.child, since, 'c');
      if (!from) continue;
      const parent = chosen.get(key.parentTable)!;
      added += await add(
        parent,
        `SELECT p.tableoid, p.ctid FROM ${relationRows(parent, key.parent)} p
          WHERE (${columns('p', key.parentColumns)}) IN (SELECT ${columns('c', key.childColumns)} FROM ${from})`,
        round,
      );
    }
  }
  return [...chosen.values()];
}

/**
 * Chooses the subset on the source (`session`: the transaction that exported the copy's snapshot,
 * read-write for its temporary tables, where planSubset read `plan`) and copies the chosen rows into the
 * target (`target`: the shadow database, its tables made, their keys not yet), table by table. Returns
 * the rows each table received.
 */
export async function copySubset(
  session: pg.ClientBase,
  target: pg.ClientBase,
  plan: SubsetPlan,
  options: SubsetOptions,
): Promise<SubsetTable[]> {
  // COPY in text, read and written by sessions that agree on every setting that shapes it.
  for (const client of [session, target]) await client.query(TEXT_FORMAT_SETTINGS);
  const tables = await choose(session, plan, options);
  const copied: SubsetTable[] = [];
  for (const table of tables) {
    options.onStep?.(`copying ${table.table}`);
    const columns = await copyColumnList(session, tableRefOf(table.table));
    // Unqualified: the FROM list has the table alone (the lists' columns are read in subqueries of their own).
    const names = columns.slice(1, -1);
    let select = `SELECT ${names} FROM ${table.rows} t`;
    if ('list' in table.keep) select += ` WHERE ${listedRows(table.keep.list, table.partitioned, 't', 'true')}`;
    if ('rule' in table.keep) select = ruleRows(plan, table.keep.rule, table.rows, names);
    const source = session.query(copyTo(`COPY (${select}) TO STDOUT`));
    const sink = target.query(copyFrom(`COPY ${quoted(table.table)} ${columns} FROM STDIN`));
    await pipeline(source, sink);
    copied.push({ table: table.table, rows: sink.rowCount });
  }
  return copied;
}
