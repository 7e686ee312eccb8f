// Golden tests of the processing elements: a pcap in, pcaps out, compared field by field with what
// each element must produce; rewritten checksums are also judged by tshark.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { handlersOf } from '../engine/handlers.ts';
import { readPcap, writePcap, ipv4Frame, internetChecksum, type FrameSpec, type PcapRecord } from './helpers.ts';
import {
  inTempDir, runInOrder, assertRecords, recordsOf, editIpHeader, withIpOptions, withOuterTag, arpFrame, ipv6Frame, withMacs,
  checksumVerdicts, assertChecksumsGood,
} from './golden.ts';

/** src -> el -> out: the element under test between a reader and a writer. */
const chain = (element: string) => `
elements:
  src: { type: FromPcap, file: in.pcap }
  el: ${element}
  out: { type: ToPcap, file: out.pcap }
connections:
  - src -> el -> out
`;

/** An element with two outputs: el[0] -> good.pcap, el[1] -> bad.pcap. */
const split = (element: string) => `
elements:
  src: { type: FromPcap, file: in.pcap }
  el: ${element}
  good: { type: ToPcap, file: good.pcap }
  bad: { type: ToPcap, file: bad.pcap }
connections:
  - src -> el -> good
  - el[1] -> bad
`;

const output = (dir: string, name: string) => readPcap(join(dir, `${name}.pcap`)).records;

test('Counter counts packets and wire bytes and passes every record unchanged', () => inTempDir(async (dir) => {
  const frames = [
    { data: ipv4Frame(), sec: 1_700_000_000, usec: 5 },
    { data: ipv4Frame({ proto: 'udp', payload: 400 }), sec: 1_700_000_001, usec: 999_999 },
    // Captured short of the wire length: bytes count the wire.
    { data: ipv4Frame({ payload: 1000 }).subarray(0, 96), sec: 1_700_000_002, usec: 0, origlen: 1060 },
    { data: arpFrame(), sec: 1_700_000_002, usec: 1 },
  ];
  writePcap(join(dir, 'in.pcap'), frames);
  const result = await runInOrder(dir, chain('{ type: Counter }'));
  assert.is(result.elements.el.packets, 4);
  assert.is(result.elements.el.bytes, frames.reduce((sum, f) => sum + (f.origlen ?? f.data.length), 0));
  assertRecords(output(dir, 'out'), readPcap(join(dir, 'in.pcap')).records, 'records');
  assert.ok(readFileSync(join(dir, 'out.pcap')).equals(readFileSync(join(dir, 'in.pcap'))), 'out.pcap is in.pcap byte for byte');
}));

for (const start of [0, 1_700_000_000]) {
  test(`Counter measures its rates from the first packet's time to the last (trace from ${start} s)`, () => inTempDir(async (dir) => {
    writePcap(join(dir, 'in.pcap'), [0, 1, 2].map((s) => ({ data: ipv4Frame(), sec: start + s, usec: 0 })));
    const result = await runInOrder(dir, `batch: 1\n${chain('{ type: Counter }')}`);
    assert.is(result.elements.el.rate, 2, '3 packets in 2 s, rounded');
    assert.is(result.elements.el.bit_rate, (3 * 60 * 8) / 2);
  }));
}

test('Counter: a rate as capinfos gives it, whatever the batches (a batch spans many packets\' times; the clock counts milliseconds)', () => inTempDir(async (dir) => {
  // 2000 packets 1 µs apart, as traces/demo.pcap: 2000 packets in 1.999 ms. The batches' clocks made it 2 Mpps.
  writePcap(join(dir, 'in.pcap'), Array.from({ length: 2000 }, (_, i) => ({ data: ipv4Frame(), sec: 1_700_000_000, usec: i })));
  const result = await runInOrder(dir, chain('{ type: Counter }'));
  assert.is(result.elements.el.rate, Math.round(2000 / 0.001999));
  assert.is(result.elements.el.bit_rate, Math.round(2000 * 60 * 8 / 0.001999));
  assert.is(result.elements.el.first_ns, undefined, 'its times are no counters for the table');
}));

