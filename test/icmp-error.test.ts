// ICMPError: a router's answer to the packets it cannot forward. Each expected error is built here from the RFCs
// (RFC 792, RFC 1812 §4.3.2), byte for byte; tshark judges the checksums and reads the quoted header back.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { readPcap, writePcap, ipv4Frame, internetChecksum, tshark, cli, tempDir, removeDir, type FrameSpec } from './helpers.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { inTempDir, runInOrder, assertRecords, recordsOf, withMacs, withOuterTag, withIpOptions, arpFrame, checksumVerdicts } from './golden.ts';

const ROUTER = '100.64.0.1';

/** Packets through a Rewrite that decrements the TTL; those that expire go to the ICMPError under test. */
const router = (params = '') => `
elements:
  src: { type: FromPcap, file: in.pcap }
  ttl: { type: Rewrite, dec_ttl: true }
  err: { type: ICMPError, src: ${ROUTER}${params ? `, ${params}` : ''} }
  forwarded: { type: ToPcap, file: forwarded.pcap }
  errors: { type: ToPcap, file: errors.pcap }
  unanswered: { type: ToPcap, file: unanswered.pcap }
connections:
  - src -> ttl -> forwarded
  - ttl[1] -> err -> errors
  - err[1] -> unanswered
`;

const frame = (spec: FrameSpec) => ipv4Frame({ src: '100.64.0.2', dst: '198.18.0.2', ttl: 1, ...spec });

/** The error RFC 792 and RFC 1812 §4.3.2 ask for about `about` (its IPv4 header at `l3`), back to its sender from `from`. */
function expectedError(about: Buffer, from: string, type: number, code: number, rest = 0, l3 = 14): Buffer {
  const ip = about.subarray(l3);
  const quoted = ip.subarray(0, Math.min(ip.readUInt16BE(2), ip.length, 576 - 28));
  const icmp = Buffer.concat([Buffer.alloc(8), quoted]);
  icmp[0] = type;
  icmp[1] = code;
  icmp.writeUInt32BE(rest, 4);
  icmp.writeUInt16BE(internetChecksum(icmp), 2);
  const header = Buffer.alloc(20);
  header[0] = 0x45;
  header[1] = 0xc0; // precedence internetwork control (RFC 1812 §4.3.2.5)
  header.writeUInt16BE(20 + icmp.length, 2);
  header.writeUInt16BE(0x4000, 6); // DF, ID 0: an atomic datagram (RFC 6864)
  header[8] = 64;
  header[9] = 1;
  Buffer.from(from.split('.').map(Number)).copy(header, 12);
  ip.copy(header, 16, 12, 16);
  header.writeUInt16BE(internetChecksum(header), 10);
  const ethernet = Buffer.concat([about.subarray(6, 12), about.subarray(0, 6), about.subarray(12, l3)]);
  return Buffer.concat([ethernet, header, icmp]);
}

/** tshark finds `count` errors whose IP checksum and ICMP checksum are good, and so is that of the header each quotes. */
function assertQuotesGood(file: string, count: number): void {
  const verdicts = checksumVerdicts(file);
  assert.is(verdicts.length, count);
  verdicts.forEach((v, i) => {
    assert.is(v.ip, '1,1', `error ${i + 1}: IP checksums, its own and the quoted one's`);
    // The quoted datagram's own ICMP checksum (of an echo request) tshark may leave unverified: never bad.
    assert.is(v.icmp.split(',')[0], '1', `error ${i + 1}: ICMP checksum`);
    assert.ok(![v.tcp, v.udp, v.icmp].some((x) => x.split(',').includes('0')), `error ${i + 1}: ${JSON.stringify(v)}`);
  });
}

const records = (dir: string, name: string) => readPcap(join(dir, `${name}.pcap`)).records;

