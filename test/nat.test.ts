// NAT: the RFC 4787/5382/5508/6888/7857/7422 checklist rows that apply to a NAT44 without ALGs, as
// pcap-in/pcap-out runs on the trace's virtual clock (batch: 1 makes the clock per packet). One capture
// holds both directions in time order; a Classifier sends inside sources to the NAT's input 0.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { tempDir, removeDir, writePcap, readPcap, ipv4Frame, internetChecksum, icmpError, cli, tshark, type FrameSpec } from './helpers.ts';
import { checksumVerdicts } from './golden.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline, type PipelineOptions } from '../engine/pipeline.ts';
import { handlersOf } from '../engine/handlers.ts';

const T0 = 1_700_000_000;
const A = '100.64.0.1', B = '100.64.0.2', R1 = '198.18.0.1', R2 = '198.18.0.2';
const SYN = 0x02, ACK = 0x10, SYN_ACK = 0x12, RST = 0x04, PSH_ACK = 0x18, FIN_ACK = 0x11;

type Spec = FrameSpec & { icmpType?: number; icmpId?: number };
type Packet = [seconds: number, spec: Spec | Buffer];

function frame(spec: Spec): Buffer {
  const f = ipv4Frame(spec);
  if (spec.icmpType !== undefined || spec.icmpId !== undefined) {
    if (spec.icmpType !== undefined) f[34] = spec.icmpType;
    if (spec.icmpId !== undefined) f.writeUInt16BE(spec.icmpId, 38);
    f.writeUInt16BE(0, 36);
    f.writeUInt16BE(internetChecksum(f.subarray(34)), 36);
  }
  return f;
}

/** A packet out: its number in the input (the timestamp's fraction), or for one the NAT made, the second of the trace it left at (`second`). */
interface Seen { n: number; second: number; src: string; dst: string; sport: number; dport: number; proto: number; bytes: Buffer }

function decode(r: { sec: number; frac: number; data: Buffer }): Seen {
  const d = r.data, l4 = 14 + (d[14] & 15) * 4;
  const addr = (o: number) => [...d.subarray(o, o + 4)].join('.');
  const proto = d[23];
  const icmp = proto === 1;
  return {
    n: r.frac + 1, second: r.sec - T0, src: addr(26), dst: addr(30), proto, bytes: d,
    sport: icmp ? d.readUInt16BE(l4 + 4) : (d.readUInt16BE(20) & 0x1fff) ? 0 : d.readUInt16BE(l4),
    dport: icmp ? d[l4] : (d.readUInt16BE(20) & 0x1fff) ? 0 : d.readUInt16BE(l4 + 2),
  };
}

const config = (nat: string) => `
batch: 1
shards: 1
elements:
  src: { type: FromPcap, file: in.pcap }
  side: { type: Classifier, patterns: ['src net 100.64.0.0/10', '-'] }
  nat: { type: NAT, ${nat.includes('pool:') ? nat : `pool: [203.0.113.1, 203.0.113.2], ${nat}`} }
  outside: { type: ToPcap, file: outside.pcap }
  inside: { type: ToPcap, file: inside.pcap }
connections:
  - src -> side
  - side[0] -> [0]nat
  - side[1] -> [1]nat
  - nat[0] -> outside
  - nat[1] -> inside
`;

/** Runs the packets (in order) through a NAT with these parameters; what left each side, its counters, handlers and block log. */
async function run(nat: string, packets: Packet[], topLevel = '', options: PipelineOptions = {}) {
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), packets.map(([s, spec], i) => ({ data: Buffer.isBuffer(spec) ? spec : frame(spec), sec: T0 + s, usec: i })));
    // topLevel may set its own batch size.
    const body = config(`${nat}${nat ? ', ' : ''}log: blocks.jsonl`).replace(/^batch: 1\n/m, topLevel.includes('batch:') ? '' : 'batch: 1\n');
    writeFileSync(join(dir, 'nat.yaml'), topLevel + body);
    const pipeline = await Pipeline.create(await loadConfig(join(dir, 'nat.yaml')), { threads: 'inline', ...options });
    const result = await pipeline.run();
    const handlers = handlersOf(pipeline.graph.byName.get('nat')!.type);
    const view = pipeline.view('nat');
    const verdicts = { inside: checksumVerdicts(join(dir, 'inside.pcap')), outside: checksumVerdicts(join(dir, 'outside.pcap')) };
    // PCP answers as tshark's Port Control dissector reads them (frame number, then PCP_FIELDS).
    const pcp = nat.includes('pcp_server') ? tshark(join(dir, 'inside.pcap'), ['frame.number', ...PCP_FIELDS], ['-Y', 'portcontrol']) : [];
    const natPmp = nat.includes('pcp_server') ? tshark(join(dir, 'inside.pcap'), ['nat-pmp.opcode', 'nat-pmp.result_code', 'nat-pmp.sssoe', 'nat-pmp.external_ip',
      'nat-pmp.internal_port', 'nat-pmp.external_port', 'nat-pmp.pml'], ['-Y', 'nat-pmp']) : [];
    const log = readFileSync(join(dir, 'blocks.jsonl'), 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    return {
      outside: readPcap(join(dir, 'outside.pcap')).records.map(decode),
      inside: readPcap(join(dir, 'inside.pcap')).records.map(decode),
      nat: result.elements.nat as Record<string, any>,
      runtime: pipeline.runtimeStats(),
      subscriber: (address: string) => handlers.subscriber.read!(view, address) as any,
      blocks: handlers.blocks.read!(view) as any,
      log,
      verdicts: (side: 'inside' | 'outside') => verdicts[side],
      pcp,
      natPmp,
    };
  } finally {
    removeDir(dir);
  }
}

const udp = (src: string, dst: string, sport: number, dport: number, more: Spec = {}): Spec => ({ proto: 'udp', src, dst, sport, dport, ...more });

const PCP_FIELDS = ['portcontrol.version', 'portcontrol.r', 'portcontrol.opcode', 'portcontrol.result_code', 'portcontrol.lifetime_rsp',
  'portcontrol.epoch_time', 'portcontrol.map.protocol', 'portcontrol.map.internal_port', 'portcontrol.map.rsp_assigned_external_port',
  'portcontrol.map.rsp_assigned_ext_ip', 'portcontrol.map.nonce', 'portcontrol.peer.rsp_assigned_external_port', 'portcontrol.peer.rsp_assigned_ext_ip'];

/** A PCP request (RFC 6887 §7.1): MAP (opcode 1) of an internal port by default, from `client` as it claims to be. */
function pcpRequest(client: string, o: { protocol?: number; port?: number; lifetime?: number; version?: number; opcode?: number; options?: Buffer; nonce?: number; peer?: [string, number];
  suggest?: [address: string | undefined, port: number] } = {}): Buffer {
  const opcode = o.peer ? 2 : o.opcode ?? 1;
  const m = Buffer.alloc(opcode === 1 ? 60 : opcode === 2 ? 80 : 24);
  m[0] = o.version ?? 2;
  m[1] = opcode;
  m.writeUInt32BE(o.lifetime ?? 3600, 4);
  m.writeUInt16BE(0xffff, 18);
  Buffer.from(client.split('.').map(Number)).copy(m, 20);
  if (opcode === 1 || opcode === 2) {
    for (let i = 0; i < 12; i++) m[24 + i] = (o.nonce ?? 0) + i + 1; // the nonce
    m[36] = o.protocol ?? 17;
    m.writeUInt16BE(o.port ?? 7000, 40);
    if (o.suggest) {
      m.writeUInt16BE(o.suggest[1], 42);
      if (o.suggest[0]) {
        m.writeUInt16BE(0xffff, 54);
        Buffer.from(o.suggest[0].split('.').map(Number)).copy(m, 56);
      }
    }
  }
  if (o.peer) {
    m.writeUInt16BE(o.peer[1], 60);
    m.writeUInt16BE(0xffff, 74);
    Buffer.from(o.peer[0].split('.').map(Number)).copy(m, 76);
  }
  return Buffer.concat([m, o.options ?? Buffer.alloc(0)]);
}
const tcp = (src: string, dst: string, sport: number, dport: number, tcpFlags: number): Spec => ({ proto: 'tcp', src, dst, sport, dport, tcpFlags });

test('U1/T1 endpoint-independent mapping, U2/R4 paired pooling, U3 no port overloading', async () => {
  const r = await run('', [
    [0, udp(A, R1, 5000, 53)], [1, udp(A, R2, 5000, 53)], [2, udp(A, R1, 5000, 123)],
    [3, tcp(A, R1, 5000, 80, SYN)], [4, { proto: 'icmp', src: A, dst: R1 }],
    [5, udp(B, R1, 5000, 53)], [6, tcp(A, R2, 5000, 443, SYN)],
  ]);
  const [u1, u2, u3, t1, i1, b1, t2] = r.outside;
  assert.is(r.outside.length, 7);
  assert.is(`${t1.src}:${t1.sport}`, `${t2.src}:${t2.sport}`, 'TCP: the same mapping toward another host (T1)');
  assert.is(`${u1.src}:${u1.sport}`, `${u2.src}:${u2.sport}`, 'same mapping toward another host');
  assert.is(`${u1.src}:${u1.sport}`, `${u3.src}:${u3.sport}`, 'same mapping toward another port');
  assert.ok(u1.src.startsWith('203.0.113.'));
  assert.is(t1.src, u1.src, 'TCP from the same host: same external address');
  assert.is(i1.src, u1.src, 'ICMP from the same host: same external address');
  assert.is.not(`${b1.src}:${b1.sport}`, `${u1.src}:${u1.sport}`, 'another subscriber never shares an external address and port');
  r.verdicts('outside').forEach((v, i) => assert.ok(v.ip === '1' && v.udp !== '0' && v.tcp !== '0' && v.icmp !== '0', `checksums of packet ${i + 1}`));
  assert.is(r.nat.translated_out, 7);
  assert.is(r.nat.mappings_created, 4, 'one per inside endpoint and protocol');
});

test('U4 a low port maps below 1024 while the address\'s low blocks have room, then above (NTP from port 123 was refused); ICMP identifiers have no low range', async () => {
  // One address, blocks of 512 ports: two low blocks, for two subscribers.
  const subscribers = ['100.64.0.2', '100.64.0.3', '100.64.0.4', '100.64.0.5'];
  const r = await run('pool: [203.0.113.1/32], ports_per_block: 512', [
    ...subscribers.map((s, i): Packet => [i, udp(s, R1, 123, 123)]),
    [9, { proto: 'icmp', src: '100.64.0.6', dst: R1, icmpId: 100 }],
  ]);
  assert.is(r.nat.translated_out, 5, JSON.stringify(r.nat));
  assert.equal(r.outside.slice(0, 4).map((o) => o.sport < 1024), [true, true, false, false]);
  assert.is(r.outside[4].proto, 1);
  assert.ok(r.outside[4].sport >= 1024, `identifier ${r.outside[4].sport} from a high block: no low blocks for ICMP taken`);
});

test('U4 port ranges kept, port preservation and U5 parity', async () => {
  const r = await run('port_preservation: true', [[0, udp(A, R1, 500, 53)], [1, udp(A, R1, 40000, 53)], [2, udp(B, R1, 40000, 53)]]);
  assert.is(r.outside[0].sport, 500, 'a low port kept');
  assert.is(r.outside[1].sport, 40000, 'a high port kept');
  assert.ok(r.outside[2].sport !== 40000 || r.outside[2].src !== r.outside[1].src, 'the second subscriber with that port gets another');
  const parity = await run('parity: true', Array.from({ length: 20 }, (_, i): Packet => [i, udp(A, R1, 1000 + i * 3, 53)]));
  parity.outside.forEach((o, i) => {
    assert.is(o.sport % 2, (1000 + i * 3) % 2, `parity of mapping ${i}`);
    assert.is(o.sport < 1024, 1000 + i * 3 < 1024, `range of mapping ${i}`);
  });
});

test('U5 parity holds in a block of an odd number of ports (block 0, without port 0): its even ports taken, an even port gets another block, not an odd port', async () => {
  const r = await run('ports_per_block: 8, parity: true, port_preservation: true', [2, 4, 6, 100].map((port, i): Packet => [i, udp(A, R1, port, 53)]));
  assert.equal(r.outside.map((o) => o.sport), [2, 4, 6, 100]);
});

test('U9/T3 filtering: endpoint-independent, address-dependent, address-and-port-dependent', async () => {
  for (const [filtering, expected] of [['endpoint-independent', [2, 3, 4]], ['address-dependent', [2, 3]], ['address-and-port-dependent', [2]]] as const) {
    // The external port is learnt from a first run; the mapping is the same in the second (port preserved).
    const first = await run(`filtering: ${filtering}, port_preservation: true`, [[0, udp(A, R1, 5000, 53)]]);
    const ext = first.outside[0];
    const second = await run(`filtering: ${filtering}, port_preservation: true`, [
      [0, udp(A, R1, 5000, 53)],
      [1, udp(R1, ext.src, 53, ext.sport)],
      [2, udp(R1, ext.src, 99, ext.sport)],
      [3, udp(R2, ext.src, 53, ext.sport)],
    ]);
    assert.equal(second.inside.map((s) => s.n), expected, filtering);
    second.inside.forEach((s) => assert.is(`${s.dst}:${s.dport}`, `${A}:5000`));
    assert.is(second.nat.drop_filtered, 3 - expected.length);
  }
});

test('T3 address-dependent filtering lets a host the mapping sent to in for as long as that keeps the mapping: a new connection from it on an established one\'s mapping 5 minutes on (it was refused after the 4 minutes of tcp_transitory)', async () => {
  const nat = 'filtering: address-dependent, port_preservation: true';
  const ext = (await run(nat, [[0, tcp(A, R1, 5000, 80, SYN)]])).outside[0];
  const r = await run(nat, [
    [0, tcp(A, R1, 5000, 80, SYN)], [1, tcp(R1, ext.src, 80, ext.sport, SYN_ACK)], [2, tcp(A, R1, 5000, 80, ACK)],
    [300, tcp(A, R1, 5000, 80, PSH_ACK)],
    [310, tcp(R1, ext.src, 81, ext.sport, SYN)],
    [311, tcp(R2, ext.src, 81, ext.sport, SYN)],  // a host it never sent to: refused
  ]);
  assert.equal(r.inside.map((s) => [s.n, s.src, s.dport]), [[2, R1, 5000], [5, R1, 5000]]);
  assert.is(r.nat.drop_filtered, 1);
});