test('Counter: a reset starts its rate\'s span afresh (a shard with no packets since kept its old first time, and the rate fell)', () => inTempDir(async (dir) => {
  writePcap(join(dir, 'in.pcap'), [0, 1, 2].map((s) => ({ data: ipv4Frame(), sec: 1_700_000_000 + s, usec: 0 })));
  writeFileSync(join(dir, 'c.yaml'), `shards: 2\n${chain('{ type: Counter }')}`);
  const pipeline = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { threads: 'inline' });
  await pipeline.run();
  const view = pipeline.view('el');
  const handlers = handlersOf(pipeline.graph.byName.get('el')!.type);
  assert.is(handlers.first_ns.read!(view), 1_700_000_000_000_000_000n);
  view.reset();
  assert.equal([handlers.first_ns.read!(view), handlers.last_ns.read!(view), handlers.rate.read!(view)], [0n, 0n, 0]);
}));

test('Discard takes every packet and sends none on', () => inTempDir(async (dir) => {
  writePcap(join(dir, 'in.pcap'), Array.from({ length: 5 }, () => ipv4Frame()));
  const result = await runInOrder(dir, `
elements:
  src: { type: FromPcap, file: in.pcap }
  el: { type: Discard }
connections:
  - src -> el
`);
  assert.is(result.packets_in, 5);
  assert.is(result.elements.el.in, 5);
  assert.is(result.packets_out, 0);
}));

const TEE_OUTPUTS = 3;
const teeConfig = `
elements:
  src: { type: FromPcap, file: in.pcap }
  el: { type: Tee, outputs: ${TEE_OUTPUTS} }
${Array.from({ length: TEE_OUTPUTS }, (_, i) => `  out${i}: { type: ToPcap, file: out${i}.pcap }`).join('\n')}
connections:
${Array.from({ length: TEE_OUTPUTS }, (_, i) => `  - el[${i}] -> out${i}`).join('\n')}
  - src -> el
`;

// 3000 packets to files: more copies per I/O round than a shard's clone stash holds (2 x batch slots),
// none of them freed back into it.
for (const count of [20, 3000]) {
  test(`Tee with outputs: ${TEE_OUTPUTS} sends all ${count} packets, byte for byte, to every output`, () => inTempDir(async (dir) => {
    const frames = Array.from({ length: count }, (_, i) => ipv4Frame({ sport: 1024 + i, payload: i % 300 }));
    writePcap(join(dir, 'in.pcap'), frames);
    const result = await runInOrder(dir, teeConfig);
    assert.is(result.elements.el.no_buffer, 0, 'copies not made');
    assert.equal(result.elements.el.out, Array(TEE_OUTPUTS).fill(count));
    for (let i = 0; i < TEE_OUTPUTS; i++) assertRecords(output(dir, `out${i}`), recordsOf(frames), `out${i}`);
  }));
}

test('FlowStats counts a packet that neither full table could take once in untracked', () => inTempDir(async (dir) => {
  // Tables of one entry each: the first flow and its source take them, the other source's two packets find both full.
  const frames = [ipv4Frame({ src: '100.64.0.1' }), ipv4Frame({ src: '100.64.0.2' }), ipv4Frame({ src: '100.64.0.2' })];
  writePcap(join(dir, 'in.pcap'), frames);
  const result = await runInOrder(dir, chain('{ type: FlowStats, capacity: 1, sources_capacity: 1 }'));
  assert.is(result.elements.el.total_packets, 3);
  assert.is(result.elements.el.untracked, 2, 'packets, not table misses');
  assertRecords(output(dir, 'out'), recordsOf(frames), 'out');
}));

interface CheckCase {
  name: string;
  frame: Buffer;
  /** The counter a bad frame is counted in; none for a good one. */
  reason?: string;
}

