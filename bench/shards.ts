// Shards: one shard through the rings against the single-thread figure, the scaling curve over the
// machine's cores, the time to move 100k flows between two shards while traffic flows, and the
// memory each flow costs in FlowStats and in a bare flow table.

import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { elementLayout } from '../engine/layout.ts';
import { loadRegistry } from '../engine/registry.ts';
import { median } from './machine.ts';
import { printTable, writeResults, type BenchRow } from './results.ts';
import { measureSideBySide, trace, config, CHAINS } from './pipeline.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const TRACES = join(HERE, 'traces');
const RUNS = Number(process.env.BENCH_RUNS ?? 5);

/** 600k packets over 240k flows: by packet 560k about 216k flows are seen, and a scale 2 -> 1 moves half of them. */
function moveTrace(): string {
  const file = join(TRACES, 'udp_tcp_600k_f240k.pcap');
  if (!existsSync(file)) {
    mkdirSync(TRACES, { recursive: true });
    execFileSync('python3', [join(HERE, 'gen-pcap.py'), '-n', '600000', '-f', '240000', '-o', file, '--seed', '4'], { stdio: 'inherit' });
  }
  return file;
}

async function moveFlows(): Promise<BenchRow> {
  const file = join(TRACES, 'configs', 'move.yaml');
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `
pool_slots: 65536
elements:
  src: { type: FromPcap, file: ${moveTrace()}, preload: true }
  stats: { type: FlowStats, capacity: 300000 }
  drop: { type: Discard }
connections:
  - src -> stats -> drop
`);
  const ms: number[] = [], flows: number[] = [], held: number[] = [], lost: number[] = [], checked: number[] = [], reordered: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const pipeline = await Pipeline.create(await loadConfig(file), { shards: 2, scaleAt: [{ packets: 560_000, shards: 1 }] });
    await pipeline.run();
    const report = pipeline.scaleReports[0];
    ms.push(report.milliseconds);
    flows.push(report.flows_moved);
    held.push(report.packets_held);
    lost.push(report.packets_lost);
    checked.push(report.packets_checked);
    reordered.push(report.packets_reordered);
  }
  return {
    name: 'scale 2 -> 1 during a trace: time to move the flows of half the buckets', mpps: null, ns_per_packet: null, runs: RUNS,
    milliseconds: Math.round(median(ms) * 10) / 10, flows_moved: median(flows), packets_held: median(held), packets_lost: Math.max(...lost),
    packets_checked: median(checked), packets_reordered: Math.max(...reordered),
  };
}

async function memoryPerFlow(): Promise<BenchRow[]> {
  const registry = await loadRegistry();
  const flowStats = registry.get('FlowStats')!;
  const layout = elementLayout(flowStats);
  const entry = 32 + layout.tables.find((t) => t.state === 'flows')!.entry.size;
  const capacity = 1_000_000;
  const slots = 2 ** Math.ceil(Math.log2(Math.ceil(capacity * 1.5) + 1));
  return [
    { name: 'FlowStats per-flow entry (32 B key, deadline, state + 32 B value)', mpps: null, ns_per_packet: null, runs: 1, bytes_per_entry: entry, bytes_per_flow_at_capacity_1M: Math.round((slots * entry) / capacity) },
    { name: 'flow table overhead per entry (key 16 B, state, hash, deadline)', mpps: null, ns_per_packet: null, runs: 1, bytes_per_entry: 32 },
  ];
}

export async function main(): Promise<void> {
  const rows: BenchRow[] = [];
  const file = trace(1000);
  const yaml = config(file, CHAINS['counter-discard'], 256);
  const shardCounts = Array.from({ length: Math.max(2, availableParallelism() - 1) }, (_, i) => i + 1);
  const measured = await measureSideBySide([
    { name: 'counter-discard 1k flows batch 256, one thread (no rings crossed)', yaml, options: { threads: 'inline', shards: 1 } },
    ...shardCounts.map((shards) => ({ name: `counter-discard 1k flows batch 256, ${shards} shard worker${shards > 1 ? 's' : ''} behind the dispatcher`, yaml, options: { threads: 'worker' as const, shards } })),
  ]);
  const [single, ...curve] = measured;
  rows.push(single);
  curve.forEach((row, i) => {
    row.ratio_to_one_thread = Math.round((row.mpps! / single.mpps!) * 100) / 100;
    if (shardCounts[i] > availableParallelism() - 1) row.note = `more shards than cores - 1 (${availableParallelism()} cores): shown for the curve`;
    rows.push(row);
  });
  rows.push(await moveFlows());
  rows.push(...(await memoryPerFlow()));
  printTable('Shards (medians)', rows, ['ratio_to_one_thread', 'core_round_trip_ns', 'milliseconds', 'flows_moved', 'packets_held', 'packets_lost', 'packets_checked', 'packets_reordered', 'bytes_per_entry', 'bytes_per_flow_at_capacity_1M']);
  console.log(`\nwrote ${writeResults('shards', rows)}`);
}
