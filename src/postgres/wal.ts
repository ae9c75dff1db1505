import type pg from 'pg';

/*
 * The statements point-in-time recovery asks a server: who it is (WAL belongs to a server, not to a
 * database), where its WAL stands, and what the archiver's replication slot holds back.
 */

export interface ServerFacts {
  /** pg_control's system identifier: the same for a server and every copy made from its base backup. */
  systemId: string;
  major: number;
  walSegmentBytes: number;
  timeline: number;
}

export async function serverFacts(client: pg.ClientBase): Promise<ServerFacts> {
  const { rows } = await client.query<{ id: string; version: string; segment: string; timeline: number }>(
    `SELECT system_identifier::text AS id, current_setting('server_version_num') AS version,
            current_setting('wal_segment_size') AS segment,
            (SELECT timeline_id FROM pg_control_checkpoint()) AS timeline
       FROM pg_control_system()`,
  );
  const row = rows[0]!;
  return {
    systemId: row.id,
    major: Math.floor(Number(row.version) / 10_000),
    walSegmentBytes: parseSize(row.segment),
    timeline: Number(row.timeline),
  };
}

/** `16MB` → bytes, as SHOW prints sizes. */
function parseSize(text: string): number {
  const match = /^(\d+)\s*(B|kB|MB|GB)?$/.exec(text.trim());
  if (!match) throw new Error(`unexpected wal_segment_size "${text}"`);
  const unit = { B: 1, kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[match[2] ?? 'B'] ?? 1;
  return Number(match[1]) * unit;
}

export interface WalPosition {
  /** pg_current_wal_lsn(): what the server has written. */
  serverLsn: string;
  /** What the archiver's receiver has flushed (pg_stat_replication), if it is connected. */
  flushLsn?: string;
  /** pg_stat_replication's flush_lag, in seconds, if known. */
  flushLagSeconds?: number;
  /** Bytes between the server's position and what the receiver flushed. */
  lagBytes?: number;
  /** The slot's restart_lsn, if the slot exists. */
  slotRestartLsn?: string;
  /** WAL the slot keeps on the server's disk, in bytes. */
  slotRetainedBytes?: number;
  /** max_slot_wal_keep_size in bytes; undefined when unlimited (-1). */
  slotLimitBytes?: number;
}

export async function walPosition(client: pg.ClientBase, slot: string, applicationName: string): Promise<WalPosition> {
  const { rows } = await client.query<{
    server: string;
    flush: string | null;
    lag: number | null;
    lag_bytes: string | null;
    restart: string | null;
    retained: string | null;
    keep: string;
  }>(
    `SELECT pg_current_wal_lsn()::text AS server,
            r.flush_lsn::text AS flush,
            extract(epoch FROM r.flush_lag)::float8 AS lag,
            pg_wal_lsn_diff(pg_current_wal_lsn(), r.flush_lsn)::text AS lag_bytes,
            s.restart_lsn::text AS restart,
            pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::text AS retained,
            current_setting('max_slot_wal_keep_size') AS keep
       FROM (SELECT 1) AS one
       LEFT JOIN pg_replication_slots s ON s.slot_name = $1
       LEFT JOIN LATERAL (SELECT flush_lsn, flush_lag FROM pg_stat_replication
                           WHERE application_name = $2 ORDER BY backend_start DESC LIMIT 1) r ON true`,
    [slot, applicationName],
  );
  const row = rows[0]!;
  const keep = row.keep.trim();
  return {
    serverLsn: row.server,
    ...(row.flush ? { flushLsn: row.flush } : {}),
    ...(row.lag !== null ? { flushLagSeconds: row.lag } : {}),
    ...(row.lag_bytes !== null ? { lagBytes: Number(row.lag_bytes) } : {}),
    ...(row.restart ? { slotRestartLsn: row.restart } : {}),
    ...(row.retained !== null ? { slotRetainedBytes: Number(row.retained) } : {}),
    ...(keep === '-1' ? {} : { slotLimitBytes: parseSize(keep) }),
  };
}

/** Whether a recovering server has finished (promoted) and answers as a primary. */
export async function inRecovery(client: pg.ClientBase): Promise<boolean> {
  return (await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r;
}

/** Where the server's WAL ends now (insert position): every transaction committed so far lies before it. */
export async function currentLsn(client: pg.ClientBase): Promise<string> {
  return (await client.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0]!.lsn;
}

/** Makes the server close its current WAL segment, so that it is archived now rather than when full. */
export async function switchWal(client: pg.ClientBase): Promise<string> {
  return (await client.query<{ lsn: string }>('SELECT pg_switch_wal()::text AS lsn')).rows[0]!.lsn;
}

/** Drops the archiver's slot (when archiving of a server is given up for good): its WAL is then freed. */
export async function dropSlot(client: pg.ClientBase, slot: string): Promise<boolean> {
  const { rowCount } = await client.query(
    'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active',
    [slot],
  );
  return (rowCount ?? 0) > 0;
}

export interface Tablespace {
  oid: number;
  name: string;
  /** Its directory on the server's host (relative, pg_tblspc/<oid>, for one in place). */
  location: string;
}

/** Tablespaces beside the two every server has: a plain base backup would write into their paths. */
export async function userTablespaces(client: pg.ClientBase): Promise<Tablespace[]> {
  const { rows } = await client.query<Tablespace>(
    `SELECT oid::int AS oid, spcname AS name, pg_tablespace_location(oid) AS location FROM pg_tablespace
      WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid`,
  );
  return rows;
}

/** The archiver's slot, made once, reserving WAL from now on. */
export async function ensureSlot(client: pg.ClientBase, slot: string): Promise<void> {
  await client.query(
    `SELECT pg_create_physical_replication_slot($1, true)
      WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`,
    [slot],
  );
}

/** Lets the server free the WAL before `lsn` (what the stores hold): the slot never moves back. */
export async function advanceSlot(client: pg.ClientBase, slot: string, lsn: string): Promise<void> {
  await client.query(
    `SELECT pg_replication_slot_advance(slot_name, $2::pg_lsn) FROM pg_replication_slots
      WHERE slot_name = $1 AND restart_lsn < $2::pg_lsn AND NOT active`,
    [slot, lsn],
  );
}
