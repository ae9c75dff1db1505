import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { configVariables, loadConfig } from '../src/config.js';
import { renderJobsDoc } from '../src/queue/contract.js';

const ROOT = path.resolve(import.meta.dirname, '..');

function markdownFiles(): string[] {
  const files = ['README.md', 'bench/RESULTS.md', 'tests/fixtures/pagila/README.md', 'clients/python/README.md'];
  for (const entry of readdirSync(path.join(ROOT, 'docs'), { recursive: true, withFileTypes: true })) {
    if (entry.isFile() && entry.name.endsWith('.md'))
      files.push(path.relative(ROOT, path.join(entry.parentPath, entry.name)));
  }
  return files;
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

function anchors(file: string): Set<string> {
  const text = readFileSync(file, 'utf8').replace(/```[\s\S]*?```/g, '');
  return new Set([...text.matchAll(/^#+\s+(.+)$/gm)].map((match) => slug(match[1]!)));
}

/** Markdown links `[text](target)` outside code blocks, except absolute URLs. */
function links(file: string): string[] {
  const text = readFileSync(file, 'utf8').replace(/```[\s\S]*?```/g, '');
  return [...text.matchAll(/\]\(([^)\s]+)\)/g)].map((match) => match[1]!).filter((target) => !/^[a-z]+:/.test(target));
}

describe('documentation', () => {
  it('docs/jobs.md is what the catalogue says now (regenerate it with npm run docs:jobs)', () => {
    expect(readFileSync(path.join(ROOT, 'docs/jobs.md'), 'utf8')).toBe(renderJobsDoc(loadConfig({})));
  });

  it('the README is read in five minutes: at most 12 KB', () => {
    expect(statSync(path.join(ROOT, 'README.md')).size).toBeLessThanOrEqual(12 * 1024);
  });

  it('every link between the documents leads to a file, and every #anchor to a heading in it', () => {
    const broken: string[] = [];
    let checked = 0;
    for (const file of markdownFiles()) {
      for (const target of links(path.join(ROOT, file))) {
        checked += 1;
        const [pathPart, anchor] = target.split('#') as [string, string | undefined];
        const resolved =
          pathPart === ''
            ? path.join(ROOT, file)
            : path.resolve(path.dirname(path.join(ROOT, file)), decodeURIComponent(pathPart));
        if (!existsSync(resolved)) broken.push(`${file}: ${target} (no such file)`);
        else if (anchor && !anchors(resolved).has(anchor)) broken.push(`${file}: ${target} (no such heading)`);
      }
    }
    expect(checked).toBeGreaterThan(30);
    expect(broken).toEqual([]);
  });

  it('docs/configuration.md and .env.example name every variable the configuration reads, and no other', () => {
    const table = readFileSync(path.join(ROOT, 'docs/configuration.md'), 'utf8');
    const example = readFileSync(path.join(ROOT, '.env.example'), 'utf8');
    const patterns = ['DATABASE_URL_', 'WORKER_CONCURRENCY_', 'BACKUP_RETENTION_'];
    for (const variable of [...configVariables, ...patterns]) {
      expect(table, variable).toContain(`\`${variable}`);
      expect(example, variable).toMatch(new RegExp(`^#?\\s*${variable}`, 'm'));
    }
    // The first column of the table: every name there is one the configuration reads.
    const documented = [...table.matchAll(/^\| (.+?) \|/gm)].flatMap((row) =>
      [...row[1]!.matchAll(/`([A-Z][A-Z0-9_]+)(<[A-Z]+>)?`/g)].map((match) => match[1]! + (match[2] ? '_' : '')),
    );
    const known = new Set([...configVariables, ...patterns].map((name) => name.replace(/__$/, '_')));
    for (const name of documented)
      expect(known.has(name.replace(/__$/, '_')) || patterns.some((pattern) => name.startsWith(pattern)), name).toBe(
        true,
      );
  });
});
