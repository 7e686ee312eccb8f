// FromPcap and ToPcap: round trips byte for byte, both byte orders, pcapng (converted and hand-built),
// looping, preloading, files larger than the stream buffer, cut-off files, oversized records, errors.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { mkdirSync, readFileSync, readdirSync, readlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { ROOT, readPcap, writePcap, ipv4Frame, tshark, readFifo, type PcapRecord } from './helpers.ts';
import { inTempDir, runInOrder, assertRecords, arpFrame, ipv6Frame } from './golden.ts';
import type { EnvironmentError } from '../engine/errors.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';

/** FromPcap -> ToPcap with the given parameters of each. */
const copy = (src: string, out = '') => `
elements:
  src: { type: FromPcap, ${src} }
  out: { type: ToPcap, file: out.pcap, ${out} }
connections:
  - src -> out
`;

const read = (dir: string, name: string) => readFileSync(join(dir, name));
const output = (dir: string) => readPcap(join(dir, 'out.pcap')).records;

/** Assorted frames (0 to 1514 bytes, one captured short of its wire length) with fractions at the edges of a second. */
function sampleTrace(nanos: boolean) {
  const frames: { data: Buffer; origlen?: number }[] = [
    { data: ipv4Frame() }, { data: ipv4Frame({ proto: 'udp', payload: 1472 }) }, { data: ipv4Frame({ proto: 'icmp' }) },
    { data: arpFrame() }, { data: ipv6Frame() }, { data: Buffer.alloc(0) }, { data: Buffer.from([0xff]) },
    { data: ipv4Frame({ vlan: 3 }) }, { data: ipv4Frame({ payload: 1000 }).subarray(0, 128), origlen: 1060 },
  ];
  const fractions = [0, 1, nanos ? 999_999_999 : 999_999, 12_345];
  return frames.map((f, i) => ({ ...f, sec: 1_700_000_000 + i, usec: fractions[i % fractions.length] }));
}

/** The same classic pcap file in big-endian byte order, as written on a big-endian machine. */
function bigEndian(le: Buffer): Buffer {
  const be = Buffer.from(le);
  const swap32 = (at: number) => be.writeUInt32BE(le.readUInt32LE(at), at);
  const swap16 = (at: number) => be.writeUInt16BE(le.readUInt16LE(at), at);
  [0, 8, 12, 16, 20].forEach(swap32);
  [4, 6].forEach(swap16);
  for (let at = 24; at < le.length; at += 16 + le.readUInt32LE(at + 8)) [0, 4, 8, 12].forEach((f) => swap32(at + f));
  return be;
}

for (const nanos of [false, true]) {
  const resolution = nanos ? 'ns' : 'us';
  for (const order of ['little', 'big']) {
    test(`a ${order}-endian ${resolution} pcap through ToPcap (resolution: ${resolution}, same snaplen) is the little-endian file byte for byte`, () => inTempDir(async (dir) => {
      const trace = sampleTrace(nanos);
      writePcap(join(dir, 'le.pcap'), trace, { nanos, snaplen: 1600 });
      writeFileSync(join(dir, 'in.pcap'), order === 'big' ? bigEndian(read(dir, 'le.pcap')) : read(dir, 'le.pcap'));
      const result = await runInOrder(dir, copy('file: in.pcap', `resolution: ${resolution}, snaplen: 1600`));
      assert.is(result.elements.src.packets, trace.length);
      assert.is(result.elements.src.bytes, trace.reduce((sum, f) => sum + (f.origlen ?? f.data.length), 0));
      assertRecords(output(dir), readPcap(join(dir, 'le.pcap')).records, 'records');
      assert.ok(read(dir, 'out.pcap').equals(read(dir, 'le.pcap')), 'out.pcap is le.pcap byte for byte');
    }));
  }
}

test('a packet timed after 2106, past a pcap record\'s 32-bit seconds, is written with them wrapped and counted, not unsaid', () => inTempDir(async (dir) => {
  const b = pcapngBlocks(false);
  // 7258118400 s is 2200-01-01; microseconds, as interface 0 has no if_tsresol.
  writeFileSync(join(dir, 'in.pcapng'), Buffer.concat([b.section(), b.iface(), b.enhanced(0, 1_700_000_000_000_000n, ipv4Frame()), b.enhanced(0, 7_258_118_400_000_000n, ipv4Frame())]));
  const result = await runInOrder(dir, copy('file: in.pcapng'));
  assert.is(result.elements.out.packets, 2);
  assert.is(result.elements.out.wrapped_times, 1);
  assert.equal(output(dir).map((r) => r.sec), [1_700_000_000, 7_258_118_400 % 2 ** 32]);
}));

const CONVERTERS = [
  { tool: 'tshark', nanos: false, args: (from: string, to: string) => ['-r', from, '-w', to, '-F', 'pcapng'] },
  { tool: 'editcap', nanos: true, args: (from: string, to: string) => ['-F', 'pcapng', from, to] },
];

function convert(c: (typeof CONVERTERS)[number], from: string, to: string): void {
  const r = spawnSync(c.tool, c.args(from, to), { encoding: 'utf8' });
  assert.is(r.status, 0, `${c.tool} failed: ${r.stderr}`);
}

