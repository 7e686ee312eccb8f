// Shards: steering, rings under wrap-around, state that moves with its buckets while traffic flows,
// output equivalence with one shard, snapshots that survive a restart.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { execFileSync } from 'node:child_process';
import { writeFileSync, readFileSync } from 'node:fs';
import { tempDir, removeDir, readPcap, writePcap, ipv4Frame, internetChecksum, icmpError, tshark, cli, ROOT } from './helpers.ts';
import { loadConfig } from '../engine/config.ts';
import { ConfigErrors } from '../engine/errors.ts';
import { Pipeline, type PipelineOptions, type Snapshot } from '../engine/pipeline.ts';
import { verify, flowsOf, compare } from '../engine/verify.ts';

const dir = tempDir();
const trace = join(dir, 'trace.pcap');
execFileSync('python3', [join(ROOT, 'bench/gen-pcap.py'), '-n', '40000', '-f', '400', '-o', trace, '--seed', '5']);

function configFile(name: string, extra = ''): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, `${extra}
elements:
  src: { type: FromPcap, file: trace.pcap }
  stats: { type: FlowStats }
  out: { type: ToPcap, file: ${name}.pcap }
connections:
  - src -> stats -> out
`);
  return file;
}

async function run(name: string, options: PipelineOptions, extra = '') {
  const pipeline = await Pipeline.create(await loadConfig(configFile(name, extra)), options);
  const result = await pipeline.run();
  return { pipeline, result };
}

/**
 * Per-flow records of a snapshot (key and value; the deadline depends on how packets fell into
 * batches), as sorted hex strings: shard placement and order do not matter.
 */
function flowRecords(snapshot: any, table: string): string[] {
  const t = snapshot.elements.stats.tables[table];
  const bytes = Buffer.from(t.records, 'base64');
  const out: string[] = [];
  for (let at = 0; at < bytes.length; at += t.record_size) {
    out.push(bytes.subarray(at, at + 16).toString('hex') + bytes.subarray(at + 32, at + t.record_size).toString('hex'));
  }
  return out.sort();
}

test('the steering hash is the same for both directions of a connection', async () => {
  const { pipeline } = await run('hash', { shards: 1 });
  const hash = pipeline.fastPath.symmetricHashOf;
  const buckets = new Set<number>();
  for (let i = 0; i < 2000; i++) {
    const a = (0x64400000 + i * 7919) >>> 0, b = (0xc6120000 + i * 104729) >>> 0;
    const sport = 1024 + ((i * 31) % 60000), dport = [53, 80, 443][i % 3];
    const forward = hash(a, b, sport ^ dport, 6);
    assert.is(hash(b, a, dport ^ sport, 6), forward);
    buckets.add(forward & 1023);
  }
  assert.ok(buckets.size > 800, `2000 flows spread over ${buckets.size} of 1024 buckets`);
});

test('rings wrap around many times without losing or reordering a packet', async () => {
  const { result } = await run('wrap', { shards: 1 }, 'pool_slots: 64\nbatch: 16');
  assert.is(result.packets_out, 40000);
  const input = readPcap(trace).records, output = readPcap(join(dir, 'wrap.pcap')).records;
  assert.ok(output.every((r, i) => r.data.equals(input[i].data)), 'one shard keeps the trace order');
});

test('more polling shard workers than cores - 1 are said to share the cores; cores - 1 are not', async () => {
  const cores = availableParallelism();
  const logs = (shards: number) => {
    const lines: string[] = [];
    return { lines, options: { shards, threads: 'worker' as const, log: (m: string) => lines.push(m) } };
  };
  const over = logs(cores);
  await run('over', over.options);
  assert.ok(over.lines.some((l) => new RegExp(`^${cores} shard workers? and the I/O thread poll on ${cores} cores?: they take turns`).test(l)), over.lines.join('\n'));
  if (cores > 1) {
    const fit = logs(cores - 1);
    await run('fit', fit.options);
    assert.not.ok(fit.lines.some((l) => l.includes('take turns')), fit.lines.join('\n'));
  }
});

test('scale 1 -> 2 -> 4 -> 1 during a trace: 0 lost, per-flow order kept, state equal to one shard', async () => {
  const one = await run('one', { shards: 1 });
  const oneSnapshot = await one.pipeline.snapshot();
  const scaled = await run('scaled', { shards: 1, scaleAt: [{ packets: 8000, shards: 2 }, { packets: 16000, shards: 4 }, { packets: 28000, shards: 1 }] });
  const reports = scaled.pipeline.scaleReports;
  assert.equal(reports.map((r) => [r.from, r.to]), [[1, 2], [2, 4], [4, 1]]);
  for (const r of reports) {
    assert.is(r.packets_lost, 0);
    assert.is(r.flows_not_moved, 0);
    assert.ok(r.buckets_moved > 0);
    assert.ok(r.packets_checked >= r.packets_held, `every held packet's order was checked (${r.from} -> ${r.to})`);
    assert.is(r.packets_reordered, 0);
  }
  assert.ok(reports.some((r) => r.flows_moved > 0), 'flows moved');
  assert.ok(reports.some((r) => r.packets_held > 0), 'packets were held');
  assert.is(scaled.result.packets_out, 40000);
  // Live entries too: a per-source entry kept in part by several shards (retired ones too) counts once.
  for (const counter of ['total_packets', 'total_bytes', 'new_flows', 'untracked', 'flows', 'sources']) {
    assert.is(scaled.result.elements.stats[counter], one.result.elements.stats[counter], counter);
  }
  const snapshot = await scaled.pipeline.snapshot();
  assert.equal(flowRecords(snapshot, 'flows'), flowRecords(oneSnapshot, 'flows'), 'every flow entry moved intact');
  // Per-flow order: each flow's packets leave in the order one shard gives them.
  const byFlow = (file: string) => {
    const m = new Map<string, string[]>();
    for (const r of readPcap(file).records) {
      const key = r.data.subarray(26, 38).toString('hex');
      m.set(key, [...(m.get(key) ?? []), r.data.toString('hex')]);
    }
    return m;
  };
  assert.equal(byFlow(join(dir, 'scaled.pcap')), byFlow(join(dir, 'one.pcap')));
});

