import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import type pg from 'pg';
import { PermanentError } from '../errors.js';
import { untrustedProgramPath } from '../trusted-files.js';
import { connect } from './client.js';
import { PG_SERVER_TOOLS, PG_TOOLS, type PgTool } from './tools.js';

/*
 * pg_dump can dump servers of its own major version and older, never newer; pg_restore reads archives
 * of its own version and older. So the tools used for a server must be at least its major version.
 * Candidates: PG_BIN_DIR when set (and then only it), otherwise Debian's versioned directories
 * (/usr/lib/postgresql/<major>/bin) and whatever is on PATH. The newest that fits is used.
 */

export const VERSIONED_ROOT = '/usr/lib/postgresql';

const majors = new Map<string, Promise<number | undefined>>();

/** The major version of the pg_dump in `dir` (PATH when undefined); undefined if there is none. */
function toolMajor(dir: string | undefined): Promise<number | undefined> {
  const key = dir ?? '';
  let major = majors.get(key);
  if (!major) {
    major = execa(dir ? path.join(dir, 'pg_dump') : 'pg_dump', ['--version'])
      .then(({ stdout }) => {
        const match = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(stdout);
        if (!match) return undefined;
        const first = Number(match[1]);
        return first >= 10 ? first : Number(`${first}.${match[2] ?? 0}`); // 9.6 and older: two-part majors
      })
      .catch(() => undefined);
    majors.set(key, major);
  }
  return major;
}

async function versionedDirs(root: string): Promise<string[]> {
  const entries = await readdir(root).catch(() => [] as string[]);
  return entries.filter((entry) => /^\d+(\.\d+)?$/.test(entry)).map((entry) => path.join(root, entry, 'bin'));
}

export async function serverMajor(client: pg.ClientBase): Promise<number> {
  const { rows } = await client.query<{ v: string }>("SELECT current_setting('server_version_num') AS v");
  const number = Number(rows[0]?.v ?? 0);
  return number >= 100_000 ? Math.floor(number / 10_000) : Math.floor(number / 100) / 10;
}

/**
 * The directory of the client tools to use against a server of this major version (undefined: PATH).
 * Fails with a clear message instead of producing a dump the server's data cannot be trusted to.
 */
export async function toolDirFor(
  major: number,
  configured: string | undefined,
  root = VERSIONED_ROOT,
): Promise<string | undefined> {
  if (configured) refuseUntrustedBinDir(configured);
  const candidates: (string | undefined)[] = configured ? [configured] : [...(await versionedDirs(root)), undefined];
  const found: { dir: string | undefined; major: number }[] = [];
  for (const dir of candidates) {
    const version = await toolMajor(dir);
    if (version !== undefined) found.push({ dir, major: version });
  }
  const fitting = found.filter((candidate) => candidate.major >= major).sort((a, b) => b.major - a.major);
  if (fitting[0]) return fitting[0].dir;
  const seen = found.map((candidate) => `${candidate.major} (${candidate.dir ?? 'PATH'})`).join(', ') || 'none';
  throw new PermanentError(
    `no pg_dump/pg_restore for PostgreSQL ${major}: found ${seen}; install postgresql-client-${major} or point PG_BIN_DIR at its bin directory`,
  );
}

/**
 * PG_BIN_DIR names programs dbops runs with database passwords in their environment: the directory and
 * its tools must be this user's or root's and writable by nobody else (trusted-files.ts), or nothing runs.
 */
function refuseUntrustedBinDir(dir: string): void {
  for (const file of [dir, ...PG_TOOLS.map((tool) => path.join(dir, tool))]) {
    const refused = untrustedProgramPath(file);
    if (refused) throw new PermanentError(`PG_BIN_DIR is not trusted: ${refused}`);
  }
}

/**
 * A server's major version, asked at most every ten seconds per URL: jobs in quick succession (a
 * schedule's fan-out, --all-databases, a queue of restores) need not each open a connection only to
 * learn what the last one learnt. A server upgraded in place is seen within those seconds.
 */
const SERVER_MAJOR_TTL_MS = 10_000;
const serverMajors = new Map<string, { major: number; until: number }>();

async function serverMajorAt(url: string, applicationName: string): Promise<number> {
  const known = serverMajors.get(url);
  if (known && known.until > Date.now()) return known.major;
  const client = await connect(url, applicationName);
  try {
    const major = await serverMajor(client);
    serverMajors.set(url, { major, until: Date.now() + SERVER_MAJOR_TTL_MS });
    return major;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The tools directory for the server behind one or more connection URLs (the newest server decides). */
export async function toolDirForServers(
  urls: string[],
  configured: string | undefined,
  applicationName: string,
): Promise<string | undefined> {
  let highest = 0;
  for (const url of urls) highest = Math.max(highest, await serverMajorAt(url, applicationName));
  return toolDirFor(highest, configured);
}

/** The tools directory that can read an archive made by `pgDumpVersion` (`pg_dump (PostgreSQL) 15.20`). */
export function toolDirForArchive(
  pgDumpVersion: string,
  configured: string | undefined,
  root = VERSIONED_ROOT,
): Promise<string | undefined> {
  const match = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(pgDumpVersion);
  if (!match) return toolDirFor(0, configured, root);
  const first = Number(match[1]);
  return toolDirFor(first >= 10 ? first : Number(`${first}.${match[2] ?? 0}`), configured, root);
}

/**
 * The directory of a server's own tools (pg_basebackup, pg_receivewal, pg_verifybackup, postgres) for
 * major version `major`: physical backups and recovery need exactly that version. PG_BIN_DIR when set,
 * else Debian's /usr/lib/postgresql/<major>/bin, else PATH when its tool is of that version.
 */
export async function serverBinDir(
  major: number,
  configured: string | undefined,
  tool: PgTool = 'postgres',
  root = VERSIONED_ROOT,
): Promise<string | undefined> {
  if (configured) {
    for (const file of [configured, ...PG_SERVER_TOOLS.map((one) => path.join(configured, one))]) {
      const refused = untrustedProgramPath(file);
      if (refused) throw new PermanentError(`PG_BIN_DIR is not trusted: ${refused}`);
    }
  }
  // PG_BIN_DIR first when it is of this version; else Debian's directory of it (an image's PG_BIN_DIR
  // holds the newest client tools, the server's own may be older).
  const candidates: (string | undefined)[] = [
    ...(configured ? [configured] : []),
    path.join(root, String(major), 'bin'),
    undefined,
  ];
  for (const dir of candidates) {
    const version = await execa(dir ? path.join(dir, tool) : tool, ['--version']).then(
      ({ stdout }) => /\(PostgreSQL\)\s+(\d+)/.exec(stdout)?.[1],
      () => undefined,
    );
    if (version !== undefined && Number(version) === major) return dir;
  }
  throw new PermanentError(
    `no ${tool} of PostgreSQL ${major}: physical backups and recovery need the server's own major version; install postgresql-${major} (or its client and server binaries) or point PG_BIN_DIR at its bin directory`,
  );
}