for (const c of CONVERTERS) {
  test(`a pcapng file written by ${c.tool} reads back as the pcap it came from`, () => inTempDir(async (dir) => {
    writePcap(join(dir, 'in.pcap'), sampleTrace(c.nanos), { nanos: c.nanos });
    convert(c, join(dir, 'in.pcap'), join(dir, 'in.pcapng'));
    await runInOrder(dir, copy('file: in.pcapng', `resolution: ${c.nanos ? 'ns' : 'us'}`));
    assertRecords(output(dir), readPcap(join(dir, 'in.pcap')).records, 'records');
    assert.ok(read(dir, 'out.pcap').equals(read(dir, 'in.pcap')), 'out.pcap is in.pcap byte for byte');
  }));
}

/** Builders of pcapng blocks in one byte order: [type][total length][body padded to 4 bytes][total length]. */
function pcapngBlocks(bigEndian: boolean) {
  const int = (bytes: 2 | 4, v: number) => {
    const b = Buffer.alloc(bytes);
    if (bytes === 2) b[bigEndian ? 'writeUInt16BE' : 'writeUInt16LE'](v);
    else b[bigEndian ? 'writeUInt32BE' : 'writeUInt32LE'](v);
    return b;
  };
  const int64 = (v: bigint) => {
    const b = Buffer.alloc(8);
    b[bigEndian ? 'writeBigInt64BE' : 'writeBigInt64LE'](v);
    return b;
  };
  const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc(-b.length & 3)]);
  const block = (type: number, ...body: Buffer[]) => {
    const padded = pad(Buffer.concat(body));
    const length = int(4, 12 + padded.length);
    return Buffer.concat([int(4, type), length, padded, length]);
  };
  // Options and name records share a layout: [code][length][value padded], ended by code 0.
  const option = (code: number, value: Buffer) => Buffer.concat([int(2, code), int(2, value.length), pad(value)]);
  const END = Buffer.alloc(4);
  return {
    section: () => block(0x0a0d0d0a, int(4, 0x1a2b3c4d), int(2, 1), int(2, 0), Buffer.alloc(8, 0xff)),
    iface: (tsresol?: number, linkType = 1, snaplen = 0, tsoffset?: bigint) => {
      const options = [...(tsresol === undefined ? [] : [option(9, Buffer.from([tsresol]))]), ...(tsoffset === undefined ? [] : [option(14, int64(tsoffset))])];
      return block(1, int(2, linkType), int(2, 0), int(4, snaplen), ...(options.length ? [...options, END] : []));
    },
    enhanced: (iface: number, units: bigint, data: Buffer, comment?: string) => block(6, int(4, iface), int(4, Number(units >> 32n)),
      int(4, Number(units & 0xffffffffn)), int(4, data.length), int(4, data.length), pad(data), ...(comment ? [option(1, Buffer.from(comment)), END] : [])),
    simple: (data: Buffer, wire = data.length) => block(3, int(4, wire), data),
    // The obsolete Packet Block: a 16-bit interface id and a 16-bit drop count where the EPB has its 32-bit id.
    obsolete: (iface: number, units: bigint, data: Buffer) => block(2, int(2, iface), int(2, 7), int(4, Number(units >> 32n)),
      int(4, Number(units & 0xffffffffn)), int(4, data.length), int(4, data.length), pad(data)),
    names: () => block(4, option(1, Buffer.concat([Buffer.from([192, 0, 2, 1]), Buffer.from('host.test\0')])), END),
    statistics: (iface: number) => block(5, int(4, iface), int(4, 0), int(4, 0)),
  };
}

// Interface 0 has no if_tsresol (microseconds), then microseconds, nanoseconds and 2^-20 s units.
const TSRESOL = [undefined, 6, 9, 0x80 | 20];
const UNITS_PER_SECOND = [1_000_000n, 1_000_000n, 1_000_000_000n, 1n << 20n];
const PACKETS = [
  { iface: 0, sub: 1n, data: ipv4Frame() },
  { iface: 2, sub: 999_999_999n, data: ipv4Frame({ proto: 'udp' }) },
  { iface: 1, sub: 500_000n, data: arpFrame(), comment: 'an option after the frame' },
  { iface: 3, sub: 3n * 2048n, data: ipv4Frame({ proto: 'icmp' }) }, // 2048 units are exactly 1953125 ns
  { iface: 2, sub: 7n, data: ipv6Frame() },
];
const SPB_FRAME = ipv4Frame({ proto: 'udp', payload: 3 }); // odd length: padded in its block
const SPB_AFTER = 2; // the simple packet block follows this packet and has its timestamp

function handBuiltPcapng(bigEndian: boolean): Buffer {
  const b = pcapngBlocks(bigEndian);
  const blocks = [b.section(), ...TSRESOL.map((r) => b.iface(r)), b.names()];
  PACKETS.forEach((p, i) => {
    blocks.push(b.enhanced(p.iface, (1_700_000_000n + BigInt(i)) * UNITS_PER_SECOND[p.iface] + p.sub, p.data, p.comment));
    if (i === 0) blocks.push(b.statistics(0));
    if (i === SPB_AFTER) blocks.push(b.simple(SPB_FRAME));
  });
  return Buffer.concat(blocks);
}

/** What ToPcap (resolution: ns) writes for the hand-built file. */
function handBuiltRecords(): PcapRecord[] {
  const records = PACKETS.map((p, i) => ({ sec: 1_700_000_000 + i, frac: Number(p.sub * 1_000_000_000n / UNITS_PER_SECOND[p.iface]), data: p.data }));
  records.splice(SPB_AFTER + 1, 0, { ...records[SPB_AFTER], data: SPB_FRAME });
  return records.map((r) => ({ ...r, caplen: r.data.length, origlen: r.data.length }));
}