test('T3 address-dependent filtering: another session to the same host on the mapping does not cut its filter entry short (the table\'s idle timeout replaced the established connection\'s refresh)', async () => {
  const nat = 'filtering: address-dependent, port_preservation: true';
  const ext = (await run(nat, [[0, tcp(A, R1, 5000, 80, SYN)]])).outside[0];
  const r = await run(nat, [
    [0, tcp(A, R1, 5000, 80, SYN)], [1, tcp(R1, ext.src, 80, ext.sport, SYN_ACK)], [2, tcp(A, R1, 5000, 80, ACK)],
    [100, tcp(A, R1, 5000, 443, SYN)],   // unanswered: its session ends after tcp_transitory
    [700, tcp(R1, ext.src, 8080, ext.sport, SYN)],
  ]);
  assert.equal(r.inside.map((s) => [s.n, s.src, s.sport]), [[2, R1, 80], [5, R1, 8080]]);
  assert.is(r.nat.drop_filtered, 0);
});

test('T3 address-dependent filtering: a host a reset connection sent to is not let in through a later mapping on the same external port (its filter entry outlived the mapping, for up to an eighth of tcp_established)', async () => {
  const ext = '203.0.113.1';
  const nat = `pool: ${ext}, filtering: address-dependent, port_preservation: true, ports_per_block: 8, blocks_per_subscriber: 1`;
  // A fills its one block of TCP ports, 5000-5007, each kept: an established connection to R1 from 5000, the others to R2.
  const ports = [5000, 5001, 5002, 5003, 5004, 5005, 5006, 5007];
  const remoteOf = (port: number) => (port === 5000 ? R1 : R2);
  const r = await run(nat, [
    ...ports.map((port, i): Packet => [i, tcp(A, remoteOf(port), port, 80, SYN)]),
    ...ports.map((port, i): Packet => [10 + i, tcp(remoteOf(port), ext, 80, port, SYN_ACK)]),
    ...ports.map((port, i): Packet => [20 + i, tcp(A, remoteOf(port), port, 80, ACK)]),
    [30, tcp(A, R1, 5000, 80, RST)],
    // The reset connection's mapping has ended (tcp_rst): its port is the one left for a new connection to another host.
    [600, tcp(A, R2, 7000, 80, SYN)],
    [601, tcp(R1, ext, 81, 5000, SYN)],
  ]);
  assert.equal(r.outside.map((s) => s.sport), [...ports, ...ports, 5000, 5000]);
  assert.is(r.inside.length, 8, 'R1, never sent to by the new mapping, stays out');
  assert.is(r.nat.drop_filtered, 1);
});

test('U1 address-dependent and address-and-port-dependent mapping: a mapping per remote host (and port), taking packets from it alone; a less strict filtering is refused', async () => {
  for (const [mapping, mappings] of [['address-dependent', 2], ['address-and-port-dependent', 3]] as const) {
    const out = await run(`mapping: ${mapping}`, [[0, udp(A, R1, 5000, 53)], [1, udp(A, R1, 5000, 123)], [2, udp(A, R2, 5000, 53)]]);
    const [toR1, toR1Again, toR2] = out.outside.map((o) => `${o.src}:${o.sport}`);
    assert.ok((toR1 === toR1Again) === (mapping === 'address-dependent'), `${mapping}: another port of the same host ${toR1} ${toR1Again}`);
    assert.is.not(toR1, toR2, `${mapping}: another host, another mapping`);
    assert.is(out.nat.mappings_created, mappings);
  }
  const ext = (await run('port_preservation: true', [[0, udp(A, R1, 5000, 53)]])).outside[0].src;
  const inbound: Packet[] = [[0, udp(A, R1, 5000, 53)], [1, udp(R1, ext, 53, 5000)], [2, udp(R1, ext, 99, 5000)], [3, udp(R2, ext, 53, 5000)]];
  for (const [params, expected] of [
    ['mapping: address-dependent', [2, 3]],
    ['mapping: address-dependent, filtering: address-dependent', [2, 3]],
    ['mapping: address-dependent, filtering: address-and-port-dependent', [2]],
    ['mapping: address-and-port-dependent', [2]],
  ] as const) {
    const r = await run(`${params}, port_preservation: true`, inbound);
    assert.equal(r.inside.map((s) => s.n), expected, params);
    assert.is(r.nat.drop_filtered, 3 - expected.length, params);
  }
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), []);
    writeFileSync(join(dir, 'loose.yaml'), config('mapping: address-dependent, filtering: endpoint-independent'));
    const loose = cli(['check', join(dir, 'loose.yaml')]);
    assert.is(loose.status, 2);
    assert.match(loose.stderr, /loose\.yaml:\d+:\d+: nat\.filtering: filtering: endpoint-independent is less strict than mapping: address-dependent, whose mappings are each made for one remote host and take packets from it alone\n {2}hint: use filtering: address-dependent or stricter, or leave filtering out/);
    // At run time the mapping (which keys the mappings), the filtering (which their filter entries follow) and the
    // session limit (sessions are counted only under one) stay as the NAT started.
    writeFileSync(join(dir, 'strict.yaml'), config('mapping: address-dependent, filtering: address-dependent'));
    const strict = await Pipeline.create(await loadConfig(join(dir, 'strict.yaml')), { threads: 'inline' });
    const view = strict.view('nat');
    for (const param of ['mapping', 'filtering', 'sessions_per_subscriber']) {
      assert.throws(() => view.setParam(param, param === 'sessions_per_subscriber' ? 4 : 'endpoint-independent'), new RegExp(`${param} is read when nat is set up`));
    }
    strict.closeSources();
  } finally {
    removeDir(dir);
  }
});

test('U6/U7 UDP timeout of 300 s (plus at most an eighth), refreshed by outbound packets only', async () => {
  const ext = (await run('port_preservation: true', [[0, udp(A, R1, 5000, 53)]])).outside[0].src;
  // A mapping lives its timeout after the last outbound packet, and up to an eighth more (it is refreshed in steps).
  const r = await run('port_preservation: true', [
    [0, udp(A, R1, 5000, 53)],
    [200, udp(R1, ext, 53, 5000)],   // 2: in, does not refresh the mapping
    [299, udp(R1, ext, 53, 5000)],   // 3: still in time
    [300, udp(A, R1, 5001, 53)],     // 4: another mapping keeps the block A's
    [338, udp(R1, ext, 53, 5000)],   // 5: the mapping expired at 300 + 37.5
    [400, udp(A, R1, 5000, 53)],     // 6: a new mapping (port preserved: the same port)
    [650, udp(A, R1, 5000, 53)],     // 7: refreshes it
    [949, udp(R1, ext, 53, 5000)],   // 8: alive until at least 950
  ]);
  assert.equal(r.inside.map((s) => s.n), [2, 3, 8]);
  assert.is(r.nat.drop_no_mapping, 1);
  const short = await run('udp_timeout: 120s', [[0, udp(A, R1, 5000, 53)]]);
  assert.is(short.outside.length, 1);
});

test('U10/T8 hairpinning: a packet to another subscriber\'s external address arrives from the sender\'s external address', async () => {
  const first = await run('port_preservation: true', [[0, udp(B, R1, 7000, 53)], [1, udp(A, R1, 6000, 53)]]);
  const bExt = first.outside[0], aExt = first.outside[1];
  const r = await run('port_preservation: true', [
    [0, udp(B, R1, 7000, 53)], [1, udp(A, R1, 6000, 53)],
    [2, udp(A, bExt.src, 6000, bExt.sport)],
    [3, tcp(A, bExt.src, 6001, 7000, SYN)],      // B has no TCP mapping yet: dropped
    [4, tcp(B, R1, 7000, 80, SYN)],              // now it has (port preserved: 7000)
    [5, tcp(A, bExt.src, 6001, 7000, SYN)],      // T8: hairpinned TCP
  ]);
  assert.equal(r.inside.map((s) => s.n), [3, 6], 'the UDP datagram and the second TCP SYN come back in');
  assert.is(`${r.inside[1].dst}:${r.inside[1].dport}`, `${B}:7000`);
  assert.is(r.inside[1].src, aExt.src, 'the TCP SYN from A\'s external address');
  const h = r.inside[0];
  assert.is(`${h.src}:${h.sport}`, `${aExt.src}:${aExt.sport}`, 'source: A\'s external address and port');
  assert.is(`${h.dst}:${h.dport}`, `${B}:7000`);
  assert.is(r.nat.hairpinned, 2);
  assert.is(r.verdicts('inside')[0].udp, '1', 'UDP checksum of the hairpinned packet');
  assert.is(r.verdicts('inside')[1].tcp, '1', 'TCP checksum of the hairpinned packet');
});

test('U10/R7 hairpinning of a fragmented datagram and of an ICMP error: both come back inside, none leaks outside', async () => {
  const first = await run('port_preservation: true', [[0, udp(B, R1, 7000, 53)], [1, udp(A, R1, 6000, 53)]]);
  const bExt = first.outside[0], aExt = first.outside[1];
  const setUp: Packet[] = [[0, udp(B, R1, 7000, 53)], [1, udp(A, R1, 6000, 53)]];
  const fragments = await run('port_preservation: true', [...setUp,
    [2, udp(A, bExt.src, 6000, bExt.sport, { moreFragments: true, payload: 8, id: 0x4444 })],
    [3, udp(A, bExt.src, 6000, bExt.sport, { fragOffset: 2, payload: 16, id: 0x4444 })],
  ]);
  assert.equal(fragments.outside.map((s) => s.n), [1, 2], 'nothing but the two set-up datagrams leaves');
  assert.equal(fragments.inside.map((s) => [s.n, s.src, s.dst]), [[3, aExt.src, B], [4, aExt.src, B]], 'both fragments reach B from A\'s external address');
  assert.is(fragments.inside[0].bytes.readUInt16BE(18), fragments.inside[1].bytes.readUInt16BE(18), 'one datagram: one IP ID');
  assert.is(fragments.nat.hairpinned, 2);
  // B answers the hairpinned datagram with port unreachable: it goes back to A, about A's own datagram.
  const hairpinned = await run('port_preservation: true', [...setUp, [2, udp(A, bExt.src, 6000, bExt.sport)]]);
  const error = await run('port_preservation: true', [...setUp, [2, udp(A, bExt.src, 6000, bExt.sport)], [3, icmpError(B, hairpinned.inside[0].bytes)]]);
  assert.equal(error.outside.map((s) => s.n), [1, 2]);
  assert.equal(error.inside.map((s) => [s.n, s.dst, s.proto]), [[3, B, 17], [4, A, 1]]);
  const quoted = error.inside[1].bytes.subarray(42);
  assert.is(`${[...quoted.subarray(12, 16)].join('.')}:${quoted.readUInt16BE(20)}`, `${A}:6000`, 'it quotes A\'s datagram as A sent it');
  assert.is(`${[...quoted.subarray(16, 20)].join('.')}:${quoted.readUInt16BE(22)}`, `${bExt.src}:${bExt.sport}`);
  assert.ok(error.verdicts('inside')[1].ip === '1,1' && error.verdicts('inside')[1].icmp === '1', JSON.stringify(error.verdicts('inside')[1]));
});

test('R10 ICMP echo identifiers are mapped like ports, with good checksums', async () => {
  const first = await run('port_preservation: true', [[0, { proto: 'icmp', src: A, dst: R1, icmpId: 0x1234 }]]);
  const out = first.outside[0];
  const r = await run('port_preservation: true', [
    [0, { proto: 'icmp', src: A, dst: R1, icmpId: 0x1234 }],
    [1, { proto: 'icmp', src: R1, dst: out.src, icmpType: 0, icmpId: out.sport }],
    [2, { proto: 'icmp', src: R1, dst: out.src, icmpType: 0, icmpId: (out.sport + 1) & 0xffff }],
    [3, { proto: 'icmp', src: R1, dst: out.src, icmpType: 8, icmpId: out.sport }],
  ]);
  assert.is(r.inside.length, 1);
  assert.is(r.inside[0].sport, 0x1234, 'the reply carries the inside identifier');
  assert.is(r.inside[0].dst, A);
  assert.is(r.verdicts('inside')[0].icmp, '1');
  assert.is(r.verdicts('outside')[0].icmp, '1');
  assert.is(r.nat.drop_no_mapping, 1, 'a reply with an unknown identifier');
  assert.is(r.nat.drop_unsupported, 1, 'an echo request from outside');
});


test('T9/U13/T10 ICMP errors are translated with the packet they quote; they do not end the mapping', async () => {
  const first = await run('port_preservation: true', [[0, udp(A, R1, 5000, 53)]]);
  const sent = first.outside[0].bytes;
  const ext = first.outside[0];
  const truncated = icmpError(R1, sent, 3, 3, 4);
  const r = await run('port_preservation: true', [
    [0, udp(A, R1, 5000, 53)],
    [1, icmpError(R2, sent)],            // a router on the way: port unreachable about A's datagram
    [2, icmpError(R2, sent, 11, 0, 14)], // time exceeded, quoting the whole datagram (its UDP checksum too)
    [3, truncated],                      // quotes 4 bytes of UDP: malformed
    [4, udp(R1, ext.src, 53, ext.sport)],
  ]);
  assert.equal(r.inside.map((s) => s.n), [2, 3, 5]);
  const error = r.inside[0].bytes;
  assert.is([...error.subarray(30, 34)].join('.'), A, 'outer destination');
  assert.is([...error.subarray(14 + 20 + 8 + 12, 14 + 20 + 8 + 16)].join('.'), A, 'quoted source address');
  assert.is(error.readUInt16BE(14 + 20 + 8 + 20), 5000, 'quoted source port');
  const quotedIp = error.subarray(42, 62);
  assert.is(internetChecksum(quotedIp), 0, 'quoted IP header checksum');
  r.verdicts('inside').slice(0, 2).forEach((v, i) => assert.ok(v.ip === '1,1' && v.icmp === '1', `checksums of packet ${i + 1} (outer and quoted IP, ICMP): ${JSON.stringify(v)}`));
  assert.is(r.nat.drop_malformed, 1);
  const whole = r.inside[1].bytes.subarray(42);
  const udpPart = whole.subarray(20);
  const pseudo = Buffer.concat([whole.subarray(12, 20), Buffer.from([0, 17]), Buffer.from([udpPart.length >> 8, udpPart.length & 255])]);
  let sum = 0;
  for (let i = 0; i < pseudo.length; i += 2) sum += pseudo.readUInt16BE(i);
  assert.is(internetChecksum(udpPart, sum), 0, 'the quoted UDP checksum, fixed for the inside address and port');
});