test('per-flow entries move with the shard of the packets that made them: a FlowStats behind a Rewrite that changes the 5-tuple counts each flow in one entry through 1 -> 2 -> 4 -> 1', async () => {
  // The Rewrite gives every flow one destination and port: the entries' keys no longer tell where their packets go.
  const file = join(dir, 'rewritten.yaml');
  writeFileSync(file, `
elements:
  src: { type: FromPcap, file: trace.pcap }
  rw: { type: Rewrite, ip_dst: 198.18.0.1, dst_port: 9 }
  stats: { type: FlowStats }
  out: { type: Discard }
connections:
  - src -> rw -> stats -> out
`);
  const records = async (options: PipelineOptions) => {
    const pipeline = await Pipeline.create(await loadConfig(file), options);
    const result = await pipeline.run();
    return { pipeline, result, flows: flowRecords(await pipeline.snapshot(), 'flows') };
  };
  const one = await records({ shards: 1 });
  const scaled = await records({ shards: 1, scaleAt: [{ packets: 8000, shards: 2 }, { packets: 16000, shards: 4 }, { packets: 28000, shards: 1 }] });
  assert.ok(scaled.pipeline.scaleReports.every((r) => r.packets_lost === 0 && r.flows_not_moved === 0));
  assert.ok(scaled.pipeline.scaleReports.some((r) => r.flows_moved > 0), 'flows moved');
  assert.is(scaled.result.elements.stats.flows, one.result.elements.stats.flows, 'no flow counted in two entries');
  assert.equal(scaled.flows, one.flows, 'every flow\'s packets and bytes in its one entry');
});

test('a move larger than half the transfer buffer goes in rounds, export and import overlapping: every entry arrives intact', async () => {
  // 100k flows: the 2 -> 1 move carries about 50k FlowStats records of 56 bytes, more than one 2 MiB half.
  const many = join(dir, 'many.pcap');
  execFileSync('python3', [join(ROOT, 'bench/gen-pcap.py'), '-n', '200000', '-f', '100000', '-o', many, '--seed', '6']);
  const extra = 'pool_slots: 65536';
  const runMany = async (name: string, options: PipelineOptions) => {
    const pipeline = await Pipeline.create(await loadConfig(configFile(name, extra), { overrides: [`src.file=${many}`, 'stats.capacity=131072'] }), options);
    return { pipeline, result: await pipeline.run() };
  };
  const one = await runMany('many-one', { shards: 1 });
  const scaled = await runMany('many-scaled', { shards: 2, scaleAt: [{ packets: 150_000, shards: 1 }] });
  const [report] = scaled.pipeline.scaleReports;
  assert.ok(report.flows_moved > 37_449, `${report.flows_moved} flows moved: more than one half of the transfer buffer holds`);
  assert.is(report.flows_not_moved, 0);
  assert.is(report.packets_lost, 0);
  assert.is(report.packets_reordered, 0);
  assert.equal(flowRecords(await scaled.pipeline.snapshot(), 'flows'), flowRecords(await one.pipeline.snapshot(), 'flows'));
});

test('wirepath verify finds the scaled runs equivalent', async () => {
  const result = await verify(configFile('verify'), { shards: [1, 2, 4], scaleEvery: 7000 });
  assert.ok(result.equivalent, result.difference);
  assert.is(result.packets, 40000);
  assert.ok(result.scaleEvents.length >= 4);
});

test('a first fragment belongs to its flow\'s shard: stateful Filter and FlowStats count alike on one shard and on two', async () => {
  // Eight clients each send a datagram in two fragments (the first with the UDP header), then get three unfragmented replies.
  const frames: { data: Buffer; sec: number; usec: number }[] = [];
  for (let c = 0; c < 8; c++) {
    const client = { src: `100.64.1.${c + 1}`, dst: '198.18.0.1', sport: 40000 + c, dport: 53 };
    const reply = { proto: 'udp' as const, src: client.dst, dst: client.src, sport: client.dport, dport: client.sport };
    frames.push({ data: ipv4Frame({ proto: 'udp', ...client, id: 900 + c, moreFragments: true, payload: 32 }), sec: 1, usec: 10 * c });
    frames.push({ data: ipv4Frame({ proto: 'udp', ...client, id: 900 + c, fragOffset: 5, payload: 16 }), sec: 1, usec: 10 * c + 1 });
    for (let r = 0; r < 3; r++) frames.push({ data: ipv4Frame(reply), sec: 2, usec: 10 * c + r });
  }
  writePcap(join(dir, 'fragflows.pcap'), frames);
  const file = join(dir, 'fragflows.yaml');
  writeFileSync(file, `
elements:
  src: { type: FromPcap, file: fragflows.pcap }
  fw: { type: Filter, stateful: true, rules: ['allow src net 100.64.0.0/10'], default: deny }
  stats: { type: FlowStats }
  out: { type: ToPcap, file: fragflows-out.pcap }
connections:
  - src -> fw -> stats -> out
`);
  for (const shards of [1, 2]) {
    const result = await (await Pipeline.create(await loadConfig(file), { shards })).run();
    const { fw, stats } = result.elements as Record<string, Record<string, number>>;
    assert.is(fw.denied, 0, `${shards} shards: no reply denied`);
    assert.is(fw.tracked, 24, `${shards} shards: every reply found its connection`);
    // Per client, one flow each way (the first fragment's with the requests'), and the later fragment's (no ports).
    assert.is(stats.flows, 24, `${shards} shards`);
  }
  const equivalence = await verify(file, { shards: [2, 1], scaleEvery: 10 });
  assert.ok(equivalence.equivalent, equivalence.difference);
});

