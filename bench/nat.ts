// The NAT (issue 6): CheckIPHeader -> NAT -> Discard on one thread, 64-byte frames of the traces the
// Click anchor used (anchor-gen-pcap.py: random inside clients in 100.64.0.0/10, so about one
// subscriber per flow), at 1k, 100k and 1M sessions, next to Click's IPRewriter on this machine type
// (anchor-click.md §3.5: 7.0-7.6 Mpps at 1k flows, 1.6 Mpps at 100k); the memory per session and per
// subscriber; and a scale event that moves about 100k sessions between shard workers while the trace runs.

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { median } from './machine.ts';
import { trace, measureSideBySide, PACKETS } from './pipeline.ts';
import { printTable, writeResults, type BenchRow } from './results.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const CLICK_MPPS: Record<number, number> = { 1000: 7.3, 100_000: 1.62 };

/** Table capacity for `sessions` sessions with room to spare (tables never evict). */
const capacity = (sessions: number) => Math.max(4096, Math.ceil(sessions * 1.25));

function natConfig(traceFile: string, sessions: number, count = PACKETS): string {
  return `
batch: 256
elements:
  src:   { type: FromPcap, file: ${traceFile}, preload: true, loop: true, count: ${count}, steer: nat }
  check: { type: CheckIPHeader }
  nat:   { type: NAT, pool: [203.0.113.0/24], ports_per_block: ${sessions > 200_000 ? 8 : 64}, blocks_per_subscriber: 1,
           max_subscribers: ${capacity(sessions)}, max_sessions: ${capacity(sessions)}, udp_timeout: 1h, tcp_transitory: 1h }
  drop:  { type: Discard }
connections:
  - src -> check -> nat
  - check[1] -> [1]nat
  - nat[0] -> drop
  - nat[1] -> drop
`;
}

/** Bytes of a table of `entries` capacity whose entries are 32 bytes of header plus `value` (slots: a power of two >= 1.5 x capacity). */
const tableBytes = (entries: number, value: number) => 2 ** Math.ceil(Math.log2(Math.ceil(entries * 1.5) + 1)) * (32 + value);

async function memory(sessions: number): Promise<BenchRow> {
  const dir = join(HERE, 'traces', 'configs');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'nat-memory.yaml');
  writeFileSync(file, natConfig(trace(sessions), sessions, 1_000_000));
  const pipeline = await Pipeline.create(await loadConfig(file), { threads: 'inline', shards: 1 });
  await pipeline.run();
  // What a /metrics scrape costs the I/O thread: every counter, the table sizes and the mappings count among them.
  const statsMs = Array.from({ length: 5 }, () => {
    const started = performance.now();
    pipeline.stats();
    return performance.now() - started;
  });
  const view = pipeline.view('nat');
  const live = { sessions: Number(view.read('sessions')), subscribers: Number(view.read('subscribers')), mappings: Number(view.read('mappings')) };
  const cap = capacity(sessions);
  // Value sizes from element.ts: sessions 16 B, mappings 8 B (two entries per mapping), subscribers 108 B.
  const perSession = (tableBytes(cap, 16) + tableBytes(cap * 2, 8)) / cap;
  return {
    name: `memory at ${sessions / 1000}k sessions (table capacity ${cap})`, mpps: null, ns_per_packet: null, runs: 1, ...live,
    bytes_per_session: Math.round(perSession), bytes_per_subscriber: Math.round(tableBytes(cap, 108) / cap),
    counters_read_ms: Math.round(median(statsMs) * 10) / 10,
  };
}

/**
 * Two shard workers carry a 200k-flow trace (about 200k subscribers, one session each); halfway the
 * pipeline scales to one, and every subscriber of the retired shard moves with its sessions and mappings.
 */
async function scaleEvent(): Promise<BenchRow> {
  const dir = join(HERE, 'traces', 'configs');
  const file = join(dir, 'nat-scale.yaml');
  writeFileSync(file, `pool_slots: 65536\n${natConfig(trace(200_000), 200_000, 2_000_000)}`);
  const ms: number[] = [], sessions: number[] = [], entries: number[] = [], held: number[] = [], lost: number[] = [], reordered: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const pipeline = await Pipeline.create(await loadConfig(file), { shards: 2 });
    const running = pipeline.run();
    while (pipeline.packetsIn() < 1_000_000) await new Promise((r) => setTimeout(r, 5));
    sessions.push(pipeline.view('nat').entries('sessions').filter((e) => e.shard === 1).length);
    const report = await pipeline.scale(1);
    await running;
    ms.push(report.milliseconds);
    entries.push(report.flows_moved);
    held.push(report.packets_held);
    lost.push(report.packets_lost);
    reordered.push(report.packets_reordered);
  }
  return {
    name: 'scale 2 -> 1 during a 200k-flow trace: the retired shard\'s subscribers move with their sessions and mappings', mpps: null, ns_per_packet: null, runs: RUNS,
    milliseconds: Math.round(median(ms) * 10) / 10, sessions_moved: median(sessions), entries_moved: median(entries), packets_held: median(held), packets_lost: Math.max(...lost), packets_reordered: Math.max(...reordered),
  };
}

export async function main(): Promise<void> {
  const sizes = [1000, 100_000, 1_000_000];
  // One thread, as Click's anchor runs; and the default deployment, the shard on a worker of its own behind the
  // I/O thread (two threads: not compared with Click).
  const rows = await measureSideBySide([
    ...sizes.map((sessions) => ({ name: `CheckIPHeader -> NAT -> Discard, ${sessions / 1000}k sessions, one thread`, yaml: natConfig(trace(sessions), sessions) })),
    { name: 'CheckIPHeader -> NAT -> Discard, 1k sessions, one shard worker behind the I/O thread', yaml: natConfig(trace(1000), 1000), options: { threads: 'worker', shards: 1 } },
  ]);
  sizes.forEach((sessions, i) => {
    const click = CLICK_MPPS[sessions];
    if (click) Object.assign(rows[i], { click_mpps: click, ratio_to_click: Math.round((rows[i].mpps! / click) * 100) / 100 });
  });
  rows.push(await memory(100_000));
  rows.push(await scaleEvent());
  printTable('NAT (in-memory traces, 64 B frames, medians of runs)', rows,
    ['click_mpps', 'ratio_to_click', 'core_round_trip_ns', 'sessions', 'subscribers', 'bytes_per_session', 'bytes_per_subscriber', 'counters_read_ms', 'milliseconds', 'sessions_moved', 'entries_moved', 'packets_held', 'packets_lost', 'packets_reordered']);
  console.log(`\nwrote ${writeResults('nat', rows)}`);
}
