// Filter: rules, default policy, per-rule hits, numbered outputs; the stateful connection table on the
// trace's virtual clock (batch: 1 makes the clock per packet); and the expression errors with columns.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { tempDir, removeDir, runConfig, writePcap, readPcap, ipv4Frame, icmpError, cli, ROOT, type FrameSpec } from './helpers.ts';
import { parseExpression } from '../elements/classifier/expression.ts';
import { buildGraph } from '../engine/graph.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { readFileSync, writeFileSync } from 'node:fs';

const T0 = 1_700_000_000;
const CLIENT = '100.64.0.1', SERVER = '198.18.0.1';
const SYN = 0x02, ACK = 0x10, SYN_ACK = 0x12, FIN_ACK = 0x11, RST = 0x04, PSH_ACK = 0x18;

/** A frame spec; icmpType patches the ICMP type (ipv4Frame writes echo requests). */
type Spec = FrameSpec & { icmpType?: number };
type Packet = [seconds: number, spec: Spec | Buffer];
const out = (spec: Spec): Spec => ({ src: CLIENT, dst: SERVER, sport: 40000, dport: 80, ...spec });
const back = (spec: Spec): Spec => ({ src: SERVER, dst: CLIENT, sport: 80, dport: 40000, ...spec });

function frame(spec: Spec | Buffer): Buffer {
  if (Buffer.isBuffer(spec)) return spec;
  const f = ipv4Frame(spec);
  if (spec.icmpType !== undefined) f[34] = spec.icmpType;
  return f;
}

const config = (filter: string) => `
batch: 1
elements:
  src: { type: FromPcap, file: in.pcap }
  fw:  { type: Filter, ${filter} }
  out: { type: ToPcap, file: out.pcap }
connections:
  - src -> fw -> out
`;

/** Runs the packets through the filter; returns which packets (by number from 1) came out, and the filter's counters. */
async function run(filter: string, packets: Packet[]) {
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), packets.map(([s, spec], i) => ({ data: frame(spec), sec: T0 + s, usec: i })));
    const result = await runConfig(dir, config(filter), { threads: 'inline' });
    const passed = readPcap(join(dir, 'out.pcap')).records.map((r) => r.frac + 1);
    return { passed, fw: result.elements.fw as Record<string, any> };
  } finally {
    removeDir(dir);
  }
}

const STATEFUL = `stateful: true, rules: ['allow tcp dst port 80 and src net 100.64.0.0/10', 'allow udp dst port 53', 'allow icmp[icmptype] = icmp-echo']`;

test('stateless rules: first match decides, default policy, numbered outputs, per-rule hits', async () => {
  const { passed, fw } = await run(`rules: ['deny tcp dst port 22', 'allow tcp', 'deny udp'], default: allow`, [
    [0, out({ dport: 22 })], [0, out({})], [0, out({ proto: 'udp', dport: 53 })], [0, out({ proto: 'icmp' })], [0, back({ tcpFlags: SYN_ACK })],
  ]);
  assert.equal(passed, [2, 4, 5]);
  assert.equal(fw.hits, [1, 2, 1]);
  assert.is(fw.denied, 2);
  assert.is(fw.allowed, 3);
});