test('a capture cut short (snaplen) is checked, tracked, counted, steered and rewritten by its headers, as the whole capture is', async () => {
  // Twelve TCP, UDP and ICMP echo conversations with payloads, each frame kept to its first 80 bytes.
  const SNAPLEN = 80;
  const whole: { data: Buffer; sec: number; usec: number }[] = [];
  const protos = ['tcp', 'udp', 'icmp'] as const;
  for (let c = 0; c < 12; c++) {
    const proto = protos[c % 3];
    const client = { proto, src: `100.64.3.${c + 1}`, dst: `198.18.0.${c % 4 + 1}`, sport: 41000 + c, dport: 443 };
    const reply = { ...client, src: client.dst, dst: client.src, sport: client.dport, dport: client.sport };
    for (let r = 0; r < 3; r++) {
      whole.push({ data: ipv4Frame({ ...client, payload: 200 + 100 * c, tcpFlags: r ? 0x10 : 0x02 }), sec: 1, usec: 100 * c + 2 * r });
      const back = ipv4Frame({ ...reply, payload: 1000 + 10 * c, tcpFlags: r ? 0x18 : 0x12 });
      if (proto === 'icmp') back[34] = 0; // echo reply
      if (proto === 'icmp') { back.writeUInt16BE(0, 36); back.writeUInt16BE(internetChecksum(back.subarray(34)), 36); }
      whole.push({ data: back, sec: 1, usec: 100 * c + 2 * r + 1 });
    }
  }
  writePcap(join(dir, 'snap-whole.pcap'), whole);
  writePcap(join(dir, 'snap-cut.pcap'), whole.map((f) => ({ ...f, data: f.data.subarray(0, SNAPLEN), origlen: f.data.length })));
  const configOf = (name: string) => {
    const file = join(dir, `${name}.yaml`);
    writeFileSync(file, `
elements:
  src: { type: FromPcap, file: ${name}.pcap }
  check: { type: CheckIPHeader }
  fw: { type: Filter, stateful: true, rules: ['allow src net 100.64.0.0/10'], default: deny }
  stats: { type: FlowStats }
  rw: { type: Rewrite, dec_ttl: true, dscp: 10, ip_dst: 198.18.9.9, dst_port: 8443 }
  out: { type: ToPcap, file: ${name}-out.pcap }
  bad: { type: Discard }
connections:
  - src -> check -> fw -> stats -> rw -> out
  - check[1] -> bad
`);
    return file;
  };
  // Per flow as tshark reads the cut capture: packets and bytes on the wire.
  const expected = new Map<string, { packets: number; bytes: number }>();
  for (const [src, dst, proto, tcpPorts, udpPorts, echoId, len] of tshark(join(dir, 'snap-cut.pcap'), ['ip.src', 'ip.dst', 'ip.proto', 'tcp.port', 'udp.port', 'icmp.ident', 'frame.len'])) {
    const ports = (tcpPorts || udpPorts) ? (tcpPorts || udpPorts).split(',').join('>') : `${Number(echoId.split(',')[0])}>0`;
    const key = `${src}>${dst}/${proto}:${ports}`;
    const e = expected.get(key) ?? { packets: 0, bytes: 0 };
    expected.set(key, { packets: e.packets + 1, bytes: e.bytes + Number(len) });
  }
  assert.is(expected.size, 24);
  const address = (a: number) => [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.');
  const outputs: Buffer[][] = [];
  let tracked: number | undefined;
  for (const [name, shards] of [['snap-whole', 1], ['snap-cut', 1], ['snap-cut', 2]] as const) {
    const pipeline = await Pipeline.create(await loadConfig(configOf(name)), { shards });
    const result = await pipeline.run();
    const { check, fw, stats, rw } = result.elements as Record<string, Record<string, number>>;
    const what = `${name}, ${shards} shard(s)`;
    assert.is(check.cut, name === 'snap-cut' ? whole.length : 0, `${what}: every frame cut, none bad`);
    assert.is(fw.denied, 0, `${what}: every reply found its connection`);
    assert.is(fw.tracked, tracked ??= fw.tracked, `${what}: as many packets of known connections as in the whole capture`);
    assert.is(stats.not_ipv4, 0, what);
    assert.is(rw.rewritten, whole.length, what);
    const flows = new Map(pipeline.view('stats').entries('flows').map((e) => [
      `${address(e.key[0])}>${address(e.key[1])}/${e.key[3]}:${e.key[2] >>> 16}>${e.key[2] & 0xffff}`,
      { packets: Number(e.value.packets), bytes: Number(e.value.bytes) },
    ]));
    assert.equal(flows, expected, `${what}: FlowStats's flows are tshark's`);
    if (shards === 2) assert.equal(new Set(pipeline.view('stats').entries('flows').map((e) => e.shard)), new Set([0, 1]), 'flows on both shards');
    outputs.push(readPcap(join(dir, `${name}-out.pcap`)).records.map((r) => r.data));
  }
  const cutOfWhole = outputs[0].map((f) => f.subarray(0, SNAPLEN));
  assert.equal(outputs[1].map((f) => f.toString('hex')), cutOfWhole.map((f) => f.toString('hex')), 'Rewrite: the cut frames come out as the whole ones do, cut');
  // Each connection's frames in their order on two shards too (connections on different shards may interleave otherwise).
  assert.equal(new Set(outputs[2].map((f) => f.toString('hex'))), new Set(cutOfWhole.map((f) => f.toString('hex'))), 'the same frames on two shards');
  const equivalence = await verify(configOf('snap-cut'), { shards: [2, 1], scaleEvery: 20 });
  assert.ok(equivalence.equivalent, equivalence.difference);
});

test('scaling on a trace read fast keeps connections that waited while their buckets moved: their old and new owners wait with them', async () => {
  // 200 TCP connections, each half-closed by its client and then sending from its server for 20 s (tcp_closing is
  // 30 s), over a 40 s trace looped 10 times. While a bucket moved, its old and new owners used to take on minutes of
  // the trace's time (read fast) with their other buckets: their clocks ran past the waiting connections' deadlines
  // (the old owner exported none of them, or the new one found them expired), and the Filter denied their servers'
  // packets once they came.
  const frames: { data: Buffer; at: number }[] = [];
  for (let c = 0; c < 200; c++) {
    const client = { src: `100.64.4.${c + 1}`, dst: `198.18.0.${c % 20 + 1}`, sport: 10000 + c, dport: 80 };
    const server = { src: client.dst, dst: client.src, sport: 80, dport: client.sport };
    const start = c * 100_000; // µs
    const opening: [typeof client, number][] = [[client, 0x02], [server, 0x12], [client, 0x10], [client, 0x11]];
    opening.forEach(([from, tcpFlags], i) => frames.push({ data: ipv4Frame({ ...from, tcpFlags, payload: 0 }), at: start + i * 1000 }));
    for (let k = 1; k <= 10; k++) frames.push({ data: ipv4Frame({ ...server, tcpFlags: k < 10 ? 0x18 : 0x11, payload: 100 }), at: start + k * 2_000_000 });
  }
  frames.sort((a, b) => a.at - b.at);
  writePcap(join(dir, 'closing.pcap'), frames.map((f) => ({ data: f.data, sec: 1 + Math.floor(f.at / 1e6), usec: f.at % 1e6 })));
  const file = join(dir, 'closing.yaml');
  writeFileSync(file, `
elements:
  src: { type: FromPcap, file: closing.pcap, loop: true, count: ${frames.length * 10} }
  fw:  { type: Filter, stateful: true, rules: ['allow tcp dst port 80', 'deny -'] }
  out: { type: ToPcap, file: closing-out.pcap }
connections:
  - src -> fw -> out
`);
  for (const shards of [[2, 1], [3, 1], [1, 3], [3, 2]]) {
    const result = await verify(file, { shards, scaleEvery: 7000 });
    assert.ok(result.equivalent, `${shards.join(' -> ')}: ${result.difference}`);
  }
});

test('wirepath verify keys a LoadBalancer\'s IP-in-IP output by the flow inside, as the engine steered it', async () => {
  // Many client flows share a tunnel's outer addresses (a backend, and a source address of the mux); on two shards
  // they interleave otherwise than on one, each in its own order.
  const frames = Array.from({ length: 6000 }, (_, i) => {
    const c = i % 300;
    return { data: ipv4Frame({ proto: c % 2 ? 'udp' : 'tcp', src: `100.64.5.${c % 250 + 1}`, dst: '198.18.100.1', sport: 20000 + c, dport: c % 2 ? 53 : 80, payload: Buffer.from([i >> 8, i & 255]) }), sec: 1, usec: i };
  });
  writePcap(join(dir, 'vip.pcap'), frames);
  const file = join(dir, 'vip.yaml');
  writeFileSync(file, `
elements:
  src: { type: FromPcap, file: vip.pcap }
  lb:  { type: LoadBalancer, vips: ['198.18.100.1 tcp any', '198.18.100.1 udp 53'], source: 198.18.3.0/30,
         backends: ['web1 198.18.1.11', 'web2 198.18.1.12', 'web3 198.18.1.13'] }
  out: { type: ToPcap, file: vip-out.pcap }
connections:
  - src -> lb -> out
`);
  const result = await verify(file, { shards: [2, 1, 2], scaleEvery: 2000 });
  assert.ok(result.equivalent, result.difference);
  assert.ok(result.flows >= 300, `${result.flows} flows: the inner ones`);
});

test('an ICMP error quoting an echo reaches the shard of the echo\'s connection: a stateful Filter finds it on any number of shards', async () => {
  // Each client pings a server behind a router, which answers with time exceeded, quoting the echo (and its identifier).
  const frames = Array.from({ length: 40 }, (_, c) => {
    const echo = ipv4Frame({ proto: 'icmp', src: `100.64.6.${c + 1}`, dst: '198.18.0.9' });
    return [{ data: echo, sec: 1, usec: 10 * c }, { data: icmpError('198.18.0.1', echo, 11, 0), sec: 1, usec: 10 * c + 1 }];
  }).flat();
  writePcap(join(dir, 'ttl.pcap'), frames);
  const file = join(dir, 'ttl.yaml');
  writeFileSync(file, `
elements:
  src: { type: FromPcap, file: ttl.pcap }
  fw: { type: Filter, stateful: true, rules: ['allow src net 100.64.0.0/10'], default: deny }
  out: { type: Discard }
connections:
  - src -> fw -> out
`);
  for (const shards of [1, 2, 4]) {
    const { fw } = (await (await Pipeline.create(await loadConfig(file), { shards })).run()).elements as Record<string, Record<string, number>>;
    assert.equal([fw.tracked, fw.denied], [40, 0], `${shards} shards: every error found the echo's connection`);
  }
});

test('wirepath verify keys an ICMP error by the flow it quotes, as the engine steers it', async () => {
  // A router answers each of 20 clients' 10 UDP flows with port unreachable: one client's errors, about flows on
  // different shards, interleave otherwise on two shards than on one, each flow's in its order.
  const frames = Array.from({ length: 4000 }, (_, i) => {
    const c = i % 20, port = 30000 + (i >> 1) % 10;
    const datagram = ipv4Frame({ proto: 'udp', src: `100.64.7.${c + 1}`, dst: '198.18.0.9', sport: port, dport: 53, payload: Buffer.from([i >> 8, i & 255]) });
    return { data: i % 2 ? icmpError('198.18.0.1', datagram, 3, 3) : datagram, sec: 1, usec: i };
  });
  writePcap(join(dir, 'unreachable.pcap'), frames);
  const file = join(dir, 'unreachable.yaml');
  writeFileSync(file, 'threads: worker\nelements:\n  src: { type: FromPcap, file: unreachable.pcap }\n  count: { type: Counter }\n  out: { type: ToPcap, file: unreachable-out.pcap }\nconnections:\n  - src -> count -> out\n');
  const result = await verify(file, { shards: [2, 1, 2], scaleEvery: 1200 });
  assert.ok(result.equivalent, result.difference);
});

test('wirepath verify keys packets as the engine does: a TCP header cut short by the IP length is no 5-tuple', async () => {
  // Total length 20 (no TCP header) with TCP bytes after it in the frame: the engine steers it by addresses alone.
  // One connection's packets, every tenth cut short: the engine may put those on another shard than the rest.
  const frames = Array.from({ length: 2000 }, (_, i) => {
    const f = ipv4Frame({ proto: 'tcp', src: '100.64.2.1', dst: '198.18.0.1', sport: 1000, dport: 80, payload: Buffer.from([i >> 8, i & 255]) });
    if (i % 10 === 0) {
      f.writeUInt16BE(20, 16);
      f.writeUInt16BE(0, 24);
      f.writeUInt16BE(internetChecksum(f.subarray(14, 34)), 24);
    }
    return { data: f, sec: 1, usec: i };
  });
  writePcap(join(dir, 'cut.pcap'), frames);
  const file = join(dir, 'cut.yaml');
  writeFileSync(file, 'elements:\n  src: { type: FromPcap, file: cut.pcap }\n  count: { type: Counter }\n  out: { type: ToPcap, file: cut-out.pcap }\nconnections:\n  - src -> count -> out\n');
  const result = await verify(file, { shards: [2, 1, 2], scaleEvery: 500 });
  assert.ok(result.equivalent, result.difference);
});

/** A graph of every built-in element that runs on a trace (Print writes to standard output, device elements need interfaces). */
function everyElement(name: string, extra = ''): string {
  const first = readPcap(trace).records[0].data;
  const vip = [...first.subarray(30, 34)].join('.');
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, `${extra}
elements:
  src: { type: FromPcap, file: trace.pcap }
  check: { type: CheckIPHeader }
  cls: { type: Classifier, patterns: ['tcp', 'udp', '-'] }
  fw: { type: Filter, stateful: true, rules: ['deny tcp dst port 443', 'allow tcp', 'allow udp'] }
  rw: { type: Rewrite, dec_ttl: true, dscp: 10 }
  tee: { type: Tee, outputs: 2 }
  stats: { type: FlowStats }
  count: { type: Counter }
  lb: { type: LoadBalancer, vips: ['${vip} tcp any', '${vip} udp any'], source: 198.18.3.0/24, backends: ['web1 198.18.1.11', 'web2 198.18.1.12'] }
  counted: { type: ToPcap, file: ${name}-counted.pcap }
  balanced: { type: ToPcap, file: ${name}-balanced.pcap }
  others: { type: ToPcap, file: ${name}-others.pcap }
  drop: { type: Discard }
connections:
  - src -> check -> cls
  - cls[0] -> fw
  - cls[1] -> fw
  - cls[2] -> drop
  - check[1] -> drop
  - fw -> rw -> tee
  - rw[1] -> drop
  - tee[0] -> stats -> count -> counted
  - tee[1] -> lb -> balanced
  - lb[1] -> others
`);
  return file;
}

