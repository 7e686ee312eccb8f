import { closeSync, openSync, readSync, statSync, type Stats } from 'node:fs';
import { resolve, dirname } from 'node:path';
import { defineElement, param, state, type IoContext, type SourceDriver } from '../../engine/api.ts';
import { ConfigErrors, EnvironmentError } from '../../engine/errors.ts';
import { readCaptureHeader, readPcapngBlock, type CaptureFormat, type Interface } from './capture-file.ts';

const STOP = { budget: 0, needMore: 1, otherBlock: 2, corrupt: 3, paced: 4, noSlot: 5 };
/** process.ts CORRUPT_*: which check a record or block failed. */
const CORRUPT = { recordLength: 1, blockLength: 2, blockShort: 3, unknownInterface: 4, packetPastBlock: 5, noInterface: 6 };
const STREAM_BUFFER = 8 << 20;
/** The most a preload reads: what one read takes (Node's limit), and well within WebAssembly's 4 GiB. */
const MOST_PRELOAD = 2 ** 31 - 1;
const MAX_INTERFACES = 256;
/** pcapng's obsolete Packet Block (type 2), whose interface id is 16 bits. */
const OBSOLETE_PACKET_BLOCK = 2;
/**
 * The longest classic pcap record taken from a file of this snaplen: libpcap refuses one longer than 262144 bytes
 * and the snaplen ("bigger than snaplen"), the mark of a damaged length field; none is longer than 4 MiB.
 */
const maxRecord = (snaplen: number) => Math.min(Math.max(snaplen, 262144), 4 << 20);

export default defineElement({
  type: 'FromPcap',
  summary: 'reads packets from a pcap or pcapng file',
  description: 'Reads a capture file of Ethernet frames: classic pcap (micro- or nanosecond, either byte order) or pcapng '
    + '(enhanced, simple and obsolete packet blocks, up to 256 Ethernet interfaces, their if_tsresol and if_tsoffset). Records longer than a '
    + 'slot are cut to fit and counted in truncated. With timing: original the packets leave at the pace of their '
    + 'timestamps; with fast, as fast as the shards take them. A file source never drops a packet for want of room: it '
    + 'waits for the shards. With loop, the file is read again and again, its timestamps shifted so that time keeps '
    + 'going forward; count stops after that many packets. preload reads the whole file (at most 2 GiB) into memory first (an in-memory trace). '
    + "Each packet's annotation is its number in the file, from 1 (Wireshark's frame number; Print shows it).",
  inputs: 0,
  outputs: [{ name: 'out', doc: 'the packets read' }],
  params: {
    file: param.file('the capture file, relative to the config file', 'reads', { required: true }),
    timing: param.enum('pace of reading', ['fast', 'original'], { default: 'fast' }),
    loop: param.bool('read the file again from the start when it ends', { default: false }),
    count: param.int('stop after this many packets (0: no limit)', 0, Number.MAX_SAFE_INTEGER, { default: 0 }),
    preload: param.bool('read the whole file into memory before the first packet', { default: false, fixed: true }),
  },
  state: {
    packets: state.counter('packets read'),
    read: state.internal('records read over every pass, which a reset leaves alone: the number of the latest, and what count limits'),
    bytes: state.counter('bytes read, as on the wire'),
    truncated: state.counter('records longer than a slot, cut to fit'),
    short_wire: state.counter('records whose wire length is less than what they captured (tcpdump: invalid header): taken as the captured length'),
    last_ns: state.internal('timestamp of the latest packet'),
    earliest_ns: state.internal('the earliest timestamp read'),
    latest_ns: state.internal('the latest timestamp read'),
    ts_offset: state.internal('added to timestamps on later passes of a looped file'),
    until_ns: state.internal('pacing: read no record later than this'),
    next_ns: state.internal('pacing: timestamp of the record that waits'),
    stop: state.internal('why the last read stopped'),
    corrupt: state.internal('why the record or block the last read stopped at makes no sense (process.ts CORRUPT_*)'),
  },
  ioExports: ['readPcap', 'readPcapng'],
  source: (ctx) => new PcapReader(ctx),
  example: 'src: { type: FromPcap, file: traces/demo.pcap, timing: fast }',
});

