// NAT under scale events (issue 6, M1-M3): 10k subscribers, shards 1 -> 2 -> 1 while the trace runs.
// Every subscriber keeps its external address and port through the moves, no packet is lost, replies
// find their mappings on whichever shard the subscriber lives, and the output equals one shard's.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { existsSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { tempDir, removeDir, writePcap, readPcap, ipv4Frame } from './helpers.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline, type PipelineOptions, type Snapshot } from '../engine/pipeline.ts';
import { verify } from '../engine/verify.ts';
import { Supervisor } from '../engine/supervisor.ts';

const SUBSCRIBERS = 10_000;
const T0 = 1_700_000_000;
const dir = tempDir();

const subscriber = (i: number) => `100.64.${i >> 8}.${i & 255}`;
const server = (i: number) => `198.18.${i % 200}.1`;

/** Waits until `ready()` holds; fails, naming `what`, after 30 s (a run that never gets there must not hang the tests). */
async function waitFor(ready: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`waited 30 s for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** With `stats`, a FlowStats in front of the NAT: its entries are keyed by 5-tuples, its packets steered by subscriber. */
function config(name: string, nat: string, source = '', stats = false): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, `
elements:
  src: { type: FromPcap, file: ${name}.pcap, steer: nat${source} }${stats ? '\n  stats: { type: FlowStats }' : ''}
  side: { type: Classifier, patterns: ['src net 100.64.0.0/10', '-'] }
  nat: { type: NAT, ${nat.includes('pool:') ? nat : `pool: [203.0.113.0/26], ${nat}`} }
  outside: { type: ToPcap, file: ${name}-outside.pcap }
  inside: { type: ToPcap, file: ${name}-inside.pcap }
connections:
  - src -> ${stats ? 'stats -> ' : ''}side
  - side[0] -> [0]nat
  - side[1] -> [1]nat
  - nat[0] -> outside
  - nat[1] -> inside
`);
  return file;
}

/** Rounds of packets, every subscriber once per round: its UDP datagram out (its number in the payload), and with `reply` the server's answer to its mapping. */
function trace(name: string, rounds: number, reply?: Map<number, string>, subscribers = SUBSCRIBERS): void {
  const frames: { data: Buffer; sec: number; usec: number }[] = [];
  const payload = (i: number) => Buffer.from([i >> 24, (i >> 16) & 255, (i >> 8) & 255, i & 255]);
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < subscribers; i++) {
      frames.push({ data: ipv4Frame({ proto: 'udp', src: subscriber(i), dst: server(i), sport: 10000 + i, dport: 53, payload: payload(i) }), sec: T0 + round, usec: i });
      const mapped = reply?.get(i);
      if (mapped) {
        const [address, port] = mapped.split(':');
        frames.push({ data: ipv4Frame({ proto: 'udp', src: server(i), dst: address, sport: 53, dport: Number(port), payload: payload(i) }), sec: T0 + round, usec: i });
      }
    }
  }
  writePcap(join(dir, `${name}.pcap`), frames);
}

/** Per subscriber (by the number in the payload), the external address:port its translated packets left with. */
function externalsOf(file: string): Map<number, Set<string>> {
  const seen = new Map<number, Set<string>>();
  for (const { data: d } of readPcap(file).records) {
    const i = d.readUInt32BE(42);
    if (!seen.has(i)) seen.set(i, new Set());
    seen.get(i)!.add(`${[...d.subarray(26, 30)].join('.')}:${d.readUInt16BE(34)}`);
  }
  return seen;
}

async function run(name: string, nat: string, options: PipelineOptions) {
  const pipeline = await Pipeline.create(await loadConfig(config(name, nat)), options);
  const result = await pipeline.run();
  return { counters: result.elements.nat as Record<string, number>, reports: pipeline.scaleReports, runtime: pipeline.runtimeStats() };
}

test('dynamic blocks: 10k subscribers keep their external address and port through 1 -> 2 -> 1 shards, 0 lost', async () => {
  trace('dynamic', 3);
  const { counters, reports } = await run('dynamic', 'max_subscribers: 16384, ports_per_block: 64', {
    shards: 1, scaleAt: [{ packets: 10_000, shards: 2 }, { packets: 20_000, shards: 1 }],
  });
  assert.is(reports.length, 2, 'two scale events');
  for (const r of reports) assert.is(r.packets_lost, 0, 'packets lost in a scale event');
  assert.ok(reports[0].flows_moved > 0, 'subscriber state moved');
  assert.is(counters.translated_out, 3 * SUBSCRIBERS, 'every packet translated');
  assert.is(counters.mappings_created, SUBSCRIBERS, 'one mapping per subscriber: none made again after a move');
  const externals = externalsOf(join(dir, 'dynamic-outside.pcap'));
  assert.is(externals.size, SUBSCRIBERS);
  const all = new Set<string>();
  for (const [i, set] of externals) {
    assert.is(set.size, 1, `subscriber ${i} left with ${[...set].join(', ')}`);
    all.add([...set][0]);
  }
  assert.is(all.size, SUBSCRIBERS, 'no two subscribers share an external address and port');
});

test('a session table larger than a core\'s cache share (30k sessions: each batch touches its lookups first): all translated, one mapping each', async () => {
  const subscribers = 30_000; // 30k x 48-byte entries: past FlowTable.worthTouching's 1 MiB
  trace('large', 2, undefined, subscribers);
  const { counters } = await run('large', 'max_subscribers: 32768, max_sessions: 32768, ports_per_block: 64', { shards: 1, threads: 'inline' });
  assert.is(counters.translated_out, 2 * subscribers, 'every packet translated');
  assert.is(counters.mappings_created, subscribers, 'one mapping per subscriber');
  const externals = externalsOf(join(dir, 'large-outside.pcap'));
  assert.is(externals.size, subscribers);
  assert.ok([...externals.values()].every((set) => set.size === 1), 'each subscriber left with one external address and port');
  assert.is(new Set([...externals.values()].map((set) => [...set][0])).size, subscribers, 'no two share one');
});

const DETERMINISTIC = "deterministic: true, inside: ['100.64.0.0/18'], max_subscribers: 16384";

/** Per subscriber, the external address:port of its datagrams in deterministic mode (from a run of one round). */
async function deterministicMappings(): Promise<Map<number, string>> {
  trace('learn', 1);
  await run('learn', DETERMINISTIC, { shards: 1, threads: 'inline' });
  const mapped = new Map([...externalsOf(join(dir, 'learn-outside.pcap'))].map(([i, set]) => [i, [...set][0]]));
  assert.is(mapped.size, SUBSCRIBERS);
  return mapped;
}

test('deterministic mode: replies reach their subscribers across the moves; output equals one shard (wirepath verify)', async () => {
  const mapped = await deterministicMappings();
  trace('both', 3, mapped);
  const { counters, reports } = await run('both', DETERMINISTIC, { shards: 1, scaleAt: [{ packets: 20_000, shards: 2 }, { packets: 40_000, shards: 1 }] });
  assert.is(reports.length, 2);
  for (const r of reports) assert.is(r.packets_lost, 0);
  assert.is(counters.translated_out, 3 * SUBSCRIBERS);
  assert.is(counters.translated_in, 3 * SUBSCRIBERS, 'every reply found its mapping on the shard its subscriber lives on');
  for (const [i, set] of externalsOf(join(dir, 'both-outside.pcap'))) assert.equal([...set], [mapped.get(i)], `subscriber ${i}`);
  const inside = readPcap(join(dir, 'both-inside.pcap')).records;
  inside.forEach(({ data: d }) => assert.is(`${[...d.subarray(30, 34)].join('.')}:${d.readUInt16BE(36)}`, `${subscriber(d.readUInt32BE(42))}:${10000 + d.readUInt32BE(42)}`));
  const equivalence = await verify(config('both', DETERMINISTIC), { shards: [1, 2, 1], scaleEvery: 20_000 });
  assert.ok(equivalence.equivalent, equivalence.difference);
});

test('per-flow state beside a NAT moves with its subscriber: a FlowStats keeps one entry per flow through 1 -> 2 -> 1, replies too', async () => {
  // The keys do not tell the entries' shard: each records the steering of the packet that made it.
  trace('counted', 3, await deterministicMappings());
  const file = config('counted', `pool: [203.0.113.0/26], ${DETERMINISTIC}`, '', true);
  const pipeline = await Pipeline.create(await loadConfig(file), { shards: 1, scaleAt: [{ packets: 20_000, shards: 2 }, { packets: 40_000, shards: 1 }] });
  const { elements } = await pipeline.run();
  assert.ok(pipeline.scaleReports.every((r) => r.packets_lost === 0));
  assert.ok(pipeline.scaleReports.some((r) => r.flows_moved > 0));
  assert.is(elements.inside.in, 3 * SUBSCRIBERS, 'every reply reached its subscriber');
  const flows = pipeline.view('stats').entries('flows');
  assert.is(flows.length, 2 * SUBSCRIBERS, 'one entry per flow (each subscriber\'s datagrams, and the replies to its mapping)');
  assert.ok(flows.every((e) => e.value.packets === 3n), 'every packet of each flow counted in it');
  // A snapshot restored into two shards puts each entry where its packets go: the trace once more adds to them.
  const restarted = await Pipeline.create(await loadConfig(file), { shards: 2 });
  restarted.restore(await pipeline.snapshot());
  await restarted.run();
  const again = restarted.view('stats').entries('flows');
  assert.is(again.length, 2 * SUBSCRIBERS, 'one entry per flow after the restore');
  assert.ok(again.every((e) => e.value.packets === 6n), 'every packet of both runs counted in its flow\'s entry');
  // Restored into a config whose packets are steered otherwise (the NAT gone, flow steering), the entries go by their keys.
  const plain = join(dir, 'counted-plain.yaml');
  writeFileSync(plain, `
elements:
  src: { type: FromPcap, file: counted.pcap }
  stats: { type: FlowStats }
  out: { type: Discard }
connections:
  - src -> stats -> out
`);
  const snapshot = await pipeline.snapshot();
  const steeredOtherwise = await Pipeline.create(await loadConfig(plain), { shards: 2 });
  steeredOtherwise.restore({ ...snapshot, elements: { stats: snapshot.elements.stats } }, true); // as a reload carries the elements both configs have
  await steeredOtherwise.run();
  const flowSteered = steeredOtherwise.view('stats').entries('flows');
  assert.is(flowSteered.length, 2 * SUBSCRIBERS, 'one entry per flow in a config that steers by the flow');
  assert.ok(flowSteered.every((e) => e.value.packets === 6n));
});

test('a hairpinned packet handed to its target\'s shard records the target\'s steering on one shard too: its flow keeps one entry through 1 -> 2', async () => {
  // 60 subscribers send to 203.0.113.0:1101, in the deterministic range of 100.64.0.5, which never mapped it: each
  // packet is translated and handed to that subscriber's shard (resteer), where the FlowStats counts it again.
  const senders = Array.from({ length: 60 }, (_, i) => `100.64.1.${i + 1}`);
  const frames = [];
  for (let round = 0; round < 6; round++) {
    for (const [i, src] of senders.entries()) frames.push({ data: ipv4Frame({ proto: 'udp', src, dst: '203.0.113.0', sport: 4000, dport: 1101 }), sec: T0 + round, usec: i });
  }
  writePcap(join(dir, 'handed.pcap'), frames);
  const file = config('handed', "deterministic: true, inside: ['100.64.0.0/18'], pool: ['203.0.113.0/30'], port_preservation: true", '', true);
  const pipeline = await Pipeline.create(await loadConfig(file), { shards: 1, threads: 'inline', scaleAt: [{ packets: 180, shards: 2 }] });
  const { elements } = await pipeline.run();
  assert.is(elements.nat.hairpin_handovers, 360);
  const handed = pipeline.view('stats').entries('flows').filter((e) => e.key[0] >>> 24 === 203);
  assert.is(handed.length, 60, 'one entry per translated flow (split over two shards when its steering was the sender\'s)');
  assert.ok(handed.every((e) => e.value.packets === 6n));
});

test('hairpinning between subscribers on different shards: the packet is handed to its target\'s shard', async () => {
  // Deterministic mode, so the external endpoints are known: 100.64.0.5 holds 203.0.113.0:1099-1113, 100.64.0.2 1054-1068.
  const nat = "deterministic: true, inside: ['100.64.0.0/18'], pool: ['203.0.113.0/30'], port_preservation: true";
  const udp = (src: string, sport: number, dst: string, dport: number) => ipv4Frame({ proto: 'udp', src, dst, sport, dport });
  writePcap(join(dir, 'hairpin.pcap'), [udp('100.64.0.5', 1100, '198.18.0.1', 53), udp('100.64.0.2', 1060, '198.18.0.1', 53), udp('100.64.0.2', 1060, '203.0.113.0', 1100)]);
  const { counters } = await run('hairpin', nat, { shards: 2 });
  assert.is(counters.hairpin_handovers, 1, JSON.stringify(counters));
  assert.is(counters.hairpinned, 1, JSON.stringify(counters));
  const [delivered] = readPcap(join(dir, 'hairpin-inside.pcap')).records.map((r) => r.data);
  assert.is(`${[...delivered.subarray(26, 30)].join('.')}:${delivered.readUInt16BE(34)}`, '203.0.113.0:1060', 'from A\'s external endpoint');
  assert.is(`${[...delivered.subarray(30, 34)].join('.')}:${delivered.readUInt16BE(36)}`, '100.64.0.5:1100', 'to B');
});

/** Deterministic NAT for fragment tests: its subscribers, their datagram out, and where each is mapped (learned by a run; the same in every run). */
async function fragmentSetup(name: string, count: number) {
  const subscribers = Array.from({ length: count }, (_, i) => subscriber(i + 1));
  const out = (s: string) => ipv4Frame({ proto: 'udp', src: s, dst: '198.18.0.1', sport: 5000, dport: 53 });
  writePcap(join(dir, `${name}-learn.pcap`), subscribers.map(out));
  await run(`${name}-learn`, FRAGMENT_NAT, { shards: 1 });
  const externals = readPcap(join(dir, `${name}-learn-outside.pcap`)).records.map((r) => ({ dst: [...r.data.subarray(26, 30)].join('.'), dport: r.data.readUInt16BE(34) }));
  // A server's replies to those mappings.
  const reply = externals.map((e) => ({ proto: 'udp' as const, src: '198.18.0.1', sport: 53, ...e }));
  return { subscribers, outbound: subscribers.map(out), reply };
}

const FRAGMENT_NAT = "deterministic: true, inside: ['100.64.0.0/18'], pool: ['203.0.113.0/30'], port_preservation: true";

test('inbound fragments, in and out of order: the later ones follow their first fragment to its subscriber\'s shard', async () => {
  const { subscribers, outbound, reply } = await fragmentSetup('fragments', 16);
  const address = (d: Buffer, at: number) => [...d.subarray(at, at + 4)].join('.');
  // Every other datagram's later fragment comes before its first.
  writePcap(join(dir, 'fragments.pcap'), [...outbound, ...reply.flatMap((r, i) => {
    const pieces = [ipv4Frame({ ...r, id: 0x100 + i, moreFragments: true, payload: 8 }), ipv4Frame({ ...r, id: 0x100 + i, fragOffset: 2, payload: 16 })];
    return i % 2 ? pieces.reverse() : pieces;
  })]);
  const { counters, runtime } = await run('fragments', FRAGMENT_NAT, { shards: 2 });
  assert.is(counters.drop_fragment, 0, JSON.stringify(counters));
  assert.is(runtime.later_fragments_waited, subscribers.length / 2, 'the later fragments that came first waited');
  assert.is(runtime.later_fragments_without_first, 0);
  const delivered = readPcap(join(dir, 'fragments-inside.pcap')).records.map((r) => address(r.data, 30));
  assert.equal([...delivered].sort(), subscribers.flatMap((s) => [s, s]).sort(), 'both fragments reach every subscriber');
});

test('inbound fragments across a scale event: the later ones find the first\'s subscriber on its new shard', async () => {
  const { subscribers, outbound, reply } = await fragmentSetup('moved', 32);
  // Every first fragment, then (after the subscribers moved from two shards to one) every later one.
  const firsts = reply.map((r, i) => ipv4Frame({ ...r, id: 0x200 + i, moreFragments: true, payload: 8 }));
  const laters = reply.map((r, i) => ipv4Frame({ ...r, id: 0x200 + i, fragOffset: 2, payload: 16 }));
  writePcap(join(dir, 'moved.pcap'), [...outbound, ...firsts, ...laters]);
  const { counters, reports } = await run('moved', FRAGMENT_NAT, { shards: 2, scaleAt: [{ packets: 2 * subscribers.length, shards: 1 }] });
  assert.is(reports.length, 1);
  assert.is(counters.drop_fragment, 0, JSON.stringify(counters));
  assert.is(counters.translated_in, 2 * subscribers.length);
});

test('inbound fragments: more datagrams in flight than fragment_owners has slots for without sharing, on one shard, all reach their subscribers', async () => {
  const { outbound, reply } = await fragmentSetup('many', 8);
  // 6000 datagrams' first fragments, then their later ones: some share a slot of fragment_owners, and the entry by
  // external address answers.
  const datagrams = Array.from({ length: 6000 }, (_, i) => ({ ...reply[i % reply.length], id: i }));
  writePcap(join(dir, 'many.pcap'), [...outbound, ...datagrams.map((d) => ipv4Frame({ ...d, moreFragments: true, payload: 8 })),
    ...datagrams.map((d) => ipv4Frame({ ...d, fragOffset: 2, payload: 16 }))]);
  const { counters } = await run('many', FRAGMENT_NAT, { shards: 1 });
  assert.is(counters.drop_fragment, 0, JSON.stringify(counters));
  assert.is(counters.translated_in, 2 * datagrams.length);
});

test('a later fragment whose first comes too late goes on after 2 s of packet time, also among plain packets on one shard', async () => {
  const nat = "deterministic: true, inside: ['100.64.0.0/18'], pool: ['203.0.113.0/30'], port_preservation: true";
  const out = (sec: number) => ({ data: ipv4Frame({ proto: 'udp', src: subscriber(1), dst: '198.18.0.1', sport: 5000, dport: 53 }), sec: T0 + sec, usec: 0 });
  writePcap(join(dir, 'late-learn.pcap'), [out(0)]);
  await run('late-learn', nat, { shards: 1 });
  const [learned] = readPcap(join(dir, 'late-learn-outside.pcap')).records;
  const reply = { proto: 'udp' as const, src: '198.18.0.1', sport: 53, dst: [...learned.data.subarray(26, 30)].join('.'), dport: learned.data.readUInt16BE(34), id: 7 };
  // The later fragment waits; plain packets (batches of them: the wait is checked between batches) move the
  // packet clock past 2 s; its first comes only at 5 s, too late.
  writePcap(join(dir, 'late.pcap'), [out(0), { data: ipv4Frame({ ...reply, fragOffset: 2, payload: 16 }), sec: T0, usec: 1 }, out(1),
    ...Array.from({ length: 2000 }, () => out(3)),
    { data: ipv4Frame({ ...reply, moreFragments: true, payload: 8 }), sec: T0 + 5, usec: 0 }]);
  const { runtime } = await run('late', nat, { shards: 1, threads: 'inline' });
  assert.is(runtime.later_fragments_waited, 1);
  assert.is(runtime.later_fragments_without_first, 1, 'released by the packet clock before its first came');
});

test('steer: nat takes a frame a capture cut short by its subscriber too: a FlowStats before the NAT keeps one entry per flow on two shards', async () => {
  // Each of 200 subscribers sends small datagrams, which the capture kept whole, and large ones, which it cut to 96 bytes.
  const frames: { data: Buffer; sec: number; usec: number; origlen?: number }[] = [];
  for (let round = 0; round < 4; round++) {
    for (let i = 0; i < 200; i++) {
      const f = ipv4Frame({ proto: 'udp', src: subscriber(i), dst: server(i), sport: 10000 + i, dport: 53, payload: round % 2 ? 1000 : 20 });
      frames.push({ data: f.subarray(0, 96), origlen: f.length, sec: T0 + round, usec: i });
    }
  }
  writePcap(join(dir, 'cut-nat.pcap'), frames);
  const pipeline = await Pipeline.create(await loadConfig(config('cut-nat', 'pool: [203.0.113.0/26]', '', true)), { shards: 2 });
  const { elements } = await pipeline.run();
  const entries = pipeline.view('stats').entries('flows');
  assert.is(entries.length, 200, 'one entry per flow (a cut frame went to bucket 0\'s shard, a second entry)');
  assert.ok(entries.every((e) => e.value.packets === 4n), 'every packet of each flow counted in it');
  assert.equal(new Set(entries.map((e) => e.shard)), new Set([0, 1]));
  assert.is((elements.nat as Record<string, number>).drop_malformed, 400, 'the NAT drops the cut ones');
});

test('R9 across shards: subscribers on two shards behind one external address never send a server the same IP ID', async () => {
  // 200 subscribers, one external address, 5 datagrams each (DF clear) to one server: one ID counter for all of them.
  const frames: { data: Buffer; sec: number; usec: number }[] = [];
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 200; i++) frames.push({ data: ipv4Frame({ proto: 'udp', src: subscriber(i), dst: '198.18.0.1', sport: 10000 + i, dport: 53, id: round }), sec: T0 + round, usec: i });
  }
  writePcap(join(dir, 'ids.pcap'), frames);
  const pipeline = await Pipeline.create(await loadConfig(config('ids', 'pool: [203.0.113.1], ports_per_block: 64')), { shards: 2 });
  await pipeline.run();
  assert.equal(new Set(pipeline.view('nat').entries('subscribers').map((e) => e.shard)), new Set([0, 1]), 'subscribers on both shards');
  const ids = readPcap(join(dir, 'ids-outside.pcap')).records.map((r) => r.data.readUInt16BE(18));
  assert.is(ids.length, 1000);
  assert.is(new Set(ids).size, 1000, 'a thousand datagrams, a thousand IDs');
});

test('wirepath verify: a datagram that came in with a bad IP header checksum leaves with one as bad, whatever ID it got', async () => {
  // DF clear: the NAT gives each datagram an ID from counters its shards share, so the two runs' IDs differ.
  const frames = Array.from({ length: 400 }, (_, i) => {
    const f = ipv4Frame({ proto: 'udp', src: subscriber(i % 40), dst: server(i), sport: 20000 + (i % 40), dport: 53, id: i });
    if (i % 7 === 0) f.writeUInt16BE(f.readUInt16BE(24) ^ 0x0101, 24);
    return { data: f, sec: T0, usec: i };
  });
  writePcap(join(dir, 'badsum.pcap'), frames);
  const equivalence = await verify(config('badsum', "deterministic: true, inside: ['100.64.0.0/18']"), { shards: [2, 1, 2], scaleEvery: 100 });
  assert.ok(equivalence.equivalent, equivalence.difference);
});

test('a snapshot carries subscribers, mappings and who holds each block into a new pipeline, also with another shard count', async () => {
  trace('before', 1);
  const nat = 'max_subscribers: 16384, ports_per_block: 64';
  const first = await Pipeline.create(await loadConfig(config('before', nat)), { shards: 2 });
  await first.run();
  const snapshot = await first.snapshot();
  const before = externalsOf(join(dir, 'before-outside.pcap'));
  trace('after', 1);
  const second = await Pipeline.create(await loadConfig(config('after', nat)), { shards: 1, threads: 'inline' });
  second.restore(snapshot);
  const counters = (await second.run()).elements.nat as Record<string, number>;
  // Counters carry on from the snapshot's: none grew.
  const saved = snapshot.elements.nat.scalars;
  assert.is(counters.mappings_created, Number(saved.mappings_created), 'every mapping came back');
  assert.is(counters.blocks_allocated, Number(saved.blocks_allocated), 'no block given out again');
  assert.is(counters.translated_out, 2 * SUBSCRIBERS);
  for (const [i, set] of externalsOf(join(dir, 'after-outside.pcap'))) assert.equal([...set], [...before.get(i)!], `subscriber ${i}`);
  // With another pool the blocks are laid out differently: that state starts afresh (and says so), and so do the
  // tables, whose subscribers name blocks of the old pool (else the new pool would give their blocks out again).
  const logs: string[] = [];
  const other = await Pipeline.create(await loadConfig(config('after', `${nat}, pool: [203.0.113.64/26]`)), { shards: 1, threads: 'inline', log: (m: string) => logs.push(m) });
  assert.equal([...other.restore(snapshot)], ['nat'], 'reported as started afresh (a reload lists it as restarted, not kept)');
  assert.ok(logs.some((m) => m.includes('nat: its pool data is laid out by pool, ports_per_block, inside, exempt, deterministic, exempt_ports, icmp_source, log, mapping, filtering, sessions_per_subscriber, and one of them changed, so it starts afresh (its tables too) instead of taking its state from the snapshot')), logs.join('\n'));
  assert.equal(['subscribers', 'mappings', 'sessions'].map((t) => other.view('nat').entries(t).length), [0, 0, 0]);
  assert.ok(snapshot.elements.nat.tables.subscribers, 'the snapshot had them');
  // Its counters start afresh with it: counting on, it would have translated more packets than it took.
  const fresh = other.stats().nat as Record<string, unknown>;
  assert.equal([fresh.mappings_created, fresh.blocks_allocated, fresh.translated_out], [0, 0, 0]);
});

test('C8 the block log leaves no block open: released when the run ends or a reload starts the NAT afresh, allocated again from a snapshot file', async () => {
  const count = 100;
  trace('life', 2, undefined, count);
  const nat = (pool: string) => `pool: [${pool}], ports_per_block: 1024, log: life.jsonl`;
  const options: PipelineOptions = { shards: 1 };
  // Looped at the trace's pace (a round a second), so that the run goes on while it is reloaded.
  const looped = ', loop: true, timing: original';
  const file = config('life', nat('203.0.113.0/26'), looped);
  const supervisor = new Supervisor(await Pipeline.create(await loadConfig(file), options), file, {}, options);
  const running = supervisor.run();
  let snapshot: Snapshot | undefined;
  try {
    const busy = async () => { const p = supervisor.pipeline(); await waitFor(() => p.packetsIn() >= count, `${count} packets`); };
    await busy();
    const kept = await supervisor.reload(readFileSync(file, 'utf8'));
    assert.ok(kept.kept.includes('nat'), kept.kept.join());
    await busy();
    const restarted = await supervisor.reload(readFileSync(config('life', nat('203.0.113.64/26'), looped), 'utf8'));
    assert.equal(restarted.restarted, ['nat']);
    await busy();
    // Taken while packets flow: one cut of all the NAT's state (else a mapping may come without the subscriber entry
    // that holds its block, and the restored NAT would give the subscriber a second block).
    snapshot = await supervisor.pipeline().snapshot();
  } finally {
    supervisor.stop();
    await running;
  }
  // A stop asked for before a reload takes over stands: the reload is refused, and the blocks are logged released.
  const stopping = new Supervisor(await Pipeline.create(await loadConfig(file), options), file, {}, options);
  const stopped = stopping.run();
  await waitFor(() => stopping.pipeline().packetsIn() >= count, `${count} packets`);
  const reload = stopping.reload(readFileSync(file, 'utf8')).then(() => 'taken over', (e: Error) => e.message);
  stopping.stop();
  await stopped;
  const why = await reload;
  assert.match(why, /is stopping|has ended/, why);
  const restored = await Pipeline.create(await loadConfig(config('life', nat('203.0.113.64/26'))), options);
  restored.restore(snapshot!);
  await restored.run();

  const log = readFileSync(join(dir, 'life.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  // Replays the log: a block is allocated only while closed, released only while open and by its holder.
  const open = new Map<string, string>();
  const events = log.map((r) => {
    const block = `${r.external} ${r.ports} ${r.protocol}`;
    if (r.event === 'allocate') {
      assert.not.ok(open.has(block), `${block} allocated twice`);
      open.set(block, r.subscriber);
    } else {
      assert.is(open.get(block), r.subscriber, `${block} released by its holder`);
      open.delete(block);
    }
    return `${r.event} ${Number(r.external.split('.')[3]) >= 64 ? 'new' : 'old'} pool`;
  });
  assert.is(open.size, 0, 'no block left open');
  assert.ok(log.every((r) => Date.parse(r.time) >= T0 * 1000), 'every record at a time of the trace (the restored ones at its first packet, not at clock 0)');
  // The kept reload logs nothing; the restarted one gives the old pool's blocks back; the stopped run's are released at
  // its end; the restored NAT holds the new ones again.
  // (The file holds the new pool by the time the stopped run reads it.)
  const runs = ['allocate old', 'release old', 'allocate new', 'release new', 'allocate new', 'release new', 'allocate new', 'release new'];
  assert.equal(events, runs.flatMap((e) => Array(count).fill(`${e} pool`)));
});

test('C8 a reload that moves the block log: the earlier file records the held blocks released, the new one allocated; one that removes the log starts the NAT afresh, and the last file releases them', async () => {
  const count = 50;
  trace('moved', 2, undefined, count);
  const looped = ', loop: true, timing: original';
  const file = (log: string) => config('moved', `ports_per_block: 1024${log}`, looped);
  const options: PipelineOptions = { shards: 1 };
  const first = file(', log: first.jsonl');
  const supervisor = new Supervisor(await Pipeline.create(await loadConfig(first), options), first, {}, options);
  const running = supervisor.run();
  const busy = async () => { const p = supervisor.pipeline(); const from = p.packetsIn(); await waitFor(() => p.packetsIn() >= from + count, `${count} more packets`); };
  try {
    await busy();
    assert.ok((await supervisor.reload(readFileSync(file(', log: second.jsonl'), 'utf8'))).kept.includes('nat'));
    await busy();
    // The pool holds the log's queue: without a log it is laid out otherwise.
    assert.equal((await supervisor.reload(readFileSync(file(''), 'utf8'))).restarted, ['nat']);
    await busy();
  } finally {
    supervisor.stop();
    await running;
  }
  const events = (name: string) => readFileSync(join(dir, name), 'utf8').trim().split('\n').map((l) => JSON.parse(l))
    .map((r) => `${r.event} ${r.subscriber} ${r.external} ${r.ports}`);
  const [firstLog, secondLog] = [events('first.jsonl'), events('second.jsonl')];
  assert.is(firstLog.length, 2 * count);
  const allocated = firstLog.slice(0, count);
  assert.ok(allocated.every((e) => e.startsWith('allocate')), firstLog.join('\n'));
  // The same blocks, held all along: released in the first file, allocated in the second, released there at the second reload.
  const as = (event: string, records: string[]) => records.map((e) => e.replace(/^\w+/, event)).sort();
  assert.equal(firstLog.slice(count).sort(), as('release', allocated));
  assert.equal(secondLog.sort(), [...as('allocate', allocated), ...as('release', allocated)].sort());
  assert.ok(secondLog.length === 2 * count);

  // Moved to a config that sees no packet (an empty capture): its clock never moves, so it logs nothing, and the
  // file before is complete.
  const third = file(', log: third.jsonl');
  writePcap(join(dir, 'quiet.pcap'), []);
  const moving = new Supervisor(await Pipeline.create(await loadConfig(third), options), third, {}, options);
  const ran = moving.run();
  await waitFor(() => moving.pipeline().packetsIn() >= count, `${count} packets`);
  assert.ok((await moving.reload(readFileSync(config('quiet', 'ports_per_block: 1024, log: fourth.jsonl'), 'utf8'))).kept.includes('nat'));
  await ran;
  const thirdLog = events('third.jsonl');
  assert.equal(thirdLog.filter((e) => e.startsWith('release')).sort(), as('release', thirdLog.filter((e) => e.startsWith('allocate'))));
  assert.is(readFileSync(join(dir, 'fourth.jsonl'), 'utf8'), '');
});

test('C12 a reload that starts the NAT afresh (a changed exempt list) keeps the blocks it gave back in quarantine: no subscriber gets one of them at once', async () => {
  const count = 30;
  trace('quarantined', 2, undefined, count);
  // One address: 63 blocks of 1024 high ports a protocol, 30 of them held.
  const nat = (more: string) => `pool: [203.0.113.1], ports_per_block: 1024, log: quarantined.jsonl${more}`;
  const looped = ', loop: true, timing: original';
  const file = config('quarantined', nat(''), looped);
  const logs: string[] = [];
  const options: PipelineOptions = { shards: 1, log: (m: string) => logs.push(m) };
  const supervisor = new Supervisor(await Pipeline.create(await loadConfig(file), options), file, {}, options);
  const running = supervisor.run();
  const busy = async () => { const p = supervisor.pipeline(); const from = p.packetsIn(); await waitFor(() => p.packetsIn() >= from + count, `${count} more packets`); };
  try {
    await busy();
    const report = await supervisor.reload(readFileSync(config('quarantined', nat(', exempt: [198.19.255.0/24]'), looped), 'utf8'));
    assert.equal(report.restarted, ['nat']);
    assert.ok(logs.includes('nat: exempt changed, and its pool data is laid out by it, so it starts afresh (its tables too) instead of taking its state from the pipeline it replaces'), logs.join('\n'));
    await busy();
  } finally {
    supervisor.stop();
    await running;
  }
  const records = readFileSync(join(dir, 'quarantined.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const blocks = (from: number) => records.slice(from, from + count).map((r) => `${r.event} ${r.external} ${r.ports}`);
  const [before, released, after] = [blocks(0), blocks(count), blocks(2 * count)];
  assert.ok(before.every((b) => b.startsWith('allocate')) && released.every((b) => b.startsWith('release')) && after.every((b) => b.startsWith('allocate')), records.map((r) => r.event).join());
  const releasedBlocks = new Set(released.map((b) => b.replace('release ', '')));
  assert.equal(after.filter((b) => releasedBlocks.has(b.replace('allocate ', ''))), [], 'no block given back at the reload is given out again within its quarantine');
});

test('C12 a snapshot restored into a NAT that starts afresh (its pool laid out otherwise) keeps the snapshot\'s blocks in quarantine, held ones and given-back ones', async () => {
  // One address: 63 blocks of 1024 high ports a protocol. In the first run 30 subscribers hold a block each; 10 more
  // go quiet at once and their blocks are given back 300 s later, into quarantine. After the restore, 20 other
  // subscribers get none of those 40 blocks; 200 s later (past the quarantine) 20 more find them free again.
  const nat = (more: string) => `pool: [203.0.113.1], ports_per_block: 1024, log: ${more ? 'restored' : 'saved'}.jsonl${more}`;
  const frames = (from: number, count: number, second: number) => Array.from({ length: count }, (_, k) => ({
    data: ipv4Frame({ proto: 'udp', src: subscriber(from + k), dst: server(k), sport: 10000, dport: 53, payload: Buffer.alloc(4) }), sec: second, usec: k,
  }));
  const records = (file: string) => readFileSync(join(dir, file), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const block = (r: { external: string; ports: string }) => `${r.external} ${r.ports}`;
  const allocated = (file: string, from = 0) => records(file).slice(from).filter((r) => r.event === 'allocate').map(block);
  // Each run appends to restored.jsonl: its own records are those after the ones before it.
  const runFrom = async (snapshot: Snapshot, trace: ReturnType<typeof frames>) => {
    writePcap(join(dir, 'restored.pcap'), trace);
    const before = existsSync(join(dir, 'restored.jsonl')) ? records('restored.jsonl').length : 0;
    const pipeline = await Pipeline.create(await loadConfig(config('restored', nat(', exempt: [198.19.255.0/24]'))), { shards: 1 });
    const afresh = pipeline.restore(snapshot);
    await pipeline.run();
    return { afresh: [...afresh], snapshot: await pipeline.snapshot(), allocated: allocated('restored.jsonl', before) };
  };
  const busy = Array.from({ length: 30 }, (_, s) => frames(0, 30, T0 + 400 + s)).flat();
  writePcap(join(dir, 'saved.pcap'), [...frames(0, 30, T0), ...frames(90, 10, T0), ...busy]);
  const first = await Pipeline.create(await loadConfig(config('saved', nat(''))), { shards: 1 });
  await first.run();
  const givenBack = records('saved.jsonl').filter((r) => r.event === 'release' && Date.parse(r.time) < (T0 + 429) * 1000).map(block);
  assert.is(givenBack.length, 10, 'the quiet subscribers\' blocks were given back during the run');
  const saved = new Set(allocated('saved.jsonl'));
  assert.is(saved.size, 40);
  const restored = await runFrom(await first.snapshot(), frames(30, 20, T0 + 1000));
  assert.equal(restored.afresh, ['nat']);
  assert.is(restored.allocated.length, 20);
  assert.equal(restored.allocated.filter((b) => saved.has(b)), [], 'no block of the snapshot is given out within its quarantine');
  // The same layout now: the state comes back whole, quarantine dates included.
  const later = await runFrom(restored.snapshot, frames(60, 20, T0 + 1200));
  assert.equal(later.afresh, []);
  assert.ok(later.allocated.filter((b) => saved.has(b)).length >= 17, `after the quarantine they are given out again: ${later.allocated}`);
  // Restored by a run whose clock never moved (no packets): its snapshot keeps them from everyone, undated, and the
  // next run dates them once its clock moves.
  const idle = await runFrom(await first.snapshot(), []);
  const dated = await runFrom(idle.snapshot, frames(30, 20, T0 + 5000));
  assert.equal(dated.allocated.filter((b) => saved.has(b)), [], 'kept from everyone until dated');
  const reused = await runFrom(dated.snapshot, frames(60, 20, T0 + 5200));
  assert.ok(reused.allocated.filter((b) => saved.has(b)).length >= 17, `given out again once the dated quarantine is over: ${reused.allocated}`);
});

test('C8 a block log rotated away (renamed, as logrotate does) is followed: the records after it go to a new file at its path', async () => {
  const count = 30;
  trace('rotated', 2, undefined, count);
  const file = config('rotated', 'ports_per_block: 1024, log: rotated.jsonl', ', loop: true, timing: original');
  const pipeline = await Pipeline.create(await loadConfig(file), { shards: 1 });
  const running = pipeline.run();
  const events = (name: string) => readFileSync(join(dir, name), 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l).event as string);
  try {
    await waitFor(() => pipeline.packetsIn() >= count, `${count} packets`);
    // The allocations are written within a periodic run (every 200 ms).
    await waitFor(() => events('rotated.jsonl').length >= count, `${count} allocations in the log`);
    renameSync(join(dir, 'rotated.jsonl'), join(dir, 'rotated.jsonl.1'));
    await new Promise((r) => setTimeout(r, 500));
  } finally {
    pipeline.stop();
    await running;
  }
  assert.equal(events('rotated.jsonl.1'), Array(count).fill('allocate'), 'the rotated file keeps what was written before');
  assert.equal(events('rotated.jsonl'), Array(count).fill('release'), 'the releases at the end go to the new file');
});

test('snapshots asked for at once are taken one after the other, each whole (they shared the transfer buffer: a run stalled, a file lost mappings); a scale asked of a stopping pipeline is refused', async () => {
  const count = 300;
  trace('together', 2, undefined, count);
  const file = config('together', 'ports_per_block: 64', ', loop: true, timing: original');
  const pipeline = await Pipeline.create(await loadConfig(file), { shards: 2 });
  const running = pipeline.run();
  try {
    await waitFor(() => pipeline.packetsIn() >= 2 * count, `${2 * count} packets`);
    const records = (s: Snapshot) => Buffer.from(s.elements.nat.tables.mappings.records, 'base64').length;
    const alone = records(await pipeline.snapshot());
    // Every subscriber's mapping is made in the first round: the count stays while the trace loops.
    // Without the turns they stalled the run: a failure in time, not a test that hangs.
    const timeout = new Promise<never>((_, fail) => setTimeout(() => fail(new Error('the snapshots did not come in 30 s')), 30_000).unref());
    const together = await Promise.race([Promise.all([1, 2, 3].map(() => pipeline.snapshot())), timeout]);
    assert.equal(together.map(records), [alone, alone, alone]);
    const before = pipeline.packetsIn();
    await waitFor(() => pipeline.packetsIn() > before, 'packets after the snapshots');
  } finally {
    pipeline.stop();
  }
  const refused = await pipeline.scale(1).then(() => 'scaled', (e: Error) => e.message);
  assert.match(refused, /the pipeline is stopping/);
  await running;
  // A stop that comes while planned scale events are due ends the run as interrupted: the next one is not begun (its
  // refusal failed the run).
  let planned: Pipeline | undefined;
  const log = (m: string) => { if (m.startsWith('scaled 1 -> 2')) planned!.stop(); };
  planned = await Pipeline.create(await loadConfig(file), { shards: 1, threads: 'inline', log, scaleAt: [{ packets: 1000, shards: 2 }, { packets: 1000, shards: 1 }] });
  const result = await planned.run();
  assert.ok(result.interrupted);
  assert.equal(planned.scaleReports.map((r) => r.to), [2]);
});

test.after(() => removeDir(dir));

test.run();