test('stateful: replies of allowed connections pass; reply-looking packets without a connection are dropped', async () => {
  const { passed, fw } = await run(STATEFUL, [
    [0, out({ tcpFlags: SYN })],                                         // 1 allowed, opens
    [0, back({ tcpFlags: SYN_ACK })],                                    // 2 tracked
    [0, out({ tcpFlags: ACK })],                                         // 3 tracked: established
    [0, back({ tcpFlags: PSH_ACK })],                                    // 4 tracked
    [0, back({ src: '198.18.0.9', tcpFlags: SYN_ACK })],                 // 5 no connection: denied
    [0, out({ proto: 'udp', sport: 40001, dport: 53 })],                 // 6 allowed, opens
    [0, back({ proto: 'udp', sport: 53, dport: 40001 })],                // 7 tracked
    [0, back({ proto: 'udp', src: '198.18.0.53', sport: 53, dport: 40002 })], // 8 no query: denied
    [0, out({ proto: 'icmp' })],                                         // 9 echo request: allowed, opens
    [0, back({ proto: 'icmp', icmpType: 0 })],                           // 10 echo reply: tracked
    [0, back({ proto: 'icmp', src: '198.18.0.7', icmpType: 0 })],        // 11 reply without request: denied
    [0, out({ sport: 40003, tcpFlags: SYN })],                           // 12 allowed, opens
    [0, back({ dport: 40003, tcpFlags: PSH_ACK })],                      // 13 data before the SYN-ACK: invalid
    [0, out({ tcpFlags: RST })],                                         // 14 tracked, ends the connection
    [0, back({ tcpFlags: PSH_ACK })],                                    // 15 no connection any more: denied
    [0, out({ sport: 40004, tcpFlags: ACK })],                           // 16 allowed by the rules but opens nothing
    [0, back({ dport: 40004, tcpFlags: ACK })],                          // 17 so its reply is denied
  ]);
  assert.equal(passed, [1, 2, 3, 4, 6, 7, 9, 10, 12, 14, 16]);
  assert.is(fw.allowed, 5);
  assert.is(fw.tracked, 6);
  assert.is(fw.denied, 5);
  assert.is(fw.invalid, 1);
  assert.is(fw.connections, 3, 'the UDP flow, the ICMP exchange and the half-open TCP connection are live');
});

test('a SYN on a closing connection starts a new one, which meets the rules and lives as established; after the handshake a SYN fits no connection', async () => {
  // Before, the reopened connection stayed closing (30 s: its packets denied after 40 s idle) and a server's SYN passed as tracked.
  const { passed, fw } = await run(STATEFUL, [
    [0, out({ tcpFlags: SYN })],                                   // 1 allowed, opens
    [0, back({ tcpFlags: SYN_ACK })],                              // 2 tracked
    [0, out({ tcpFlags: ACK })],                                   // 3 tracked: established
    [0, out({ tcpFlags: SYN })],                                   // 4 a SYN on the established connection: invalid
    [0, back({ tcpFlags: SYN_ACK })],                              // 5 the responder's SYN-ACK again: tracked
    [0, out({ tcpFlags: FIN_ACK })],                               // 6 tracked: closing
    [0, back({ tcpFlags: FIN_ACK })],                              // 7 tracked
    [1, back({ tcpFlags: SYN })],                                  // 8 the server opens one to the client's port: the rules deny it
    [5, out({ tcpFlags: SYN })],                                   // 9 the client reuses its ports: allowed, opens anew
    [5, back({ tcpFlags: SYN_ACK })],                              // 10 tracked
    [5, out({ tcpFlags: ACK })],                                   // 11 tracked: established
    [45, back({ tcpFlags: PSH_ACK })],                             // 12 40 s later (closing's timeout is 30 s): tracked
  ]);
  assert.equal(passed, [1, 2, 3, 5, 6, 7, 9, 10, 11, 12]);
  assert.equal([fw.allowed, fw.tracked, fw.denied, fw.invalid], [2, 8, 1, 1]);
});