test('wirepath verify: every built-in element that runs on a trace gives one shard\'s output through 1 -> 2 -> 4 -> 1 shards', async () => {
  // A pool with room for the Tee's copies while four shards take bursts of released packets (the default pool
  // leaves each of four clone stashes 3072 slots; a copy that finds none is dropped and counted in no_buffer).
  const traced = await verify(everyElement('every', 'pool_slots: 65536'), { shards: [1, 2, 4], scaleEvery: 7000 });
  assert.ok(traced.equivalent, traced.difference);
  assert.ok(traced.scaleEvents.length >= 4);
  const generated = join(dir, 'generator.yaml');
  writeFileSync(generated, `
elements:
  gen: { type: Generator, count: 30000, flows: 300, seed: 9 }
  count: { type: Counter }
  out: { type: ToPcap, file: generated.pcap }
connections:
  - gen -> count -> out
`);
  const made = await verify(generated, { shards: [1, 2, 4], scaleEvery: 7000 });
  assert.ok(made.equivalent, made.difference);
  assert.is(made.packets, 30000);
});

test('with the shards on the I/O thread (threads: inline, the default for devices on two cores) scaling keeps the output too', async () => {
  const result = await verify(everyElement('inline', 'threads: inline\npool_slots: 65536'), { shards: [1, 2, 4], scaleEvery: 7000 });
  assert.ok(result.equivalent, result.difference);
  assert.ok(result.scaleEvents.length >= 4);
  for (const r of result.scaleEvents) assert.is(r.packets_lost, 0);
});