class PcapReader implements SourceDriver {
  private readonly fd: number;
  private readonly size: number;
  private readonly format: CaptureFormat;
  private readonly buffer: number;
  private readonly capacity: number;
  private readonly ifaceTable: number;
  private interfaces: Interface[] = [];
  /** File offset of buffer[0], bytes valid in the buffer, and bytes of it consumed. */
  private fileOffset = 0;
  private have = 0;
  private used = 0;
  private passes = 0;
  private period = 0n;
  private finished = false;
  private paceStart?: { wall: bigint; ts: bigint };
  private waitUntil = 0n;

  constructor(private readonly ctx: IoContext) {
    const path = resolve(dirname(ctx.configFile), ctx.params.file);
    const hint = 'check the file parameter: a relative path starts at the config file\'s folder (for wirepath filter, the working directory)';
    let stat: Stats;
    try {
      // Looked at before it is opened: opening a FIFO waits for a writer, and no signal would end that wait.
      stat = statSync(path);
      if (!stat.isFile()) throw new EnvironmentError(`${ctx.name}: ${path} is ${stat.isDirectory() ? 'a folder' : 'not a regular file'}, not a capture`, hint);
      this.fd = openSync(path, 'r');
    } catch (e) {
      if (e instanceof EnvironmentError) throw e;
      throw new EnvironmentError(`${ctx.name}: cannot open ${path}: ${(e as NodeJS.ErrnoException).code}`, hint);
    }
    this.size = stat.size;
    const head = Buffer.alloc(Math.min(this.size, 64 << 10));
    try {
      readSync(this.fd, head, 0, head.length, 0);
      this.format = readCaptureHeader(head, path);
      this.capacity = ctx.params.preload ? Math.max(this.size, 64) : STREAM_BUFFER;
      this.buffer = this.allocBuffer(path);
    } catch (e) {
      closeSync(this.fd); // a source that fails to open is never closed
      throw e;
    }
    this.ifaceTable = ctx.arena.alloc(32 * MAX_INTERFACES, 8);
    this.startPass();
  }

  /** The buffer the file is read through; a preloaded file too large for memory is refused, naming it. */
  private allocBuffer(path: string): number {
    const { name, params, arena } = this.ctx;
    const tooLarge = () => new EnvironmentError(
      `${name}: preload: ${path} is ${(this.size / 2 ** 30).toFixed(1)} GiB, more than the pipeline's memory can hold (at most 2 GiB, less with large tables or pools)`,
      'preload: false streams the file through an 8 MiB buffer instead');
    if (params.preload && this.size > MOST_PRELOAD) throw tooLarge();
    try {
      return arena.alloc(this.capacity, 64);
    } catch (e) {
      throw params.preload && e instanceof ConfigErrors ? tooLarge() : e;
    }
  }

  get done(): boolean {
    return this.finished;
  }

  /** What ended the file before its end (a corrupt record), once it has. */
  failure?: Error;

  private field(name: string): bigint {
    return this.ctx.arena.view.getBigUint64(this.ctx.self + this.offsetOf(name), true);
  }

  private setField(name: string, value: bigint): void {
    this.ctx.arena.view.setBigUint64(this.ctx.self + this.offsetOf(name), value, true);
  }

  private offsets = new Map<string, number>();
  private offsetOf(name: string): number {
    let off = this.offsets.get(name);
    if (off === undefined) {
      off = this.ctx.fieldOffset(name);
      this.offsets.set(name, off);
    }
    return off;
  }

  private startPass(): void {
    this.fileOffset = this.format.kind === 'pcap' ? 24 : 0;
    this.used = 0;
    this.have = 0;
    if (this.ctx.params.preload && this.passes === 0) {
      readSync(this.fd, this.ctx.arena.u8, this.buffer, this.size, 0);
    }
    if (this.ctx.params.preload) {
      this.used = this.fileOffset;
      this.have = this.size;
      this.fileOffset = 0;
    }
  }

  /** Moves the unread rest to the start of the buffer and reads more of the file after it. */
  private refill(): boolean {
    if (this.ctx.params.preload) return false;
    const u8 = this.ctx.arena.u8;
    const rest = this.have - this.used;
    u8.copyWithin(this.buffer, this.buffer + this.used, this.buffer + this.have);
    this.fileOffset += this.used;
    this.used = 0;
    this.have = rest;
    const n = readSync(this.fd, u8, this.buffer + rest, this.capacity - rest, this.fileOffset + rest);
    this.have += n;
    return n > 0;
  }