test('a full table whose entries have all expired takes new connections as soon as they expired, not a second after its last sweep', async () => {
  const client = (i: number) => `100.64.${i >> 8}.${i & 255}`;
  const udp = (i: number, seconds: number): Packet => [seconds, out({ proto: 'udp', src: client(i), sport: 1024, dport: 53 })];
  const packets = [...Array.from({ length: 1000 }, (_, i) => udp(i, 0)), udp(1000, 2.9), ...Array.from({ length: 200 }, (_, i) => udp(2000 + i, 3.2))];
  const dir = tempDir();
  try {
    // In batches of 256: the sweep of a few slots per batch has not reached the expired entries by then.
    writePcap(join(dir, 'in.pcap'), packets.map(([s, spec], i) => ({ data: frame(spec), sec: T0 + Math.floor(s), usec: Math.round((s % 1) * 1e6) + i % 1000 })));
    const result = await runConfig(dir, config(`stateful: true, capacity: 1000, udp_timeout: 3s, rules: ['allow udp']`).replace('batch: 1', 'batch: 256'), { threads: 'inline' });
    const fw = result.elements.fw as Record<string, number>;
    // At 2.9 s the table is full of live entries: refused. At 3.2 s every entry of 0 s has expired.
    assert.equal([fw.table_full, fw.connections], [1, 200]);
  } finally {
    removeDir(dir);
  }
});

test('a connection table larger than a core\'s cache share (30k connections: each batch touches its lookups first): replies still pass', async () => {
  const clients = 30_000; // 30k x 40-byte entries: past FlowTable.worthTouching's 1 MiB
  const client = (i: number) => `100.64.${i >> 8}.${i & 255}`;
  const frames = [];
  for (let i = 0; i < clients; i++) frames.push({ data: frame(out({ proto: 'udp', src: client(i), sport: 1024 + (i % 50000), dport: 53 })), sec: T0, usec: i });
  for (let i = 0; i < clients; i++) {
    frames.push({ data: frame(back({ proto: 'udp', dst: client(i), sport: 53, dport: 1024 + (i % 50000) })), sec: T0 + 1, usec: 2 * i });
    frames.push({ data: frame(back({ proto: 'udp', dst: client(i), sport: 53, dport: 1023 })), sec: T0 + 1, usec: 2 * i + 1 }); // no such query
  }
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), frames);
    const result = await runConfig(dir, config(`stateful: true, capacity: 32768, rules: ['allow udp dst port 53']`).replace('batch: 1', 'batch: 256'), { threads: 'inline' });
    const fw = result.elements.fw as Record<string, number>;
    assert.is(fw.allowed, clients, 'queries allowed');
    assert.is(fw.tracked, clients, 'every reply found its connection');
    assert.is(fw.denied, clients, 'replies without a query denied');
    assert.is(readPcap(join(dir, 'out.pcap')).records.length, 2 * clients);
  } finally {
    removeDir(dir);
  }
});

test('stateful timeouts run on the trace clock, per TCP state', async () => {
  const timeouts = 'tcp_handshake: 30s, tcp_established: 60s, tcp_closing: 10s, udp_timeout: 30s, icmp_timeout: 5s';
  const { passed } = await run(`${STATEFUL}, ${timeouts}`, [
    [0, out({ proto: 'udp', sport: 40001, dport: 53 })],                 // 1 opens
    [25, back({ proto: 'udp', sport: 53, dport: 40001 })],               // 2 within 30 s: tracked (idle timer restarts)
    [54, back({ proto: 'udp', sport: 53, dport: 40001 })],               // 3 29 s idle: tracked
    [90, back({ proto: 'udp', sport: 53, dport: 40001 })],               // 4 36 s idle: expired, denied
    [100, out({ sport: 40002, tcpFlags: SYN })],                         // 5 opens
    [140, back({ dport: 40002, tcpFlags: SYN_ACK })],                    // 6 40 s into the handshake: expired, denied
    [200, out({ sport: 40003, tcpFlags: SYN })],                         // 7 opens
    [201, back({ dport: 40003, tcpFlags: SYN_ACK })],                    // 8 tracked
    [202, out({ sport: 40003, tcpFlags: ACK })],                         // 9 established
    [252, back({ dport: 40003, tcpFlags: PSH_ACK })],                    // 10 50 s idle < 60 s: tracked
    [253, out({ sport: 40003, tcpFlags: FIN_ACK })],                     // 11 closing
    [262, back({ dport: 40003, tcpFlags: FIN_ACK })],                    // 12 9 s < 10 s: tracked
    [280, back({ dport: 40003, tcpFlags: ACK })],                        // 13 18 s after the last: expired, denied
    [300, out({ proto: 'icmp' })],                                       // 14 opens
    [306, back({ proto: 'icmp', icmpType: 0 })],                         // 15 6 s > 5 s: denied
  ]);
  assert.equal(passed, [1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 14]);
});