test('a graph that copies, scaled 1 -> 3 -> 1 again and again: retired shards give back their clone slots', async () => {
  // Before, the refills sent to a retiring shard stayed in its receive ring: the pool ran dry and the run stalled.
  const result = await verify(everyElement('cycles'), { shards: [1, 3], scaleEvery: 5000 });
  assert.ok(result.equivalent, result.difference);
  assert.ok(result.scaleEvents.length >= 7);
});

/** Waits until the Discard named drop has taken `count` packets. */
async function packetsPast(pipeline: Pipeline, count: number): Promise<void> {
  while (pipeline.stats().drop.in < count) await new Promise((r) => setTimeout(r, 5));
}

test('counters read while a scale event retires two shards never go back: a retired shard is counted once', async () => {
  // Before, the first of two retiring shards was in the live and the retired shards while the second retired: counted twice.
  const file = join(dir, 'retiring.yaml');
  writeFileSync(file, 'elements:\n  src: { type: Generator, count: 0, flows: 400 }\n  drop: { type: Discard }\nconnections:\n  - src -> drop\n');
  const pipeline = await Pipeline.create(await loadConfig(file), { shards: 3 });
  const running = pipeline.run();
  const seen: number[] = [];
  let polling = true;
  const poll = (async () => {
    while (polling) {
      seen.push(pipeline.stats().drop.in);
      await new Promise((r) => setImmediate(r));
    }
  })();
  try {
    for (let i = 0; i < 6; i++) {
      // Each retiring shard has counted packets of its own by then.
      await packetsPast(pipeline, pipeline.stats().drop.in + 50_000);
      await pipeline.scale(1);
      await pipeline.scale(3);
    }
  } finally {
    polling = false;
    pipeline.stop();
  }
  await poll;
  await running;
  const back = seen.findIndex((n, i) => i > 0 && n < seen[i - 1]);
  assert.is(back, -1, `went from ${seen[back - 1]} to ${seen[back]}`);
  assert.ok(seen.length > 100, `${seen.length} reads`);
});

test('scaling out and in again and again runs on the retired shards\' memory: it does not grow, and their counters go on', async () => {
  // Before, every scale-out laid out new shards and kept the retired ones: the memory grew until scaling was refused.
  const file = join(dir, 'revived.yaml');
  writeFileSync(file, 'elements:\n  src: { type: Generator, count: 0, flows: 400 }\n  stats: { type: FlowStats }\n  drop: { type: Discard }\nconnections:\n  - src -> stats -> drop\n');
  const pipeline = await Pipeline.create(await loadConfig(file), { shards: 1 });
  const running = pipeline.run();
  const used: number[] = [];
  const packets: number[] = [];
  try {
    await packetsPast(pipeline, 10_000);
    for (let i = 0; i < 6; i++) {
      await pipeline.scale(3);
      await packetsPast(pipeline, pipeline.stats().drop.in + 20_000);
      packets.push(pipeline.runtimeStats().shards[2].packets);
      await pipeline.scale(1);
      used.push(pipeline.arena.used);
    }
    await packetsPast(pipeline, pipeline.stats().drop.in + 20_000);
  } finally {
    pipeline.stop();
  }
  const result = await running;
  assert.equal(new Set(used).size, 1, `memory used after each cycle: ${used.join(', ')}`);
  assert.ok(packets.every((n, i) => i === 0 || n > packets[i - 1]), `shard 2's packets count on: ${packets.join(', ')}`);
  assert.is((result.elements.stats as Record<string, number>).total_packets, result.elements.drop.in, 'FlowStats counted every packet once');
});

test('Filter hits add up to the packets decided through 67 scale events: a shard a scale event makes takes a retired one\'s row, never a running one\'s', async () => {
  // Before, rows went by how many had been claimed: after 64 shards, later ones shared the last row and lost increments.
  const file = join(dir, 'hit-rows.yaml');
  writeFileSync(file, "elements:\n  src: { type: Generator, count: 0, flows: 400 }\n  fw: { type: Filter, rules: ['allow udp', 'allow tcp', 'deny -'] }\n"
    + '  drop: { type: Discard }\nconnections:\n  - src -> fw -> drop\n');
  const pipeline = await Pipeline.create(await loadConfig(file), { shards: 1 });
  const running = pipeline.run();
  try {
    await packetsPast(pipeline, 10_000);
    for (let i = 0; i < 33; i++) {
      await pipeline.scale(3);
      await pipeline.scale(1);
    }
    await pipeline.scale(3);
    await packetsPast(pipeline, pipeline.stats().drop.in + 500_000);
  } finally {
    pipeline.stop();
  }
  const fw = (await running).elements.fw as Record<string, any>;
  assert.is(fw.hits.reduce((a: number, b: number) => a + b, 0), fw.allowed + fw.denied);
});

