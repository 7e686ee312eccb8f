// Malformed frames never crash the pipeline: CheckIPHeader counts and drops them, Rewrite passes what
// it cannot parse (but drops TCP and UDP whose checksum it cannot follow), and neither touches a byte outside a frame;
// nor do the router elements (ICMPError, ARPResponder, ARPQuerier) read one.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { ROOT, readPcap, writePcap, ipv4Frame, internetChecksum } from './helpers.ts';
import { inTempDir, runInOrder, assertRecords, recordsOf, editIpHeader, arpFrame, ipv6Frame, withMacs, checksumVerdicts } from './golden.ts';

/** mulberry32: a small seeded generator, so that the garbage is the same on every run. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Random bytes; every other frame claims IPv4 (ethertype 0x0800, version 4) so that parsing goes deeper. */
function garbage(count: number, seed: number): Buffer[] {
  const next = random(seed);
  return Array.from({ length: count }, (_, i) => {
    const frame = Buffer.from(Array.from({ length: Math.floor(next() * 150) }, () => Math.floor(next() * 256)));
    if (i % 2 && frame.length >= 15) {
      frame.writeUInt16BE(0x0800, 12);
      frame[14] = 0x40 | (frame[14] & 15);
    }
    return frame;
  });
}

const tcp = ipv4Frame({ payload: 20 });
const vlanUdp = ipv4Frame({ vlan: 9, proto: 'udp', payload: 10 });
const cuts = (frame: Buffer) => Array.from({ length: frame.length + 1 }, (_, n) => frame.subarray(0, n)); // from zero-length on
const FRAMES: Buffer[] = [
  ...cuts(tcp),
  ...cuts(vlanUdp),
  Buffer.alloc(0),
  ipv4Frame({ payload: 9000 - 54 }), // jumbo: cut to the slot
  ...[0, 1, 2, 3, 4].map((ihl) => editIpHeader(tcp, (ip) => { ip[0] = 0x40 | ihl; })),
  editIpHeader(tcp, (ip) => ip.writeUInt16BE(0xffff, 2)), // total length beyond the frame
  ...[20, 28, 39].map((total) => editIpHeader(tcp, (ip) => ip.writeUInt16BE(total, 2))), // transport header cut by total length
  (() => { const f = Buffer.from(tcp); f[14 + 20 + 12] = 0xf0; return f; })(), // TCP data offset beyond the segment
  arpFrame(),
  ipv6Frame(),
  ...garbage(300, 42),
];

/**
 * Offset of the IPv4 header Rewrite processes (after up to two VLAN tags), or -1: the rule of assembly/headers.ts
 * IPv4.capturedHeader, for a frame of `wireLength` bytes on the wire.
 */
function ipv4HeaderAt(f: Buffer, wireLength = f.length): number {
  if (f.length < 14) return -1;
  let at = 12;
  let type = f.readUInt16BE(at);
  for (let tags = 0; tags < 2 && (type === 0x8100 || type === 0x88a8); tags++) {
    at += 4;
    if (at + 2 > f.length) return -1;
    type = f.readUInt16BE(at);
  }
  const ip = at + 2;
  if (type !== 0x0800 || f.length < ip + 20 || f[ip] >> 4 !== 4) return -1;
  const hl = (f[ip] & 15) * 4;
  const total = f.readUInt16BE(ip + 2);
  return hl >= 20 && hl <= f.length - ip && total >= hl && total <= Math.max(f.length, wireLength) - ip ? ip : -1;
}

/** Whether Rewrite, changing addresses or ports, drops the frame as malformed: TCP or UDP whose header is cut short (Transport.header). */
function transportCut(f: Buffer, wireLength = f.length): boolean {
  const ip = ipv4HeaderAt(f, wireLength);
  const proto = ip < 0 ? 0 : f[ip + 9];
  if ((proto !== 6 && proto !== 17) || (f.readUInt16BE(ip + 6) & 0x1fff) !== 0) return false;
  const hl = (f[ip] & 15) * 4;
  const onWire = f.readUInt16BE(ip + 2) - hl;
  const room = Math.min(onWire, f.length - ip - hl);
  if (proto === 17 || room < 20) return room < (proto === 17 ? 8 : 20);
  const offset = (f[ip + hl + 12] >> 4) * 4;
  return offset < 20 || offset > onWire;
}

const SLOT_ROOM = 2048 - 128; // default slot size less metadata and headroom
const captured = (f: Buffer) => f.subarray(0, SLOT_ROOM);
const passesCheck = (f: Buffer) => {
  const ip = ipv4HeaderAt(captured(f), f.length);
  return ip >= 0 && internetChecksum(f.subarray(ip, ip + (f[ip] & 15) * 4)) === 0;
};