test('T9 an ICMP error quotes a UDP datagram whose checksum came to 0 as A sent it, 0xffff (0 is no checksum, RFC 768)', async () => {
  // A payload whose datagram sums to 0 from A: its checksum is sent as 0xffff.
  const payload = Buffer.alloc(2);
  const checksumOf = (b: Buffer) => b.readUInt16BE(14 + 20 + 6);
  while (checksumOf(frame(udp(A, R1, 5000, 53, { payload }))) !== 0xffff) payload.writeUInt16BE(payload.readUInt16BE(0) + 1);
  const sent = (await run('port_preservation: true', [[0, udp(A, R1, 5000, 53, { payload })]])).outside[0].bytes;
  const r = await run('port_preservation: true', [[0, udp(A, R1, 5000, 53, { payload })], [1, icmpError(R2, sent, 11, 0, 10)]]);
  assert.is(r.inside.length, 1);
  assert.is(r.inside[0].bytes.readUInt16BE(14 + 20 + 8 + 20 + 6), 0xffff);
});

test('U15 fragments in and out of order: a later fragment that comes first waits for its first and follows it', async () => {
  const first = await run('port_preservation: true', [[0, udp(A, R1, 5000, 53)]]);
  const ext = first.outside[0].src;
  const r = await run('port_preservation: true', [
    [0, udp(A, R1, 5000, 53, { fragOffset: 2, payload: 16 })],            // 1: outbound, later fragment first
    [1, udp(A, R1, 5000, 53, { moreFragments: true, payload: 8 })],
    [2, udp(R1, ext, 53, 5000, { moreFragments: true, payload: 8 })],      // 3: inbound in order
    [3, udp(R1, ext, 53, 5000, { fragOffset: 2, payload: 16 })],
    [4, udp(R1, ext, 53, 5000, { fragOffset: 2, payload: 16, id: 0x2222 })], // 5: inbound, later fragment first
    [4, udp(R1, ext, 53, 5000, { moreFragments: true, payload: 8, id: 0x2222 })],
    [5, udp(R2, ext, 53, 5000, { fragOffset: 2, payload: 16 })],           // 7: no first fragment: waits 2 s, then goes on
    [9, udp(A, R1, 5000, 53)],
  ]);
  assert.equal(r.outside.map((s) => [s.n, s.src]), [[2, ext], [1, ext], [8, ext]]);
  assert.equal(r.inside.map((s) => [s.n, s.dst]), [[3, A], [4, A], [6, A], [5, A]]);
  assert.is(r.nat.drop_fragment, 1);
  assert.is(r.runtime.later_fragments_waited, 3);
  assert.is(r.runtime.later_fragments_without_first, 1);
  r.verdicts('outside').concat(r.verdicts('inside')).forEach((v) => assert.is(v.ip, '1'));
});

test('U15 a datagram whose ID an earlier one used, its later fragment first, still waits for its own first', async () => {
  const ext = (await run('port_preservation: true', [[0, udp(A, R1, 5000, 53)]])).outside[0].src;
  const r = await run('port_preservation: true', [
    [0, udp(A, R1, 5000, 53)],
    [1, udp(R1, ext, 53, 5000, { moreFragments: true, payload: 8, id: 0x3333 })], // 2, 3: in order
    [1, udp(R1, ext, 53, 5000, { fragOffset: 2, payload: 16, id: 0x3333 })],
    [2, udp(R1, ext, 53, 5000, { fragOffset: 2, payload: 16, id: 0x3333 })],      // 4, 5: the same ID again, reversed
    [2, udp(R1, ext, 53, 5000, { moreFragments: true, payload: 8, id: 0x3333 })],
  ]);
  assert.equal(r.inside.map((s) => s.n), [2, 3, 5, 4]);
  assert.is(r.nat.drop_fragment, 0);
});

test('U15 at most 256 later fragments wait: the oldest goes on when one more comes, the rest when the input ends', async () => {
  const ext = (await run('port_preservation: true', [[0, udp(A, R1, 5000, 53)]])).outside[0].src;
  const later = (id: number): Packet => [1, udp(R1, ext, 53, 5000, { fragOffset: 2, payload: 16, id })];
  const firstOf = (id: number): Packet => [2, udp(R1, ext, 53, 5000, { moreFragments: true, payload: 8, id })];
  const r = await run('port_preservation: true', [
    [0, udp(A, R1, 5000, 53)],
    ...Array.from({ length: 257 }, (_, i) => later(i + 1)),    // the 257th lets the later fragment of 1 go on alone
    firstOf(1), firstOf(2),                                    // 259, 260: the later fragment of 2 follows its first
  ]);
  assert.equal(r.inside.map((s) => s.n), [259, 260, 3]);
  assert.is(r.runtime.later_fragments_waited, 257);
  assert.is(r.runtime.later_fragments_without_first, 256, 'the one pushed out, and the 255 still waiting at the end');
  assert.is(r.nat.drop_fragment, 256);
});

/** An unfragmented IPv4 frame (20-byte header) cut into two fragments at payload byte `at` (a multiple of 8). */
function fragmentsOf(whole: Buffer, at: number): [Buffer, Buffer] {
  const header = whole.subarray(0, 34), body = whole.subarray(34);
  const piece = (bytes: Buffer, field: number) => {
    const f = Buffer.concat([header, bytes]);
    f.writeUInt16BE(20 + bytes.length, 16);
    f.writeUInt16BE((f.readUInt16BE(20) & 0x4000) | field, 20);
    f.writeUInt16BE(0, 24);
    f.writeUInt16BE(internetChecksum(f.subarray(14, 34)), 24);
    return f;
  };
  return [piece(body.subarray(0, at), 0x2000), piece(body.subarray(at), at >> 3)];
}