test('four shards with a Tee and the default pool: the clone stashes leave the sources their quarter of the pool', async () => {
  // Before, four stashes of a quarter each took the whole pool and no packet was ever read.
  const pipeline = await Pipeline.create(await loadConfig(everyElement('four')), { shards: 4 });
  const result = await pipeline.run();
  const e = result.elements as Record<string, any>;
  assert.is(result.packets_in, 40000);
  const allowed = e.fw.out[0];
  assert.ok(allowed > 30000, `${allowed} packets allowed`);
  assert.equal(e.tee.out, [allowed, allowed], 'every packet copied');
  assert.is(e.tee.no_buffer, 0);
  assert.is(e.counted.packets, allowed);
  assert.is(e.balanced.packets + e.others.packets, allowed);
  // Scaled 2 -> 4 while the trace runs: the two stashes filled at half the shards' share stand above their new
  // capacity, and what the shards free must not be written past them.
  const scaled = await Pipeline.create(await loadConfig(everyElement('two-to-four')), { shards: 2, scaleAt: [{ packets: 10_000, shards: 4 }] });
  const r = await scaled.run();
  const s = r.elements as Record<string, any>;
  assert.is(r.packets_in, 40000);
  assert.is(s.counted.packets, allowed);
  assert.is(s.balanced.packets + s.others.packets + s.tee.no_buffer, allowed);
  assert.is(scaled.scaleReports[0].packets_lost, 0);
});

test('a snapshot asked for as the pipeline stops is taken once its shards have stopped, not left waiting on them', async () => {
  const file = join(dir, 'stopping.yaml');
  writeFileSync(file, 'elements:\n  gen: { type: Generator, count: 0, flows: 100 }\n  stats: { type: FlowStats }\n  drop: { type: Discard }\nconnections:\n  - gen -> stats -> drop\n');
  for (const threads of ['worker', 'inline'] as const) {
    const pipeline = await Pipeline.create(await loadConfig(file), { shards: 1, threads });
    const running = pipeline.run();
    while (pipeline.packetsIn() < 10_000) await new Promise((r) => setTimeout(r, 5));
    pipeline.stop();
    const snapshot = await pipeline.snapshot();
    const result = await running;
    assert.is(Number(snapshot.elements.stats.scalars.total_packets), result.elements.stats.total_packets, `${threads}: the state the run ended with`);
  }
  // Asked for while the run stops its idle shards at the end of its source: answered from the stopped shards.
  writeFileSync(file, 'elements:\n  gen: { type: Generator, count: 20000, flows: 100 }\n  stats: { type: FlowStats }\n  drop: { type: Discard }\nconnections:\n  - gen -> stats -> drop\n');
  const ending = await Pipeline.create(await loadConfig(file), { shards: 1, threads: 'worker' });
  const shutdown = (ending as any).shutdown.bind(ending);
  let snapshot: Promise<Snapshot> | undefined;
  (ending as any).shutdown = () => { snapshot = ending.snapshot(); return shutdown(); };
  await ending.run();
  assert.is(Number((await snapshot!).elements.stats.scalars.total_packets), 20000);
});

test('a snapshot leaves out addresses in the pipeline\'s memory: restored into another layout, Filter hits and LoadBalancer rows count where they are read', async () => {
  const first = await Pipeline.create(await loadConfig(everyElement('rows-a')), { shards: 2 });
  await first.run();
  const snapshot = await first.snapshot();
  for (const [element, field] of [['fw', 'hit_row'], ['lb', 'counter_row']]) assert.not.ok(field in snapshot.elements[element].scalars, `${element}.${field} not saved`);
  // A bigger pool lays the memory out anew: an address saved from the first pipeline would point elsewhere in it.
  const second = await Pipeline.create(await loadConfig(everyElement('rows-b', 'pool_slots: 65536')), { shards: 1 });
  second.restore(JSON.parse(JSON.stringify({ ...snapshot, elements: { ...snapshot.elements,
    fw: { ...snapshot.elements.fw, scalars: { ...snapshot.elements.fw.scalars, hit_row: '12345678' } } } })));
  const e = (await second.run()).elements as Record<string, any>;
  // The hit rows count from this pipeline's start; allowed and denied carry on from the snapshot's.
  const saved = (element: string, field: string) => Number(snapshot.elements[element].scalars[field]);
  assert.is(e.fw.hits.reduce((a: number, b: number) => a + b, 0), e.fw.allowed + e.fw.denied - saved('fw', 'allowed') - saved('fw', 'denied'),
    'every rule decision of this run counted in this pipeline\'s rows (also from a snapshot written before addresses were left out)');
  assert.is(e.lb.backends.reduce((a: number, b: { packets: number }) => a + b.packets, 0), e.lb.encapsulated - saved('lb', 'encapsulated'));
});

test('wirepath verify\'s comparison: a flow\'s bytes and order count; the IP ID of a datagram that may be fragmented only as a grouping', () => {
  const frames = [ipv4Frame({ proto: 'udp', id: 1 }), ipv4Frame({ proto: 'udp', id: 2, dontFragment: true }), ipv4Frame({ proto: 'udp', id: 3, payload: 8 })];
  const differs = (change: (f: Buffer[]) => Buffer[], base = frames) => {
    const [a, b] = [base, change(base.map((f) => Buffer.from(f)))].map((list, i) => {
      const file = join(dir, `compare-${i}.pcap`);
      writePcap(file, list.map((data, n) => ({ data, sec: 1, usec: n })));
      return flowsOf(file);
    });
    return compare('out', a, b);
  };
  /** The frame with another IP ID (header checksum fixed). */
  const renumbered = (f: Buffer, id = 0x4242) => {
    f.writeUInt16BE(id, 18);
    f.writeUInt16BE(0, 24);
    f.writeUInt16BE(internetChecksum(f.subarray(14, 34)), 24);
    return f;
  };
  assert.is(differs((f) => f), undefined);
  assert.is(differs((f) => [renumbered(f[0]), f[1], f[2]]), undefined, 'DF clear: the ID is free');
  assert.match(differs((f) => { f[0][24] ^= 1; return f; }) ?? '', 'bad IP header checksum');
  // Fragments: an ID must stand for the same one in both runs.
  const fragments = [ipv4Frame({ proto: 'udp', id: 5, moreFragments: true }), ipv4Frame({ proto: 'udp', id: 6, moreFragments: true }), ipv4Frame({ proto: 'udp', id: 5, fragOffset: 1 })];
  assert.is(differs((f) => [renumbered(f[0], 0x4242), renumbered(f[1], 0x4343), renumbered(f[2], 0x4242)], fragments), undefined, 'grouped alike');
  assert.match(differs((f) => [renumbered(f[0], 0x4242), renumbered(f[1], 0x4242), renumbered(f[2], 0x4242)], fragments) ?? '', 'groups it with other fragments', 'two datagrams under one ID');
  assert.match(differs((f) => [renumbered(f[0], 0x4242), renumbered(f[1], 0x4343), renumbered(f[2], 0x4444)], fragments) ?? '', 'groups it with other fragments', 'one datagram under two IDs');
  assert.match(differs((f) => [f[0], renumbered(f[1]), f[2]]) ?? '', 'packet 2 differs', 'DF set: the ID counts');
  assert.match(differs((f) => { f[0][f[0].length - 1] ^= 1; return f; }) ?? '', 'packet 1 differs', 'a payload byte');
  assert.match(differs((f) => [f[1], f[0], f[2]]) ?? '', 'differs', 'the order within a flow');
  assert.match(differs((f) => f.slice(0, 2)) ?? '', 'has 2 packets, one shard gave 3');
});