  pump(budget: number): number {
    if (this.finished) return 0;
    const limit = this.ctx.params.count as number;
    const before = Number(this.field('read'));
    if (limit) budget = Math.min(budget, limit - before);
    budget = Math.min(budget, this.ctx.exports.ioSpace());
    if (this.ctx.params.timing === 'original') budget = this.pace(budget);
    else if (this.paceStart) this.stopPacing();
    let sent = 0;
    while (sent < budget && !this.finished) {
      const consumed = this.read(budget - sent);
      this.used += consumed;
      sent = Number(this.field('read')) - before;
      const stop = Number(this.field('stop'));
      if (stop === STOP.budget || stop === STOP.noSlot) break;
      if (stop === STOP.paced) { this.waitUntil = this.field('next_ns'); break; }
      try {
        if (stop === STOP.corrupt) throw this.corrupt();
        if (stop === STOP.otherBlock) { this.otherBlock(); continue; }
      } catch (e) {
        // The records before it go on through the graph; the run fails with this once they have. A block the
        // capture-file reader refused is named by file, not by element: the element's name goes in front.
        this.failure = e instanceof EnvironmentError && !e.message.startsWith(`${this.ctx.name}: `)
          ? new EnvironmentError(`${this.ctx.name}: ${e.message}`, e.hint) : e as Error;
        this.finished = true;
        break;
      }
      if (!this.refill()) this.endOfPass();
    }
    if (limit && Number(this.field('read')) >= limit) this.finished = true;
    return sent;
  }

  private read(budget: number): number {
    const { exports, self, port } = this.ctx;
    const at = this.buffer + this.used;
    const len = this.have - this.used;
    if (this.format.kind === 'pcap') return exports.FromPcap__readPcap(self, at, len, budget, port, this.format.swapped, this.format.nanos, maxRecord(this.format.snaplen));
    return exports.FromPcap__readPcapng(self, at, len, budget, port, this.format.swapped, this.ifaceTable, this.interfaces.length);
  }

  private endOfPass(): void {
    // Said of the first pass only: a looped file is the same each time.
    if (this.passes === 0) {
      if (this.have > this.used) this.ctx.log(`ignored ${this.have - this.used} bytes at the end of ${this.ctx.params.file}: a record cut off`);
      const shortWire = this.field('short_wire');
      if (shortWire) {
        this.ctx.log(`${shortWire} records of ${this.ctx.params.file} say the frame was shorter than the bytes they hold (tcpdump: invalid header): `
          + 'their wire length is taken as the bytes captured (short_wire)');
      }
    }
    if (!this.ctx.params.loop || this.field('read') === 0n) { this.finished = true; return; }
    if (this.passes === 0) this.period = this.passPeriod();
    this.setField('ts_offset', this.field('ts_offset') + this.period);
    this.passes++;
    this.startPass();
  }

  /**
   * How far each pass's timestamps move from the previous pass's, measured on the first pass: its span from
   * the earliest to the latest timestamp plus its mean gap (at least 1 ns; 1 us for a single packet), so that
   * the next pass's packets all follow this one's, even in a file whose timestamps are out of order.
   */
  private passPeriod(): bigint {
    const earliest = this.field('earliest_ns');
    const latest = this.field('latest_ns');
    const packets = this.field('read');
    const span = latest > earliest ? latest - earliest : 0n;
    const gap = packets > 1n ? span / (packets - 1n) : 1000n;
    return span + (gap > 0n ? gap : 1n);
  }

  /** pcapng blocks without packets: section headers, interface descriptions, statistics, names. */
  private otherBlock(): void {
    const u8 = this.ctx.arena.u8;
    const block = Buffer.from(u8.buffer, u8.byteOffset + this.buffer + this.used, this.have - this.used);
    const result = readPcapngBlock(block, this.format, this.interfaces, `${this.ctx.params.file} at byte ${this.fileOffset + this.used}`);
    if (result.interfaces) this.writeInterfaces(result.interfaces);
    this.used += result.length;
  }

