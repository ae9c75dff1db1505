import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import module from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';

const CLI = path.resolve(import.meta.dirname, '../bin/manage-db.cjs');
const hasCompileCache = typeof (module as { enableCompileCache?: unknown }).enableCompileCache === 'function';

/** The CLI uses the compile cache Node ships (22.1+), in Node's own directory rules; Node 20 runs it without one. */
describe("the CLI and Node's compile cache", () => {
  const dirs: string[] = [];
  const cacheDir = () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-compile-cache-'));
    dirs.push(dir);
    return dir;
  };
  afterAll(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
  const run = (env: Record<string, string>) =>
    execa('node', [CLI, 'schema', 'backup'], {
      env: { PATH: process.env.PATH!, ...env },
      extendEnv: false,
      reject: false,
    });

  it.skipIf(!hasCompileCache)('keeps the bundle compiled in NODE_COMPILE_CACHE, and reads it back', async () => {
    const dir = cacheDir();
    const first = await run({ NODE_COMPILE_CACHE: dir });
    expect(first.exitCode, first.stderr).toBe(0);
    const files = readdirSync(dir, { recursive: true }).map(String);
    expect(files.length).toBeGreaterThan(0);
    const again = await run({ NODE_COMPILE_CACHE: dir, NODE_DEBUG_NATIVE: 'COMPILE_CACHE' });
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toBe(first.stdout);
    expect(again.stderr).toMatch(/manage-db\.cjs.*(was accepted|reading cache)/s);
  });

  it('NODE_DISABLE_COMPILE_CACHE=1 keeps nothing, and the CLI answers the same', async () => {
    const dir = cacheDir();
    const run1 = await run({ NODE_COMPILE_CACHE: dir, NODE_DISABLE_COMPILE_CACHE: '1' });
    expect(run1.exitCode, run1.stderr).toBe(0);
    expect(JSON.parse(run1.stdout)).toHaveProperty('payload');
    expect(readdirSync(dir)).toEqual([]);
  });
});