test('a snapshot restored into a new pipeline (with another shard count) carries on the state', async () => {
  const firstHalf = join(dir, 'first.pcap'), secondHalf = join(dir, 'second.pcap');
  const records = readFileSync(trace);
  const half = 24 + 20000 * 80;
  writeFileSync(firstHalf, records.subarray(0, half));
  writeFileSync(secondHalf, Buffer.concat([records.subarray(0, 24), records.subarray(half)]));
  const whole = await run('whole', { shards: 1 });
  const a = await Pipeline.create(await loadConfig(configFile('a'), { overrides: [`src.file=${firstHalf}`] }), { shards: 2 });
  await a.run();
  const saved = join(dir, 'snapshot.json');
  writeFileSync(saved, JSON.stringify(await a.snapshot()));
  const b = await Pipeline.create(await loadConfig(configFile('b'), { overrides: [`src.file=${secondHalf}`] }), { shards: 3 });
  b.restore(JSON.parse(readFileSync(saved, 'utf8')));
  const rest = await b.run();
  assert.is(rest.elements.stats.total_packets, whole.result.elements.stats.total_packets);
  assert.is(rest.elements.stats.new_flows, whole.result.elements.stats.new_flows, 'flows of the first half are known after the restart');
  assert.equal(flowRecords(await b.snapshot(), 'flows'), flowRecords(await whole.pipeline.snapshot(), 'flows'));
  // A snapshot of the first format (records without their entry's steering: [key 16][deadline 8][value]) restores
  // as it did then: each entry to the shard of its key, where flow steering sends its packets.
  const firstFormat = JSON.parse(readFileSync(saved, 'utf8'));
  firstFormat.format = 'wirepath-snapshot/1';
  for (const element of Object.values(firstFormat.elements) as Snapshot['elements'][string][]) {
    for (const t of Object.values(element.tables)) {
      const bytes = Buffer.from(t.records, 'base64'), parts: Buffer[] = [];
      for (let at = 0; at < bytes.length; at += t.record_size) parts.push(bytes.subarray(at, at + 24), bytes.subarray(at + 32, at + t.record_size));
      t.records = Buffer.concat(parts).toString('base64');
      t.record_size -= 8;
    }
  }
  const old = await Pipeline.create(await loadConfig(configFile('old'), { overrides: [`src.file=${secondHalf}`] }), { shards: 3 });
  old.restore(firstFormat);
  const oldRest = await old.run();
  assert.is(oldRest.elements.stats.new_flows, whole.result.elements.stats.new_flows, 'flows of the first half are known after a restart from the first format');
  const afterOld = await old.snapshot();
  assert.equal(flowRecords(afterOld, 'flows'), flowRecords(await whole.pipeline.snapshot(), 'flows'));
  // Entries restored without a steering take that of the first packet that finds them.
  const { records: oldRecords, record_size: oldSize } = afterOld.elements.stats.tables.flows;
  const steered = Buffer.from(oldRecords, 'base64');
  for (let at = 0; at < steered.length; at += oldSize) assert.ok(steered.readUInt32LE(at + 24) & 0x8000, 'steering recorded');
  // The per-source table's parts, one per shard, become one entry each: counts added, the last-seen time the latest.
  const sources = (snapshot: Snapshot) => {
    const t = snapshot.elements.stats.tables.sources;
    const bytes = Buffer.from(t.records, 'base64');
    const merged = new Map<string, [bigint, bigint, bigint]>();
    for (let at = 0; at < bytes.length; at += t.record_size) {
      const [packets, octets, last] = [32, 40, 48].map((o) => bytes.readBigUInt64LE(at + o));
      const key = bytes.subarray(at, at + 16).toString('hex');
      const m = merged.get(key) ?? [0n, 0n, 0n];
      merged.set(key, [m[0] + packets, m[1] + octets, last > m[2] ? last : m[2]]);
    }
    return [...merged].sort();
  };
  const parts = JSON.parse(readFileSync(saved, 'utf8')) as Snapshot;
  const c = await Pipeline.create(await loadConfig(configFile('c'), { overrides: [`src.file=${secondHalf}`] }), { shards: 1 });
  c.restore(parts);
  const restored = await c.snapshot();
  assert.is(Buffer.from(restored.elements.stats.tables.sources.records, 'base64').length / restored.elements.stats.tables.sources.record_size,
    sources(parts).length, 'one entry per source');
  assert.equal(sources(restored), sources(parts));
});

test('view.count of a table whose shards each keep a part of an entry (merged on read) counts each key once, with a key test too', async () => {
  // 100.64.0.1's 16 flows land on both shards, each of which keeps a part of its per-source entry; 100.64.0.2 has one flow.
  const merged = join(dir, 'merged-in.pcap');
  writePcap(merged, [...Array.from({ length: 16 }, (_, i) => ipv4Frame({ src: '100.64.0.1', sport: 1000 + i })), ipv4Frame({ src: '100.64.0.2' })]);
  const pipeline = await Pipeline.create(await loadConfig(configFile('merged'), { overrides: [`src.file=${merged}`] }), { shards: 2, threads: 'inline' });
  await pipeline.run();
  const t = (await pipeline.snapshot()).elements.stats.tables.sources;
  assert.ok(t.merges);
  assert.is(Buffer.from(t.records, 'base64').length / t.record_size, 3, 'a part of 100.64.0.1 on each shard, and 100.64.0.2');
  const view = pipeline.view('stats');
  const from = (address: number) => (key: number[]) => key[0] === address;
  assert.is(view.count('sources'), 2);
  assert.is(view.read('sources'), 2n);
  assert.is(view.count('sources', from(0x64400001)), 1);
  assert.is(view.count('sources', from(0x64400002)), 1);
  assert.is(view.count('sources', from(0x64400003)), 0);
});