test('an ICMP error about a tracked connection passes (path MTU discovery); one about no connection meets the rules and opens none', async () => {
  const ROUTER = '198.18.0.254';
  const fragNeeded = (about: Spec) => icmpError(ROUTER, frame(about), 3, 4);
  const { passed, fw } = await run(STATEFUL, [
    [0, out({ tcpFlags: SYN })],                                         // 1 opens
    [1, fragNeeded(back({ tcpFlags: SYN_ACK }))],                        // 2 to the server, about its SYN-ACK: related, passes
    [2, icmpError(ROUTER, frame(out({ tcpFlags: ACK })), 3, 4)],         // 3 to the client, about its own packet: passes
    [3, icmpError(ROUTER, frame(out({ sport: 40009, tcpFlags: SYN })), 3, 4)], // 4 about no connection: the rules deny it
    [4, back({ sport: 80, dport: 40009, tcpFlags: SYN_ACK })],           // 5 and it opened none: denied
  ]);
  assert.equal(passed, [1, 2, 3]);
  assert.is(fw.tracked, 2);
  assert.is(fw.connections, 1);
});

test('a sparse trace read in big steps: each packet meets the clock of its own millisecond, on any shard count', async () => {
  // 2000 connections, one every 10 ms, their packets 2 ms apart: a shard takes seconds of this trace in one
  // step, and a batch clock at the step's latest packet expired handshakes 4 ms old (a 300 ms timeout).
  const packets: { data: Buffer; sec: number; usec: number }[] = [];
  for (let c = 0; c < 2000; c++) {
    const client = { src: `100.64.${c >> 8}.${c & 255}`, sport: 20000 + c };
    const spec: Spec[] = [out({ ...client, tcpFlags: SYN }), back({ dst: client.src, dport: client.sport, tcpFlags: SYN_ACK }),
      out({ ...client, tcpFlags: ACK }), out({ ...client, tcpFlags: PSH_ACK, payload: 18 }), back({ dst: client.src, dport: client.sport, tcpFlags: PSH_ACK, payload: 100 })];
    spec.forEach((f, i) => {
      const us = c * 10_000 + i * 2_000;
      packets.push({ data: frame(f), sec: T0 + Math.floor(us / 1e6), usec: us % 1e6 });
    });
  }
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), packets);
    const yaml = config(`${STATEFUL}, tcp_handshake: 300ms`).replace('batch: 1\n', '');
    for (const shards of [1, 2]) {
      const result = await runConfig(dir, yaml, { shards });
      assert.is(result.elements.fw.denied, 0, `${shards} shards`);
      assert.is(result.packets_out, packets.length);
    }
  } finally {
    removeDir(dir);
  }
});

test('a full table takes no new connection: when_full deny drops it, allow passes it untracked; both are counted', async () => {
  const flows: Packet[] = [1, 2, 3].flatMap((n) => [
    [n, out({ proto: 'udp', sport: 40000 + n, dport: 53 })],
    [n, back({ proto: 'udp', sport: 53, dport: 40000 + n })],
  ] as Packet[]);
  const denied = await run(`${STATEFUL}, capacity: 2`, flows);
  assert.equal(denied.passed, [1, 2, 3, 4]);
  assert.is(denied.fw.table_full, 1);
  const allowed = await run(`${STATEFUL}, capacity: 2, when_full: allow`, flows);
  assert.equal(allowed.passed, [1, 2, 3, 4, 5], 'the third query passes, its reply does not');
  assert.is(allowed.fw.table_full, 1);
});

// --- expression errors ---------------------------------------------------------------------------