const HAND_BUILT = [
  { layout: 'little-endian', bytes: () => handBuiltPcapng(false), sections: 1 },
  { layout: 'big-endian', bytes: () => handBuiltPcapng(true), sections: 1 },
  { layout: 'a little-endian and a big-endian section', bytes: () => Buffer.concat([handBuiltPcapng(false), handBuiltPcapng(true)]), sections: 2 },
];

for (const h of HAND_BUILT) {
  test(`a hand-built pcapng (${h.layout}; interfaces of four resolutions, EPB, SPB, NRB, ISB) gives tshark's frames and times`, () => inTempDir(async (dir) => {
    writeFileSync(join(dir, 'in.pcapng'), h.bytes());
    await runInOrder(dir, copy('file: in.pcapng', 'resolution: ns'));
    const records = output(dir);
    assertRecords(records, Array(h.sections).fill(handBuiltRecords()).flat(), 'records');
    const epochs = records.map((r) => `${r.sec}.${String(r.frac).padStart(9, '0')}`);
    // tshark gives a simple packet block no time; compare the enhanced ones.
    const spb = (i: number) => i % (PACKETS.length + 1) === SPB_AFTER + 1;
    const theirs = tshark(join(dir, 'in.pcapng'), ['frame.time_epoch', 'frame.len']);
    assert.equal(epochs.filter((_, i) => !spb(i)), theirs.map(([t]) => t).filter((_, i) => !spb(i)), 'timestamps as tshark reads them');
    assert.equal(records.map((r) => String(r.origlen)), theirs.map(([, len]) => len), 'lengths as tshark reads them');
  }));
}

const LOOPS = [
  { name: 'three packets 10 us apart, from time 0', usecs: [0, 10, 20], count: 10, expected: [0, 10, 20, 30, 40, 50, 60, 70, 80, 90] },
  { name: 'one packet', usecs: [5], count: 4, expected: [5, 6, 7, 8] },
  { name: 'timestamps out of order, 0, 10, 5 us: each pass after the latest', usecs: [0, 10, 5], count: 9, expected: [0, 10, 5, 15, 25, 20, 30, 40, 35] },
];

for (const l of LOOPS) {
  test(`loop with count (${l.name}): count packets, each pass after the last by the mean gap`, () => inTempDir(async (dir) => {
    const frames = l.usecs.map((usec, i) => ({ data: ipv4Frame({ sport: 1000 + i }), sec: 0, usec }));
    writePcap(join(dir, 'in.pcap'), frames);
    const result = await runInOrder(dir, copy(`file: in.pcap, loop: true, count: ${l.count}`));
    assert.is(result.elements.src.packets, l.count);
    const records = output(dir);
    assert.equal(records.map((r) => r.sec * 1e6 + r.frac), l.expected, 'timestamps in us');
    assert.equal(records.map((r) => r.data.toString('hex')), l.expected.map((_, i) => frames[i % frames.length].data.toString('hex')), 'frames');
  }));
}

test('a reset mid-run leaves count and the packet numbers alone (count lets count packets out; the next pass follows the whole first one)', () => inTempDir(async (dir) => {
  // 6 records 40 ms apart: a pass moves the next by 240 ms.
  const frames = Array.from({ length: 6 }, (_, i) => ({ data: ipv4Frame({ sport: 1000 + i }), sec: 0, usec: i * 40_000 }));
  writePcap(join(dir, 'in.pcap'), frames);
  writeFileSync(join(dir, 'config.yaml'), `shards: 1\n${copy('file: in.pcap, timing: original, loop: true, count: 12')}`);
  const pipeline = await Pipeline.create(await loadConfig(join(dir, 'config.yaml')), { threads: 'inline' });
  const running = pipeline.run();
  while (pipeline.packetsIn() < 2) await new Promise((r) => setTimeout(r, 5));
  pipeline.handlerWrite('src', 'reset', '');
  await running;
  assert.equal(output(dir).map((r) => r.sec * 1e6 + r.frac), [0, 40, 80, 120, 160, 200, 240, 280, 320, 360, 400, 440].map((ms) => ms * 1000), 'timestamps in us');
}));

test('count without loop stops early', () => inTempDir(async (dir) => {
  writePcap(join(dir, 'in.pcap'), sampleTrace(false));
  await runInOrder(dir, copy('file: in.pcap, count: 2'));
  assertRecords(output(dir), readPcap(join(dir, 'in.pcap')).records.slice(0, 2), 'records');
}));

test('ToPcap cuts frames longer than snaplen and keeps their wire length', () => inTempDir(async (dir) => {
  writePcap(join(dir, 'in.pcap'), sampleTrace(false));
  await runInOrder(dir, copy('file: in.pcap', 'snaplen: 64'));
  const expected = readPcap(join(dir, 'in.pcap')).records.map((r) => ({ ...r, caplen: Math.min(r.caplen, 64), data: r.data.subarray(0, 64) }));
  assertRecords(output(dir), expected, 'records');
  assert.is(readPcap(join(dir, 'out.pcap')).snaplen, 64);
}));

test('a record whose wire length is less than what it captured (tcpdump: invalid header) counts its captured bytes, is said once and counted in short_wire', () => inTempDir(async (dir) => {
  const frames = sampleTrace(false).slice(0, 3);
  writePcap(join(dir, 'in.pcap'), [{ ...frames[0], origlen: 10 }, ...frames.slice(1)]);
  const logs: string[] = [];
  const result = await runInOrder(dir, copy('file: in.pcap'), { log: (m: string) => logs.push(m) });
  const src = result.elements.src as Record<string, number>;
  assert.is(src.short_wire, 1);
  const bytes = frames.reduce((n, f) => n + f.data.length, 0);
  assert.equal([src.bytes, (result.elements.out as Record<string, number>).bytes], [bytes, bytes], 'read and written alike');
  assert.is(output(dir)[0].origlen, frames[0].data.length);
  assert.equal(logs.filter((m) => m.includes('say the frame was shorter than the bytes they hold')).length, 1, logs.join('\n'));
}));