const REASONS = ['not_ipv4', 'truncated', 'bad_version', 'bad_header_length', 'bad_total_length', 'bad_checksum'];
const tcp = ipv4Frame(); // 14 + 20 + 20 + 6 bytes
const flipped = (frame: Buffer, at: number) => { const f = Buffer.from(frame); f[at] ^= 0x01; return f; };
const CHECK_CASES: CheckCase[] = [
  { name: 'TCP', frame: tcp },
  { name: 'UDP', frame: ipv4Frame({ proto: 'udp' }) },
  { name: 'ICMP', frame: ipv4Frame({ proto: 'icmp' }) },
  { name: 'VLAN-tagged', frame: ipv4Frame({ vlan: 7 }) },
  { name: 'QinQ-tagged', frame: withOuterTag(ipv4Frame({ vlan: 7 })) },
  // The tag type QinQ had before 802.1ad, which tcpdump's vlan takes (it was not_ipv4 here).
  { name: 'QinQ-tagged with 0x9100', frame: withOuterTag(ipv4Frame({ vlan: 7 }), 100, 0x9100) },
  { name: 'IP options', frame: withIpOptions(tcp, Buffer.from([1, 1, 1, 0])) },
  { name: 'Ethernet padding after the datagram', frame: Buffer.concat([ipv4Frame({ payload: 0 }), Buffer.alloc(6)]) },
  { name: 'ARP', frame: arpFrame(), reason: 'not_ipv4' },
  { name: 'IPv6', frame: ipv6Frame(), reason: 'not_ipv4' },
  { name: 'shorter than an Ethernet header', frame: tcp.subarray(0, 13), reason: 'not_ipv4' },
  { name: 'VLAN tag cut short', frame: ipv4Frame({ vlan: 7 }).subarray(0, 17), reason: 'not_ipv4' },
  { name: 'three VLAN tags', frame: withOuterTag(withOuterTag(ipv4Frame({ vlan: 7 }))), reason: 'not_ipv4' },
  { name: 'IP header cut short', frame: tcp.subarray(0, 33), reason: 'truncated' },
  { name: 'version 6', frame: editIpHeader(tcp, (ip) => { ip[0] = 0x65; }), reason: 'bad_version' },
  { name: 'IHL 4', frame: editIpHeader(tcp, (ip) => { ip[0] = 0x44; }), reason: 'bad_header_length' },
  { name: 'IHL beyond the frame', frame: editIpHeader(tcp, (ip) => { ip[0] = 0x4f; }), reason: 'bad_header_length' },
  { name: 'total length below IHL', frame: editIpHeader(tcp, (ip) => ip.writeUInt16BE(19, 2)), reason: 'bad_total_length' },
  { name: 'total length beyond the frame', frame: editIpHeader(tcp, (ip) => ip.writeUInt16BE(tcp.length - 13, 2)), reason: 'bad_total_length' },
  { name: 'bad checksum', frame: flipped(tcp, 24), reason: 'bad_checksum' },
  { name: 'VLAN-tagged, bad checksum', frame: flipped(ipv4Frame({ vlan: 7 }), 28), reason: 'bad_checksum' },
];

const CHECK_RUNS: { params: string; accepts: (c: CheckCase) => boolean }[] = [
  { params: '', accepts: (c) => !c.reason },
  { params: 'verify_checksum: false', accepts: (c) => !c.reason || c.reason === 'bad_checksum' },
  // Frames shorter than an Ethernet header are bad even then.
  { params: 'non_ipv4: pass', accepts: (c) => !c.reason || (c.reason === 'not_ipv4' && c.frame.length >= 14) },
];