const ERRORS: [expression: string, column: number, message: RegExp][] = [
  ['', 0, /empty/],
  ['tcp $ udp', 4, /unexpected character '\$'/],
  ['tcp)', 3, /unmatched '\)'/],
  ['(tcp', 4, /expected '\)' to close the '\(' at column 1/],
  ['tcp and', 4, /'and' needs something after it/],
  ['tcp udp', 4, /unexpected 'udp'/],
  ['tcpp', 0, /unexpected 'tcpp'/],
  ['ip[0:3] = 1', 5, /1, 2 or 4 bytes/],
  ['tcp[13] & 2', 11, /expected a comparison/],
  // An unknown name after an operator or as an offset is said there (it was 'tcp' followed by an unexpected '[').
  ['tcp[tcpflags] & tcp-bogus != 0', 16, /expected a number, a named constant \(tcp-syn, icmp-echo, ...\) or a packet field after '&', found 'tcp-bogus'/],
  ['tcp[bogus] = 1', 4, /or a packet field as the offset in \[ \], found 'bogus'/],
  ['ip[8] = ip[9]', 8, /two packet fields/],
  ['ip[2:2] - 20 > 0', 8, /'-' on a packet field/],
  ['ip[0] = 1 / 0', 10, /division by zero/],
  ['ip[0] = 1.2.3.4', 8, /expected a value to compare with/],
  ['tcp proto 6', 4, /'proto' follows ip or ip6/],
  ['tcp opt foo', 8, /'tcp opt' takes a flag/],
  ['port 70000', 5, /too large for a port/],
  ['portrange 10', 10, /expected a port range/],
  ['portrange 10-70000', 13, /port 70000 is out of range/],
  ['host 10.1', 5, /a host is a full IPv4 address/],
  ['host 1.2.3.999', 5, /is not an IPv4 address/],
  ['net 10.0.0.0/33', 12, /\/33 is not a prefix length/],
  ['net 10.0.0.1/8', 4, /bits set outside its mask/],
  ['net 10.0.0.0 mask 255', 18, /expected a netmask/],
  ['icmp port 80', 0, /'icmp' cannot qualify a port/],
  ['ip6 host 1.2.3.4', 9, /expected an IPv6 address after host/],
  ['ip host 2001:db8::1', 0, /'ip' cannot qualify an IPv6 host/],
  ['net 2001:db8::1/32', 4, /bits set outside its mask/],
  ['net 2001:db8::/129', 14, /\/129 is not a prefix length/],
  ['host 2001::db8::1', 5, /is not an IPv6 address/],
  ['host 2001:db8::/32', 5, /a host is a full IPv6 address/],
  ['src', 3, /cannot follow src/],
  ['vlan 7 and less x', 16, /expected a length/],
  ['vlan 5000', 5, /too large for a VLAN ID/],
  ['host 02:00:00:00:00:01', 5, /'02:00:00:00:00:01' is an Ethernet address/],
  ['02:00:00:00:00:01', 0, /needs 'ether host', 'ether src' or 'ether dst'/],
  ['ether src 02:00:00:00:00:01 or 10.0.0.1', 31, /expected an Ethernet address/],
  ['ether net 02:00:00:00:00:01', 0, /'ether' cannot qualify a net/],
  ['ip6 broadcast', 0, /'ip6 broadcast' is not supported/],
  ['port 08', 5, /'08' is not an octal number/],
  ['ip[12:4] = 0x164400002', 11, /does not fit in 32 bits/],
];

for (const [expression, column, message] of ERRORS) {
  test(`expression error at column ${column + 1}: '${expression}'`, () => {
    try {
      parseExpression(expression);
    } catch (e) {
      assert.is((e as Error).name, 'ExpressionError');
      assert.match((e as Error).message, message);
      assert.is((e as { col: number }).col, column);
      return;
    }
    assert.unreachable('no error');
  });
}