for (const extra of ['', ', loop: true, count: 25']) {
  test(`preload gives the same output as streaming {file: in.pcap${extra}}`, () => inTempDir(async (dir) => {
    writePcap(join(dir, 'in.pcap'), sampleTrace(false));
    const outputOf = async (preload: boolean) => {
      await runInOrder(dir, copy(`file: in.pcap${extra}, preload: ${preload}`));
      return read(dir, 'out.pcap');
    };
    const streamed = await outputOf(false);
    assert.ok(readPcap(join(dir, 'out.pcap')).records.length > 0);
    assert.ok((await outputOf(true)).equals(streamed), 'preloaded output is the streamed output');
  }));
}

test('a file larger than the 8 MiB stream buffer round-trips byte for byte, streamed and preloaded', () => inTempDir(async (dir) => {
  const packets = 200_000;
  const gen = spawnSync('python3', [join(ROOT, 'bench/gen-pcap.py'), '-n', String(packets), '-f', '1000', '-o', join(dir, 'in.pcap')], { encoding: 'utf8' });
  assert.is(gen.status, 0, gen.stderr);
  assert.ok(read(dir, 'in.pcap').length > 8 << 20);
  for (const preload of [false, true]) {
    const result = await runInOrder(dir, copy(`file: in.pcap, preload: ${preload}`));
    assert.is(result.packets_out, packets);
    assert.ok(read(dir, 'out.pcap').equals(read(dir, 'in.pcap')), `out.pcap is in.pcap byte for byte (preload: ${preload})`);
  }
}));

test('full-size frames, more per batch than ToPcap buffers at once (1 MiB), round-trip byte for byte', () => inTempDir(async (dir) => {
  writePcap(join(dir, 'in.pcap'), Array.from({ length: 3000 }, (_, i) => ipv4Frame({ proto: 'udp', sport: i, payload: 1472 })));
  const result = await runInOrder(dir, copy('file: in.pcap'));
  assert.is(result.packets_out, 3000);
  assert.ok(read(dir, 'out.pcap').equals(read(dir, 'in.pcap')), 'out.pcap is in.pcap byte for byte');
}));

const FIVE = Array.from({ length: 5 }, (_, i) => ipv4Frame({ sport: 2000 + i })); // 60 bytes each
const CUTS = [
  { name: 'pcap cut inside the last frame', file: 'in.pcap', cut: 10 },
  { name: 'pcap cut inside the last record header', file: 'in.pcap', cut: 60 + 8 },
  { name: 'pcapng cut inside the last block', file: 'in.pcapng', cut: 10 },
];

for (const c of CUTS) {
  test(`a ${c.name} gives the complete records and says what it ignored`, () => inTempDir(async (dir) => {
    writePcap(join(dir, 'in.pcap'), FIVE);
    if (c.file === 'in.pcapng') convert(CONVERTERS[0], join(dir, 'in.pcap'), join(dir, 'in.pcapng'));
    const whole = read(dir, c.file);
    const complete = readPcap(join(dir, 'in.pcap')).records.slice(0, 4);
    writeFileSync(join(dir, c.file), whole.subarray(0, whole.length - c.cut));
    const log: string[] = [];
    await runInOrder(dir, copy(`file: ${c.file}`), { log: (m) => log.push(m) });
    assertRecords(output(dir), complete, 'records');
    assert.ok(log.some((m) => /bytes at the end of .*a record cut off/.test(m)), `log: ${log.join('; ')}`);
  }));
}

// A slot holds 32 bytes of metadata and 96 of headroom before the frame.
const SLOTS = [{ slotSize: 2048, room: 2048 - 128 }, { slotSize: 16384, room: 9000 }];

for (const s of SLOTS) {
  test(`a 9000-byte frame in ${s.slotSize}-byte slots keeps ${s.room} bytes, its wire length, and counts a cut`, () => inTempDir(async (dir) => {
    const jumbo = ipv4Frame({ payload: 9000 - 54 });
    writePcap(join(dir, 'in.pcap'), [ipv4Frame(), jumbo, ipv4Frame({ proto: 'udp' })]);
    const result = await runInOrder(dir, `slot_size: ${s.slotSize}\n${copy('file: in.pcap')}`);
    assert.is(result.elements.src.truncated, s.room < jumbo.length ? 1 : 0);
    const expected = readPcap(join(dir, 'in.pcap')).records;
    expected[1] = { ...expected[1], caplen: s.room, data: jumbo.subarray(0, s.room) };
    assertRecords(output(dir), expected, 'records');
  }));
}

function pcapHeaderWith(patch: (header: Buffer) => void, records: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0xa1b2c3d4, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(65535, 16);
  header.writeUInt32LE(1, 20);
  patch(header);
  return Buffer.concat([header, records]);
}