for (const run of CHECK_RUNS) {
  test(`CheckIPHeader {${run.params}} sends good headers to 0, bad ones to 1, counted by reason`, () => inTempDir(async (dir) => {
    const frames = CHECK_CASES.map((c) => c.frame);
    writePcap(join(dir, 'in.pcap'), frames);
    const result = await runInOrder(dir, split(`{ type: CheckIPHeader, ${run.params} }`));
    const records = recordsOf(frames);
    const pick = (accepted: boolean) => records.filter((_, i) => run.accepts(CHECK_CASES[i]) === accepted);
    assertRecords(output(dir, 'good'), pick(true), 'output 0');
    assertRecords(output(dir, 'bad'), pick(false), 'output 1');
    const counted = Object.fromEntries(REASONS.map((r) => [r, result.elements.el[r]]));
    const expected = Object.fromEntries(REASONS.map((r) => [r, CHECK_CASES.filter((c) => c.reason === r && !run.accepts(c)).length]));
    assert.equal(counted, expected);
  }));
}

interface RewriteFrame {
  name: string;
  spec: FrameSpec;
  /** What ipv4Frame cannot make: applied to the input frame and the expected one alike. */
  wrap?: (frame: Buffer) => Buffer;
}

const REWRITE_FRAMES: RewriteFrame[] = [
  { name: 'TCP with ECN bits', spec: { tos: 0x03 } },
  { name: 'UDP', spec: { proto: 'udp', payload: 33 } },
  { name: 'UDP without checksum', spec: { proto: 'udp', udpChecksum: false } },
  { name: 'ICMP', spec: { proto: 'icmp' } },
  { name: 'first fragment', spec: { moreFragments: true, payload: 64 } },
  { name: 'non-first fragment', spec: { fragOffset: 185 } },
  { name: 'VLAN-tagged TCP', spec: { vlan: 42 } },
  { name: 'VLAN-tagged UDP', spec: { vlan: 42, proto: 'udp' } },
  { name: 'QinQ-tagged TCP', spec: { vlan: 42 }, wrap: (f) => withOuterTag(f) },
  { name: 'QinQ-tagged (0x9100) TCP', spec: { vlan: 42 }, wrap: (f) => withOuterTag(f, 100, 0x9100) },
  { name: 'TCP with IP options', spec: { sport: 443 }, wrap: (f) => withIpOptions(f, Buffer.from([1, 1, 1, 0])) },
  // Bytes after the IP datagram (Ethernet padding) are never rewritten.
  { name: 'UDP with an Ethernet trailer', spec: { proto: 'udp', payload: 0 }, wrap: (f) => Buffer.concat([f, Buffer.alloc(10, 0xee)]) },
  { name: 'TTL 1', spec: { ttl: 1 } },
  { name: 'TTL 0', spec: { proto: 'udp', ttl: 0 } },
];

const build = (f: RewriteFrame, spec = f.spec) => (f.wrap ? f.wrap(ipv4Frame(spec)) : ipv4Frame(spec));

interface Rewrite {
  params: string;
  /** The frame spec the rewritten frame equals (ipv4Frame computes its checksums from scratch). */
  change?: (s: FrameSpec) => FrameSpec;
  macs?: { dst?: string; src?: string };
}

// Ports live only in first fragments; ICMP has none (ipv4Frame ignores them there).
const REWRITES: Rewrite[] = [
  { params: 'eth_dst: 0a:0b:0c:0d:0e:0f', macs: { dst: '0a0b0c0d0e0f' } },
  { params: 'eth_src: 02:aa:bb:cc:dd:ee', macs: { src: '02aabbccddee' } },
  { params: 'ip_src: 203.0.113.7', change: (s) => ({ ...s, src: '203.0.113.7' }) },
  { params: 'ip_dst: 192.0.2.200', change: (s) => ({ ...s, dst: '192.0.2.200' }) },
  { params: 'src_port: 5353', change: (s) => (s.fragOffset ? s : { ...s, sport: 5353 }) },
  { params: 'dst_port: 65535', change: (s) => (s.fragOffset ? s : { ...s, dport: 65535 }) },
  { params: 'dscp: 46', change: (s) => ({ ...s, tos: (46 << 2) | ((s.tos ?? 0) & 3) }) },
  { params: 'dec_ttl: true', change: (s) => ({ ...s, ttl: (s.ttl ?? 64) - 1 }) },
];
const ALL: Rewrite = {
  params: REWRITES.map((r) => r.params).join(', '),
  change: (s) => REWRITES.reduce((acc, r) => (r.change ? r.change(acc) : acc), s),
  macs: Object.assign({}, ...REWRITES.map((r) => r.macs)),
};