test('ICMPError answers expiring packets with time exceeded from the router, quoting each as RFC 1812 asks; the others are forwarded', () => inTempDir(async (dir) => {
  const udp = frame({ proto: 'udp', payload: 30 });
  const tcp = frame({ proto: 'tcp', sport: 40001, dport: 443 });
  const echo = frame({ proto: 'icmp' });                                    // a query: answered
  const big = frame({ proto: 'udp', payload: 1400 });                        // quoted up to 548 bytes: the error is 576
  const tagged = frame({ proto: 'udp', vlan: 7 });                           // the tag stays on the answer
  const passing = frame({ proto: 'udp', ttl: 9 });
  const doublyTagged = withOuterTag(frame({ proto: 'udp', vlan: 7 }), 100);   // QinQ: both tags stay
  const withOptions = withIpOptions(frame({ proto: 'udp', payload: 1400 }), Buffer.from([0x94, 0x04, 0, 0, 1, 1, 1, 0])); // quoted with its options
  writePcap(join(dir, 'in.pcap'), [udp, tcp, echo, passing, big, tagged, doublyTagged, withOptions]);
  const result = await runInOrder(dir, router());
  const answered = [udp, tcp, echo, big, tagged, doublyTagged, withOptions];
  const l3 = (f: Buffer) => (f === tagged ? 18 : f === doublyTagged ? 22 : 14);
  assertRecords(records(dir, 'errors'), recordsOf(answered.map((f) => expectedError(f, ROUTER, 11, 0, 0, l3(f))))
    .map((r, i) => ({ ...r, frac: [0, 1, 2, 4, 5, 6, 7][i] })), 'errors');
  assert.is(records(dir, 'forwarded').length, 1);
  assert.is(records(dir, 'unanswered').length, 0);
  assert.equal([records(dir, 'errors')[3].data.readUInt16BE(16), records(dir, 'errors')[6].data.readUInt16BE(16)], [576, 576], 'an error about a large datagram is 576 bytes');
  assertQuotesGood(join(dir, 'errors.pcap'), 7);
  // tshark reads each as time exceeded from the router, about a datagram from the client that sent it.
  const rows = tshark(join(dir, 'errors.pcap'), ['icmp.type', 'icmp.code', 'ip.src', 'ip.dst']);
  rows.forEach(([type, code, src, dst]) => {
    assert.equal([type.split(',')[0], code.split(',')[0]], ['11', '0'], 'time exceeded in transit (and the quoted echo request\'s own type and code after)');
    assert.equal(src.split(','), [ROUTER, '100.64.0.2'], 'from the router, about the client\'s datagram');
    assert.equal(dst.split(','), ['100.64.0.2', '198.18.0.2']);
  });
  assert.equal([result.elements.err.sent, result.elements.err.not_allowed, result.elements.err.limited], [7, 0, 0]);
}));

test('ICMPError sends no error about an ICMP error, a later fragment, a bad header, a broadcast or multicast, no single host, or (time exceeded) a packet for the router itself; they leave unchanged on output 1', () => inTempDir(async (dir) => {
  const icmpError = Buffer.from(frame({ proto: 'icmp' }));
  icmpError[34] = 3; // destination unreachable: an error itself
  const cases = [
    frame({ proto: 'udp', fragOffset: 100 }),                                // a later fragment
    frame({ proto: 'udp', dst: '224.0.0.5' }),                              // IP multicast
    frame({ proto: 'udp', dst: '255.255.255.255' }),                        // IP broadcast
    withMacs(frame({ proto: 'udp' }), { dst: 'ffffffffffff' }),             // Ethernet broadcast
    frame({ proto: 'udp', src: '0.0.0.0' }),                                // no host's source
    frame({ proto: 'udp', src: '127.0.0.1' }),
    frame({ proto: 'udp', src: '240.0.0.1' }),
    editChecksumless(icmpError),
    badHeaderChecksum(frame({ proto: 'udp' })),                             // fails the header checks (RFC 1812 §4.3.2.7)
    frame({ proto: 'udp', dst: ROUTER }),                                   // for the router itself: it did not expire (RFC 1812 §4.2.2.9)
    frame({ proto: 'udp', fragOffset: 0, moreFragments: true }),             // a first fragment: answered
  ];
  writePcap(join(dir, 'in.pcap'), [...cases, arpFrame()]);
  const result = await runInOrder(dir, router());
  assert.is(records(dir, 'errors').length, 1, 'the first fragment only');
  assertRecords(records(dir, 'unanswered'), recordsOf(cases.slice(0, -1)), 'unchanged');
  assert.equal([result.elements.err.sent, result.elements.err.not_allowed, result.elements.err.not_ipv4], [1, 10, 0]);
  assert.is(result.elements.ttl.not_ipv4, 1, 'the ARP frame has no TTL: forwarded');
}));

/** `f` with its IPv4 header checksum off by one. */
function badHeaderChecksum(f: Buffer): Buffer {
  const copy = Buffer.from(f);
  copy.writeUInt16BE(copy.readUInt16BE(24) ^ 1, 24);
  return copy;
}

/** The ICMP checksum of a frame whose ICMP type was edited, made right again (the frame's other checksums stay). */
function editChecksumless(f: Buffer): Buffer {
  const icmp = f.subarray(34);
  icmp.writeUInt16BE(0, 2);
  icmp.writeUInt16BE(internetChecksum(icmp), 2);
  return f;
}

