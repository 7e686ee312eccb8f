import { writeSync } from 'node:fs';
import { defineElement, type IoContext, type SinkDriver } from '../../engine/api.ts';
import { Meta } from '../../engine/layout.ts';

export default defineElement({
  type: 'Print',
  summary: 'prints one line per packet on standard output (standard error with run --json)',
  description: 'Prints, for each packet it receives, its annotation (its number in its file, from 1, when it comes from '
    + 'FromPcap), its timestamp in seconds and its length on the wire, then recycles it. '
    + 'For looking at what reaches a point of a graph; `wirepath filter -v` uses it.',
  inputs: 1,
  outputs: [],
  params: {},
  ioExports: ['release'],
  sink: (ctx) => new LinePrinter(ctx),
  example: 'show: { type: Print }\n# connections: src -> cl, cl[0] -> show',
});

class LinePrinter implements SinkDriver {
  constructor(private readonly ctx: IoContext) {}

  write(batch: number): number {
    const v = this.ctx.arena.view;
    const count = v.getUint32(batch, true);
    const lines: string[] = [];
    for (let i = 0; i < count; i++) {
      const p = v.getUint32(batch + 8 + 4 * i, true);
      const ns = v.getBigUint64(p + Meta.timestamp, true);
      const seconds = `${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, '0').slice(0, 6)}`;
      lines.push(`${v.getUint32(p + Meta.annotation, true)} ${seconds} ${v.getUint32(p + Meta.wireLength, true)}\n`);
    }
    if (lines.length) writeSync(this.ctx.printFd, lines.join(''));
    this.ctx.exports.Print__release(batch);
    return count;
  }

  close(): void {}
}
