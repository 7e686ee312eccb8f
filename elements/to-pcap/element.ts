import { closeSync, constants, existsSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { resolve, dirname } from 'node:path';
import { defineElement, makeFolders, param, state, unwritable, type IoContext, type SinkDriver } from '../../engine/api.ts';
import { EnvironmentError } from '../../engine/errors.ts';

const BUFFER = 1 << 20;

export default defineElement({
  type: 'ToPcap',
  summary: 'writes packets to a pcap file',
  description: 'Writes every packet it receives to a classic pcap file (link type Ethernet; its folder is created if '
    + 'missing), in the order the shards hand them over, with their timestamps at micro- or nanosecond resolution. Frames longer than snaplen are cut '
    + 'and keep their original length in the record. The file is complete when the pipeline ends, also after Ctrl-C. '
    + 'Into a FIFO (a live capture: wireshark -k -i PATH) fed from devices it writes without waiting (when_full): while the reader '
    + 'lags and the pipe is full, packets are released unwritten and counted in lagged, so that a slow reader never holds up '
    + 'forwarding, and the stream stays whole records; fed from files, it waits for the reader and loses nothing.',
  inputs: 1,
  outputs: [],
  params: {
    file: param.file('the file to write, relative to the config file: made anew, but after a reload that keeps this element with the same file, resolution and snaplen, its capture goes on', 'writes', { required: true }),
    resolution: param.enum('timestamp resolution', ['us', 'ns'], { default: 'us', fixed: true }),
    snaplen: param.size('most bytes kept of each frame (written in the file header)', { min: 64, max: 262144, default: 65535, fixed: true }),
    when_full: param.enum('what a FIFO whose reader lags gets: drop (packets the full pipe cannot take are released and counted, '
      + 'lagged), wait (the pipeline waits for the reader), auto (drop when some source is a device, else wait)', ['auto', 'wait', 'drop'], { default: 'auto', fixed: true }),
  },
  state: {
    packets: state.counter('packets written'),
    bytes: state.counter('bytes written (frame bytes, without record headers)'),
    lagged: state.counter('packets not written into a FIFO whose pipe was full (its reader lagged)'),
    wrapped_times: state.counter('packets timed after 2106-02-07 06:28:15 UTC, past what a pcap record\'s 32-bit seconds hold: written with their seconds wrapped (modulo 2^32)'),
  },
  ioExports: ['writePcap', 'skipPcap'],
  sink: (ctx) => new PcapWriter(ctx),
  check: ({ name, params, configFile }) => {
    const path = resolve(dirname(configFile), params.file);
    const why = unwritable(path);
    if (why) throw new EnvironmentError(`${name}: cannot write ${path}: ${why}`, CANNOT_WRITE);
  },
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

const CANNOT_WRITE = 'check that the folder can be created and written';

/** The most bytes a non-blocking pipe takes whole or not at all (PIPE_BUF on Linux): a record is never split in a FIFO. */
const PIPE_BUF = 4096;
/** How long closing waits for a FIFO's reader to take the rest of a record longer than PIPE_BUF. */
const CLOSE_WAIT_MS = 1000;
const nap = new Int32Array(new SharedArrayBuffer(4));

class PcapWriter implements SinkDriver {
  private readonly fd: number;
  /** A FIFO written without waiting (probeReader opened it so), whose full pipe drops packets (when_full). */
  private readonly dropsWhenFull: boolean;
  /** What must go into the FIFO before any record: the header, or the rest of a record longer than PIPE_BUF its full pipe took in part. */
  private pending: Buffer | undefined;
  private readonly buffer: number;
  private readonly counters: { packets: number; bytes: number; lagged: number };
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
    const { when_full: whenFull } = ctx.params;
    try {
      makeFolders(dirname(path));
      const probe = probeReader(ctx.name, path);
      this.dropsWhenFull = probe !== undefined && (whenFull === 'drop' || (whenFull === 'auto' && ctx.live));
      this.fd = this.dropsWhenFull ? probe! : openSync(path, goesOn ? 'a' : 'w');
      // A FIFO's reader found by the probe keeps it open until this one is: the reader never sees it without a writer.
      if (probe !== undefined && !this.dropsWhenFull) closeSync(probe);
    } catch (e) {
      if (e instanceof EnvironmentError) throw e;
      throw new EnvironmentError(`${ctx.name}: cannot write ${path}: ${(e as NodeJS.ErrnoException).code}`, CANNOT_WRITE);
    }
    try {
      // Into a FIFO that drops, the header goes first whenever the pipe has room.
      if (this.dropsWhenFull) this.pending = goesOn ? undefined : header;
      else if (!goesOn) this.writeAll(header, 0, header.length);
    } catch (e) {
      closeSync(this.fd); // the pipeline that fails to start never closes its sinks
      throw e;
    }
    this.buffer = ctx.arena.alloc(BUFFER, 64);
    this.counters = { packets: ctx.fieldOffset('packets'), bytes: ctx.fieldOffset('bytes'), lagged: ctx.fieldOffset('lagged') };
  }

  private counter(name: keyof PcapWriter['counters']): number {
    return Number(this.ctx.arena.view.getBigUint64(this.ctx.self + this.counters[name], true));
  }

  private addTo(name: keyof PcapWriter['counters'], n: number): void {
    this.ctx.arena.view.setBigUint64(this.ctx.self + this.counters[name], BigInt(this.counter(name) + n), true);
  }

  /** Writes the batch's packets; into a FIFO that drops, once its pipe is full the rest are released unwritten (lagged). Returns those written. */
  write(batch: number): number {
    const { exports, self, arena } = this.ctx;
    const count = arena.view.getUint32(batch, true);
    const first = this.counter('packets');
    let next = 0;
    while (next < count && this.caughtUp()) {
      const bytes = exports.ToPcap__writePcap(self, batch, next, this.buffer, BUFFER, this.ctx.params.resolution === 'ns');
      next = this.counter('packets') - first;
      if (!this.dropsWhenFull) {
        this.writeAll(arena.u8, this.buffer, bytes);
        continue;
      }
      const taken = this.offer(bytes);
      if (taken < bytes) {
        this.unwritten(taken, bytes);
        break;
      }
    }
    exports.ToPcap__skipPcap(self, batch, next);
    arena.view.setUint32(batch, 0, true);
    return this.counter('packets') - first;
  }

  /** Whether no rest of a record waits for the FIFO (writes what it takes of one). */
  private caughtUp(): boolean {
    if (!this.pending) return true;
    const taken = this.writeSome(this.pending, 0, this.pending.length);
    this.pending = taken < this.pending.length ? this.pending.subarray(taken) : undefined;
    return !this.pending;
  }

  /**
   * Writes `length` bytes of records from the buffer into the FIFO, in writes of whole records that it takes whole or
   * not at all (PIPE_BUF), a longer record alone. Returns the bytes of the records it took: a record longer than
   * PIPE_BUF that it took in part counts as taken, its rest pending.
   */
  private offer(length: number): number {
    const { u8, view } = this.ctx.arena;
    const recordEnd = (at: number) => at + 16 + view.getUint32(this.buffer + at + 8, true);
    let at = 0;
    while (at < length) {
      let end = recordEnd(at);
      while (end < length && recordEnd(end) - at <= PIPE_BUF) end = recordEnd(end);
      const taken = this.writeSome(u8, this.buffer + at, end - at);
      if (taken === 0) return at;
      if (taken < end - at) {
        this.pending = Buffer.from(u8.subarray(this.buffer + at + taken, this.buffer + end));
        return end;
      }
      at = end;
    }
    return length;
  }

  /** The records in the buffer from `from` to `to` were counted written but the FIFO did not take them: they lagged. */
  private unwritten(from: number, to: number): void {
    const view = this.ctx.arena.view;
    let records = 0, bytes = 0;
    for (let at = from; at < to; records++) {
      const length = view.getUint32(this.buffer + at + 8, true);
      bytes += length;
      at += 16 + length;
    }
    this.addTo('packets', -records);
    this.addTo('bytes', -bytes);
    this.addTo('lagged', records);
  }

  /** Writes all the bytes into a file, or a FIFO whose reader is waited for. */
  private writeAll(bytes: Uint8Array, offset: number, length: number): void {
    for (let done = 0; done < length;) done += this.writeSome(bytes, offset + done, length - done);
  }

  /**
   * Writes bytes out and returns how many were taken: all of them or some (a short write, then an error); into a FIFO
   * that drops, 0 when its pipe is full (always all or nothing for PIPE_BUF bytes or less). A file system that is full,
   * or any write that fails, ends the run, naming the file.
   */
  private writeSome(bytes: Uint8Array, offset: number, length: number): number {
    try {
      return writeSync(this.fd, bytes, offset, length);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN' && this.dropsWhenFull) return 0;
      throw new EnvironmentError(`${this.ctx.name}: cannot write ${this.path}: ${code}`,
        code === 'ENOSPC' || code === 'EDQUOT' ? 'free space on its file system, or write the capture elsewhere' : code === 'EPIPE' ? 'the reader of the pipe went away' : 'check the file and its file system');
    }
  }

  close(): void {
    // Bytes still waiting (pending): the reader gets a moment to make room, or the stream ends without them.
    const until = performance.now() + CLOSE_WAIT_MS;
    const left = (why: string) => this.ctx.log(`${this.path}: its last ${this.pending!.length} bytes were not written: ${why}`);
    try {
      while (!this.caughtUp() && performance.now() < until) Atomics.wait(nap, 0, 0, 1);
      if (this.pending) left(`the FIFO's reader took nothing for ${CLOSE_WAIT_MS / 1000} s`);
    } catch (e) {
      // The reader went away meanwhile (EPIPE), or the write failed otherwise: writeSome's error ends in its code.
      left((e as Error).message.split(': ').pop()!);
    } finally {
      closeSync(this.fd);
    }
  }
}

/**
 * Opening a FIFO for writing waits for a reader, and no signal would end that wait: one without a reader is an error
 * (opened without waiting, it says so with ENXIO). Returns the descriptor of a FIFO so opened, non-blocking: the
 * writer's, so that the reader never sees the FIFO without one.
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