test('R9 IP IDs: datagrams that may be fragmented get IDs unique per external address and destination, the same for all fragments of one', async () => {
  // A and B share the one external address and send R1 datagrams with the same IDs.
  const [a1, a2] = fragmentsOf(frame(udp(A, R1, 5000, 53, { payload: 200, id: 0x4444 })), 104);
  const [b1, b2] = fragmentsOf(frame(udp(B, R1, 6000, 53, { payload: 200, id: 0x4444 })), 104);
  const packets: Packet[] = [
    [0, udp(A, R1, 5000, 53, { id: 0x1234 })],                      // 1, 2: DF clear, not fragmented, same ID
    [0, udp(B, R1, 6000, 53, { id: 0x1234 })],
    [1, a1], [1, b1], [1, b2], [1, a2],                             // 3-6: two fragmented datagrams, same ID, interleaved
    [2, udp(A, R1, 5000, 53, { id: 0x7777, dontFragment: true })],  // 7: atomic: its ID means nothing and stays
    [3, udp(A, R2, 5000, 53, { id: 0x1234 })],                      // 8: another destination
  ];
  const r = await run('pool: [203.0.113.1]', packets);
  const id = (n: number) => r.outside.find((s) => s.n === n)!.bytes.readUInt16BE(18);
  assert.equal(r.outside.map((s) => s.n), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.is(id(3), id(6), 'A\'s fragments keep one ID');
  assert.is(id(4), id(5), 'B\'s fragments keep one ID');
  assert.is(new Set([1, 2, 3, 4].map(id)).size, 4, 'four datagrams from one address to R1: four IDs');
  assert.is(id(7), 0x7777);
  r.verdicts('outside').forEach((v, i) => assert.is(v.ip, '1', `IP checksum of packet ${i + 1}`));
  // tshark reassembles by (source, destination, protocol, ID): each datagram whole, its UDP checksum good.
  const reassembled = (seen: typeof r) => seen.verdicts('outside').filter((v) => v.udp === '1').length;
  assert.is(reassembled(r), 6, 'packets 1, 2, 7, 8 and both fragmented datagrams');
  // Without rewriting, the two datagrams leave with one ID from one address, and the receiver mixes them up.
  const kept = await run('pool: [203.0.113.1], rewrite_ip_id: false', packets);
  assert.is(kept.outside.find((s) => s.n === 4)!.bytes.readUInt16BE(18), 0x4444);
  assert.ok(reassembled(kept) < 6, `without rewriting, ${reassembled(kept)} good UDP checksums`);
});

test('T2/T4/T5/R1/R2 TCP: simultaneous open, unsolicited SYN, established and transitory timeouts, 4 minutes after RST', async () => {
  const ext = (await run('port_preservation: true', [[0, tcp(A, R1, 6000, 80, SYN)]])).outside[0].src;
  const r = await run('port_preservation: true', [
    [0, tcp(A, R1, 6000, 80, SYN)],
    [1, tcp(R1, ext, 80, 6000, SYN)],            // 2: simultaneous open
    [2, tcp(A, R1, 6000, 80, SYN_ACK)],
    [3, tcp(R1, ext, 80, 6000, ACK)],            // 4: established
    [7000, tcp(R1, ext, 80, 6000, PSH_ACK)],     // 5: idle under 7440 s: passes
    [7001, tcp(A, R1, 6000, 80, ACK)],           // 6: the ACK going out refreshes the mapping
    [7001, tcp(R2, ext, 443, 6000, ACK)],        // 7: no session, not a SYN
    [7002, tcp(R2, ext, 443, 6999, SYN)],        // 8: unsolicited SYN, no mapping
    [7003, tcp(A, R1, 6001, 81, SYN)],           // 9: a second connection that never opens
    [7003 + 250, tcp(R1, ext, 81, 6001, SYN_ACK)], // 10: after the 240 s transitory timeout
    [8000, tcp(A, R1, 6000, 80, RST)],           // 11: RST: the session lives 240 s more
    [8200, tcp(R1, ext, 80, 6000, ACK)],         // 12: within 240 s of the RST: passes (and ends the RST state)
    [8201, tcp(A, R1, 6000, 80, RST)],           // 13
    [8201 + 250, tcp(R1, ext, 80, 6000, ACK)],   // 14: too late
  ]);
  assert.equal(r.inside.map((s) => s.n), [2, 4, 5, 12]);
  assert.is(r.nat.drop_unsolicited_syn, 1, 'the unsolicited SYN is dropped silently');
  assert.is(r.nat.drop_invalid_tcp, 2, 'an ACK without a session, a SYN-ACK after its session timed out (its mapping lives a little longer)');
  assert.is(r.nat.drop_no_mapping, 1, 'the ACK after the RST\'s 240 s: the mapping ended with its session');
  assert.is(r.nat.icmp_sent, 0);
  // Sequence numbers and options pass untouched.
  assert.is(r.outside[0].bytes.readUInt32BE(38), 1000);
  assert.is(r.inside[0].bytes.readUInt32BE(38), 1000);
  r.verdicts('inside').concat(r.verdicts('outside')).forEach((v) => assert.ok(v.ip === '1' && v.tcp === '1'));
  // The subscriber view lists the live sessions, each TCP one with its state.
  const states = await run('port_preservation: true', [
    [0, tcp(A, R1, 6000, 80, SYN)], [1, tcp(R1, ext, 80, 6000, SYN_ACK)],
    [2, tcp(A, R1, 6001, 80, SYN)],
    [3, tcp(A, R1, 6002, 80, SYN)], [4, tcp(A, R1, 6002, 80, RST)],
    [5, tcp(A, R1, 6003, 80, SYN)], [6, tcp(A, R1, 6003, 80, FIN_ACK)],
    [7, udp(A, R2, 7000, 53)],
  ]);
  const sessions = states.subscriber(A).sessions as { protocol: string; inside_port: number; remote: string; external: string; tcp?: string }[];
  assert.equal(sessions.map((x) => [x.protocol, x.inside_port, x.remote, x.tcp ?? '-']).sort(), [
    ['tcp', 6000, `${R1}:80`, 'established'], ['tcp', 6001, `${R1}:80`, 'opening'], ['tcp', 6002, `${R1}:80`, 'reset'],
    ['tcp', 6003, `${R1}:80`, 'closing'], ['udp', 7000, `${R2}:53`, '-'],
  ]);
  assert.ok(sessions.every((x) => x.external === `${ext}:${x.inside_port}`), JSON.stringify(sessions));
});

test('R1/R2 a SYN after a RST opens a new connection on the session: transitory until answered (it took the established timeout of the one reset)', async () => {
  const ext = (await run('port_preservation: true', [[0, tcp(A, R1, 6000, 80, SYN)]])).outside[0].src;
  const r = await run('port_preservation: true', [
    [0, tcp(A, R1, 6000, 80, SYN)], [1, tcp(R1, ext, 80, 6000, SYN_ACK)], [2, tcp(A, R1, 6000, 80, ACK)],
    [10, tcp(A, R1, 6000, 80, RST)],
    [11, tcp(A, R1, 6000, 80, SYN)],               // never answered
    [11 + 300, tcp(R1, ext, 80, 6000, SYN_ACK)],   // after tcp_transitory (240 s) and the eighth its mapping has more
  ]);
  assert.equal(r.inside.map((s) => s.n), [2]);
  assert.is(r.nat.drop_no_mapping, 1);
});

test('R2 a closed TCP connection\'s mapping ends with it (RFC 7857 §2.2): 4 minutes after its FIN or RST, not at the established timeout; a mapping another session still uses stays', async () => {
  const ext = (await run('port_preservation: true', [[0, tcp(A, R1, 6000, 80, SYN)]])).outside[0].src;
  const open = (t: number, port: number, remote: string, rport: number): Packet[] =>
    [[t, tcp(A, remote, port, rport, SYN)], [t, tcp(remote, ext, rport, port, SYN_ACK)], [t, tcp(A, remote, port, rport, ACK)]];
  const r = await run('port_preservation: true', [
    ...open(0, 6000, R1, 80), ...open(1, 6001, R1, 80), ...open(2, 6001, R2, 443), ...open(3, 6002, R1, 80),
    [100, tcp(A, R1, 6000, 80, FIN_ACK)], [101, tcp(R1, ext, 80, 6000, FIN_ACK)], [101, tcp(A, R1, 6000, 80, ACK)],
    [100, tcp(A, R1, 6001, 80, FIN_ACK)], [101, tcp(R1, ext, 80, 6001, FIN_ACK)], // 6001's mapping has R2's session too
    [200, tcp(R1, ext, 80, 6002, RST)],
    [500, tcp(R2, ext, 443, 6001, PSH_ACK)], // after 240 s: R2's session still finds its mapping
  ]);
  const mappings = r.subscriber(A).mappings as { protocol: string; inside_port: number; expires_ns: string }[];
  assert.equal(mappings.filter((m) => m.protocol === 'tcp').map((m) => m.inside_port), [6001],
    'at 500 s those of the closed connections are gone (240 s after the FIN, or after a RST from outside), not 7440 s after their last packet');
  assert.ok(BigInt(mappings[0].expires_ns) > BigInt(T0 + 7000) * 1_000_000_000n, 'kept for the session still open on it');
  assert.ok(r.inside.some((s) => s.second === 500 && s.sport === 443), 'R2\'s packet reached A');
});

test('R2 a block whose connections have all closed is given back when the last one\'s mapping ends, not at the deadline an earlier packet gave it', async () => {
  // A small table of sessions and subscribers: the sweep for expired mappings and the search for idle blocks cover them in a few batches.
  const opened = (t: number, port: number): Packet[] => [[t, tcp(A, R1, port, 80, SYN)], [t, tcp(A, R1, port, 80, ACK)]];
  const r = await run('port_preservation: true, tcp_rst: 5s, max_sessions: 16, max_subscribers: 4', [
    ...opened(0, 6000), ...opened(0, 6001),   // two connections in one block: its deadline the established timeout, 7440 s
    [10, tcp(A, R1, 6000, 80, RST)],          // one ends: its mapping 5 s later; the block still holds 6001's
    ...Array.from({ length: 20 }, (_, i): Packet => [11 + i, udp(B, R1, 7000, 53)]),
    [40, tcp(A, R1, 6001, 80, RST)],          // the other: at 45 s the block holds no mapping
    ...Array.from({ length: 40 }, (_, i): Packet => [41 + i, udp(B, R1, 7000, 53)]),
  ]);
  const released = r.log.filter((b: any) => b.event === 'release' && b.subscriber === A);
  assert.is(released.length, 1, JSON.stringify(r.log));
  assert.is(released[0].protocol, 'tcp');
  assert.is(released[0].time, new Date((T0 + 46) * 1000).toISOString(), 'dated when the last mapping ended (to the second above)');
  assert.is(r.nat.blocks_released, 1, 'released while the run went on, not at its end');
});

test('T4 with syn_icmp: an unsolicited SYN is answered with ICMP port unreachable after 6 s, unless an outbound SYN of its connection came', async () => {
  const ext = (await run('port_preservation: true', [[0, tcp(A, R1, 5000, 80, SYN)]])).outside[0].src;
  // Packets that keep batches coming, so that the table's sweep goes over every entry: before 6 s and after.
  const fill = (from: number) => Array.from({ length: 300 }, (_, i): Packet => [from + i / 1000, udp(B, R2, 7000, 53)]);
  const filler = [...fill(4), ...fill(9)];
  const r = await run('port_preservation: true, syn_icmp: true', [
    [0, tcp(A, R1, 5000, 80, SYN)],
    [1, tcp(R2, ext, 1234, 6000, SYN)],          // 2: no mapping, in no one's block: answered after 6 s
    [2, tcp(R1, ext, 443, 5001, SYN)],           // 3: no mapping yet, in A's block ...
    [3, tcp(A, R1, 5001, 443, SYN)],             // 4: ... and A opens that connection: 3 is never answered
    ...filler,
  ]);
  const answers = r.outside.filter((o) => o.proto === 1);
  assert.is(answers.length, 1, 'one answer');
  const [icmp] = answers;
  assert.is(icmp.src, ext);
  assert.is(icmp.dst, R2);
  assert.equal([icmp.bytes[34], icmp.bytes[35]], [3, 3], 'destination unreachable, port unreachable');
  const quoted = icmp.bytes.subarray(42);
  assert.is([...quoted.subarray(12, 16)].join('.'), R2, 'it quotes the SYN: its source ...');
  assert.is(quoted.readUInt16BE(22), 6000, '... and destination port');
  // The answer carries the clock's time: not before 6 s after the SYN at 1 s.
  assert.ok(icmp.second >= 7, `not before 6 s (sent at ${icmp.second} s)`);
  r.verdicts('outside').forEach((v) => assert.ok(v.ip.split(',').every((x) => x === '1') && v.icmp !== '0', JSON.stringify(v)));
  assert.is(r.nat.syn_icmp_sent, 1);
  assert.is(r.nat.drop_unsolicited_syn, 2);
  const silent = await run('port_preservation: true', [[1, tcp(R2, ext, 1234, 6000, SYN)], ...filler]);
  assert.is(silent.outside.filter((o) => o.proto === 1).length, 0, 'without syn_icmp: dropped silently');
});

test('T4 with syn_icmp: a SYN with a VLAN tag or IP options is answered too, the answer tagged as it came and quoting its whole IP header', async () => {
  // Before, only untagged SYNs without options were remembered: these two were dropped without an answer.
  const ext = (await run('port_preservation: true', [[0, tcp(A, R1, 5000, 80, SYN)]])).outside[0].src;
  const withOptions = (f: Buffer) => {
    // Four bytes of options (NOP NOP NOP EOL) after the 20-byte header: IHL 6, total length + 4, checksum again.
    const g = Buffer.concat([f.subarray(0, 34), Buffer.from([1, 1, 1, 0]), f.subarray(34)]);
    g[14] = 0x46;
    g.writeUInt16BE(g.readUInt16BE(16) + 4, 16);
    g.writeUInt16BE(0, 24);
    g.writeUInt16BE(internetChecksum(g.subarray(14, 38)), 24);
    return g;
  };
  const fill = (from: number) => Array.from({ length: 300 }, (_, i): Packet => [from + i / 1000, udp(B, R2, 7000, 53)]);
  const r = await run('port_preservation: true, syn_icmp: true', [
    [0, tcp(A, R1, 5000, 80, SYN)],
    [1, { ...tcp(R2, ext, 1234, 6000, SYN), vlan: 7 }],
    [2, withOptions(frame(tcp(R1, ext, 4321, 6001, SYN)))],
    // Batches between their deadlines (7 and 8 s): answers due at once go as many as the output batch has room for (batch: 1), the rest silently.
    ...fill(4), ...fill(7.5), ...fill(9),
  ]);
  assert.is(r.nat.syn_icmp_sent, 2);
  const answers = r.outside.filter((o) => o.bytes.readUInt16BE(12) === 0x8100 || o.proto === 1);
  assert.is(answers.length, 2, 'both answered');
  const tagged = answers.find((o) => o.bytes.readUInt16BE(12) === 0x8100)!;
  assert.equal([tagged.bytes.readUInt16BE(14) & 0xfff, tagged.bytes.readUInt16BE(16), tagged.bytes[18 + 9], tagged.bytes[18 + 20]], [7, 0x0800, 1, 3], 'tag 7, then ICMP destination unreachable');
  const plain = answers.find((o) => o.bytes.readUInt16BE(12) === 0x0800)!;
  const quoted = plain.bytes.subarray(42);
  assert.equal([quoted[0], quoted.length, [...quoted.subarray(20, 24)]], [0x46, 24 + 8, [1, 1, 1, 0]], 'its header with the options, and 8 bytes');
  assert.is(quoted.readUInt16BE(26), 6001);
  r.verdicts('outside').forEach((v) => assert.ok(v.ip.split(',').every((x) => x === '1') && v.icmp !== '0', JSON.stringify(v)));
});

test('T4 with syn_icmp, a NAT that gets no packet while its shard gets others (ARP it never sees) answers on time, ticked', async () => {
  const dir = tempDir();
  try {
    const arp = Buffer.concat([Buffer.from('ffffffffffff020000000001', 'hex'), Buffer.from([0x08, 0x06]), Buffer.alloc(28)]);
    writePcap(join(dir, 'in.pcap'), [
      { data: frame(tcp(R2, '203.0.113.1', 1234, 6000, SYN)), sec: T0 + 1, usec: 0 },
      ...Array.from({ length: 11 }, (_, i) => ({ data: arp, sec: T0 + 2 + i, usec: 0 })),
    ]);
    writeFileSync(join(dir, 'nat.yaml'), `
batch: 1
shards: 1
elements:
  src: { type: FromPcap, file: in.pcap }
  side: { type: Classifier, patterns: ['arp', 'src net 100.64.0.0/10', '-'] }
  nat: { type: NAT, pool: [203.0.113.1], syn_icmp: true }
  arp: { type: Discard }
  outside: { type: ToPcap, file: outside.pcap }
  inside: { type: ToPcap, file: inside.pcap }
connections:
  - src -> side -> arp
  - side[1] -> [0]nat
  - side[2] -> [1]nat
  - nat[0] -> outside
  - nat[1] -> inside
`);
    const pipeline = await Pipeline.create(await loadConfig(join(dir, 'nat.yaml')), { threads: 'inline' });
    const result = await pipeline.run();
    assert.is(result.elements.nat.in, 1, 'the NAT saw the SYN alone');
    const answers = readPcap(join(dir, 'outside.pcap')).records.map(decode).filter((o) => o.proto === 1);
    assert.is(answers.length, 1, 'answered without a packet of its own after the SYN');
    assert.is(answers[0].second, 7, 'with the ARP frame 6 s after the SYN');
  } finally {
    removeDir(dir);
  }
});

test('T4 with syn_icmp on a quiet NAT: the answer leaves with the first packet 6 s after the SYN', async () => {
  const ext = (await run('port_preservation: true', [[0, tcp(A, R1, 5000, 80, SYN)]])).outside[0].src;
  // One packet a second: few batches, each sweeping a few slots of the 8192 the table has.
  const r = await run('port_preservation: true, syn_icmp: true', [
    [0, tcp(A, R1, 5000, 80, SYN)],
    [1, tcp(R2, ext, 1234, 6000, SYN)],
    ...Array.from({ length: 11 }, (_, i): Packet => [2 + i, udp(B, R2, 7000, 53)]),
  ]);
  const answers = r.outside.filter((o) => o.proto === 1);
  assert.is(answers.length, 1);
  assert.is(answers[0].second, 7, 'with the packet at 7 s');
});

test('deterministic mode: a subscriber whose mapping outlives the UDP timeout keeps its entry: a new session on the mapping leaves from its address (it left from 0.0.0.0), within its session limit', async () => {
  const det = "deterministic: true, inside: [100.64.0.0/18], pool: ['203.0.113.0/30'], sessions_per_subscriber: 2";
  const keepAlive: Packet[] = Array.from({ length: 8 }, (_, i) => [i * 60, udp(A, R1, 5000, 53)]);
  const r = await run(det, [...keepAlive, [430, udp(A, R2, 5000, 53)], [431, udp(A, R2, 5001, 53)]]);
  assert.equal(r.outside.map((o) => `${o.src}:${o.sport}`), Array(9).fill(`203.0.113.0:${r.outside[0].sport}`), 'the mapping keeps its address and port');
  assert.is(r.nat.drop_session_limit, 1, 'a third session is past the limit');
});

test('C4/C11 per-subscriber port limit: drop (or ICMP host unreachable), never evict a live mapping', async () => {
  const packets: Packet[] = Array.from({ length: 10 }, (_, i) => [i, udp(A, R1, 40000 + i, 53)]);
  const r = await run('ports_per_block: 8, blocks_per_subscriber: 1, icmp_errors: false', packets);
  assert.is(r.outside.length, 8, 'one block of 8 ports');
  assert.is(r.nat.drop_ports_exhausted, 2);
  assert.is(r.inside.length, 0, 'icmp_errors: false: dropped silently');
  const again = await run('ports_per_block: 8, blocks_per_subscriber: 1', [...packets, [20, udp(A, R1, 40000, 53)]]);
  assert.is(again.outside.length, 9, 'the first mapping still works');
  assert.is(again.inside.length, 2, 'an ICMP error for each refused packet');
  const icmp = again.inside[0].bytes;
  assert.equal([icmp[34], icmp[35]], [3, 1], 'destination unreachable, host unreachable');
  assert.is(again.inside[0].dst, A);
  assert.is(again.inside[0].src, '203.0.113.1');
  again.verdicts('inside').forEach((v) => assert.ok(v.ip === '1,1' && v.icmp === '1', JSON.stringify(v)));
  assert.is(again.nat.icmp_sent, 2);
  // A flood of refused packets within one millisecond: 50 answers, the rest not (1000 a second, bursts of 50).
  const flood = await run('ports_per_block: 8, blocks_per_subscriber: 1', [
    ...packets.slice(0, 8), ...Array.from({ length: 200 }, (_, i): Packet => [10 + i / 1e6, udp(A, R1, 41000 + i, 53)]),
    [12, udp(A, R1, 42000, 53)],                // 2 s later: answered again
  ]);
  assert.equal([flood.nat.icmp_sent, flood.nat.icmp_limited, flood.inside.length], [51, 150, 51]);
});

test('U14 a packet larger than the outside MTU with DF set: dropped, ICMP fragmentation needed naming the MTU goes back', async () => {
  const r = await run('mtu: 576', [
    [0, udp(A, R1, 5000, 53, { dontFragment: true, payload: 600 })],   // 1: too big, DF
    [1, udp(A, R1, 5001, 53, { payload: 600 })],                        // 2: too big, may be fragmented: fragmented
    [2, udp(A, R1, 5002, 53, { dontFragment: true, payload: 500 })],   // 3: fits
    [3, { proto: 'icmp', src: A, dst: R1, icmpType: 3, dontFragment: true, payload: 600 }], // 4: an ICMP error: no error about it
  ]);
  assert.equal(r.outside.map((s) => s.n), [2, 2, 3], 'the one without DF leaves in two fragments');
  assert.is(r.nat.drop_too_big, 2);
  assert.is(r.inside.length, 1);
  const icmp = r.inside[0].bytes;
  assert.equal([icmp[34], icmp[35], icmp.readUInt16BE(40)], [3, 4, 576], 'destination unreachable, fragmentation needed, next-hop MTU');
  assert.equal([icmp[15], icmp.readUInt16BE(18), icmp.readUInt16BE(20), icmp[22]], [0xc0, 0, 0x4000, 64],
    'precedence internetwork control (RFC 1812 §4.3.2.5), ID 0 with DF: an atomic datagram (RFC 6864), TTL 64');
  assert.equal([r.inside[0].src, r.inside[0].dst], ['203.0.113.1', A]);
  assert.equal([...icmp.subarray(42 + 12, 42 + 16)].join('.'), A, 'it quotes the packet as its sender sent it');
  assert.is(icmp.readUInt16BE(42 + 20), 5000, 'with its source port');
  r.verdicts('inside').forEach((v) => assert.ok(v.ip === '1,1' && v.icmp === '1', JSON.stringify(v)));
});

/** `frame` with IPv4 options after its 20-byte header (the header length, total length and checksum updated). */
function withOptions(frame: Buffer, options: Buffer): Buffer {
  const f = Buffer.concat([frame.subarray(0, 34), options, frame.subarray(34)]);
  f[14] = 0x40 | ((20 + options.length) >> 2);
  f.writeUInt16BE(f.length - 14, 16);
  f.writeUInt16BE(0, 24);
  f.writeUInt16BE(internetChecksum(f.subarray(14, 34 + options.length)), 24);
  return f;
}

test('U14 without DF: a packet larger than the outside MTU leaves in fragments, in order, that add up to the translated datagram', async () => {
  // No-operation, router alert (copied into every fragment), record route (first fragment only): 12 bytes.
  const options = Buffer.from('01' + '94040000' + '07070400000000', 'hex');
  const big = withOptions(frame(udp(A, R1, 5000, 53, { payload: 1200 })), options);
  const packets: Packet[] = [
    [0, big],                                                                     // 1: 1240 bytes, header 32
    [1, udp(A, R1, 5001, 53, { payload: 700, moreFragments: true, id: 0x2222 })], // 2: a first fragment, split further
    [2, udp(A, R1, 5001, 53, { payload: 700, fragOffset: 100, id: 0x2222 })],     // 3: its last fragment, split further
    [3, udp(A, R1, 5002, 53, { payload: 500 })],                                  // 4: fits
  ];
  // Port preservation makes the external ports of the two runs equal.
  const r = await run('mtu: 576, port_preservation: true, rewrite_ip_id: false', packets);
  const whole = await run('port_preservation: true, rewrite_ip_id: false', packets);
  assert.equal(r.outside.map((s) => s.n), [1, 1, 1, 2, 2, 3, 3, 4], 'each packet\'s fragments together and in order');
  assert.is(r.nat.fragmented, 3);
  assert.is(r.nat.translated_out, 4);
  const ipOf = (s: Seen) => {
    const d = s.bytes, hl = (d[14] & 15) * 4, field = d.readUInt16BE(20);
    return { hl, total: d.readUInt16BE(16), id: d.readUInt16BE(18), offset: (field & 0x1fff) * 8, more: (field & 0x2000) !== 0, body: d.subarray(14 + hl, 14 + d.readUInt16BE(16)) };
  };
  const pieces = r.outside.map(ipOf);
  pieces.forEach((f, i) => assert.ok(f.total <= 576 && f.offset % 8 === 0, `fragment ${i + 1}: ${f.total} bytes at ${f.offset}`));
  r.outside.forEach((s) => assert.is(s.src, whole.outside[0].src, 'every fragment from the external address'));
  // Packet 1: the options whose copied flag is set go into the later fragments, padded to a whole word.
  assert.equal(pieces.slice(0, 3).map((f) => [f.hl, f.offset, f.more, f.id]), [[32, 0, true, 0x1111], [24, 544, true, 0x1111], [24, 1096, false, 0x1111]]);
  assert.equal(r.outside[0].bytes.subarray(34, 46), options, 'the first fragment keeps every option');
  assert.equal([...r.outside[1].bytes.subarray(34, 38)], [0x94, 4, 0, 0], 'a later one only the router alert');
  assert.equal(Buffer.concat(pieces.slice(0, 3).map((f) => f.body)), ipOf(whole.outside[0]).body, 'the pieces add up to the translated datagram');
  // Packets 2 and 3: fragments of one datagram, cut further; the offsets go on from theirs, the last keeps its flag.
  assert.equal(pieces.slice(3, 7).map((f) => [f.offset, f.more]), [[0, true], [552, true], [800, true], [1352, false]]);
  assert.equal(Buffer.concat(pieces.slice(3, 5).map((f) => f.body)), ipOf(whole.outside[1]).body);
  assert.equal(Buffer.concat(pieces.slice(5, 7).map((f) => f.body)), ipOf(whole.outside[2]).body);
  assert.equal(r.outside[7].bytes, whole.outside[3].bytes, 'a packet that fits is not touched');
  // tshark checks every IP header and reassembles the first datagram, whose UDP checksum must verify.
  r.verdicts('outside').forEach((v, i) => assert.is(v.ip, '1', `IP checksum of fragment ${i + 1}`));
  assert.is(r.verdicts('outside').filter((v) => v.udp === '1').length, 2, 'packet 1 reassembled, and packet 4, with good UDP checksums');
});

test('U14 without DF: a packet whose fragments do not fit the output is dropped whole and counted', async () => {
  // At mtu 68 the outputs have room for the 31 fragments of a 1500-byte packet; a jumbo needs 188.
  const r = await run('mtu: 68', [[0, udp(A, R1, 5000, 53, { payload: 9000 })], [1, udp(A, R1, 5000, 53, { payload: 1472 })]], 'slot_size: 16384\n');
  assert.is(r.nat.drop_no_buffer, 1);
  assert.equal(r.outside.map((s) => s.n), Array(31).fill(2), 'none of the jumbo\'s, all of the next one\'s');
  r.verdicts('outside').forEach((v, i) => assert.is(v.ip, '1', `IP checksum of fragment ${i + 1}`));
  assert.is(r.verdicts('outside').filter((v) => v.udp === '1').length, 1, 'reassembled, with a good UDP checksum');
});

test('U14 without DF, many packets in one batch: each leaves whole in its fragments, in order, or is dropped whole and counted', async () => {
  // 16 packets in one batch at mtu 576: eight of 1500 bytes (3 pieces each), eight of 8000 (15 each). The outside
  // output has room for the pieces of 1500-byte packets from both inputs (expands), so some large ones find none.
  const sizes = Array.from({ length: 16 }, (_, i) => (i % 2 ? 7972 : 1472));
  const r = await run('mtu: 576', sizes.map((payload, i): Packet => [0, udp(A, R1, 5000 + i, 53, { payload, id: 0x100 + i })]), 'batch: 16\nslot_size: 8192\n');
  const ipOf = (s: Seen) => ({ n: s.n, id: s.bytes.readUInt16BE(18), offset: (s.bytes.readUInt16BE(20) & 0x1fff) * 8, more: (s.bytes[20] & 0x20) !== 0, payload: s.bytes.readUInt16BE(16) - 20 });
  const pieces = r.outside.map(ipOf);
  const passed = [...new Set(pieces.map((f) => f.n))];
  for (const n of passed) {
    const own = pieces.filter((f) => f.n === n);
    const first = pieces.findIndex((f) => f.n === n);
    assert.equal(pieces.slice(first, first + own.length), own, `packet ${n}: its fragments together`);
    assert.equal(own.map((f) => f.offset), own.reduce((at: number[], f, i) => [...at, i ? at[i - 1] + own[i - 1].payload : 0], []), `packet ${n}: offsets run on`);
    assert.equal(own.map((f) => f.more), own.map((_, i) => i < own.length - 1), `packet ${n}: only the last without MF`);
    assert.is(own.reduce((sum, f) => sum + f.payload, 0), sizes[n - 1] + 8, `packet ${n}: every byte`);
    assert.is(new Set(own.map((f) => f.id)).size, 1, `packet ${n}: one ID`);
  }
  assert.equal(passed, [...passed].sort((x, y) => x - y), 'in their order');
  assert.ok(sizes.every((size, i) => size > 1472 || passed.includes(i + 1)), 'every 1500-byte packet leaves');
  assert.ok(passed.length < 16, 'the output had no room for all the large ones');
  assert.is(r.nat.drop_no_buffer, 16 - passed.length);
  assert.is(r.nat.fragmented, passed.length);
  r.verdicts('outside').forEach((v, i) => assert.is(v.ip, '1', `IP checksum of fragment ${i + 1}`));
  assert.is(r.verdicts('outside').filter((v) => v.udp === '1').length, passed.length, 'tshark reassembles each, UDP checksum good');
});

test('U14 without DF: a packet whose pieces find too few free slots is dropped whole, and those it took come back', async () => {
  // 128 slots of 16 KiB: a 9000-byte packet at mtu 68 needs 187 more.
  const r = await run('mtu: 68', [[0, udp(A, R1, 5000, 53, { payload: 9000 })], [1, udp(A, R1, 5000, 53, { payload: 1472 })], [2, udp(A, R1, 5000, 53, { payload: 1472 })]],
    'pool_slots: 128\nslot_size: 16384\n');
  assert.is(r.nat.drop_no_buffer, 1);
  assert.equal(r.outside.map((s) => s.n), [...Array(31).fill(2), ...Array(31).fill(3)], 'the next ones leave whole, on the slots given back');
  assert.is(r.verdicts('outside').filter((v) => v.udp === '1').length, 2);
});

test('C9 PCP (RFC 6887): MAP opens a subscriber port to any host for its lifetime, whatever the filtering; errors answered as the RFC says', async () => {
  const PCP = '100.64.255.254';
  const pcp = (s: number, req: Buffer): Packet => [s, udp(A, PCP, 5350, 5351, { payload: req })];
  const r = await run('pcp_server: 100.64.255.254, filtering: address-and-port-dependent, port_preservation: true', [
    pcp(0, pcpRequest(A, { port: 7000, lifetime: 3600 })),                 // 1: MAP UDP 7000
    [1, udp(R1, '203.0.113.1', 9999, 7000)],                             // 2: unsolicited, from anyone: passes
    pcp(2, pcpRequest(A, { protocol: 6, port: 8080, lifetime: 60 })),    // 3: MAP TCP 8080, 60 s asked: 120 s granted
    [3, tcp(R2, '203.0.113.1', 40000, 8080, SYN)],                       // 4: a connection from outside: passes
    pcp(4, pcpRequest(A, { port: 7000, lifetime: 0 })),                  // 5: delete the UDP one
    [5, udp(R2, '203.0.113.1', 9999, 7000)],                             // 6: a new host: filtered again
    [6, udp(R1, '203.0.113.1', 9999, 7000)],                             // 7: the session of packet 2 lives on
    pcp(7, pcpRequest(A, { version: 1 })),                               // 8: UNSUPP_VERSION (1)
    pcp(8, pcpRequest(A, { opcode: 3 })),                                // 9: AUTHENTICATION (RFC 7652): UNSUPP_OPCODE (4)
    pcp(9, pcpRequest(B, { port: 7001 })),                               // 10: claims another address: ADDRESS_MISMATCH (12)
    pcp(10, pcpRequest(A, { port: 7002, options: Buffer.from('01000010' + '00'.repeat(16), 'hex') })), // 11: THIRD_PARTY: UNSUPP_OPTION (5)
    pcp(11, pcpRequest(A, { protocol: 1 })),                             // 12: ICMP: UNSUPP_PROTOCOL (9)
    pcp(12, Buffer.concat([pcpRequest(A), Buffer.from([0])])),           // 13: 61 bytes: MALFORMED_REQUEST (3)
    pcp(13, Buffer.from([2])),                                           // 14: too short to answer: dropped
    pcp(14, pcpRequest(A, { port: 7003, options: Buffer.from('80000000', 'hex') })), // 15: an optional option: skipped, mapped
    pcp(15, pcpRequest(A, { opcode: 0 })),                               // 16: ANNOUNCE
    [200, tcp(R1, '203.0.113.1', 40001, 8080, SYN)],                     // 17: the TCP mapping's 120 s are over
    pcp(201, pcpRequest(A, { port: 7003, lifetime: 0, nonce: 100 })),    // 18: another client's nonce: NOT_AUTHORIZED (2)
    pcp(202, pcpRequest(A, { port: 7003, lifetime: 7200 })),             // 19: its own: renewed
  ]);
  assert.equal(r.outside.length, 0, 'nothing of PCP goes out');
  assert.equal(r.inside.map((s) => s.n), [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 15, 16, 18, 19]);
  const [version, rbit, opcode, result, lifetime, epoch, protocol, internal, external, address, nonce] = PCP_FIELDS.map((_, i) => i + 1);
  const answers = r.pcp.filter((f) => f[rbit] === '1' || f[rbit] === 'True');
  assert.equal(answers.map((f) => +f[result]), [0, 0, 0, 1, 4, 12, 5, 9, 3, 0, 0, 2, 0], 'result codes as tshark reads them');
  answers.forEach((f) => assert.is(f[version], '2'));
  assert.equal(answers.map((f) => +f[lifetime]), [3600, 120, 0, 1800, 1800, 1800, 1800, 1800, 1800, 3600, 0, 1800, 7200]);
  assert.equal(answers.map((f) => +f[epoch]), [0, 2, 4, 7, 8, 9, 10, 11, 12, 14, 15, 201, 202], 'seconds since the server began answering');
  const [udpMap, tcpMap] = answers;
  assert.equal([udpMap[protocol], udpMap[internal], udpMap[external], udpMap[address]], ['17', '7000', '7000', '::ffff:203.0.113.1']);
  assert.equal([tcpMap[protocol], tcpMap[internal], tcpMap[external]], ['6', '8080', '8080']);
  assert.is(udpMap[nonce].replace(/:/g, ''), '0102030405060708090a0b0c', 'the nonce comes back');
  assert.equal([r.inside[1].dst, r.inside[1].dport, r.inside[3].dport], [A, 7000, 8080], 'inbound reached the mapped ports');
  const first = r.inside[0];
  assert.equal([first.src, first.sport, first.dst, first.dport], [PCP, 5351, A, 5350], 'answered from the server to the client');
  const mismatch = r.inside.find((s) => s.n === 10)!.bytes;
  assert.is(mismatch.subarray(54, 66).toString('hex'), '000000000000ffff64400002', 'an error answer keeps the last 96 bits of the address claimed (§7.2)');
  assert.is(first.bytes.subarray(54, 66).toString('hex'), '00'.repeat(12), 'a success\'s reserved bits are zero');
  assert.is(r.nat.drop_filtered, 1);
  assert.is(r.nat.drop_unsolicited_syn, 1);
  assert.is(r.nat.pcp_requests, 13);
  assert.is(r.nat.pcp_errors, 7);
  const mappings = r.subscriber(A).mappings as { protocol: string; inside_port: number; pcp_expires_ns?: string }[];
  const port = (n: number) => mappings.find((m) => m.protocol === 'udp' && m.inside_port === n);
  assert.ok(port(7003)?.pcp_expires_ns, 'the subscriber view shows the PCP lifetime of a mapping made by MAP');
  assert.ok(port(7000) && !port(7000)!.pcp_expires_ns, 'and none once it is deleted');
  assert.is(r.nat.pcp_mappings, 5);
  assert.is(r.nat.drop_malformed, 1);
  r.verdicts('inside').forEach((v, i) => assert.ok(v.ip === '1' && v.udp !== '0' && v.tcp !== '0', `checksums of packet ${i + 1}: ${JSON.stringify(v)}`));
});

test('C9 PCP: an error answer copies the request, padded to whole words, at most 1100 bytes (the most a PCP message has)', async () => {
  const PCP = '100.64.255.254';
  const r = await run('pcp_server: 100.64.255.254', [
    [0, udp(A, PCP, 5350, 5351, { payload: Buffer.concat([pcpRequest(A), Buffer.alloc(1140)]) })], // 1200 bytes: MALFORMED_REQUEST
    [1, udp(A, PCP, 5350, 5351, { payload: Buffer.concat([pcpRequest(A), Buffer.from([0])]) })],   // 61 bytes: MALFORMED_REQUEST
  ]);
  assert.equal(r.inside.map((s) => s.bytes.length - 42), [1100, 64], 'PCP message lengths: at most 1100, padded to whole words');
  assert.equal(r.pcp.map((f) => +f[4]), [3, 3], 'MALFORMED_REQUEST, as tshark reads the answers');
  assert.equal(r.inside.map((s) => s.bytes.subarray(66, 102).equals(pcpRequest(A).subarray(24, 60))), [true, true], 'the request\'s MAP part comes back');
});

test('C9 PCP suggested external port and address: taken when free; with PREFER_FAILURE those or nothing (CANNOT_PROVIDE_EXTERNAL)', async () => {
  const PCP = '100.64.255.254';
  const from = (client: string) => (s: number, req: Buffer): Packet => [s, udp(client, PCP, 5350, 5351, { payload: req })];
  const C = '100.64.0.3';
  const [a, b, c] = [from(A), from(B), from(C)];
  const PREFER_FAILURE = Buffer.from('02000000', 'hex');
  const r = await run('pcp_server: 100.64.255.254', [
    a(0, pcpRequest(A, { port: 7000, suggest: [undefined, 40000] })),                          // 1: a new block, the one with 40000
    a(1, pcpRequest(A, { port: 7001, suggest: [undefined, 40001] })),                          // 2: in the block A holds
    a(2, pcpRequest(A, { port: 7000, suggest: [undefined, 45000] })),                          // 3: renewed: its own port stays
    a(3, pcpRequest(A, { port: 7000, suggest: [undefined, 45000], options: PREFER_FAILURE })), // 4: 11, the mapping untouched
    a(4, pcpRequest(A, { port: 7002, suggest: [undefined, 100], options: PREFER_FAILURE })),   // 5: a low port for a high one: 11
    a(5, pcpRequest(A, { port: 7003, suggest: [undefined, 100] })),                            // 6: without the option: another port
    b(6, pcpRequest(B, { port: 7000, suggest: ['203.0.113.1', 40002], options: PREFER_FAILURE })), // 7: in A's block: 11
    b(7, pcpRequest(B, { port: 7001, suggest: ['203.0.113.1', 41000], options: PREFER_FAILURE })), // 8: a free block there: given
    a(8, pcpRequest(A, { port: 7005, suggest: ['203.0.113.2', 0], options: PREFER_FAILURE })),  // 9: not A's address: 11
    a(9, pcpRequest(A, { port: 7006, options: Buffer.concat([PREFER_FAILURE, PREFER_FAILURE]) })), // 10: twice: MALFORMED_OPTION (6)
    [10, udp(R1, '203.0.113.1', 9999, 40000)],                                                 // 11: reaches A:7000
    [11, udp(R1, '203.0.113.1', 9999, 41000)],                                                 // 12: reaches B:7001
    a(12, pcpRequest(A, { port: 7007, suggest: [undefined, 50000] })),                          // 13: a block A may still claim
    c(13, pcpRequest(C, { port: 7000, suggest: ['203.0.113.1', 40003], options: PREFER_FAILURE })), // 14: 11, and C gets no address
    a(14, pcpRequest(A, { port: 7010, suggest: [undefined, 40000] })),                          // 15: taken by 7000: another port
  ]);
  const [, , , result, lifetime, , , internal, external, address] = PCP_FIELDS.map((_, i) => i + 1);
  assert.equal(r.pcp.map((f) => [+f[result], +f[lifetime]]),
    [[0, 3600], [0, 3600], [0, 3600], [11, 30], [11, 30], [0, 3600], [11, 30], [0, 3600], [11, 30], [6, 1800], [0, 3600], [11, 30], [0, 3600]]);
  const granted = r.pcp.filter((f) => f[result] === '0').map((f): [number, number, string] => [+f[internal], +f[external], f[address]]);
  assert.equal(granted.slice(0, 3), [[7000, 40000, '::ffff:203.0.113.1'], [7001, 40001, '::ffff:203.0.113.1'], [7000, 40000, '::ffff:203.0.113.1']]);
  assert.ok(granted[3][1] >= 1024 && granted[3][1] !== 100, `port ${granted[3][1]}: the inside port's range is kept (RFC 4787 REQ-3)`);
  assert.equal(granted.slice(4, 6), [[7001, 41000, '::ffff:203.0.113.1'], [7007, 50000, '::ffff:203.0.113.1']]);
  assert.ok(granted[6][0] === 7010 && granted[6][1] !== 40000 && granted[6][1] >= 1024, `7010 -> ${granted[6][1]}: the suggested port was taken`);
  assert.ok(!['203.0.113.1', '203.0.113.2'].includes(r.subscriber(C).external), 'a refused request pinned no address');
  assert.equal(r.inside.filter((s) => s.sport !== 5351).map((s) => `${s.dst}:${s.dport}`), [`${A}:7000`, `${B}:7001`]);
  const mapped = (who: string) => (r.subscriber(who).mappings as { inside_port: number; external: string }[]).map((m) => `${m.inside_port}>${m.external}`).sort();
  assert.ok(!mapped(A).some((m) => m.startsWith('7002>') || m.startsWith('7005>')), 'refused requests made no mapping');
  assert.equal(mapped(B), ['7001>203.0.113.1:41000']);
  assert.ok(mapped(A).includes('7000>203.0.113.1:40000'), 'the mapping a PREFER_FAILURE request could not move is as it was');
  assert.is(r.nat.pcp_errors, 6);
});

test('C9 PCP: a mapping lives its lifetime without traffic (its block held); a delete leaves a live TCP connection its mapping', async () => {
  const PCP = '100.64.255.254';
  const pcp = (s: number, req: Buffer): Packet => [s, udp(A, PCP, 5350, 5351, { payload: req })];
  // A small subscriber table, so that the scan for idle blocks (a few entries per batch) passes A's entry in the two batches before packet 4.
  const r = await run('pcp_server: 100.64.255.254, port_preservation: true, max_subscribers: 4', [
    pcp(0, pcpRequest(A, { port: 7000, lifetime: 3600 })),       // 1: MAP UDP 7000 for an hour, no traffic on it
    [998, udp(B, R1, 6000, 53)],                                  // 2: other batches run: idle blocks are given back
    [999, udp(B, R1, 6000, 53)],                                  // 3
    [1000, udp(R1, '203.0.113.1', 9999, 7000)],                   // 4: past the UDP timeout, within the lifetime: passes
    [1001, tcp(A, R1, 8080, 80, SYN)],                            // 5: a connection from inside
    [1002, tcp(R1, '203.0.113.1', 80, 8080, SYN_ACK)],            // 6
    [1003, tcp(A, R1, 8080, 80, ACK)],                            // 7: established
    pcp(1004, pcpRequest(A, { protocol: 6, port: 8080 })),        // 8: MAP its port
    pcp(1005, pcpRequest(A, { protocol: 6, port: 8080, lifetime: 0 })), // 9: and delete it
    [1400, tcp(R1, '203.0.113.1', 80, 8080, PSH_ACK)],            // 10: past the transitory timeout: the connection lives
  ]);
  assert.equal(r.inside.map((s) => s.n), [1, 4, 6, 8, 9, 10]);
  assert.equal([r.inside[1].dst, r.inside[1].dport, r.inside[5].dst, r.inside[5].dport], [A, 7000, A, 8080]);
  assert.is(r.nat.drop_no_mapping, 0);
});

test('C9 PCP PEER: the session with one remote peer is made as its first packet would make it, and kept for the lifetime', async () => {
  const PCP = '100.64.255.254';
  const pcp = (s: number, req: Buffer): Packet => [s, udp(A, PCP, 5350, 5351, { payload: req })];
  const r = await run('pcp_server: 100.64.255.254, filtering: address-and-port-dependent, port_preservation: true', [
    pcp(0, pcpRequest(A, { port: 6000, lifetime: 1000, peer: [R1, 53] })), // 1: PEER UDP 6000 <-> R1:53
    [500, udp(R1, '203.0.113.1', 53, 6000)],                               // 2: the peer, past the UDP timeout: passes
    [501, udp(R2, '203.0.113.1', 53, 6000)],                               // 3: another host: filtered
    pcp(502, pcpRequest(A, { port: 6000, lifetime: 0, peer: [R1, 53] })),  // 4: what is left: 498 s (the peer's packet did not shorten it)
    pcp(503, pcpRequest(A, { port: 6001, peer: ['198.18.0.9', 0] })),      // 5: no remote port: MALFORMED_REQUEST
    [504, udp(A, R1, 6000, 53)],                                           // 6: the subscriber's own packet (its timer: 804 s)
    [900, udp(R1, '203.0.113.1', 53, 6000)],                               // 7: still within the PEER's 1000 s: passes
    pcp(901, pcpRequest(A, { port: 6010, lifetime: 3600 })),               // 8: MAP UDP 6010 (in 6000's block: preserved)
    pcp(902, pcpRequest(A, { port: 6010, lifetime: 86400, peer: [R1, 53] })), // 9: and a PEER on it, for a day
    pcp(903, pcpRequest(A, { port: 6010, lifetime: 0 })),                  // 10: the MAP deleted
    [1400, udp(R1, '203.0.113.1', 53, 6010)],                              // 11: the PEER session keeps its mapping
    pcp(1401, pcpRequest(A, { protocol: 6, port: 8000, lifetime: 3000, peer: [R2, 443] })), // 12: PEER TCP
    [1402, tcp(A, R2, 8000, 443, SYN)],                                    // 13
    [1403, tcp(R2, '203.0.113.1', 443, 8000, SYN_ACK)],                    // 14
    [1404, tcp(A, R2, 8000, 443, 0x11)],                                   // 15: FIN: the transitory timer (240 s) applies
    [1700, tcp(R2, '203.0.113.1', 443, 8000, ACK)],                        // 16: too late, PEER or not
  ]);
  assert.equal(r.inside.map((s) => s.n), [1, 2, 4, 5, 7, 8, 9, 10, 11, 12, 14]);
  const [, rbit, opcode, result, lifetime, , , , , , , external, address] = PCP_FIELDS.map((_, i) => i + 1);
  const answers = r.pcp.filter((f) => f[rbit] === '1' || f[rbit] === 'True');
  assert.equal(answers.map((f) => [+f[opcode], +f[result], +f[lifetime]]),
    [[2, 0, 1000], [2, 0, 498], [2, 3, 1800], [1, 0, 3600], [2, 0, 86400], [1, 0, 0], [2, 0, 3000]]);
  assert.equal([answers[0][external], answers[0][address]], ['6000', '::ffff:203.0.113.1']);
  assert.equal(r.pcp.length, 7, 'answers only');
  assert.equal(r.inside.filter((s) => s.proto !== 17 || s.sport !== 5351).map((s) => `${s.dst}:${s.dport}`), [`${A}:6000`, `${A}:6000`, `${A}:6010`, `${A}:8000`]);
  assert.equal([r.outside[0].src, r.outside[0].sport], ['203.0.113.1', 6000]);
  assert.is(r.nat.drop_filtered, 2, 'packet 3, and packet 16 (its session over, nothing admits it)');
  assert.is(r.nat.drop_no_mapping, 0);
  assert.is(r.nat.mappings_created, 3);
});

test('C9 PCP: a delete takes away a mapping no session used (any host could reach it), and leaves one in use to its traffic', async () => {
  const PCP = '100.64.255.254';
  const pcp = (s: number, req: Buffer): Packet => [s, udp(A, PCP, 5350, 5351, { payload: req })];
  const r = await run('pool: [203.0.113.1], pcp_server: 100.64.255.254, port_preservation: true', [
    pcp(0, pcpRequest(A, { port: 7000 })),                 // 1: MAP UDP 7000, no traffic on it
    pcp(1, pcpRequest(A, { port: 7001 })),                 // 2: MAP UDP 7001
    [2, udp(A, R1, 7001, 53)],                             // 3: A sends from 7001
    pcp(3, pcpRequest(A, { port: 7000, lifetime: 0 })),   // 4: delete both
    pcp(4, pcpRequest(A, { port: 7001, lifetime: 0 })),   // 5
    [5, udp(R2, '203.0.113.1', 9999, 7000)],             // 6: the port is closed
    [6, udp(R2, '203.0.113.1', 9999, 7001)],             // 7: 7001 is a mapping A's traffic made, endpoint-independent filtering
  ]);
  assert.equal(r.inside.map((s) => s.n), [1, 2, 4, 5, 7]);
  assert.is(r.nat.drop_no_mapping, 1);
  assert.equal(r.subscriber(A).mappings.map((m: any) => m.inside_port), [7001]);
  // A PEER session uses the mapping too: past the PEER's lifetime, inbound traffic keeps the session, and a delete leaves it.
  const peer = await run('pool: [203.0.113.1], pcp_server: 100.64.255.254, port_preservation: true', [
    pcp(0, pcpRequest(A, { port: 6010, lifetime: 7200 })),                // 1
    pcp(1, pcpRequest(A, { port: 6010, lifetime: 600, peer: [R1, 53] })), // 2
    [590, udp(R1, '203.0.113.1', 53, 6010)],                              // 3
    pcp(700, pcpRequest(A, { port: 6010, lifetime: 0 })),                  // 4: delete the MAP
    [710, udp(R1, '203.0.113.1', 53, 6010)],                              // 5: the session goes on
  ]);
  assert.equal(peer.inside.map((s) => s.n), [1, 2, 3, 4, 5]);
});

test('C9 NAT-PMP (RFC 6886, PCP version 0): the external address, mappings, delete all, an unsupported opcode, a short request dropped', async () => {
  const PCP = '100.64.255.254';
  const pmp = (s: number, hex: string): Packet => [s, udp(A, PCP, 5350, 5351, { payload: Buffer.from(hex, 'hex') })];
  const r = await run('pcp_server: 100.64.255.254, port_preservation: true, filtering: address-dependent', [
    pmp(0, '0000'),                           // 1: the external address
    pmp(1, '00010000' + '1b58' + '0000' + '00000e10'), // 2: map UDP 7000, an hour
    [2, udp(R1, '203.0.113.1', 9999, 7000)],  // 3: reaches the subscriber
    pmp(3, '0003'),                           // 4: opcode 3: unsupported (5)
    pmp(4, '00020000' + '1f90'),              // 5: a TCP map cut short: dropped
    pmp(5, '00010000' + '1b59' + '9c40' + '00000e10'), // 6: map UDP 7001 suggesting public port 40000
    pmp(6, '00020000' + '1f90' + '0000' + '00000e10'), // 7: map TCP 8080
    pmp(7, '00010000' + '0000' + '0000' + '00000000'), // 8: delete every UDP mapping (§3.4)
    [8, udp(R1, '203.0.113.1', 9999, 40000)], // 9: gone: no traffic used it
    [9, tcp(R1, '203.0.113.1', 40001, 8080, SYN)], // 10: the TCP mapping stays
    pmp(10, '00010000' + '0000' + '1234' + '00000000'), // 11: internal port 0 with an external port: refused (2)
    [11, udp(R1, '203.0.113.1', 9999, 7000)], // 12: 7000's session (packet 3) keeps its mapping
    [12, udp(R2, '203.0.113.1', 9999, 7000)], // 13: a host A never sent to: filtered
  ]);
  assert.equal(r.inside.map((s) => s.n), [1, 2, 3, 4, 6, 7, 8, 10, 11, 12]);
  assert.is(r.nat.drop_filtered, 1);
  assert.is(r.nat.drop_no_mapping, 1, 'packet 9: the mapping of 7001, which no traffic used, went with the delete');
  assert.equal(r.natPmp.filter((f) => f[4] === '0').map((f) => [f[0], f[1], f[5], f[6]]), [['129', '0', '0', '0'], ['129', '2', '0', '0']], 'delete all: done; refused with an external port');
  assert.equal(r.natPmp.find((f) => f[4] === '7001')?.slice(4), ['7001', '40000', '3600'], 'the suggested public port, free, is given');
  assert.equal(r.natPmp.slice(0, 2).map((f) => f.slice(0, 3)), [['128', '0', '0'], ['129', '0', '1']], 'opcode + 128, result, seconds since the epoch');
  const unsupported = r.inside[3].bytes.subarray(42);
  assert.equal([unsupported.length, unsupported[1], unsupported.readUInt16BE(2), unsupported.readUInt32BE(4)], [8, 131, 5, 3], 'opcode 3: result 5, unsupported opcode');
  assert.is(r.natPmp[0][3], '203.0.113.1');
  assert.equal(r.natPmp[1].slice(4), ['7000', '7000', '3600']);
  assert.equal([r.inside[2].dst, r.inside[2].dport], [A, 7000]);
  assert.is(r.nat.drop_malformed, 1);
  r.verdicts('inside').forEach((v, i) => assert.ok(v.ip === '1' && v.udp !== '0', `checksums of packet ${i + 1}: ${JSON.stringify(v)}`));
});

test('C9 PCP needs endpoint-independent mapping and a unicast server address: others are config errors', async () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, 'pcp.yaml'), config('mapping: address-dependent, pcp_server: 100.64.255.254'));
    const r = cli(['check', join(dir, 'pcp.yaml')]);
    assert.is(r.status, 2);
    assert.match(r.stderr, /pcp\.yaml:\d+:\d+: nat\.pcp_server: PCP maps a port for every remote host, which address-dependent mapping cannot do\n {2}hint: use mapping: endpoint-independent/);
    writeFileSync(join(dir, 'special.yaml'), config('pcp_server: 224.0.0.1'));
    const special = cli(['check', join(dir, 'special.yaml')]);
    assert.is(special.status, 2);
    assert.match(special.stderr, /special\.yaml:\d+:\d+: nat\.pcp_server: 224\.0\.0\.1 is no host's address: subscribers could not reach it\n {2}hint: an unused unicast address on the inside/);
  } finally {
    removeDir(dir);
  }
});

