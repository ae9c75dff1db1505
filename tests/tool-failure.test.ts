import { describe, expect, it } from 'vitest';
import { isRetryable } from '../src/errors.js';
import { StderrTail, isNoteworthyLine, toolFailure } from '../src/postgres/tools.js';

function failureAfter(lines: string[], tool: 'pg_dump' | 'pg_restore' | 'psql' = 'pg_restore'): Error {
  const tail = new StderrTail();
  for (const line of lines) tail.push(line);
  return toolFailure(tool, 1, tail);
}

/** A function whose body is longer than the tail: pg_restore echoes all of it after the error. */
const longFunctionBody = [
  'Command was: CREATE FUNCTION public.rewards_report(min_monthly_purchases integer) RETURNS SETOF public.customer',
  '    LANGUAGE plpgsql SECURITY DEFINER',
  '    AS $_$',
  ...Array.from({ length: 60 }, (_, n) => `    -- body line ${n}: RAISE EXCEPTION 'invalid argument'; failed`),
  '$_$;',
  '',
  '',
];

describe('a PostgreSQL tool that fails', () => {
  it('is retried when its session was ended in the middle of a long function definition', () => {
    const error = failureAfter([
      'pg_restore: creating FUNCTION "public.rewards_report(integer)"',
      'pg_restore: while PROCESSING TOC:',
      'pg_restore: from TOC entry 245; 1255 16450 FUNCTION rewards_report(integer) postgres',
      'pg_restore: error: could not execute query: FATAL:  terminating connection due to administrator command',
      'server closed the connection unexpectedly',
      '\tThis probably means the server terminated abnormally',
      '\tbefore or while processing the request.',
      ...longFunctionBody,
    ]);
    expect(isRetryable(error)).toBe(true);
    expect(error.message).toContain(
      'pg_restore failed (exit 1): pg_restore: error: could not execute query: FATAL:  terminating connection due to administrator command',
    );
    expect(error.message).not.toContain('body line');
    expect(error.message).not.toContain('$_$');
  });

  it('fails at once, naming the error and not the echoed SQL, when the error is in the archive', () => {
    const error = failureAfter([
      'pg_restore: creating FUNCTION "public.rewards_report(integer)"',
      'pg_restore: error: could not execute query: ERROR:  function "rewards_report" already exists with same argument types',
      ...longFunctionBody,
    ]);
    expect(isRetryable(error)).toBe(false);
    expect(error.message).toBe(
      'pg_restore failed (exit 1): pg_restore: error: could not execute query: ERROR:  function "rewards_report" already exists with same argument types',
    );
  });

  it('does not take --verbose progress about a table named like an error for the error', () => {
    const error = failureAfter(
      [
        'pg_dump: error: connection to server at "127.0.0.1", port 5432 failed: Connection refused',
        '\tIs the server running on that host and accepting TCP/IP connections?',
        'pg_dump: dumping contents of table "public.error_log"',
        'pg_dump: dumping contents of table "public.failed_invalid_imports"',
      ],
      'pg_dump',
    );
    expect(isRetryable(error)).toBe(true);
    expect(error.message).not.toContain('error_log');
    expect(error.message).not.toContain('failed_invalid_imports');
  });

  it("keeps psql's errors in a script with their detail", () => {
    const error = failureAfter(
      [
        'psql:/srv/sanitize.sql:3: ERROR:  column "emial" does not exist',
        'LINE 1: UPDATE customer SET emial = NULL;',
        '                            ^',
      ],
      'psql',
    );
    expect(isRetryable(error)).toBe(false);
    expect(error.message).toBe(
      'psql failed (exit 1): psql:/srv/sanitize.sql:3: ERROR:  column "emial" does not exist; LINE 1: UPDATE customer SET emial = NULL;',
    );
  });

  it("retries a lost connection whose error is followed by a long query's text, and leads with the error", () => {
    // Seen in CI: pg_dump terminated while asking for a function's definition; the query's lines pushed the cause out of the tail.
    const query = [
      'SELECT',
      ...Array.from({ length: 30 }, (_, i) => `    column_${i},`),
      'FROM pg_catalog.pg_proc p WHERE p.oid = $1',
    ];
    const error = failureAfter(
      [
        'pg_dump: error: query failed: server closed the connection unexpectedly',
        '\tThis probably means the server terminated abnormally',
        '\tbefore or while processing the request.',
        `pg_dump: detail: Query was: ${query[0]}`,
        ...query.slice(1),
      ],
      'pg_dump',
    );
    expect(isRetryable(error)).toBe(true);
    expect(error.message).toMatch(
      /^pg_dump failed \(exit 1\): pg_dump: error: query failed: server closed the connection unexpectedly; /,
    );
  });

  it('falls back to its last lines when none of them is an error message', () => {
    const error = failureAfter([
      'pg_restore: connecting to database for restore',
      'pg_restore: creating TABLE "public.actor"',
      'Killed',
    ]);
    expect(error.message).toBe(
      'pg_restore failed (exit 1): pg_restore: connecting to database for restore; pg_restore: creating TABLE "public.actor"; Killed',
    );
    expect(failureAfter([]).message).toBe('pg_restore failed (exit 1): no output');
  });
});

describe("a PostgreSQL tool's lines in a job's log", () => {
  it('keep the tables whose data moved and every error with its context, and leave out the --verbose chatter', () => {
    const lines = [
      'pg_dump: last built-in OID is 16383',
      'pg_dump: reading schemas',
      'pg_dump: dumping contents of table "public.actor"',
      'pg_restore: connecting to database for restore',
      'pg_restore: creating TABLE "public.actor"',
      'pg_restore: launching item 3344 TABLE DATA actor',
      'pg_restore: processing data for table "public.actor"',
      'pg_restore: finished item 3344 TABLE DATA actor',
      'pg_restore: while PROCESSING TOC:',
      'pg_restore: from TOC entry 245; 1255 16450 FUNCTION rewards_report(integer) postgres',
      'pg_restore: error: could not execute query: ERROR:  function public.missing() does not exist',
      'Command was: CREATE FUNCTION public.rewards_report() RETURNS integer',
      'pg_restore: warning: errors ignored on restore: 1',
      '',
    ];
    const kept = lines.filter(isNoteworthyLine);
    expect(kept).toEqual([
      'pg_dump: dumping contents of table "public.actor"',
      'pg_restore: processing data for table "public.actor"',
      'pg_restore: while PROCESSING TOC:',
      'pg_restore: from TOC entry 245; 1255 16450 FUNCTION rewards_report(integer) postgres',
      'pg_restore: error: could not execute query: ERROR:  function public.missing() does not exist',
      'Command was: CREATE FUNCTION public.rewards_report() RETURNS integer',
      'pg_restore: warning: errors ignored on restore: 1',
    ]);
  });
});
