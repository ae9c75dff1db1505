import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockTable } from './helpers/blocker.js';
import { sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';

const CLI = path.resolve(import.meta.dirname, '../bin/manage-db.cjs');

/*
 * Runs the CLI on a pseudo-terminal (Python's pty, from Debian's python3), as a person at a terminal
 * does, and presses Ctrl-C once its progress bar is drawn. Prints what the terminal received, then the
 * exit code on the last line.
 */
const ON_A_TERMINAL = `
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execvp("node", ["node", *sys.argv[1:]])
out, sent, deadline = b"", False, time.time() + 60
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.2)
    if ready:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    if not sent and b"% |" in out:
        os.write(fd, b"\\x03")
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace") + "\\nexit " + str(os.waitstatus_to_exitcode(status)) + "\\n")
`;

describe('Ctrl-C at a terminal while the CLI follows a job', () => {
  let rig: Rig;

  beforeAll(async () => {
    rig = await Rig.create();
    await sql('postgres', `CREATE DATABASE "${rig.db('app')}"`);
    await sql(rig.db('app'), 'CREATE TABLE held (id int)');
    rig.setEnv('app', rig.db('app'));
    await rig.startWorker('maintenance');
  });
  afterAll(async () => rig?.cleanup());

  it('gives the terminal back as it was (cursor shown, lines wrapping) and says the job goes on', async () => {
    // The vacuum waits for this lock, its progress bar drawn, when Ctrl-C comes.
    const held = await lockTable(rig.db('app'), 'public.held');
    try {
      const run = await execa(
        '/usr/bin/python3',
        ['-c', ON_A_TERMINAL, CLI, 'maintenance', 'vacuum', '--env', 'app', '--table', 'public.held', '--wait'],
        { env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/root', ...rig.env }, extendEnv: false },
      );
      const screen = run.stdout;
      expect(screen).toMatch(/exit 130\n?$/);
      const afterInterrupt = screen.slice(screen.lastIndexOf('^C'));
      expect(afterInterrupt).toContain('\x1b[?25h'); // the cursor, hidden by the bar, is shown again
      expect(afterInterrupt).toContain('\x1b[?7h'); // line wrapping, turned off by the bar, is on again
      expect(afterInterrupt).toMatch(
        /manage-db: stopped following (maintenance\/\S+); the job goes on \(cancel it with: manage-db jobs cancel \1\)/,
      );
    } finally {
      await held.release();
    }
  });
});