const ERRORS: { name: string; bytes?: () => Buffer; message: RegExp }[] = [
  { name: 'a pcap of link type 101 (raw IP)', bytes: () => pcapHeaderWith((h) => h.writeUInt32LE(101, 20)), message: /link type 101/ },
  {
    name: 'a pcapng whose interface is not Ethernet',
    bytes: () => { const b = pcapngBlocks(false); return Buffer.concat([b.section(), b.iface(6, 113), b.enhanced(0, 1n, ipv4Frame())]); },
    message: /link type 113/,
  },
  { name: 'a text file', bytes: () => Buffer.from('this is not a capture file, but it is long enough\n'), message: /not a pcap or pcapng file/ },
  ...[73, 0x80 | 64].map((tsresol) => ({
    name: `a pcapng whose interface's if_tsresol is ${tsresol} (units finer than 64 bits count)`,
    bytes: () => { const b = pcapngBlocks(false); return Buffer.concat([b.section(), b.iface(tsresol), b.enhanced(0, 1n, ipv4Frame())]); },
    message: /if_tsresol is .* finer than 64-bit timestamps can count/,
  })),
  { name: 'an empty file', bytes: () => Buffer.alloc(0), message: /too short to be a pcap or pcapng file \(0 bytes\)/ },
  // The docs said any number of interfaces.
  {
    name: 'a pcapng with 257 interfaces',
    bytes: () => { const b = pcapngBlocks(false); return Buffer.concat([b.section(), ...Array.from({ length: 257 }, () => b.iface()), b.enhanced(0, 1n, ipv4Frame())]); },
    message: /describes more than 256 interfaces/,
  },
  // Before, its trailing length was read as its link type.
  {
    name: 'a pcapng whose interface description has no body',
    bytes: () => Buffer.concat([pcapngBlocks(false).section(), Buffer.from([1, 0, 0, 0, 12, 0, 0, 0, 12, 0, 0, 0])]),
    message: /^src: .*in\.pcap at byte 28: an interface description block of 12 bytes, too short for its link type/,
  },
  { name: 'a pcap whose record length makes no sense', bytes: () => pcapHeaderWith(() => {}, Buffer.alloc(16, 0x7f)), message: /corrupt/ },
  { name: 'a missing file', message: /cannot open/ },
  { name: 'a folder', message: /in\.pcap is a folder, not a capture/ },
  // Opening a FIFO waited for a writer, and neither SIGINT nor SIGTERM ended the wait.
  { name: 'a FIFO', message: /in\.pcap is not a regular file, not a capture/ },
];

for (const e of ERRORS) {
  test(`${e.name} gives a clear EnvironmentError`, () => inTempDir(async (dir) => {
    if (e.bytes) writeFileSync(join(dir, 'in.pcap'), e.bytes());
    if (e.name === 'a folder') mkdirSync(join(dir, 'in.pcap'));
    if (e.name === 'a FIFO') spawnSync('mkfifo', [join(dir, 'in.pcap')]);
    try {
      await runInOrder(dir, copy('file: in.pcap'));
    } catch (error) {
      // By name: uvu loads this file through require, the engine loads elements through import().
      assert.is((error as Error).name, 'EnvironmentError');
      assert.match((error as Error).message, e.message);
      return;
    }
    assert.unreachable('the run succeeded');
  }));
}

test('a looped file cut off at the end says so once, not once a pass', () => inTempDir(async (dir) => {
  writePcap(join(dir, 'in.pcap'), FIVE);
  const whole = read(dir, 'in.pcap');
  writeFileSync(join(dir, 'in.pcap'), whole.subarray(0, whole.length - 10));
  const log: string[] = [];
  const result = await runInOrder(dir, copy('file: in.pcap, loop: true, count: 40'), { log: (m) => log.push(m) });
  assert.is(result.packets_out, 40);
  assert.is(log.filter((m) => m.includes('a record cut off')).length, 1, log.join('\n'));
}));

for (const bigEndian of [false, true]) {
  test(`obsolete packet blocks (type 2, ${bigEndian ? 'big' : 'little'}-endian) are read as tshark reads them, with their interface's time unit`, () => inTempDir(async (dir) => {
    const b = pcapngBlocks(bigEndian);
    const frames = [0, 1, 2].map((i) => ipv4Frame({ sport: 1000 + i }));
    writeFileSync(join(dir, 'in.pcapng'), Buffer.concat([b.section(), b.iface(), b.iface(9),
      b.enhanced(0, 1_700_000_000_000_000n, frames[0]), b.obsolete(1, 1_700_000_001_000_000_123n, frames[1]), b.obsolete(0, 1_700_000_002_000_001n, frames[2])]));
    await runInOrder(dir, copy('file: in.pcapng', 'resolution: ns'));
    const records = output(dir);
    assert.equal(records.map((r) => r.data.toString('hex')), frames.map((f) => f.toString('hex')), 'frames');
    const epochs = records.map((r) => `${r.sec}.${String(r.frac).padStart(9, '0')}`);
    assert.equal(epochs, ['1700000000.000000000', '1700000001.000000123', '1700000002.000001000']);
    assert.equal(epochs, tshark(join(dir, 'in.pcapng'), ['frame.time_epoch']).map(([t]) => t), 'as tshark reads them');
    writeFileSync(join(dir, 'in.pcapng'), Buffer.concat([b.section(), b.iface(), b.obsolete(3, 0n, frames[0])]));
    const error = await runInOrder(dir, copy('file: in.pcapng')).then(() => undefined, (e: Error) => e);
    assert.match(String(error), /corrupt at byte 48: a packet of interface 3, and 1 interface is described before it/);
  }));
}