  private writeInterfaces(interfaces: Interface[]): void {
    if (interfaces.length > MAX_INTERFACES) throw new EnvironmentError(`${this.ctx.params.file} describes more than ${MAX_INTERFACES} interfaces`, `split it by interface first (tshark -r FILE -Y 'frame.interface_id == N' -w PART)`);
    this.interfaces = interfaces;
    const v = this.ctx.arena.view;
    interfaces.forEach((iface, i) => {
      const at = this.ifaceTable + 32 * i;
      v.setUint32(at, iface.snaplen, true);
      v.setUint32(at + 4, iface.scale.kind, true);
      v.setBigUint64(at + 8, iface.scale.factor, true);
      v.setBigInt64(at + 16, iface.offset, true);
    });
  }

  private corrupt(): EnvironmentError {
    return new EnvironmentError(`${this.ctx.name}: ${this.ctx.params.file} is corrupt at byte ${this.fileOffset + this.used}: ${this.corruption()}`,
      'the file may be truncated in the middle or not a capture; tshark -r FILE shows where');
  }

  /** What is wrong with the record or block the loop stopped at (process.ts says which check it failed), in words. */
  private corruption(): string {
    const u8 = this.ctx.arena.u8;
    const block = Buffer.from(u8.buffer, u8.byteOffset + this.buffer + this.used, Math.min(this.have - this.used, 32));
    const u32 = (at: number) => (this.format.swapped ? block.readUInt32BE(at) : block.readUInt32LE(at));
    const iface = u32(0) === OBSOLETE_PACKET_BLOCK ? (this.format.swapped ? block.readUInt16BE(8) : block.readUInt16LE(8)) : u32(8);
    const described = `${this.interfaces.length} interface${this.interfaces.length === 1 ? ' is' : 's are'} described before it`;
    switch (Number(this.field('corrupt'))) {
      case CORRUPT.blockLength: return `a block length (${u32(4)}) makes no sense`;
      case CORRUPT.blockShort: return `a packet block of ${u32(4)} bytes is too short for its fields`;
      case CORRUPT.unknownInterface: return `a packet of interface ${iface}, and ${described}`;
      case CORRUPT.packetPastBlock: return `a packet of ${u32(20)} bytes in a block of ${u32(4)}`;
      case CORRUPT.noInterface: return 'a simple packet block, and no interface is described before it';
      case CORRUPT.recordLength: default:
        return `a record length (${u32(8)}) is more than ${maxRecord(this.format.snaplen)} bytes (the file's snaplen is ${this.format.snaplen})`;
    }
  }

  /**
   * Lets through the records due by now. The trace's time starts at the first record, or, when timing turned to
   * original while the source runs, at the last record sent: the records after it keep their gaps from then on.
   * Records without a time (simple packet blocks) go one at a time until one with a time is read.
   */
  private pace(budget: number): number {
    const now = process.hrtime.bigint();
    if (!this.paceStart) {
      if (!this.timeRead()) { this.setField('until_ns', 0n); return Math.min(budget, 1); }
      this.paceStart = { wall: now, ts: this.field('last_ns') };
    }
    const until = this.paceStart.ts + (now - this.paceStart.wall);
    this.setField('until_ns', until > 0n ? until : 1n);
    return budget;
  }

  /** Whether a record with a time was read: until one is, the loops keep the earliest time above the latest. */
  private timeRead(): boolean {
    return this.field('read') > 0n && this.field('earliest_ns') <= this.field('latest_ns');
  }

  /** Timing turned to fast while the source runs: the records are no longer held back to the trace's pace. */
  private stopPacing(): void {
    this.paceStart = undefined;
    this.setField('until_ns', 0n);
  }

  waitNs(): number {
    if (this.ctx.params.timing !== 'original' || !this.paceStart) return 0;
    const due = this.waitUntil - this.paceStart.ts;
    const elapsed = process.hrtime.bigint() - this.paceStart.wall;
    return due > elapsed ? Number(due - elapsed) : 0;
  }

  progress(): number | undefined {
    if (this.ctx.params.count) return Number(this.field('read')) / this.ctx.params.count;
    if (this.ctx.params.loop) return undefined;
    return Math.min(1, (this.fileOffset + this.used) / this.size);
  }

  close(): void {
    closeSync(this.fd);
  }
}
