import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');
const BUNDLE = path.join(ROOT, 'dist/src/cli-bundle/manage-db.cjs');

describe('npx manage-db in the checkout', () => {
  const temp = mkdtempSync(path.join(os.tmpdir(), 'dbops-npx-'));
  afterAll(() => rmSync(temp, { recursive: true, force: true }));

  it('runs the CLI without rebuilding dist/ under running workers, even the first time (npx runs prepare then)', async () => {
    const before = statSync(BUNDLE).mtimeMs;
    // An empty npm cache: npx installs the checkout into it, which runs its prepare, as on a first call.
    const run = await execa('npx', ['manage-db', '--version'], {
      cwd: ROOT,
      env: { npm_config_cache: path.join(temp, 'npm-cache'), npm_config_update_notifier: 'false' },
      reject: false,
    });
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout.trim()).toBe(JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
    expect(statSync(BUNDLE).mtimeMs).toBe(before);
  });

  it('prepare builds when a source is newer than the last build, and only then', async () => {
    const project = path.join(temp, 'project');
    mkdirSync(path.join(project, 'bin'), { recursive: true });
    mkdirSync(path.join(project, 'src'));
    copyFileSync(path.join(ROOT, 'bin/prepare.mjs'), path.join(project, 'bin/prepare.mjs'));
    writeFileSync(path.join(project, 'bin/manage-db.cjs'), '');
    writeFileSync(path.join(project, 'src/a.ts'), 'export {};\n');
    const build =
      "const fs = require('fs'); fs.mkdirSync('dist/src/cli-bundle', { recursive: true }); fs.writeFileSync('dist/src/cli-bundle/manage-db.cjs', ''); fs.appendFileSync('builds', 'x')";
    writeFileSync(
      path.join(project, 'package.json'),
      JSON.stringify({ name: 'fake', scripts: { build: `node -e "${build}"` } }),
    );
    const prepare = () => execa('node', ['bin/prepare.mjs'], { cwd: project });
    const builds = () => readFileSync(path.join(project, 'builds'), 'utf8').length;

    await prepare(); // no dist/ yet
    expect(builds()).toBe(1);
    const skipped = await prepare();
    expect(builds()).toBe(1);
    expect(skipped.stderr).toBe('dbops: dist/ is newer than every source: not rebuilt');
    const later = new Date(Date.now() + 60_000);
    utimesSync(path.join(project, 'src/a.ts'), later, later);
    await prepare();
    expect(builds()).toBe(2);
    expect(statSync(path.join(project, 'node_modules/.bin/manage-db')).isFile()).toBe(true); // the link resolves
  });
});
