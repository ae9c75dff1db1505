import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import readline from 'node:readline';
import type { Readable } from 'node:stream';
import { startTrackedTool } from '../postgres/tools.js';
import { archiveScript, type ArchiveInput } from './archive-input.js';
import { CopyRetarget } from './copy-retarget.js';

/*
 * Tables made in a live database and loaded with a backup's rows, in one transaction of one psql:
 * their definitions dumped from a scratch database (where they were restored and renamed), then
 * pg_restore's script of the backup's rows for them, each COPY pointed at its new table
 * (CopyRetarget), then the caller's checks. Before the commit, the caller sees the rows each table
 * received (psql's COPY tags) and may refuse them: then psql is killed, and nothing was made. The
 * rows are read once, from the archive, and written once, into the live database.
 */

export interface TableLoadOptions {
  liveUrl: string;
  scratchUrl: string;
  binDir: string | undefined;
  signal: AbortSignal;
  onLine: (line: string) => void;
  archive: ArchiveInput;
  /** A `pg_restore --use-list` file of the entries of the tables' rows. */
  dataList: string;
  /**
   * Each table as the archive's script names it, to the table made for it in the scratch database and
   * then the live one (both as format('%I.%I') writes them).
   */
  targets: Map<string, string>;
  /** The tables to dump from the scratch database: the targets, and any without rows of their own (partitioned). */
  definitions: string[];
  /** SQL run once the rows are in, in the same transaction (checks that raise). */
  checks: string;
  /** Sees the rows each target received before the commit; throwing makes nothing of it happen. */
  beforeCommit: (rows: Map<string, number>) => void | Promise<void>;
}

export async function loadTables(options: TableLoadOptions): Promise<Map<string, number>> {
  const { signal, binDir, onLine } = options;
  const marker = `dbops-loaded-${randomBytes(8).toString('hex')}`;
  const { child: psql, finished } = startTrackedTool(
    'psql',
    [
      '--no-psqlrc',
      '--no-password',
      '--set=ON_ERROR_STOP=1',
      '--single-transaction',
      '--no-align',
      '--tuples-only',
      '--file=-',
    ],
    {
      url: options.liveUrl,
      signal,
      binDir,
      stdin: 'pipe',
      stdout: 'pipe',
      onStderrLine: onLine,
    },
  );
  finished.catch(() => undefined); // awaited below
  const ended = finished.then(() => {
    throw new Error('psql ended before its script did');
  });
  ended.catch(() => undefined);
  const copied: number[] = [];
  let sawMarker: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (sawMarker = resolve));
  readline.createInterface({ input: psql.stdout!, crlfDelay: Infinity }).on('line', (line) => {
    const tag = /^COPY (\d+)$/.exec(line);
    if (tag) copied.push(Number(tag[1]));
    else if (line === marker) sawMarker();
  });
  const stdin = psql.stdin!;
  stdin.on('error', () => undefined); // psql gone: `finished` says why
  const send = async (source: AsyncIterable<Buffer | string> | string) => {
    for await (const chunk of typeof source === 'string' ? [source] : source)
      if (!stdin.write(chunk)) await Promise.race([once(stdin, 'drain'), ended]);
  };

  try {
    const dump = startTrackedTool(
      'pg_dump',
      [
        '--schema-only',
        '--no-owner',
        '--no-acl',
        '--no-password',
        ...options.definitions.map((table) => `--table=${table}`),
      ],
      {
        url: options.scratchUrl,
        signal,
        binDir,
        stdout: 'pipe',
        onStderrLine: onLine,
      },
    );
    await Promise.all([send(dump.child.stdout as Readable), dump.finished]);

    const retarget = new CopyRetarget(options.targets);
    const { script, done } = archiveScript(options.archive, ['--data-only', `--use-list=${options.dataList}`], {
      binDir,
      signal,
      onLine,
    });
    script.on('error', (error) => retarget.destroy(error));
    await Promise.all([send(script.pipe(retarget)), done]);
    // After the script's \unrestrict (if any): psql's own commands are its again. The script set the
    // archive's encoding for its rows; what follows is this process's text.
    await send(`SET client_encoding = 'UTF8';\n${options.checks}\n\\echo ${marker}\n`);
    await Promise.race([ready, ended]);

    if (copied.length !== retarget.loaded.length)
      throw new Error(`psql reported ${copied.length} COPY commands where the script had ${retarget.loaded.length}`);
    const rows = new Map(retarget.loaded.map((table, index) => [table, copied[index]!]));
    await options.beforeCommit(rows);
    stdin.end();
    await finished;
    return rows;
  } catch (error) {
    // Its transaction dies with its connection: nothing was committed. Its stdin stays open until it
    // is gone (at the end of its input it would commit). TERM: its wrapper kills the whole group. (A
    // failure of psql's own, a check that raised, is `error` already: the waits above race its end.)
    psql.kill('SIGTERM');
    await finished.catch(() => undefined);
    throw error;
  }
}
