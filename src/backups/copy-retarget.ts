import { Transform, type TransformCallback } from 'node:stream';

/*
 * pg_restore's script of some tables' rows (`--file=-`), each table's a `COPY <table> (<columns>) FROM
 * stdin;` line followed by its rows in COPY's text format up to a line `\.`, made to load other tables:
 * each COPY line's table is replaced by the one it maps to. The rows pass through unread but for the
 * search of their end (a row's own line breaks are escaped, so `\.` alone on a line ends them); the
 * script's other lines (settings, comments, psql's \restrict) pass as they are.
 */

const TERMINATOR = Buffer.from('\\.\n');
const LINE_THEN_TERMINATOR = Buffer.from('\n\\.\n');

export class CopyRetarget extends Transform {
  /** The tables loaded, in the script's order: one entry per COPY. */
  readonly loaded: string[] = [];
  private inRows = false;
  /** Whether the next byte begins a line (in the rows). */
  private atLineStart = true;
  /** Bytes held back: a line not yet ended (outside the rows), or what may begin the terminator. */
  private held: Buffer = Buffer.alloc(0);

  /** `targets`: each source table as the script writes it (`format('%I.%I')`) to the table to load instead. */
  constructor(private readonly targets: Map<string, string>) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    let rest = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    this.held = Buffer.alloc(0);
    try {
      while (rest.length > 0) rest = this.inRows ? this.passRows(rest) : this.passLine(rest);
    } catch (error) {
      done(error as Error);
      return;
    }
    done();
  }

  override _flush(done: TransformCallback): void {
    if (this.inRows) done(new Error("the archive script ended inside a table's rows"));
    else {
      if (this.held.length) this.push(this.held);
      done();
    }
  }

  /** Outside the rows: passes one line (rewriting a COPY line), or holds an unfinished one. */
  private passLine(bytes: Buffer): Buffer {
    const end = bytes.indexOf(10);
    if (end < 0) {
      this.held = bytes;
      return Buffer.alloc(0);
    }
    const line = bytes.subarray(0, end).toString('utf8');
    if (line.startsWith('COPY ')) {
      this.push(`${this.retarget(line)}\n`);
      this.inRows = true;
      this.atLineStart = true;
    } else this.push(bytes.subarray(0, end + 1));
    return bytes.subarray(end + 1);
  }

  private retarget(line: string): string {
    if (!line.endsWith(' FROM stdin;')) throw new Error(`unexpected COPY in the archive script: ${line.slice(0, 200)}`);
    // The longest name the line begins with: a quoted name may hold what looks like the end of another.
    const source = [...this.targets.keys()]
      .filter((name) => line.startsWith(`COPY ${name} `))
      .sort((a, b) => b.length - a.length)[0];
    if (source === undefined) throw new Error(`the archive script loads a table not asked for: ${line.slice(0, 200)}`);
    const target = this.targets.get(source)!;
    this.loaded.push(target);
    return `COPY ${target}${line.slice(`COPY ${source}`.length)}`;
  }

  /** In the rows: passes them up to and with their terminator, holding back what may begin it. */
  private passRows(bytes: Buffer): Buffer {
    let end = -1;
    if (this.atLineStart && bytes.subarray(0, TERMINATOR.length).equals(TERMINATOR)) end = TERMINATOR.length;
    else {
      const found = bytes.indexOf(LINE_THEN_TERMINATOR);
      if (found >= 0) end = found + LINE_THEN_TERMINATOR.length;
    }
    if (end >= 0) {
      this.push(bytes.subarray(0, end));
      this.inRows = false;
      return bytes.subarray(end);
    }
    // No terminator whole in these bytes: hold back an unfinished last line that may be its beginning.
    const lineStart = bytes.lastIndexOf(10) + 1;
    const tail = lineStart > 0 || this.atLineStart ? bytes.subarray(lineStart) : undefined;
    if (tail && tail.length < TERMINATOR.length && TERMINATOR.subarray(0, tail.length).equals(tail)) {
      this.push(bytes.subarray(0, bytes.length - tail.length));
      this.held = Buffer.from(tail);
      this.atLineStart = true;
    } else {
      this.push(bytes);
      this.atLineStart = bytes[bytes.length - 1] === 10;
    }
    return Buffer.alloc(0);
  }
}
