/*
 * WAL file names and positions, as PostgreSQL writes them: a segment is `TTTTTTTTXXXXXXXXYYYYYYYY`
 * (timeline, then the segment number split in two at 4 GiB / segment size); a position (LSN) is
 * `X/Y`, a 64-bit byte offset. A timeline's history file is `TTTTTTTT.history`.
 */

export const SEGMENT_NAME = /^[0-9A-F]{24}$/;
export const HISTORY_NAME = /^[0-9A-F]{8}\.history$/;
const LSN = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

export function isLsn(text: string): boolean {
  return LSN.test(text);
}

export function parseLsn(text: string): bigint {
  const match = LSN.exec(text);
  if (!match) throw new Error(`not a WAL position: "${text}" (expected X/Y, e.g. 0/3000060)`);
  return (BigInt(`0x${match[1]}`) << 32n) + BigInt(`0x${match[2]}`);
}

export function formatLsn(value: bigint): string {
  return `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffffffffn).toString(16).toUpperCase()}`;
}

export interface Segment {
  timeline: number;
  /** The segment's number from the start of WAL. */
  number: bigint;
}

function segmentsPerId(segmentBytes: number): bigint {
  return 0x100000000n / BigInt(segmentBytes);
}

export function segmentName(segment: Segment, segmentBytes: number): string {
  const per = segmentsPerId(segmentBytes);
  const hex = (value: bigint | number) => value.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(segment.timeline)}${hex(segment.number / per)}${hex(segment.number % per)}`;
}

export function parseSegmentName(name: string, segmentBytes: number): Segment {
  if (!SEGMENT_NAME.test(name)) throw new Error(`not a WAL segment name: "${name}"`);
  const per = segmentsPerId(segmentBytes);
  return {
    timeline: Number.parseInt(name.slice(0, 8), 16),
    number: BigInt(`0x${name.slice(8, 16)}`) * per + BigInt(`0x${name.slice(16, 24)}`),
  };
}

/** The segment that holds position `lsn` on `timeline`. */
export function segmentOf(lsn: bigint, timeline: number, segmentBytes: number): Segment {
  return { timeline, number: lsn / BigInt(segmentBytes) };
}

/** The position just past segment `segment`. */
export function segmentEnd(segment: Segment, segmentBytes: number): bigint {
  return (segment.number + 1n) * BigInt(segmentBytes);
}