const REWRITE = 'ip_src: 203.0.113.9, src_port: 4242, dst_port: 8080, dec_ttl: true';

test('malformed frames through src -> check -> rw -> out are counted and dropped; what comes out is valid', () => inTempDir(async (dir) => {
  writePcap(join(dir, 'in.pcap'), FRAMES);
  const result = await runInOrder(dir, `
elements:
  src: { type: FromPcap, file: in.pcap }
  check: { type: CheckIPHeader }
  rw: { type: Rewrite, ${REWRITE} }
  out: { type: ToPcap, file: out.pcap }
  drop: { type: Discard }
connections:
  - src -> check -> rw -> out
  - check[1] -> drop
`);
  const { src, check, rw, drop } = result.elements;
  assert.is(result.packets_in, FRAMES.length);
  assert.is(src.truncated, 1, 'the jumbo frame');
  const good = FRAMES.filter(passesCheck);
  assert.equal(check.out, [good.length, FRAMES.length - good.length]);
  const reasons = ['not_ipv4', 'truncated', 'bad_version', 'bad_header_length', 'bad_total_length', 'bad_checksum'];
  assert.is(reasons.reduce((sum, r) => sum + (check[r] as number), 0), check.out[1], 'bad counters add up to output 1');
  assert.is(drop.in, check.out[1]);
  assert.is(check.cut, 1, 'the jumbo frame, cut to the slot, passes with a whole header');
  const live = good.filter((f) => f[ipv4HeaderAt(f) + 8] > 1); // TTL 0 and 1 expire
  const kept = live.filter((f) => !transportCut(f));
  assert.is(rw.not_ipv4, 0);
  assert.is(rw.expired, good.length - live.length);
  assert.is(rw.malformed, live.length - kept.length);
  assert.ok((rw.malformed as number) >= 4, 'the transport headers cut by the total length or a data offset beyond the segment');
  assert.is(rw.rewritten, kept.length);
  assert.is(rw.unconnected_drops, rw.expired, 'expired packets dropped at the open output');
  assert.is(result.packets_out, kept.length);
  assert.is(result.packets_in, result.packets_out + drop.in + rw.unconnected_drops + (rw.malformed as number), 'every packet accounted for');
  // CheckIPHeader vouches for IP headers only: a transport checksum is as good as it came in.
  const verdicts = checksumVerdicts(join(dir, 'out.pcap'));
  assert.ok(verdicts.every((v) => v.ip === '1'), 'IP checksums good');
  writePcap(join(dir, 'kept.pcap'), kept.map((f) => ({ data: captured(f), origlen: f.length })));
  assert.equal(verdicts, checksumVerdicts(join(dir, 'kept.pcap')), 'transport checksums good where they were');
  assert.ok(verdicts.filter((v) => v.tcp === '1' || v.udp === '1').length >= 2, 'the whole TCP and UDP frames checked good');
}));

test('Rewrite alone touches no byte outside a frame, reads none, and passes what it cannot parse', () => inTempDir(async (dir) => {
  writePcap(join(dir, 'in.pcap'), FRAMES);
  const run = async (pattern: number) => {
    const result = await runInOrder(dir, `
elements:
  src: { type: FromPcap, file: in.pcap }
  fill: { type: SlotGuard, mode: fill, pattern: ${pattern} }
  rw: { type: Rewrite, eth_dst: 0a:0b:0c:0d:0e:0f, ${REWRITE} }
  guard: { type: SlotGuard, mode: check, pattern: ${pattern} }
  out: { type: ToPcap, file: out.pcap }
connections:
  - src -> fill -> rw -> guard -> out
  - rw[1] -> guard
`, { elementDirs: [join(ROOT, 'test/fixtures/slot-guard')] });
    assert.is(result.elements.guard.clobbered, 0, `bytes outside frames changed (pattern ${pattern})`);
    assert.is(result.elements.rw.malformed, FRAMES.filter((f) => transportCut(captured(f), f.length)).length);
    assert.is(result.packets_out, FRAMES.length - (result.elements.rw.malformed as number));
    assert.is(result.elements.rw.not_ipv4, FRAMES.filter((f) => ipv4HeaderAt(captured(f), f.length) < 0).length);
    return readFileSync(join(dir, 'out.pcap'));
  };
  const output = await run(0x00);
  assert.ok(output.equals(await run(0xff)), 'the output does not depend on the bytes outside the frames');

  const records = readPcap(join(dir, 'out.pcap')).records;
  const inputs = readPcap(join(dir, 'in.pcap')).records.map((r) => ({ ...r, caplen: captured(r.data).length, data: captured(r.data) }))
    .filter((r) => !transportCut(r.data, r.origlen));
  const unparsed = (i: number) => ipv4HeaderAt(inputs[i].data, inputs[i].origlen) < 0;
  const expected = inputs.map((r) => ({ ...r, data: withMacs(r.data, { dst: '0a0b0c0d0e0f' }) }));
  assertRecords(records.filter((_, i) => unparsed(i)), expected.filter((_, i) => unparsed(i)), 'frames without an IPv4 header: Ethernet rewrite only');
  assert.equal(records.map((r) => r.caplen), inputs.map((r) => r.caplen), 'lengths');
  writePcap(join(dir, 'captured.pcap'), FRAMES.filter((f) => !transportCut(captured(f), f.length)).map((f) => ({ data: captured(f), origlen: f.length })));
  assert.equal(checksumVerdicts(join(dir, 'out.pcap')), checksumVerdicts(join(dir, 'captured.pcap')), 'checksums good where they were, bad where they were');
}));

