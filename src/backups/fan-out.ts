import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';

/**
 * Writes every chunk to each of several streams, as fast as the slowest takes it (backpressure from
 * each), and finishes when they all have. The first error of any of them is its error.
 */
export class FanOut extends Writable {
  constructor(private readonly sinks: Writable[]) {
    super({ highWaterMark: 1 << 20 });
    for (const sink of sinks) sink.on('error', (error) => this.destroy(error));
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    let waiting = 1;
    const done = () => {
      waiting -= 1;
      if (waiting === 0) callback();
    };
    for (const sink of this.sinks) {
      if (!sink.write(chunk)) {
        waiting += 1;
        sink.once('drain', done);
      }
    }
    done();
  }

  override _final(callback: (error?: Error | null) => void): void {
    for (const sink of this.sinks) sink.end();
    Promise.all(this.sinks.map((sink) => finished(sink))).then(
      () => callback(),
      (error: Error) => callback(error),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    for (const sink of this.sinks) if (!sink.destroyed) sink.destroy(error ?? undefined);
    callback(error);
  }
}
