import { closeSync, constants, existsSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { resolve, dirname } from 'node:path';
import { defineElement, makeFolders, param, state, type IoContext, type SinkDriver } from '../../engine/api.ts';
import { EnvironmentError } from '../../engine/errors.ts';

const BUFFER = 1 << 20;

export default defineElement({
  type: 'ToPcap',
  summary: 'writes packets to a pcap file',
  description: 'Writes every packet it receives to a classic pcap file (link type Ethernet; its folder is created if '
    + 'missing), in the order the shards hand them over, with their timestamps at micro- or nanosecond resolution. Frames longer than snaplen are cut '
    + 'and keep their original length in the record. The file is complete when the pipeline ends, also after Ctrl-C.',
  inputs: 1,
  outputs: [],
  params: {
    file: param.string('the file to write, relative to the config file: made anew, but after a reload that keeps this element with the same file, resolution and snaplen, its capture goes on', { required: true }),
    resolution: param.enum('timestamp resolution', ['us', 'ns'], { default: 'us', fixed: true }),
    snaplen: param.int('most bytes kept of each frame (written in the file header)', 64, 262144, { default: 65535, fixed: true }),
  },
  state: {
    packets: state.counter('packets written'),
    bytes: state.counter('bytes written (frame bytes, without record headers)'),
  },
  ioExports: ['writePcap'],
  sink: (ctx) => new PcapWriter(ctx),
  example: 'out: { type: ToPcap, file: out.pcap }',
});

/** Whether the file at `path` is a stream, or a capture that starts with `header`. */
function continues(path: string, header: Buffer): boolean {
  try {
    if (!statSync(path).isFile()) return true;
    const fd = openSync(path, 'r');
    const start = Buffer.alloc(header.length);
    const read = readSync(fd, start, 0, start.length, 0);
    closeSync(fd);
    return read === header.length && start.equals(header);
  } catch {
    return false;
  }
}

class PcapWriter implements SinkDriver {
  private readonly fd: number;
  private readonly buffer: number;
  private readonly packets: number;
  private readonly path: string;

  constructor(private readonly ctx: IoContext) {
    const path = (this.path = resolve(dirname(ctx.configFile), ctx.params.file));
    const header = Buffer.alloc(24);
    header.writeUInt32LE(ctx.params.resolution === 'ns' ? 0xa1b23c4d : 0xa1b2c3d4, 0);
    header.writeUInt16LE(2, 4);
    header.writeUInt16LE(4, 6);
    header.writeUInt32LE(ctx.params.snaplen, 16);
    header.writeUInt32LE(1, 20);
    // After a reload, the capture this element wrote before goes on (same file, resolution and snaplen), unless it
    // was moved away meanwhile (rotated): a pipe or device goes on as the stream it is.
    const before = ctx.previous;
    const goesOn = before !== undefined && resolve(dirname(before.configFile), before.params.file) === path
      && before.params.resolution === ctx.params.resolution && before.params.snaplen === ctx.params.snaplen && continues(path, header);
    try {
      makeFolders(dirname(path));
      // A FIFO's reader found by the probe keeps it open until this one is: the reader never sees it without a writer.
      const probe = probeReader(ctx.name, path);
      this.fd = openSync(path, goesOn ? 'a' : 'w');
      if (probe !== undefined) closeSync(probe);
    } catch (e) {
      if (e instanceof EnvironmentError) throw e;
      throw new EnvironmentError(`${ctx.name}: cannot write ${path}: ${(e as NodeJS.ErrnoException).code}`, 'check that the folder can be created and written');
    }
    if (!goesOn) this.writeOut(header, 0, header.length);
    this.buffer = ctx.arena.alloc(BUFFER, 64);
    this.packets = ctx.fieldOffset('packets');
  }

  private written(): number {
    return Number(this.ctx.arena.view.getBigUint64(this.ctx.self + this.packets, true));
  }

  write(batch: number): number {
    const { exports, self, arena } = this.ctx;
    const count = arena.view.getUint32(batch, true);
    const first = this.written();
    for (let next = 0; next < count;) {
      const bytes = exports.ToPcap__writePcap(self, batch, next, this.buffer, BUFFER, this.ctx.params.resolution === 'ns');
      this.writeOut(arena.u8, this.buffer, bytes);
      next = this.written() - first;
    }
    arena.view.setUint32(batch, 0, true);
    return count;
  }

  /** Writes bytes out; a file system that is full (or any write that fails) ends the run, naming the file. */
  private writeOut(bytes: Uint8Array, offset: number, length: number): void {
    try {
      writeSync(this.fd, bytes, offset, length);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new EnvironmentError(`${this.ctx.name}: cannot write ${this.path}: ${code}`,
        code === 'ENOSPC' || code === 'EDQUOT' ? 'free space on its file system, or write the capture elsewhere' : code === 'EPIPE' ? 'the reader of the pipe went away' : 'check the file and its file system');
    }
  }

  close(): void {
    closeSync(this.fd);
  }
}

/**
 * Opening a FIFO for writing waits for a reader, and no signal would end that wait: one without a reader is an error
 * (opened without waiting, it says so with ENXIO). Returns that open descriptor of a FIFO, for the caller to close.
 */
function probeReader(element: string, path: string): number | undefined {
  if (!existsSync(path) || !statSync(path).isFIFO()) return undefined;
  try {
    return openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENXIO') throw e;
    throw new EnvironmentError(`${element}: cannot write ${path}: a FIFO that nothing reads`, 'start its reader first (wireshark -k -i PATH, or tcpdump -r PATH)');
  }
}