for (const rw of [...REWRITES, ALL]) {
  test(`Rewrite {${rw.params}} gives the expected bytes, and checksums tshark finds good`, () => inTempDir(async (dir) => {
    writePcap(join(dir, 'in.pcap'), REWRITE_FRAMES.map((f) => build(f)));
    const result = await runInOrder(dir, split(`{ type: Rewrite, ${rw.params} }`));
    const decTtl = rw.params.includes('dec_ttl');
    const expires = (f: RewriteFrame) => decTtl && (f.spec.ttl ?? 64) <= 1;
    const records = recordsOf(REWRITE_FRAMES.map((f) => (expires(f) ? build(f) : withMacs(build(f, rw.change?.(f.spec)), rw.macs ?? {}))));
    const pick = (expired: boolean) => records.filter((_, i) => expires(REWRITE_FRAMES[i]) === expired);
    assertRecords(output(dir, 'good'), pick(false), 'rewritten');
    assertRecords(output(dir, 'bad'), pick(true), 'expired, unchanged');
    assert.is(result.elements.el.expired, pick(true).length);
    assert.is(result.elements.el.rewritten, pick(false).length);
    assert.is(result.elements.el.not_ipv4, 0);
    const before = checksumVerdicts(join(dir, 'in.pcap')).filter((_, i) => !expires(REWRITE_FRAMES[i]));
    assert.equal(assertChecksumsGood(join(dir, 'good.pcap'), pick(false).length), before, 'checked by tshark as on the input');
  }));
}

test('Rewrite sends a UDP checksum that comes out as 0 as 0xffff', () => inTempDir(async (dir) => {
  const udp = (sport: number) => ipv4Frame({ proto: 'udp', sport });
  // The source port whose checksum sums to 0 (ipv4Frame then sends 0xffff, as RFC 768 says).
  const port = Array.from({ length: 65536 }, (_, p) => p).find((p) => udp(p).readUInt16BE(40) === 0xffff)!;
  writePcap(join(dir, 'in.pcap'), [udp(port ^ 1)]); // any other port
  await runInOrder(dir, split(`{ type: Rewrite, src_port: ${port} }`));
  assertRecords(output(dir, 'good'), recordsOf([udp(port)]), 'rewritten');
}));

test('Rewrite drops and counts a TCP or UDP packet whose header is cut short when addresses change (its checksum could not follow)', () => inTempDir(async (dir) => {
  const whole = ipv4Frame({ proto: 'tcp' });
  const badOffset = ipv4Frame({ proto: 'tcp' });
  badOffset[14 + 20 + 12] = 3 << 4; // data offset 12 bytes: shorter than a TCP header
  const cutByLength = ipv4Frame({ proto: 'udp' });
  cutByLength.writeUInt16BE(24, 16); // IP length 24: 4 bytes of UDP header
  cutByLength.writeUInt16BE(0, 24);
  cutByLength.writeUInt16BE(internetChecksum(cutByLength.subarray(14, 34)), 24);
  const laterFragment = ipv4Frame({ proto: 'tcp', fragOffset: 2 });
  writePcap(join(dir, 'in.pcap'), [whole, badOffset, cutByLength, laterFragment]);
  const result = await runInOrder(dir, split('{ type: Rewrite, ip_src: 203.0.113.9 }'));
  const rewrite = result.elements.el as Record<string, number>;
  assert.is(rewrite.malformed, 2);
  assert.is(rewrite.rewritten, 2, 'the whole packet and the later fragment (which carries no checksum to follow)');
  assert.is(output(dir, 'good').length, 2);
}));