test('C5 per-subscriber session limit: new sessions past it are refused; sessions that end (time out or are never made) free room', async () => {
  const ext = (await run('port_preservation: true', [[0, udp(A, R1, 5000, 53)]])).outside[0].src;
  // A small subscriber table: the search for idle blocks covers it in the last batch.
  const r = await run('sessions_per_subscriber: 3, port_preservation: true, max_subscribers: 16', [
    [0, udp(A, R1, 5000, 53)], [1, udp(A, R2, 5000, 53)], [2, udp(A, R1, 5001, 53)], // three sessions
    [3, udp(A, R1, 5000, 53)],                  // 4: an existing session: passes
    [4, udp(A, R2, 5001, 53)],                  // 5: a fourth: refused
    [5, udp(R2, ext, 53, 5002)],                // 6: inbound to no mapping: not a session, not counted as one
    [6, udp(B, R1, 5000, 53)],                  // 7: another subscriber has its own limit
    [7, udp(R2, ext, 99, 5000)],                // 8: inbound from a new remote (EIF) would be a fourth session: refused
    [400, udp(A, R2, 5001, 53)],                // 9: every session of A timed out (300 s): room again
  ]);
  assert.equal(r.outside.map((s) => s.n), [1, 2, 3, 4, 7, 9]);
  assert.is(r.nat.drop_session_limit, 2);
  assert.is(r.nat.drop_no_mapping, 1);
  assert.is(r.subscriber(A).session_count, 1, 'the session of packet 9 (the three before it timed out)');
  assert.is(r.subscriber(B).note, 'no state for this subscriber', 'B\'s one session and mapping expired, and the search gave its block back');
  // One session expires while another keeps the mapping alive: found expired, it is counted off at once.
  const partial = await run('sessions_per_subscriber: 2', [
    [0, udp(A, R1, 5000, 53)], [200, udp(A, R2, 5000, 53)],
    [350, udp(A, R1, 5000, 53)],                // 3: its old session expired at 300: a new one fits
    [351, udp(A, R1, 5001, 53)],                // 4: a third would not
  ]);
  assert.equal(partial.outside.map((s) => s.n), [1, 2, 3]);
  assert.is(partial.nat.drop_session_limit, 1);
  assert.is(partial.subscriber(A).session_count, 2);
  assert.equal(partial.subscriber(A).sessions.map((x: any) => x.remote).sort(), [`${R1}:53`, `${R2}:53`], 'the two it counts');
  // One session kept alive, another left to expire unseen: at the limit, the expired one is found and counted off.
  const R3 = '198.18.0.3';
  const kept = await run('sessions_per_subscriber: 2', [
    [0, udp(A, R1, 5000, 53)], [0, udp(A, R2, 5000, 53)],
    [100, udp(A, R1, 5000, 53)], [200, udp(A, R1, 5000, 53)], [310, udp(A, R1, 5000, 53)],
    [320, udp(A, R3, 5000, 53)],                // 6: R2's session expired at 300: room for R3's
  ]);
  assert.equal(kept.outside.map((s) => s.n), [1, 2, 3, 4, 5, 6], 'a new destination was refused while an expired session still counted');
  assert.is(kept.nat.drop_session_limit, 0);
});

