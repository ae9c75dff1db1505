import { createHash } from 'node:crypto';
import { readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';

/*
 * The CLI runs from one CommonJS bundle, compiled through V8 with a code cache kept beside it: most of
 * a cold start was parsing and compiling some 2 MB of JavaScript (bullmq, ioredis, zod). Node 22's
 * module.enableCompileCache() does the like, but Node 20 has nothing, and v8-compile-cache keeps only
 * what V8 compiles before the code runs (and keeps it in /tmp). Here the cache is taken after the
 * command ran, so it holds every function the command used.
 *
 * The cache lives beside the bundle, writable by whoever can change the bundle itself: nobody who could
 * not change the CLI's code can change what it runs. V8 trusts a code cache (a damaged one crashes the
 * process), so the cache carries the SHA-256 of its data, and the bundle's size, time and inode: a
 * rebuilt bundle or another Node discards it.
 */

interface CacheHeader {
  /** Node, architecture and the bundle's identity: the cache is for this bundle run by this Node only. */
  key: string;
  sha256: string;
  /** The commands (first words; ` (failed)` after one that failed) whose functions the cache holds: another adds its own. */
  commands: string[];
}

/** Enough for every command; a bound, so that typing mistakes do not rewrite the cache forever. */
const MAX_COMMANDS = 32;

function cacheFileOf(bundle: string): string {
  return `${bundle}.v8-cache`;
}

function readCache(file: string, key: string): { header: CacheHeader; data: Buffer } | undefined {
  try {
    const content = readFileSync(file);
    const newline = content.indexOf(10);
    const header = JSON.parse(content.subarray(0, newline).toString('utf8')) as CacheHeader;
    const data = content.subarray(newline + 1);
    if (header.key !== key || !Array.isArray(header.commands)) return undefined;
    if (createHash('sha256').update(data).digest('hex') !== header.sha256) return undefined;
    return { header, data };
  } catch {
    return undefined; // none yet, or unreadable: compiled as if there were none
  }
}

function writeCache(file: string, header: Omit<CacheHeader, 'sha256'>, data: Buffer): void {
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    const full: CacheHeader = { ...header, sha256: createHash('sha256').update(data).digest('hex') };
    writeFileSync(temporary, Buffer.concat([Buffer.from(`${JSON.stringify(full)}\n`), data]), { mode: 0o644 });
    renameSync(temporary, file); // whole or not at all, also with other CLIs writing at once
  } catch {
    try {
      unlinkSync(temporary);
    } catch {
      // nothing was written: a read-only installation runs without a cache
    }
  }
}

/** Runs the bundle as Node would run a CommonJS main module, with the code cache when it is good. */
export function runCachedBundle(bundle: string, argv: readonly string[] = process.argv): void {
  const source = readFileSync(bundle, 'utf8');
  const script = (cachedData?: Buffer) =>
    // The bundle has no import(): esbuild turns it into require() (--supported:dynamic-import=false), as a
    // script compiled from a code cache loses its dynamic import callback on Node 20.
    new vm.Script(Module.wrap(source), { filename: bundle, cachedData });
  let compiled: vm.Script;
  if (process.env.NODE_DISABLE_COMPILE_CACHE) {
    compiled = script();
  } else {
    const { size, mtimeMs, ino } = statSync(bundle);
    const key = [process.version, process.arch, size, mtimeMs, ino].join(' ');
    const file = cacheFileOf(bundle);
    const cache = readCache(file, key);
    compiled = script(cache?.data);
    const kept = cache && !compiled.cachedDataRejected ? cache.header.commands : [];
    process.once('exit', (code) => {
      // A command that failed (a mistyped environment) ran only part of its path: it is kept apart,
      // so that its first success still adds the rest.
      const command = `${argv[2] ?? ''}${code === 0 ? '' : ' (failed)'}`;
      if (!kept.includes(command) && kept.length < MAX_COMMANDS) writeCache(file, { key, commands: [...kept, command] }, compiled.createCachedData());
    });
  }
  const main = compiled.runInThisContext() as (...args: unknown[]) => void;
  const bundleModule = { exports: {} };
  main.call(bundleModule.exports, bundleModule.exports, createRequire(bundle), bundleModule, bundle, path.dirname(bundle));
}