/** ARP frames cut at every length, and garbage that claims to be ARP, for the ARP elements. */
const ARP_FRAMES: Buffer[] = [
  ...cuts(arpFrame()),
  ...garbage(100, 7).map((f) => { const copy = Buffer.from(f); if (copy.length >= 14) copy.writeUInt16BE(0x0806, 12); return copy; }),
];

/** The malformed frames and the ARP ones through `elements` after a SlotGuard that fills every slot past its frame with `pattern`. */
function runFilled(dir: string, pattern: number, elements: string, connections: string) {
  writePcap(join(dir, 'in.pcap'), [...FRAMES, ...ARP_FRAMES]);
  return runInOrder(dir, `
elements:
  src: { type: FromPcap, file: in.pcap }
  fill: { type: SlotGuard, mode: fill, pattern: ${pattern} }
${elements}
  out: { type: ToPcap, file: out.pcap }
connections:
  - src -> fill
${connections}
`, { elementDirs: [join(ROOT, 'test/fixtures/slot-guard')] });
}

test('ICMPError reads no byte outside a frame: its errors do not depend on what lies past them, and every frame is accounted for', () => inTempDir(async (dir) => {
  const run = async (pattern: number) => {
    const result = await runFilled(dir, pattern, '  err: { type: ICMPError, src: 100.64.0.1, rate: 0 }', '  - fill -> err -> out\n  - err[1] -> out');
    const e = result.elements.err as Record<string, number>;
    assert.is(e.sent + e.not_allowed + e.not_ipv4 + e.no_room + e.limited, FRAMES.length + ARP_FRAMES.length);
    assert.ok(e.sent > 0, 'some are answered');
    return readFileSync(join(dir, 'out.pcap'));
  };
  assert.ok((await run(0x00)).equals(await run(0xff)), 'the output does not depend on the bytes outside the frames');
  const errors = checksumVerdicts(join(dir, 'out.pcap')).filter((v) => v.icmp.startsWith('1'));
  assert.ok(errors.length > 0 && errors.every((v) => v.ip.startsWith('1')), 'each error has good IP and ICMP checksums of its own');
}));

test('ARPResponder and ARPQuerier touch no byte outside a frame, read none, and count what they cannot parse', () => inTempDir(async (dir) => {
  const run = async (pattern: number) => {
    const result = await runFilled(dir, pattern, `
  responder: { type: ARPResponder, addresses: [0.0.0.0/0], mac: 02:00:00:00:00:01 }
  kind: { type: Classifier, patterns: ['arp', '-'] }
  querier: { type: ARPQuerier, address: 100.64.0.1, mac: 02:00:00:00:00:01 }
  # The querier's own ARP requests are packets of its own (no fill to check): only the packets it passed are guarded.
  made: { type: Classifier, patterns: ['arp', '-'] }
  guard: { type: SlotGuard, mode: check, pattern: ${pattern} }`, `
  - fill -> responder -> guard -> out
  - responder[1] -> kind
  - kind[0] -> [1]querier
  - kind[1] -> [0]querier
  - querier -> made
  - made[0] -> out
  - made[1] -> guard`);
    assert.is(result.elements.guard.clobbered, 0, `bytes outside frames changed (pattern ${pattern})`);
    const r = result.elements.responder as Record<string, number>;
    assert.is(r.answered + r.other + r.malformed, FRAMES.length + ARP_FRAMES.length);
    assert.ok(r.malformed > 0 && (result.elements.querier as Record<string, number>).not_arp > 0, 'short ARP frames counted');
    return readFileSync(join(dir, 'out.pcap'));
  };
  assert.ok((await run(0x00)).equals(await run(0xff)), 'the output does not depend on the bytes outside the frames');
}));

test('the garbage is the same on every run', () => {
  assert.equal(recordsOf(garbage(5, 42)), recordsOf(garbage(5, 42)));
});

test.run();