test('C3/C11 a pool with no block left: counted drops; non-contiguous pools are used whole', async () => {
  // Two addresses apart, 63 blocks of 1024 high ports each: 126 subscribers fit, the 127th does not.
  const packets: Packet[] = Array.from({ length: 127 }, (_, i) => [i, udp(`100.64.1.${i}`, R1, 40000, 53)]);
  const r = await run("pool: ['203.0.113.1', '203.0.113.9/32'], ports_per_block: 1024", packets);
  assert.is(r.outside.length, 126);
  assert.is(r.nat.drop_pool_exhausted, 1);
  assert.equal(new Set(r.outside.map((o) => o.src)), new Set(['203.0.113.1', '203.0.113.9']));
  assert.equal(r.blocks, { '203.0.113.1': { udp: 63 }, '203.0.113.9': { udp: 63 } });
  assert.is(r.nat.blocks_held, 126, 'the pool\'s use as a counter (in /metrics)');
});

test('a UDP datagram whose length field is shorter than its header or longer than its IP payload is malformed, either way', async () => {
  const withLength = (spec: Spec, length: number) => { const f = frame(spec); f.writeUInt16BE(length, 38); return f; };
  const r = await run('port_preservation: true', [
    [0, udp(A, R1, 5000, 53)],
    [1, withLength(udp(A, R1, 5001, 53), 3)],
    [2, withLength(udp(A, R1, 5002, 53), 200)],
    [3, withLength(udp(R1, '203.0.113.1', 53, 5000), 7)],
  ]);
  assert.is(r.nat.drop_malformed, 3, JSON.stringify(r.nat));
  assert.equal(r.outside.map((o) => o.n), [1]);
  assert.equal(r.inside, []);
});