test('an interface\'s if_tsoffset (seconds, either sign) is added to its timestamps, as tshark does', () => inTempDir(async (dir) => {
  const b = pcapngBlocks(false);
  writeFileSync(join(dir, 'in.pcapng'), Buffer.concat([b.section(), b.iface(undefined, 1, 0, 1_000_000_000n), b.iface(9, 1, 0, -100n), b.iface(),
    b.enhanced(0, 5_000_001n, ipv4Frame()), b.enhanced(1, 1_700_000_000_500_000_000n, ipv4Frame()), b.enhanced(2, 7n, ipv4Frame())]));
  await runInOrder(dir, copy('file: in.pcapng', 'resolution: ns'));
  const epochs = output(dir).map((r) => `${r.sec}.${String(r.frac).padStart(9, '0')}`);
  assert.equal(epochs, ['1000000005.000001000', '1699999900.500000000', '0.000007000']);
  assert.equal(epochs, tshark(join(dir, 'in.pcapng'), ['frame.time_epoch']).map(([t]) => t), 'as tshark reads them');
}));

test('a simple packet block cut to its interface\'s snaplen holds as many bytes as tshark reads, not its padding', () => inTempDir(async (dir) => {
  const b = pcapngBlocks(false);
  const frame = ipv4Frame({ payload: 46 }); // 100 bytes, kept to 65
  writeFileSync(join(dir, 'in.pcapng'), Buffer.concat([b.section(), b.iface(undefined, 1, 65), b.simple(frame.subarray(0, 65), frame.length)]));
  await runInOrder(dir, copy('file: in.pcapng'));
  const records = output(dir);
  assert.equal(records.map((r) => [r.caplen, r.origlen]), [[65, 100]]);
  assert.equal(records[0].data.toString('hex'), frame.subarray(0, 65).toString('hex'));
  assert.equal(tshark(join(dir, 'in.pcapng'), ['frame.cap_len', 'frame.len']), [['65', '100']]);
}));

test('a pcapng of Linux cooked frames is refused when the source opens (before, at its first packet: mid-run, or after a reload took over), with a hint that converts it', () => inTempDir(async (dir) => {
  const b = pcapngBlocks(false);
  writeFileSync(join(dir, 'in.pcap'), Buffer.concat([b.section(), b.iface(6, 1), b.iface(6, 113), b.enhanced(1, 1n, ipv4Frame())]));
  writeFileSync(join(dir, 'c.yaml'), copy('file: in.pcap'));
  const pipeline = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { threads: 'inline' });
  let refused: EnvironmentError | undefined;
  try {
    pipeline.openFileSources();
  } catch (error) {
    refused = error as EnvironmentError;
  }
  assert.ok(refused, 'refused when opened');
  assert.match(refused.message, /in\.pcap has link type 113 \(Linux cooked\); wirepath reads Ethernet captures \(link type 1\) only$/);
  assert.match(refused.hint!, /tcprewrite --dlt=enet/);
  const open = readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync(`/proc/self/fd/${fd}`) === join(dir, 'in.pcap'); } catch { return false; } });
  assert.is(open.length, 0, 'the file it refused is closed');
}));

test('preload of a file over 2 GiB is refused when the source opens, naming the element and the file, with preload: false as the way out (not a RangeError, nor a memory error that names neither)', () => inTempDir(async (dir) => {
  writePcap(join(dir, 'in.pcap'), [ipv4Frame()]);
  writeFileSync(join(dir, 'c.yaml'), copy('file: in.pcap, preload: true'));
  for (const gib of [3, 5]) {
    truncateSync(join(dir, 'in.pcap'), gib * 2 ** 30); // sparse: takes no room on disk
    // Not made resident: the memory of a preload that went ahead untouched.
    const pipeline = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { threads: 'inline', prefault: false });
    const error = (() => { try { pipeline.openFileSources(); } catch (e) { return e as EnvironmentError; } })();
    pipeline.closeSources();
    assert.is(error?.name, 'EnvironmentError', String(error));
    assert.match(error!.message, new RegExp(`^src: preload: .*in\\.pcap is ${gib}\\.0 GiB, more than the pipeline's memory can hold`));
    assert.match(error!.hint!, /preload: false streams/);
  }
}));

test('a corrupt record or block ends the run only after every packet before it went through, and the error says what is wrong', () => inTempDir(async (dir) => {
  const frames = Array.from({ length: 3000 }, (_, i) => ({ data: ipv4Frame({ sport: 1000 + (i % 500) }), sec: 1, usec: i }));
  writePcap(join(dir, 'good.pcap'), frames);
  const b = pcapngBlocks(false);
  const cases = [
    // Before, packets read before the corrupt record were still in the rings when the run ended: none, or some, reached out.pcap.
    { bytes: Buffer.concat([readFileSync(join(dir, 'good.pcap')), Buffer.alloc(16, 0x7f)]), packets: 3000, message: /corrupt at byte \d+: a record length \(2139062143\) is more than 262144 bytes/ },
    { bytes: Buffer.concat([b.section(), b.iface(), ...frames.slice(0, 100).map((f) => b.enhanced(0, BigInt(f.usec), f.data)), b.enhanced(9, 0n, ipv4Frame())]),
      packets: 100, message: /corrupt at byte \d+: a packet of interface 9, and 1 interface is described before it/ },
  ];
  for (const c of cases) {
    writeFileSync(join(dir, 'in.pcap'), c.bytes);
    for (const threads of ['inline', 'worker'] as const) {
      const error = await runInOrder(dir, copy('file: in.pcap'), { threads }).then(() => undefined, (e: Error) => e);
      assert.is(error?.name, 'EnvironmentError', String(error));
      assert.match(error!.message, c.message);
      assert.is(output(dir).length, c.packets, `${threads}: every packet before it in out.pcap`);
    }
  }
  // Beside a source that never ends (a looping file, a device): that one stops too, and the run fails (it ran on, silent).
  const twoSources = `elements:\n  src: { type: FromPcap, file: in.pcap }\n  more: { type: FromPcap, file: good.pcap, loop: true }\n`
    + '  out: { type: ToPcap, file: out.pcap }\n  drop: { type: Discard }\nconnections:\n  - src -> out\n  - more -> drop\n';
  const error = await runInOrder(dir, twoSources).then(() => undefined, (e: Error) => e);
  assert.match(String(error), /a packet of interface 9/);
  assert.is(output(dir).length, 100);
}));