test('ICMPError sends at most `rate` errors a second per shard, in bursts of `burst`, on the pipeline clock', () => inTempDir(async (dir) => {
  const flood = Array.from({ length: 200 }, (_, i) => ({ data: frame({ proto: 'udp', sport: 1000 + i }), sec: 10, usec: i }));
  writePcap(join(dir, 'in.pcap'), [...flood, { data: frame({ proto: 'udp' }), sec: 12, usec: 0 }]);
  const result = await runInOrder(dir, router('rate: 1000, burst: 50'));
  assert.equal([result.elements.err.sent, result.elements.err.limited], [51, 150], '50 at once within a millisecond, one more 2 s later');
  assert.is(records(dir, 'unanswered').length, 150);
  writePcap(join(dir, 'in.pcap'), flood);
  const unlimited = await runInOrder(dir, router('rate: 0'));
  assert.is(unlimited.elements.err.sent, 200);
  // One packet a batch, 2 ms apart over 118 ms, at 10 a second: the burst of 50, and one more token after 100 ms.
  writePcap(join(dir, 'in.pcap'), Array.from({ length: 60 }, (_, i) => ({ data: frame({ proto: 'udp', sport: 1000 + i }), sec: 10, usec: 2000 * i })));
  const spread = await runInOrder(dir, `batch: 1\n${router('rate: 10, burst: 50')}`);
  assert.equal([spread.elements.err.sent, spread.elements.err.limited], [51, 9]);
}));

test('ICMPError as destination unreachable, fragmentation needed, names the next-hop MTU; a capture cut short is quoted as far as it goes', () => inTempDir(async (dir) => {
  const whole = frame({ proto: 'udp', payload: 200 });
  const cut = whole.subarray(0, 14 + 20 + 8 + 10);
  writePcap(join(dir, 'in.pcap'), [whole, { data: cut, origlen: whole.length }]);
  await runInOrder(dir, router('error: unreachable, code: 4, mtu: 1280'));
  const errors = records(dir, 'errors');
  assertRecords(errors, recordsOf([expectedError(whole, ROUTER, 3, 4, 1280), expectedError(cut, ROUTER, 3, 4, 1280)]), 'errors');
  assertQuotesGood(join(dir, 'errors.pcap'), 2);
  assert.equal(tshark(join(dir, 'errors.pcap'), ['icmp.mtu']).map(([mtu]) => mtu), ['1280', '1280']);
}));

test('ICMPError: a fragmentation-needed error without the MTU it names, an MTU for another error, or a code time exceeded does not have, is a config error at its place', () => inTempDir(async (dir) => {
  const check = (params: string) => {
    writeFileSync(join(dir, 'bad.yaml'), router(params));
    return cli(['check', join(dir, 'bad.yaml')]);
  };
  const missing = check('error: unreachable, code: 4');
  assert.is(missing.status, 2);
  assert.match(missing.stderr, /bad\.yaml:5:\d+: err\.code: an unreachable with code 4 \(fragmentation needed\) names the next-hop MTU, and mtu is not set/);
  assert.match(missing.stderr, /hint: set mtu/);
  const stray = check('mtu: 1280');
  assert.is(stray.status, 0, 'an unused mtu is only a warning');
  assert.match(stray.stdout + stray.stderr, /err\.mtu: mtu is named only by an unreachable with code 4 \(fragmentation needed\): unused/);
  assert.is(check('error: unreachable, code: 4, mtu: 1280').status, 0);
  const undefinedCode = check('code: 3');
  assert.is(undefinedCode.status, 2);
  assert.match(undefinedCode.stderr, /err\.code: time exceeded has codes 0 \(TTL exceeded in transit\) and 1 \(fragment reassembly time exceeded\), not 3/);
}));

test('ICMPError is switched to fragmentation needed while it runs by writing mtu, then code; code 4 with no mtu is refused', async () => {
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), [frame({ proto: 'udp' })]);
    writeFileSync(join(dir, 'c.yaml'), router());
    const pipeline = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { threads: 'inline', shards: 1 });
    const err = pipeline.view('err');
    err.setParam('error', 'unreachable');
    assert.throws(() => err.setParam('code', 4), /code: an unreachable with code 4 \(fragmentation needed\) names the next-hop MTU/);
    err.setParam('mtu', 1280);
    err.setParam('code', 4);
    await pipeline.run();
    const [error] = readPcap(join(dir, 'errors.pcap')).records;
    assert.equal([error.data[34], error.data[35], error.data.readUInt16BE(40)], [3, 4, 1280]);
  } finally {
    removeDir(dir);
  }
});

test.run();