test('C8/C12/C14 blocks are logged once each, released when idle, and quarantined for 120 s', async () => {
  const one = 'pool: [203.0.113.1], port_preservation: true, ports_per_block: 1024, max_subscribers: 4';
  const packets: Packet[] = [
    [0, udp(A, R1, 40000, 53)],
    // Batches after the mapping's 300 s (and its eighth more) let the NAT find the idle block and release it.
    ...Array.from({ length: 8 }, (_, i): Packet => [340 + i, udp('100.64.9.9', R1, 1, 2, { fragOffset: 1 })]),
    [350, udp(B, R1, 40000, 53)],   // would prefer A's old block: quarantined
    [500, udp('100.64.0.3', R1, 40000, 53)], // after 120 s: gets it
  ];
  const r = await run(one, packets);
  assert.is(r.outside[0].sport, 40000);
  const b = r.outside.find((o) => o.n === 10)!, c = r.outside.find((o) => o.n === 11)!;
  assert.ok(b.sport < 39936 || b.sport > 40959, `B's port ${b.sport} is not from A's released block`);
  assert.is(c.sport, 40000, 'after the quarantine the block is given out again');
  const events = r.log.map((l: any) => `${l.event} ${l.subscriber} ${l.ports} ${l.protocol}`);
  assert.equal(events.filter((e: string) => e.includes(A)), [`allocate ${A} 39936-40959 udp`, `release ${A} 39936-40959 udp`]);
  assert.ok(r.log.every((l: any) => !('destination' in l) && Object.keys(l).sort().join() === 'event,external,ports,protocol,subscriber,time'), 'nothing about destinations');
  assert.is(r.nat.blocks_released >= 1, true);
});

test('C8 no block goes unlogged: while the log\'s queue is full (40000 new subscribers in a burst, the log written every 200 ms), a block is not claimed and the packet is dropped, counted', async () => {
  const subscribers = Array.from({ length: 40_000 }, (_, i) => `100.64.${i >> 8}.${i & 255}`);
  const r = await run('pool: [203.0.113.0/26], ports_per_block: 64, max_subscribers: 65536', subscribers.map((s): Packet => [0, udp(s, R1, 5000, 53)]), 'batch: 256\n');
  const allocated = r.log.filter((l: any) => l.event === 'allocate').length;
  assert.is(r.nat.log_lost, 0);
  assert.is(allocated, r.nat.blocks_allocated, 'a record for every block claimed');
  assert.is(r.nat.translated_out + r.nat.drop_log_full, subscribers.length);
});

test('C8 on the wall clock (--clock wall) the block log is dated now (it was dated by the time since boot, in 1970)', async () => {
  for (const threads of ['inline', 'worker'] as const) {
    const before = Date.now();
    const { log } = await run('', [[0, udp('100.64.0.1', '198.18.0.1', 5000, 53)]], '', { clock: 'wall', threads });
    assert.ok(log.length >= 1, threads);
    for (const record of log) assert.ok(Math.abs(Date.parse(record.time) - before) < 60_000, `${threads}: ${record.time}`);
  }
});

test('C8 a block log that cannot be written (a full disk): the NAT goes on, and the log says so and how many records were not written', async () => {
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), [udp(A, R1, 5000, 53), udp(B, R1, 5000, 53)].map((spec, i) => ({ data: frame(spec), sec: T0 + i, usec: 0 })));
    writeFileSync(join(dir, 'full.yaml'), config('log: /dev/full'));
    const logs: string[] = [];
    const pipeline = await Pipeline.create(await loadConfig(join(dir, 'full.yaml')), { threads: 'inline', log: (m: string) => logs.push(m) });
    const result = await pipeline.run();
    assert.is((result.elements.nat as any).translated_out, 2);
    assert.is(logs.filter((m) => m.includes('cannot write the block log /dev/full (ENOSPC): its records wait')).length, 1, logs.join('\n'));
    assert.ok(logs.some((m) => /4 block records could not be written to \/dev\/full \(ENOSPC\)/.test(m)), logs.join('\n'));
  } finally {
    removeDir(dir);
  }
});

test('C8 on a quiet NAT (a packet a second) an idle block is given back within seconds of its last mapping expiring', async () => {
  const packets: Packet[] = [[0, udp(A, R1, 5000, 53)], ...Array.from({ length: 400 }, (_, i): Packet => [1 + i, udp(B, R1, 6000, 53)])];
  const r = await run('', packets);
  const released = r.log.filter((l: any) => l.event === 'release' && l.subscriber === A);
  assert.is(r.nat.blocks_released, 1, 'A\'s block, by the search (B\'s is still held)');
  assert.is(released.length, 1);
  // Its mapping expired after 300 s (and at most an eighth more); the release is dated then.
  const at = (Date.parse(released[0].time) / 1000) - T0;
  assert.ok(at >= 300 && at <= 338, `released at ${at} s`);
  assert.is(r.subscriber(A).note, 'no state for this subscriber', 'A is gone');
});