test('a pcap record longer than 262144 bytes and the snaplen is refused where it is (libpcap: bigger than snaplen); one within a larger snaplen is read', () => inTempDir(async (dir) => {
  writePcap(join(dir, 'in.pcap'), Array.from({ length: 5000 }, (_, i) => ipv4Frame({ sport: i }))); // 60-byte frames: 76 bytes a record
  const damaged = read(dir, 'in.pcap');
  damaged.writeUInt32LE(300_000, 24 + 2 * 76 + 8);
  writeFileSync(join(dir, 'in.pcap'), damaged);
  const error = await runInOrder(dir, copy('file: in.pcap')).then(() => undefined, (e: Error) => e);
  assert.match(String(error), /in\.pcap is corrupt at byte 176: a record length \(300000\) is more than 262144 bytes \(the file's snaplen is 65535\)/);
  assert.is(output(dir).length, 2, 'the records before it');

  writePcap(join(dir, 'in.pcap'), [Buffer.alloc(300_000)], { snaplen: 400_000 });
  const result = await runInOrder(dir, copy('file: in.pcap'));
  assert.equal([result.elements.src.packets, result.elements.src.truncated], [1, 1]);
}));

test('ToPcap into a FIFO nothing reads, or onto a full file system (/dev/full): an EnvironmentError naming the file, not a wait or a stack trace', () => inTempDir(async (dir) => {
  writePcap(join(dir, 'in.pcap'), [{ data: ipv4Frame(), sec: 1, usec: 0 }]);
  spawnSync('mkfifo', [join(dir, 'fifo')]);
  for (const [file, message] of [['fifo', /out: cannot write .*fifo: a FIFO that nothing reads/], ['/dev/full', /out: cannot write \/dev\/full: ENOSPC/]] as const) {
    const error = await runInOrder(dir, copy('file: in.pcap').replace('file: out.pcap', `file: ${file}`)).then(() => undefined, (e: Error) => e);
    assert.is(error?.name, 'EnvironmentError', String(error));
    assert.match(error!.message, message);
  }
}));

test('ToPcap into a FIFO whose reader goes away: an EnvironmentError that says so, naming the file', () => inTempDir(async (dir) => {
  writePcap(join(dir, 'in.pcap'), [{ data: ipv4Frame(), sec: 1, usec: 0 }]);
  const fifo = join(dir, 'fifo');
  spawnSync('mkfifo', [fifo]);
  // The reader takes the file header and leaves; the capture goes on until a write finds no reader.
  const reader = spawn('head', ['-c', '24', fifo], { stdio: 'ignore' });
  const gone = new Promise((resolve) => reader.on('exit', resolve));
  const looped = copy('file: in.pcap, loop: true, count: 100000000').replace('file: out.pcap', 'file: fifo');
  const error = await runInOrder(dir, looped).then(() => undefined, (e: Error) => e);
  await gone;
  assert.is(error?.name, 'EnvironmentError', String(error));
  assert.match(error!.message, /out: cannot write .*fifo: EPIPE/);
  assert.match((error as EnvironmentError).hint!, /the reader of the pipe went away/);
}));

/**
 * FromPcap -> ToPcap into a FIFO read by readFifo: the run's result for ToPcap and the records the reader got (checked
 * to be whole: the stream ends with a record's last byte).
 */
async function throughFifo(dir: string, mode: 'lagging' | 'slow', frames: Buffer[], whenFull: string) {
  writePcap(join(dir, 'in.pcap'), frames);
  const reader = await readFifo(join(dir, 'fifo'), mode);
  // Slots that hold frames longer than PIPE_BUF whole.
  const result = await runInOrder(dir, `slot_size: 8192\n${copy('file: in.pcap', whenFull).replace('file: out.pcap', 'file: fifo')}`);
  reader.go();
  const got = await reader.done;
  const { records } = readPcap(got);
  assert.is(24 + records.reduce((n, r) => n + 16 + r.caplen, 0), readFileSync(got).length, 'whole records');
  return { out: result.elements.out as unknown as Record<'packets' | 'bytes' | 'lagged', number>, packetsOut: result.packets_out, records };
}

test('ToPcap into a FIFO whose reader lags (when_full: drop): the pipeline is not held up; what the full pipe cannot take is released and counted (lagged), and the reader gets whole records', () => inTempDir(async (dir) => {
  const frames = Array.from({ length: 20000 }, (_, i) => ipv4Frame({ sport: 1 + i }));
  const { out, packetsOut, records } = await throughFifo(dir, 'lagging', frames, 'when_full: drop');
  // The pipe took what fits in it (64 KiB here) and then nothing: the first frames, each whole.
  assert.ok(out.lagged > 0 && records.length < 1000, `${records.length} written, ${out.lagged} lagged`);
  assert.is(out.packets + out.lagged, frames.length);
  assert.is(records.length, out.packets);
  assert.is(packetsOut, out.packets);
  assert.equal(records.map((r) => r.data.toString('hex')), frames.slice(0, records.length).map((f) => f.toString('hex')));
  assert.is(out.bytes, records.reduce((n, r) => n + r.caplen, 0));
}));

/** Frames of 62 and 6042 bytes (longer than a pipe takes at once: PIPE_BUF), each its own. */
const mixedFrames = () => Array.from({ length: 3000 }, (_, i) => ipv4Frame({ sport: 1 + i, proto: 'udp', payload: i % 3 ? 20 : 6000 }));

test('ToPcap into a FIFO whose reader is slow, fed from a file: it waits for the reader and loses nothing (when_full: auto)', () => inTempDir(async (dir) => {
  const frames = mixedFrames();
  const { out, records } = await throughFifo(dir, 'slow', frames, '');
  assert.is(out.lagged, 0);
  assert.equal(records.map((r) => r.data.toString('hex')), frames.map((f) => f.toString('hex')));
}));

test('ToPcap into a FIFO whose reader is slow (when_full: drop): frames longer than the pipe takes at once (PIPE_BUF) are never split between the ones it drops', () => inTempDir(async (dir) => {
  const frames = mixedFrames();
  const { out, records } = await throughFifo(dir, 'slow', frames, 'when_full: drop');
  assert.ok(out.lagged > 0, 'the reader takes 2 MB/s');
  assert.is(out.packets + out.lagged, frames.length);
  assert.is(records.length, out.packets);
  // What the reader got is the frames sent, in order, some left out.
  let next = 0;
  for (const r of records) {
    while (next < frames.length && !frames[next].equals(r.data)) next++;
    assert.ok(next++ < frames.length, `record ${records.indexOf(r)} is no frame sent, or out of order`);
  }
}));

test('timing: original takes at least about as long as the trace', () => inTempDir(async (dir) => {
  const span = 300; // ms
  writePcap(join(dir, 'in.pcap'), [0, span / 2, span].map((ms) => ({ data: ipv4Frame(), sec: 1_700_000_000, usec: ms * 1000 })));
  const started = performance.now(); // a lower bound only: compiling or a busy machine can only add time
  const result = await runInOrder(dir, copy('file: in.pcap, timing: original'));
  assert.is(result.packets_out, 3);
  assert.ok(performance.now() - started >= span * 0.8, `took ${performance.now() - started} ms`);
}));

test('timing: original over a pcapng whose first packet is a simple packet block (no time) paces from the first packet with a time', () => inTempDir(async (dir) => {
  const b = pcapngBlocks(false);
  const second = 1_700_000_000_000_000n; // us
  writeFileSync(join(dir, 'in.pcapng'), Buffer.concat([b.section(), b.iface(), b.simple(ipv4Frame()), b.enhanced(0, second, ipv4Frame()), b.enhanced(0, second + 300_000n, ipv4Frame())]));
  writeFileSync(join(dir, 'config.yaml'), copy('file: in.pcapng, timing: original'));
  const pipeline = await Pipeline.create(await loadConfig(join(dir, 'config.yaml')), { threads: 'inline' });
  const running = pipeline.run();
  const started = performance.now();
  const ended = await Promise.race([running.then(() => 'ended'), new Promise((r) => setTimeout(r, 5000)).then(() => 'still waiting')]);
  if (ended !== 'ended') pipeline.stop();
  assert.is(ended, 'ended', 'it did not wait from 1970 to the second packet');
  assert.is((await running).packets_out, 3);
  assert.ok(performance.now() - started >= 240, `the last packet 300 ms after the second (took ${performance.now() - started} ms)`);
}));

test('timing written while the source runs: to fast, the rest comes at once; to original, the records go on at their gaps from the last one sent', () => inTempDir(async (dir) => {
  // 1000 records 10 ms apart: 10 s of trace.
  writePcap(join(dir, 'in.pcap'), Array.from({ length: 1000 }, (_, i) => ({ data: ipv4Frame(), sec: 1_700_000_000 + Math.floor(i / 100), usec: (i % 100) * 10_000 })));
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const start = async (src: string) => {
    writeFileSync(join(dir, 'config.yaml'), copy(src));
    const pipeline = await Pipeline.create(await loadConfig(join(dir, 'config.yaml')), { shards: 1 });
    return { pipeline, running: pipeline.run() };
  };
  const paced = await start('file: in.pcap, timing: original');
  while (paced.pipeline.packetsIn() < 5) await sleep(10);
  paced.pipeline.view('src').setParam('timing', 'fast');
  const ended = await Promise.race([paced.running.then(() => 'ended'), sleep(5000).then(() => 'still paced')]);
  if (ended !== 'ended') paced.pipeline.stop();
  assert.is(ended, 'ended', 'the rest of the trace came at once');
  assert.is((await paced.running).packets_in, 1000);

  const fast = await start('file: in.pcap, loop: true, count: 1000000');
  while (fast.pipeline.packetsIn() < 3000) await sleep(1);
  fast.pipeline.view('src').setParam('timing', 'original');
  await sleep(100);
  const from = fast.pipeline.packetsIn();
  await sleep(500);
  const sent = fast.pipeline.packetsIn() - from;
  fast.pipeline.stop();
  await fast.running;
  // 100 records a second: about 50 in the half second, not none (it waited for the trace time already read).
  assert.ok(sent >= 20 && sent <= 100, `${sent} records in 500 ms`);
}));

test.run();