test('a restore into smaller tables says how large they are now (a stateless Filter restored from a stateful one\'s snapshot said only "full")', async () => {
  const a = await Pipeline.create(await loadConfig(configFile('small-a'), { overrides: ['stats.capacity=65536'] }), { shards: 1 });
  await a.run();
  const lines: string[] = [];
  const small = await Pipeline.create(await loadConfig(configFile('small-b'), { overrides: ['stats.capacity=100'] }), { shards: 1, log: (m) => lines.push(m) });
  small.restore(await a.snapshot());
  assert.ok(lines.some((l) => /^stats\.flows on shard 0 is full \(at most 100 entries, by its parameters now\); \d+ snapshot entries left out$/.test(l)), lines.join('\n'));
});

test('state owned by a host moves with its address when sources steer by source address', async () => {
  const file = join(dir, 'hosts.yaml');
  writeFileSync(file, `
element_dirs: [${join(ROOT, 'test/fixtures/user-elements')}]
elements:
  src: { type: FromPcap, file: trace.pcap, steer: source-address }
  hosts: { type: HostCount }
  out: { type: ToPcap, file: hosts.pcap }
connections:
  - src -> hosts -> out
`);
  const hostRecords = async (options: PipelineOptions) => {
    const pipeline = await Pipeline.create(await loadConfig(file), options);
    await pipeline.run();
    const t = (await pipeline.snapshot()).elements.hosts.tables.hosts;
    assert.is(t.merges, false);
    const bytes = Buffer.from(t.records, 'base64');
    const keys: string[] = [], records: string[] = [];
    for (let at = 0; at < bytes.length; at += t.record_size) {
      keys.push(bytes.subarray(at, at + 16).toString('hex'));
      records.push(bytes.subarray(at, at + 16).toString('hex') + bytes.subarray(at + 32, at + t.record_size).toString('hex'));
    }
    return { keys, records: records.sort(), reports: pipeline.scaleReports };
  };
  const one = await hostRecords({ shards: 1 });
  const scaled = await hostRecords({ shards: 1, scaleAt: [{ packets: 8000, shards: 2 }, { packets: 16000, shards: 4 }, { packets: 28000, shards: 1 }] });
  assert.ok(scaled.reports.every((r) => r.packets_lost === 0));
  assert.ok(scaled.reports.some((r) => r.flows_moved > 0), 'host entries moved');
  assert.is(new Set(scaled.keys).size, scaled.keys.length, 'each host is owned by exactly one shard');
  assert.equal(scaled.records, one.records, 'every host counted as one shard counts it');
});

test('state owned by a host with sources that do not steer by address: refused for more than one shard, at start and on scale', async () => {
  const file = join(dir, 'hosts-flow.yaml');
  writeFileSync(file, readFileSync(join(dir, 'hosts.yaml'), 'utf8').replace(', steer: source-address', ''));
  const config = await loadConfig(file);
  try {
    await Pipeline.create(config, { shards: 2 });
    assert.unreachable('two shards started');
  } catch (e) {
    assert.instance(e, ConfigErrors);
    assert.match((e as Error).message, /src feeds hosts \(HostCount\), whose state is owned by an address, but steers by flow/);
    assert.match((e as ConfigErrors).errors[0].hint!, /add steer: source-address to src/);
  }
  const single = await Pipeline.create(config, { shards: 1, scaleAt: [{ packets: 8000, shards: 2 }] });
  try {
    await single.run();
    assert.unreachable('scaled to two shards');
  } catch (e) {
    assert.match((e as Error).message, /steers by flow/, (e as Error).message);
  }
  // check says so too, for the shards a run would start (it said ok).
  const check = cli(['check', file, '--shards', '2']);
  assert.is(check.status, 2, check.stdout);
  assert.match(check.stderr, /src feeds hosts \(HostCount\), whose state is owned by an address, but steers by flow/);
  assert.is(cli(['check', file, '--shards', '1']).status, 0);
});

test('a pool of packet slots of 2 GiB (the most pool_slots with the default slot_size): rings beyond 2 GiB of memory are woken and run', async () => {
  // Addresses from 2 GiB up were shifted into negative Atomics indices: the run failed at its first wake.
  const file = join(dir, 'pool.yaml');
  writeFileSync(file, 'pool_slots: 1048576\nelements:\n  src: { type: FromPcap, file: trace.pcap }\n  out: { type: Discard }\nconnections:\n  - src -> out\n');
  const result = await (await Pipeline.create(await loadConfig(file), { shards: 1, threads: 'worker' })).run();
  assert.ok(result.packets_in > 0 && result.elements.out.in === result.packets_in, JSON.stringify(result.elements));
});

test('a scale event whose new shards would not fit in memory is refused and changes nothing: the next one and the stop work', async () => {
  // A flow table of 16M slots of 64 bytes: a GiB a shard, so four shards are more than WebAssembly's 4 GiB.
  const file = join(dir, 'big.yaml');
  writeFileSync(file, `elements:
  src: { type: FromPcap, file: trace.pcap, loop: true, timing: original }
  stats: { type: FlowStats, capacity: 8000000 }
  out: { type: Discard }
connections:
  - src -> stats -> out
`);
  const pipeline = await Pipeline.create(await loadConfig(file), { shards: 1, threads: 'inline' });
  const running = pipeline.run();
  try {
    for (const deadline = Date.now() + 30_000; pipeline.packetsIn() < 100;) {
      if (Date.now() > deadline) throw new Error('no packets in 30 s');
      await new Promise((r) => setTimeout(r, 10));
    }
    await pipeline.scale(4).then(() => assert.unreachable('scaled to 4'), (e: Error) => {
      assert.match(e.message, /^4 shards need \d+ bytes of memory, more than the 4 GiB WebAssembly allows \(each shard's tables and batches take \d+\): scale to fewer/);
    });
    const report = await pipeline.scale(2);
    assert.equal([report.from, report.to, report.packets_lost], [1, 2, 0]);
  } finally {
    pipeline.stop();
  }
  const result = await running;
  assert.ok(result.packets_in > 0);
});

test.after(() => removeDir(dir));
test.run();