test('thousands of host rules: one rule listing them and 3000 rules of one host each deny the same packets, with hits per rule', async () => {
  // Addresses of the packets below at a few places among thousands of others.
  const listed = Array.from({ length: 3000 }, (_, i) => `198.19.${i >> 8}.${i & 255}`);
  listed[1234] = SERVER;
  listed[2999] = '100.64.0.7';
  const packets: Packet[] = [[0, out({})], [0, back({})], [0, out({ src: '100.64.0.7', dst: '198.18.9.9' })], [0, out({ src: '100.64.0.8', dst: '198.18.9.9' })],
    [0, out({ src: '198.19.0.5', dst: '198.18.9.9' })], [0, out({ proto: 'udp', src: '100.64.0.9', dst: '198.19.11.183' })]];
  const oneRule = await run(`rules: [${JSON.stringify(`deny ${listed.map((h) => `host ${h}`).join(' or ')}`)}], default: allow`, packets);
  const perHost = await run(`rules: ${JSON.stringify(listed.map((h) => `deny host ${h}`))}, default: allow`, packets);
  // 198.19.11.183 is host 2999's place before it was replaced: not listed.
  assert.equal(oneRule.passed, [4, 6]);
  assert.equal(perHost.passed, oneRule.passed);
  assert.equal(oneRule.fw.hits, [4]);
  const hits = perHost.fw.hits as number[];
  assert.equal([hits[1234], hits[2999], hits[5], hits.reduce((a, b) => a + b, 0)], [2, 1, 1, 4]);
});

test('an expression error in a config points at FILE:LINE:COL of the character, in Classifier and in Filter rules', async () => {
  const file = 'bad.yaml';
  const text = [
    'elements:',
    '  src: { type: FromPcap, file: in.pcap }',
    "  cl: { type: Classifier, patterns: ['tcp', 'udp port 7o'] }",
    '  fw:',
    '    type: Filter',
    '    rules:',
    "      - allow tcp and",
    "  fw2: { type: Filter, rules: [allow udp, '2 ip[0:3] = 1'] }",
    "  fw3: { type: Filter, rules: [allow udp, '4294967296 tcp'] }",
    '  drop: { type: Discard }',
    'connections:',
    '  - src -> cl -> fw -> fw2 -> fw3 -> drop',
    '  - cl[1] -> drop',
  ].join('\n');
  const error = await loadConfig(file, { text }).then(() => undefined, (e) => e);
  assert.is(error?.name, 'ConfigErrors');
  const lines = error.errors.map((e: { format(): string }) => e.format().split('\n')[0]);
  assert.equal(lines, [
    "bad.yaml:3:56: cl.patterns: unexpected 'o' (column 11)",
    "bad.yaml:7:19: fw.rules: 'and' needs something after it (column 11)",
    'bad.yaml:8:51: fw2.rules: a field is 1, 2 or 4 bytes, not 3 (column 8)',
    // Before, a number this large crashed the load making that many outputs (and 10000 took 88 s).
    'bad.yaml:9:44: fw3.rules: output 4294967296 is more than a Filter has',
  ]);
  // Every syntax error has a hint: its own, or how to write and try an expression.
  assert.ok(error.errors.every((e: { hint?: string }) => e.hint), error.errors.map((e: { format(): string }) => e.format()).join('\n'));
  assert.ok(error.errors[1].hint.includes("wirepath filter 'EXPR' FILE"), error.errors[1].hint);
});

test('an output a rule names must be connected, as a Classifier\'s (its packets were dropped unseen); one no rule names may stay open', async () => {
  const text = (...more: string[]) => ['elements:', '  src: { type: FromPcap, file: in.pcap }', "  fw: { type: Filter, rules: ['1 udp', '3 tcp', 'allow -'] }",
    '  drop: { type: Discard }', 'connections:', '  - src -> fw -> drop', '  - fw[1] -> drop', ...more].join('\n');
  const open = await loadConfig('bad.yaml', { text: text() });
  const error = (() => { try { buildGraph(open); } catch (e) { return e as { errors: { format(): string }[] }; } })();
  assert.equal(error?.errors.map((e) => e.format().split('\n')[0]), ['bad.yaml:3:3: output fw[3] (3) is not connected']);
  const graph = buildGraph(await loadConfig('good.yaml', { text: text('  - fw[3] -> drop') }));
  assert.is(graph.byName.get('fw')!.targets[2], null, 'output 2, which no rule names, stays open');
});

