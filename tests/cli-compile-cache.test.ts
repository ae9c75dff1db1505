import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');

/**
 * The CLI's bundle runs with V8's code cache kept beside it (src/cli/cached-bundle.cts). A copy of the
 * bundle in a directory of its own has a cache of its own, which these tests may damage at will.
 */
describe("the CLI's code cache", () => {
  let dir: string;
  let bundle: string;
  let cacheFile: string;
  let runner: string;

  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-code-cache-'));
    // The bundle reads the package's version three levels up, as it does in dist/src/cli-bundle/.
    const bundleDir = path.join(dir, 'dist', 'src', 'cli-bundle');
    mkdirSync(bundleDir, { recursive: true });
    writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ version: '9.9.9-cache-test' }));
    bundle = path.join(bundleDir, 'manage-db.cjs');
    copyFileSync(path.join(ROOT, 'dist/src/cli-bundle/manage-db.cjs'), bundle);
    cacheFile = `${bundle}.v8-cache`;
    runner = path.join(dir, 'run.cjs');
    writeFileSync(runner, `require(${JSON.stringify(path.join(ROOT, 'dist/src/cli/cached-bundle.cjs'))}).runCachedBundle(${JSON.stringify(bundle)});\n`);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const run = (args: string[], env: Record<string, string> = {}) =>
    execa('node', [runner, ...args], { env: { PATH: process.env.PATH!, ...env }, extendEnv: false, reject: false });
  const header = () => {
    const content = readFileSync(cacheFile);
    return JSON.parse(content.subarray(0, content.indexOf(10)).toString()) as { key: string; sha256: string; commands: string[] };
  };
  const cacheInode = () => statSync(cacheFile).ino;

  it('is written after the first run, and a second run of the same command uses it as it is', async () => {
    const first = await run(['--help']);
    expect(first.exitCode).toBe(0);
    expect(first.stdout).toContain('Usage: manage-db');
    expect(header()).toMatchObject({ commands: ['--help'] });
    expect(header().key).toContain(process.version);
    const written = cacheInode();

    const second = await run(['--help']);
    expect(second.exitCode).toBe(0);
    expect(second.stdout).toBe(first.stdout);
    expect(cacheInode()).toBe(written); // accepted, not rewritten
  });

  it('a failed first run does not stand for the command: its first success still adds its functions', async () => {
    const failed = await run(['schema', 'no-such-type']);
    expect(failed.exitCode).toBe(2);
    expect(header().commands).toEqual(['--help', 'schema (failed)']);
    const written = cacheInode();
    await run(['schema', 'no-such-type']);
    expect(cacheInode()).toBe(written); // a failure seen before is not written again
  });

  it('takes in the functions of another command (or of a command that only failed before): rewritten once', async () => {
    const schema = await run(['schema', 'backup']);
    expect(schema.exitCode).toBe(0);
    expect(JSON.parse(schema.stdout)).toMatchObject({ type: 'backup' });
    expect(header().commands).toEqual(['--help', 'schema (failed)', 'schema']);
    const written = cacheInode();
    const again = await run(['schema', 'backup']);
    expect(again.stdout).toBe(schema.stdout);
    expect(cacheInode()).toBe(written);
  });

  it('a damaged cache is never run (V8 would crash on it): the command works, and the cache is made anew', async () => {
    const content = readFileSync(cacheFile);
    const dataStart = content.indexOf(10) + 1;
    for (let offset = dataStart + 64; offset < content.length; offset += 997) content[offset] = content[offset]! ^ 0xff;
    writeFileSync(cacheFile, content);

    const schema = await run(['schema', 'backup']);
    expect(schema.stderr).toBe('');
    expect(schema.exitCode).toBe(0);
    expect(JSON.parse(schema.stdout)).toMatchObject({ type: 'backup' });
    expect(header().commands).toEqual(['schema']);
    const rewritten = readFileSync(cacheFile);
    const { createHash } = await import('node:crypto');
    expect(
      createHash('sha256')
        .update(rewritten.subarray(rewritten.indexOf(10) + 1))
        .digest('hex'),
    ).toBe(header().sha256);
  });

  it('a rebuilt bundle discards the old cache', async () => {
    const before = header().key;
    const later = new Date(Date.now() + 60_000);
    utimesSync(bundle, later, later);
    const help = await run(['--help']);
    expect(help.exitCode).toBe(0);
    expect(header().key).not.toBe(before);
    expect(header().commands).toEqual(['--help']);
  });

  it("keeps the CLI's exit codes and messages: invalid input exits 2 with its one line", async () => {
    const invalid = await run(['backup', '--env', 'nowhere'], { REDIS_URL: 'redis://127.0.0.1:1' });
    expect(invalid.exitCode).toBe(2);
    expect(invalid.stderr).toBe('manage-db: unknown environment "nowhere" (known: none configured; set DATABASE_URL_NOWHERE)');
  });

  it('CLIs started at once with no cache all work, and leave one whole cache', async () => {
    rmSync(cacheFile);
    const runs = await Promise.all(Array.from({ length: 4 }, () => run(['schema', 'restore'])));
    for (const each of runs) {
      expect(each.exitCode).toBe(0);
      expect(JSON.parse(each.stdout)).toMatchObject({ type: 'restore' });
    }
    expect(header().commands).toEqual(['schema']);
    const again = await run(['schema', 'restore']);
    expect(again.exitCode).toBe(0);
  });

  it('NODE_DISABLE_COMPILE_CACHE turns it off: nothing is read or written', async () => {
    rmSync(cacheFile);
    const help = await run(['--help'], { NODE_DISABLE_COMPILE_CACHE: '1' });
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toContain('Usage: manage-db');
    expect(existsSync(cacheFile)).toBe(false);
  });
});