test('C8 a quiet NAT whose pool is taken by idle blocks gives them back when a new subscriber needs one, dated when they went idle', async () => {
  // One address, blocks of 1024 ports: 63 blocks above 1023, all taken at t = 0; their mappings expire after 300 s.
  const subscribers = (third: number, at: number) => Array.from({ length: 63 }, (_, i): Packet => [at + i / 1000, udp(`100.64.${third}.${i + 1}`, R1, 40000, 53)]);
  const r = await run('pool: [203.0.113.1], ports_per_block: 1024, blocks_per_subscriber: 1', [...subscribers(1, 0), ...subscribers(2, 1000)]);
  assert.is(r.nat.drop_pool_exhausted, 0, 'the second 63 find blocks');
  assert.is(r.outside.length, 126);
  assert.is(r.nat.blocks_released, 63);
  const released = r.log.filter((l: any) => l.event === 'release').map((l: any) => Date.parse(l.time) / 1000 - T0);
  // The first 63 as they went idle; the second 63 when the run ends (the log leaves no block open).
  assert.is(released.length, 126);
  assert.is(released.filter((s: number) => s >= 1000).length, 63);
  // 300 s and an eighth more (the mapping's deadline runs ahead of its session's), then the next whole second.
  assert.ok(released.slice(0, 63).every((s: number) => s > 300 && s < 400), `released at ${Math.min(...released)}-${Math.max(...released)} s, not when the search saw them (1000 s)`);
  // Live counts are of entries not past their deadline: the second 63 subscribers' mappings (one each, not the two entries each has).
  assert.is(r.nat.mappings, 63);
  assert.is(r.nat.sessions, 63);
});

test('deterministic mode (RFC 7422): VPP det44 vectors', async () => {
  // VPP: nat44 deterministic in 10.0.0.0/18 out 1.1.1.0/30: 10.0.0.2 -> 1.1.1.0:1054-1068; 1.1.1.1:1276 -> 10.0.16.16.
  const det = "deterministic: true, inside: [100.64.0.0/18], pool: ['203.0.113.0/30']";
  const r = await run(det, [[0, udp('100.64.0.2', R1, 5000, 53)], [1, udp('100.64.16.16', R1, 5000, 53)], [2, udp('100.64.0.2', R1, 500, 53)]]);
  const [a, b, low] = r.outside;
  assert.ok(low.sport >= 1054 && low.sport <= 1068, `a low inside port maps into the range too: ${low.sport}`);
  assert.is(a.src, '203.0.113.0');
  assert.ok(a.sport >= 1054 && a.sport <= 1068, `port ${a.sport} in 1054-1068`);
  assert.is(b.src, '203.0.113.1');
  assert.ok(b.sport >= 1264 && b.sport <= 1278, `port ${b.sport} in the range that holds 1276`);
  const back = await run(det, [[0, udp('100.64.16.16', R1, 5000, 53)], [1, udp(R1, b.src, 53, b.sport)]]);
  assert.equal(back.inside.map((s) => `${s.dst}:${s.dport}`), ['100.64.16.16:5000'], 'the reverse direction by arithmetic');
  assert.equal(back.log, [], 'no block records in deterministic mode');
});

test('bad input: sources outside the inside prefixes, exempt destinations, other protocols, the subscriber view', async () => {
  const r = await run("inside: [100.64.0.0/24], exempt: ['198.18.5.0/24'], exempt_ports: [179]", [
    [0, udp('100.64.9.1', R1, 5000, 53)],
    [1, udp(A, '198.18.5.5', 5000, 53)],
    [2, udp(A, R1, 5000, 179)],
    [3, { proto: 47, src: A, dst: R1 }],
    [4, udp(A, R1, 5000, 53)],
    [5, Buffer.from(ipv4Frame(udp(A, R1, 5000, 53)).subarray(0, 30))],
  ]);
  assert.equal(r.outside.map((o) => [o.n, o.src]), [[2, A], [3, A], [5, r.outside[2].src]]);
  assert.is(r.nat.drop_not_inside, 1, JSON.stringify(r.nat));
  assert.is(r.nat.exempted, 2);
  assert.is(r.nat.drop_unsupported, 1, JSON.stringify(r.nat));
  assert.is(r.nat.drop_malformed, 1, JSON.stringify(r.nat));
  const view = r.subscriber(A);
  assert.is(view.external, r.outside[2].src);
  assert.equal(view.mappings.map((m: any) => [m.protocol, m.inside_port, m.external]), [['udp', 5000, `${r.outside[2].src}:${r.outside[2].sport}`]]);
  assert.is(view.blocks.length, 1);
  assert.is(r.subscriber('100.64.7.7').note, 'no state for this subscriber');
});

test('C6 exempt ports: a connection to one leaves untranslated and its replies, from that port, come back in (they were dropped); from another port, not', async () => {
  const r = await run('exempt_ports: [179]', [
    [0, tcp(A, R1, 5000, 179, SYN)],
    [1, tcp(R1, A, 179, 5000, SYN_ACK)],
    [2, tcp(A, R1, 5000, 179, ACK)],
    [3, tcp(R1, A, 180, 5000, SYN_ACK)],
  ]);
  assert.equal(r.outside.map((o) => [o.n, `${o.src}:${o.sport}`]), [[1, `${A}:5000`], [3, `${A}:5000`]]);
  assert.equal(r.inside.map((o) => [o.n, `${o.src}:${o.sport}`, `${o.dst}:${o.dport}`]), [[2, `${R1}:179`, `${A}:5000`]]);
  assert.equal([r.nat.exempted, r.nat.drop_no_mapping], [3, 1]);
});

test('C6 exempt ports: a fragmented datagram to one leaves untranslated whole, and a fragmented reply from it comes in whole (the later fragments, which carry no port, were translated or dropped)', async () => {
  const r = await run('exempt_ports: [179]', [
    [0, udp(A, R1, 5000, 179, { moreFragments: true, payload: 8, id: 0x4444 })],
    [1, udp(A, R1, 5000, 179, { fragOffset: 2, payload: 16, id: 0x4444 })],
    [2, udp(R1, A, 179, 5000, { moreFragments: true, payload: 8, id: 0x5555 })],
    [3, udp(R1, A, 179, 5000, { fragOffset: 2, payload: 16, id: 0x5555 })],
    [4, udp(R1, A, 53, 5000, { fragOffset: 2, payload: 16, id: 0x6666 })],  // of no datagram that passed
  ]);
  assert.equal(r.outside.map((o) => [o.n, o.src]), [[1, A], [2, A]]);
  assert.equal(r.inside.map((o) => [o.n, o.src, o.dst]), [[3, R1, A], [4, R1, A]]);
  assert.equal([r.nat.exempted, r.nat.drop_no_mapping], [4, 1]);
});

test('C6 ICMP errors about exempt traffic pass untranslated both ways: from inside about a packet of an exempt host, and from a router to inside about a packet to an exempt port (both were dropped)', async () => {
  const E = '198.18.5.5';
  const fromExempt = ipv4Frame(udp(E, A, 53, 5000));
  const toExemptPort = ipv4Frame(udp(A, R1, 5001, 179));
  const r = await run("exempt: ['198.18.5.0/24'], exempt_ports: [179]", [
    [0, fromExempt],
    [1, icmpError(A, fromExempt)],                    // A: port unreachable
    [2, toExemptPort],
    [3, icmpError(R2, toExemptPort, 11, 0)],          // a router on the way: time exceeded
    [4, icmpError(R2, ipv4Frame(udp(A, R1, 5002, 53)))], // about a packet that did not leave untranslated
  ]);
  assert.equal(r.outside.map((o) => [o.n, o.src, o.dst, o.proto]), [[2, A, E, 1], [3, A, R1, 17]]);
  assert.equal(r.inside.map((o) => [o.n, o.src, o.dst, o.proto]), [[1, E, A, 17], [4, R2, A, 1]]);
  assert.equal([r.nat.exempted, r.nat.drop_no_mapping], [4, 1]);
});

test('to or from addresses no Internet host has (multicast, broadcast, loopback, link-local, 0/8): dropped and counted, fragments too; an exempt multicast prefix passes untranslated', async () => {
  const PCP = '100.64.255.254';
  const r = await run(`exempt: ['239.0.0.0/8'], exempt_ports: [5353], pcp_server: ${PCP}`, [
    [0, udp(A, '224.0.0.251', 5353, 5353)],
    [1, udp(A, '255.255.255.255', 68, 67)],
    [2, udp(A, '127.0.0.1', 5000, 53)],
    [3, udp(A, '0.1.2.3', 5000, 53)],
    [4, udp(A, '240.0.0.1', 5000, 53)],
    [5, udp(A, '224.0.0.251', 5353, 5353, { fragOffset: 4 })],
    [6, { proto: 'icmp', src: A, dst: '224.0.0.1' }],
    [7, udp(A, '239.1.1.1', 5000, 1234)],
    [8, udp(A, '223.255.255.255', 5000, 53)],
    [9, udp(A, '169.254.1.1', 5000, 53)],
    [10, udp('224.0.0.5', '203.0.113.1', 53, 5000)],   // from outside
    [11, udp('127.0.0.1', '203.0.113.2', 53, 5000)],
    [12, udp(A, PCP, 5000, 53)],                        // the PCP server's address takes PCP alone
    [13, { proto: 'icmp', src: A, dst: PCP }],
  ]);
  assert.equal(r.outside.map((o) => [o.n, o.dst, o.src === A]), [[8, '239.1.1.1', true], [9, '223.255.255.255', false]]);
  assert.is(r.inside.length, 0);
  assert.is(r.nat.drop_bad_destination, 8, JSON.stringify(r.nat));
  assert.is(r.nat.drop_bad_source, 2);
  assert.is(r.nat.drop_unsupported, 2);
  assert.is(r.nat.exempted, 1);
  assert.is(r.nat.mappings_created, 1, 'no mapping for a dropped packet');
});

test('bad configs: a UDP timeout under 120 s, a block size that is no power of two, a pool overlapping the inside or holding multicast, an MTU below 68, steering by an element that does not steer', async () => {
  const dir = tempDir();
  try {
    const yaml = (nat: string, steer: string) => `elements:
  src: { type: FromPcap, file: in.pcap, steer: ${steer} }
  nat: { type: NAT, pool: [203.0.113.1]${nat} }
  out: { type: Discard }
connections:
  - src -> [0]nat
  - src -> [1]nat
  - nat[0] -> out
  - nat[1] -> out
`;
    writeFileSync(join(dir, 'bad.yaml'), yaml(', udp_timeout: 60s, ports_per_block: 100, tcp_established: 1h, tcp_transitory: 60s, icmp_timeout: 10s, pcp_max_lifetime: 1s', 'nat'));
    writePcap(join(dir, 'in.pcap'), []);
    const params = cli(['check', join(dir, 'bad.yaml')]);
    assert.is(params.status, 2);
    assert.match(params.stderr, /bad\.yaml:3:\d+: nat\.udp_timeout: 1m is shorter than the 120 s RFC 4787 REQ-5 requires/);
    assert.match(params.stderr, /nat\.tcp_established: 1h is shorter than the 7440 s RFC 5382 REQ-5 \(2 h 4 min\) requires/);
    assert.match(params.stderr, /nat\.tcp_transitory: 1m is shorter than the 240 s RFC 5382 REQ-5 \(4 min\) requires/);
    assert.match(params.stderr, /nat\.icmp_timeout: 10s is shorter than the 60 s RFC 5508 REQ-1 requires/);
    assert.match(params.stderr, /nat\.pcp_max_lifetime: 1s is shorter than the 120 s each PCP lifetime requires/, 'a MAP was granted 1 s, though the doc said 2 minutes at least');
    assert.match(params.stderr, /bad\.yaml:3:\d+: nat\.ports_per_block: 100 is not a power of two\n {2}hint: use 64 or 128/);
    writeFileSync(join(dir, 'pools.yaml'), yaml(', pool: [100.64.0.0/28, 224.0.0.0/28, 203.0.113.0/28]', 'nat').replace('pool: [203.0.113.1], ', ''));
    const pools = cli(['check', join(dir, 'pools.yaml')]);
    assert.is(pools.status, 2);
    assert.match(pools.stderr, /nat\.pool: pool prefix 100\.64\.0\.0\/28 overlaps the inside prefix 100\.64\.0\.0\/10/);
    assert.match(pools.stderr, /nat\.pool: pool prefix 224\.0\.0\.0\/28 holds multicast addresses/);
    assert.not.match(pools.stderr, /203\.0\.113\.0\/28/, 'the good prefix is not blamed');
    writeFileSync(join(dir, 'big.yaml'), yaml(', pool: [203.0.0.0/16], ports_per_block: 8', 'nat').replace('pool: [203.0.113.1], ', ''));
    const big = cli(['check', join(dir, 'big.yaml')]);
    assert.is(big.status, 2);
    assert.match(big.stderr, /big\.yaml:3:\d+: nat\.pool: 1610612736 port blocks \(8 ports each, three protocols\), more than the 8388608 a NAT holds\n {2}hint: use larger blocks/);
    writeFileSync(join(dir, 'mtu.yaml'), yaml(', mtu: 40', 'nat'));
    const mtu = cli(['check', join(dir, 'mtu.yaml')]);
    assert.is(mtu.status, 2);
    assert.match(mtu.stderr, /mtu\.yaml:3:\d+: nat\.mtu: mtu 40 is below IPv4's least MTU, 68\n {2}hint: the outside link's MTU/);
    // Deterministic mode with more inside addresses (the default 100.64.0.0/10) than one address's 64512 ports can share.
    writeFileSync(join(dir, 'det.yaml'), yaml(', deterministic: true', 'nat'));
    const det = cli(['check', join(dir, 'det.yaml')]);
    assert.is(det.status, 2);
    assert.match(det.stderr, /det\.yaml:3:\d+: nat\.deterministic: deterministic mode would give each of the 4194304 inside addresses less than one of the 64512 ports of the pool\n {2}hint: smaller inside prefixes, or a pool of at least 66 addresses/);
    writeFileSync(join(dir, 'steer.yaml'), yaml('', 'out'));
    const steer = cli(['check', join(dir, 'steer.yaml')]);
    assert.is(steer.status, 2);
    assert.match(steer.stderr, /steer\.yaml:2:3: src\.steer: 'out' is neither flow, source-address, destination-address nor an element that steers\n {2}hint: elements here that steer: nat/);
  } finally {
    removeDir(dir);
  }
});

test.run();
