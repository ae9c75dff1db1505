import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');

/**
 * The floors of the code, bottom first: a module imports only from its own floor or below. Written once,
 * here; docs/architecture.md explains them.
 */
const FLOORS: { floor: string; dirs: string[] }[] = [
  { floor: 'foundation: configuration, errors, logging, job ids, ownership', dirs: ['src'] },
  { floor: 'PostgreSQL and migration files', dirs: ['src/postgres', 'src/migrations'] },
  { floor: 'the backup stores (directories, S3) and their catalogue', dirs: ['src/backups'] },
  { floor: 'point-in-time recovery: WAL archive, base backups, recovery instances', dirs: ['src/pitr'] },
  { floor: 'the operation catalogue', dirs: ['src/operations'] },
  { floor: 'the queue', dirs: ['src/queue'] },
  { floor: 'schedules and the outcomes of their runs', dirs: ['src/schedules'] },
  {
    floor: 'CLI and server (and its console)',
    dirs: ['src/cli', 'src/cli/commands', 'src/server', 'src/server/console'],
  },
  { floor: 'entry points', dirs: ['workers', 'dashboards', 'bench'] },
];

function floorOf(file: string): number {
  const dir = path.dirname(path.relative(ROOT, file));
  const index = FLOORS.findIndex((floor) => floor.dirs.includes(dir));
  if (index < 0) throw new Error(`${path.relative(ROOT, file)} is on no floor: add its directory to FLOORS`);
  return index;
}

function sources(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && /\.c?ts$/.test(entry.name))
    .map((entry) => path.join(entry.parentPath, entry.name));
}

/** Relative imports of a module (static, dynamic and type-only), resolved to .ts (or .cts) files. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specifiers = [...text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^import\s+)['"](\.{1,2}\/[^'"]+)['"]/gm)].map(
    (match) => match[1]!,
  );
  return specifiers.map((specifier) =>
    path
      .resolve(path.dirname(file), specifier)
      .replace(/\.js$/, '.ts')
      .replace(/\.cjs$/, '.cts'),
  );
}

const files = ['src', 'workers', 'dashboards', 'bench'].flatMap(sources);

describe('layers that point down', () => {
  it('no module imports from a floor above its own', () => {
    const upward: string[] = [];
    for (const file of files) {
      for (const imported of importsOf(file)) {
        if (floorOf(imported) > floorOf(file)) {
          upward.push(
            `${path.relative(ROOT, file)} (${FLOORS[floorOf(file)]!.floor}) imports ${path.relative(ROOT, imported)} (${FLOORS[floorOf(imported)]!.floor})`,
          );
        }
      }
    }
    expect(upward).toEqual([]);
  });

  it('no import cycles', () => {
    const graph = new Map(files.map((file) => [file, importsOf(file)]));
    const cycles: string[] = [];
    const state = new Map<string, 'visiting' | 'done'>();
    const visit = (file: string, trail: string[]) => {
      if (state.get(file) === 'done') return;
      if (state.get(file) === 'visiting') {
        cycles.push([...trail.slice(trail.indexOf(file)), file].map((entry) => path.relative(ROOT, entry)).join(' → '));
        return;
      }
      state.set(file, 'visiting');
      for (const next of graph.get(file) ?? []) visit(next, [...trail, file]);
      state.set(file, 'done');
    };
    for (const file of files) visit(file, []);
    expect(cycles).toEqual([]);
  });

  it('no two parts import each other (a part: a directory of src/ with its subdirectories)', () => {
    const partOf = (file: string) => path.relative(ROOT, path.dirname(file)).split(path.sep).slice(0, 2).join('/');
    const dirs = new Map<string, Set<string>>();
    for (const file of files) {
      const from = partOf(file);
      for (const imported of importsOf(file)) {
        const to = partOf(imported);
        if (to !== from) dirs.set(from, (dirs.get(from) ?? new Set()).add(to));
      }
    }
    const mutual = [...dirs].flatMap(([from, targets]) =>
      [...targets].filter((to) => from < to && dirs.get(to)?.has(from)).map((to) => `${from} ⇄ ${to}`),
    );
    expect(mutual).toEqual([]);
  });

  it('finds what it checks: every module has imports resolved to real files', () => {
    expect(files.length).toBeGreaterThan(50);
    for (const file of files)
      for (const imported of importsOf(file))
        expect(files, `${path.relative(ROOT, file)} imports ${imported}`).toContain(imported);
  });
});
