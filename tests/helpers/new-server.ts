import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const postgresUid = () => Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
export const postgresGid = () => Number(execFileSync('id', ['-g', 'postgres']).toString().trim());

export interface NewServer {
  port: number;
  password: string;
  /** A URL to one of its databases, as `user` (the bootstrap superuser by default). */
  url(database: string, user?: string, password?: string): string;
  stop(): void;
}

/** A PostgreSQL server of the test's own: initdb, password authentication, only the bootstrap superuser. */
export async function newServer(): Promise<NewServer> {
  const bin = readdirSync('/usr/lib/postgresql')
    .sort((a, b) => Number(b) - Number(a))
    .map((major) => `/usr/lib/postgresql/${major}/bin`)[0]!;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-newserver-'));
  chownSync(dir, postgresUid(), postgresGid());
  const password = `boot-${Math.random().toString(36).slice(2)}`;
  writeFileSync(path.join(dir, 'pw'), password);
  chownSync(path.join(dir, 'pw'), postgresUid(), postgresGid());
  // Below Linux's ephemeral range (32768–60999), where a client connection may hold the port.
  const port = 22_000 + Math.floor(Math.random() * 4_000);
  const asPostgres = (...args: string[]) =>
    execFileSync('runuser', ['-u', 'postgres', '--', ...args], { stdio: 'pipe' });
  asPostgres(
    `${bin}/initdb`,
    '-D',
    `${dir}/data`,
    '-U',
    'postgres',
    '-A',
    'scram-sha-256',
    `--pwfile=${dir}/pw`,
    '--no-sync',
  );
  asPostgres(
    `${bin}/pg_ctl`,
    '-D',
    `${dir}/data`,
    '-l',
    `${dir}/log`,
    '-w',
    '-o',
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
    'start',
  );
  return {
    port,
    password,
    url: (database, user = 'postgres', userPassword = password) =>
      `postgres://${user}:${userPassword}@127.0.0.1:${port}/${database}`,
    stop() {
      asPostgres(`${bin}/pg_ctl`, '-D', `${dir}/data`, '-m', 'immediate', 'stop');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