test('unreachable rules are warned about with their position; the config still loads', async () => {
  const text = [
    'elements:',
    '  src: { type: FromPcap, file: in.pcap }',
    "  cl: { type: Classifier, patterns: ['tcp', 'tcp dst port 80', 'tcp and udp', '-'] }",
    '  drop: { type: Discard }',
    'connections:',
    '  - src -> cl -> drop',
    '  - cl[1] -> drop',
    '  - cl[2] -> drop',
    '  - cl[3] -> drop',
  ].join('\n');
  const config = await loadConfig('w.yaml', { text });
  const warnings = config.warnings.map((w) => w.format().split('\n')[0]);
  assert.equal(warnings, [
    // Numbered from 0, as the outputs they send to (before: from 1, so that pattern 2 was the one of cl[1]).
    "w.yaml:3:45: warning: cl.patterns: pattern 1 ('tcp dst port 80') is shadowed by pattern 0 ('tcp'): it never sees a packet",
    "w.yaml:3:64: warning: cl.patterns: pattern 2 ('tcp and udp') can never match",
  ]);
});

test('a running filter takes a new default policy; a mistaken one gets the same hint as in a config', async () => {
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), [{ data: frame(out({})), sec: T0, usec: 0 }]);
    writeFileSync(join(dir, 'c.yaml'), config(`rules: ['deny tcp dst port 22']`));
    const pipeline = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { threads: 'inline' });
    const fw = pipeline.view('fw');
    fw.setParam('default', 'allow');
    assert.is(fw.params.default, 'allow');
    assert.throws(() => fw.setParam('default', 'Deny'), /'Deny' is not one of deny, allow \(did you mean deny\?\)/);
    // A stateless filter's capacity sizes nothing, but it is set at start as its docs say (a write was taken).
    assert.throws(() => fw.setParam('capacity', 10), /capacity is read when fw is set up/);
  } finally {
    removeDir(dir);
  }
});

test('wirepath filter counts and lists matching packets on the compiled path', () => {
  const file = join(ROOT, 'test/fixtures/captures/real.pcap');
  const r = cli(['filter', 'tcp[tcpflags] & tcp-syn != 0', file, '-v']);
  assert.is(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.match(lines.at(-1)!, /^\d+ of 77 packets match$/);
  const numbers = lines.slice(0, -1).map((l) => Number(l.split(' ')[0]));
  assert.is(numbers.length, Number(lines.at(-1)!.split(' ')[0]));
  assert.ok(numbers.every((n, i) => n >= 1 && n <= 77 && (i === 0 || n > numbers[i - 1])));
  const bad = cli(['filter', 'tcp port', file]);
  assert.is(bad.status, 2);
  assert.match(bad.stderr, /filter expression, expected a port, found the end of the expression \(column 9\)\n  tcp port\n {10}\^/);
  // A capture corrupt part way: the count before the corruption, then the error.
  const dir = tempDir();
  try {
    const cut = join(dir, 'cut.pcap');
    writeFileSync(cut, Buffer.concat([readFileSync(file), Buffer.alloc(16, 0x7f)]));
    const corrupt = cli(['filter', 'tcp[tcpflags] & tcp-syn != 0', cut]);
    assert.is(corrupt.status, 3);
    assert.match(corrupt.stderr, new RegExp(`^wirepath: ${lines.at(-1)!.split(' ')[0]} of 77 packets before the error match\nwirepath: src: .*cut.pcap is corrupt at byte `));
  } finally {
    removeDir(dir);
  }
});

test.run();