const generator = (params: string) => `
elements:
  gen: { type: Generator, ${params} }
  out: { type: ToPcap, file: out.pcap, resolution: ns }
connections:
  - gen -> out
`;

test('Generator: the same parameters give the same bytes; another seed other bytes', () => inTempDir(async (dir) => {
  const bytes = async (seed: number) => {
    await runInOrder(dir, generator(`count: 300, flows: 20, seed: ${seed}`));
    return readFileSync(join(dir, 'out.pcap'));
  };
  const first = await bytes(7);
  assert.ok(first.equals(await bytes(7)), 'same seed, same file');
  assert.not.ok(first.equals(await bytes(8)), 'other seed, other file');
  // Seeds that differ in the bits a constant or-ed onto them erased (1, 3, 9 and 11 made one stream).
  const files = new Set<string>();
  for (const seed of [1, 3, 9, 11]) files.add((await bytes(seed)).toString('hex'));
  assert.is(files.size, 4, 'four seeds, four streams');
}));

test('Generator: flows between two hosts are as many distinct 5-tuples as asked (drawn at random, 3 of 2000 met)', () => inTempDir(async (dir) => {
  await runInOrder(dir, generator('count: 20000, flows: 2000, src_net: 100.64.0.1/32, dst_net: 198.18.0.1/32, protocol: udp'));
  const records = output(dir, 'out');
  assert.is(new Set(records.map((r) => fiveTuple(r.data))).size, 2000);
}));

const EPOCH_NS = 1_767_225_600n * 1_000_000_000n;
const timestampNs = (r: PcapRecord) => BigInt(r.sec) * 1_000_000_000n + BigInt(r.frac);
const fiveTuple = (f: Buffer) => f.subarray(23, 24).toString('hex') + f.subarray(26, 38).toString('hex');

for (const g of [
  { count: 500, flows: 16, frame_size: 64, protocol: 'tcp', rate: 1_000_000 },
  { count: 400, flows: 25, frame_size: 60, protocol: 'udp', rate: 3 },
  { count: 200, flows: 8, frame_size: 1514, protocol: 'mixed', rate: 1000 },
  { count: 300, flows: 4, frame_size: 64, protocol: 'udp', rate: 300_000_000 },
]) {
  test(`Generator ${JSON.stringify(g)}: count, flows, frame size, protocol, timestamps, checksums`, () => inTempDir(async (dir) => {
    const result = await runInOrder(dir, generator(Object.entries(g).map(([k, v]) => `${k}: ${v}`).join(', ')));
    const records = output(dir, 'out');
    assert.is(records.length, g.count);
    assert.is(result.elements.gen.packets, g.count);
    assert.ok(records.every((r) => r.caplen === g.frame_size && r.origlen === g.frame_size), 'frame sizes');
    assert.ok(records.every((r) => r.data.readUInt16BE(16) === g.frame_size - 14), 'IP total lengths');
    assert.is(new Set(records.map((r) => fiveTuple(r.data))).size, g.flows, 'distinct 5-tuples');
    const protocols = [...new Set(records.map((r) => r.data[23]))].sort((a, b) => a - b);
    assert.equal(protocols, { tcp: [6], udp: [17], mixed: [6, 17] }[g.protocol]);
    // Packet i at i/rate seconds, rounded down to the ns: not i whole intervals of 1e9/rate ns rounded.
    assert.equal(records.map(timestampNs), records.map((_, i) => EPOCH_NS + BigInt(i) * 1_000_000_000n / BigInt(g.rate)), 'timestamps');
    const verdicts = assertChecksumsGood(join(dir, 'out.pcap'), g.count);
    assert.ok(verdicts.every((v) => v.tcp === '1' || v.udp === '1'), 'transport checksums checked');
  }));
}

test.run();
