// Single-shard throughput of the fast path on an in-memory trace (FromPcap with preload and loop),
// 64-byte frames, 1k and 100k flows, batch sizes 32 and 256, on one thread (the shard run inline
// after each read: the single-thread figure); the same through a shard worker and its rings; the
// cost per added element; the startup time from config to first packet with a warm compile cache.

import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../engine/config.ts';
import { Pipeline, type PipelineOptions } from '../engine/pipeline.ts';
import { median, coreRoundTripNs } from './machine.ts';
import { printTable, writeResults, type BenchRow } from './results.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const TRACES = join(HERE, 'traces');
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
export const PACKETS = Number(process.env.BENCH_PACKETS ?? 10_000_000);

/** 1M-packet traces of 64-byte frames made by the same generator as the Click anchor (anchor-gen-pcap.py). */
export function trace(flows: number): string {
  const file = join(TRACES, `udp_tcp_1M_f${flows / 1000}k.pcap`);
  if (!existsSync(file)) {
    mkdirSync(TRACES, { recursive: true });
    console.error(`generating ${file} ...`);
    execFileSync('python3', [join(HERE, 'gen-pcap.py'), '-n', '1000000', '-f', String(flows), '-o', file, '--seed', flows === 1000 ? '1' : '2'], { stdio: 'inherit' });
  }
  return file;
}

export const CHAINS: Record<string, string> = {
  'counter-discard': 'src -> c1 -> drop',
  'check-rewrite-counter-discard': 'src -> check -> rw -> c1 -> drop',
  'counters-5-discard': 'src -> c1 -> c2 -> c3 -> c4 -> c5 -> drop',
};

export function config(traceFile: string, chain: string, batch: number): string {
  return `
batch: ${batch}
elements:
  src:   { type: FromPcap, file: ${traceFile}, preload: true, loop: true, count: ${PACKETS} }
  check: { type: CheckIPHeader }
  rw:    { type: Rewrite, ip_src: 203.0.113.7, dec_ttl: true }
  c1: { type: Counter }
  c2: { type: Counter }
  c3: { type: Counter }
  c4: { type: Counter }
  c5: { type: Counter }
  drop:  { type: Discard }
connections:
  - ${chain}
  - check[1] -> drop
`.replace(/^ {2}(c[2-5]|check|rw): .*\n/gm, (line, name) => (chain.includes(` ${name} `) ? line : ''))
    .replace(/^ {2}- check\[1\] -> drop\n/m, chain.includes('check') ? '  - check[1] -> drop\n' : '');
}

export interface Case {
  name: string;
  yaml: string;
  options?: PipelineOptions;
}

/**
 * Runs the cases round-robin, one run of each in turn, RUNS times: on a shared, noisy machine the
 * cases compared with each other then see the same conditions. Rows report medians.
 */
export async function measureSideBySide(cases: Case[]): Promise<BenchRow[]> {
  const dir = join(TRACES, 'configs');
  mkdirSync(dir, { recursive: true });
  const files = cases.map((c, i) => {
    const file = join(dir, `case-${i}.yaml`);
    writeFileSync(file, c.yaml);
    return file;
  });
  const seconds = cases.map(() => [] as number[]);
  // Before each trial on shard workers, the cores' round trip (machine.ts): those rows move with it.
  const roundTrips = cases.map(() => [] as number[]);
  for (let run = 0; run < RUNS; run++) {
    for (const [i, c] of cases.entries()) {
      if (c.options?.threads === 'worker') roundTrips[i].push(Math.round(await coreRoundTripNs()));
      const pipeline = await Pipeline.create(await loadConfig(files[i]), c.options ?? { threads: 'inline', shards: 1 });
      const result = await pipeline.run();
      if (result.packets_in !== PACKETS) throw new Error(`${c.name}: ${result.packets_in} packets, expected ${PACKETS}`);
      seconds[i].push(result.busy_seconds);
    }
  }
  return cases.map((c, i) => {
    const s = median(seconds[i]);
    const row: BenchRow = { name: c.name, mpps: PACKETS / s / 1e6, ns_per_packet: (s * 1e9) / PACKETS, runs: RUNS, packets: PACKETS, spread: `${(Math.min(...seconds[i]) * 1e3).toFixed(0)}-${(Math.max(...seconds[i]) * 1e3).toFixed(0)} ms` };
    if (roundTrips[i].length) {
      row.core_round_trip_ns = `${Math.min(...roundTrips[i])}-${Math.max(...roundTrips[i])}`;
      row.trials = seconds[i].map((t, k) => ({ mpps: +(PACKETS / t / 1e6).toFixed(2), core_round_trip_ns: roundTrips[i][k] }));
    }
    console.error(`${row.name}: ${row.mpps?.toFixed(2)} Mpps`);
    return row;
  });
}

function startup(): BenchRow {
  const cli = join(HERE, '..', 'bin', 'wirepath.js');
  const cfg = join(HERE, '..', 'configs', 'default.yaml');
  spawnSync(process.execPath, [cli, 'build', cfg]);
  const ms: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const r = spawnSync(process.execPath, [cli, 'run', cfg, '--json', '--set', `out.file=${join(TRACES, 'startup.pcap')}`], { encoding: 'utf8' });
    ms.push(JSON.parse(r.stdout).first_packet_ms);
  }
  return { name: 'startup: process start to first packet (cached graph)', mpps: null, ns_per_packet: null, runs: RUNS, first_packet_ms: Math.round(median(ms)) };
}

export async function main(): Promise<void> {
  const cases: Case[] = [];
  for (const flows of [1000, 100_000]) {
    const file = trace(flows);
    for (const batch of [32, 256]) {
      for (const [chain, text] of Object.entries(CHAINS)) {
        if (chain === 'counters-5-discard' && (flows !== 1000 || batch !== 256)) continue;
        cases.push({ name: `${chain} ${flows / 1000}k flows batch ${batch}, one thread`, yaml: config(file, text, batch) });
      }
    }
  }
  cases.push({ name: 'counter-discard 1k flows batch 256, one shard worker through the rings', yaml: config(trace(1000), CHAINS['counter-discard'], 256), options: { threads: 'worker', shards: 1 } });
  const rows = await measureSideBySide(cases);
  const at = (n: string) => rows.find((r) => r.name === n)!.ns_per_packet!;
  const perElement = (at('counters-5-discard 1k flows batch 256, one thread') - at('counter-discard 1k flows batch 256, one thread')) / 4;
  rows.push({ name: 'added cost of one Counter (5 vs 1 Counter, 1k flows, batch 256)', mpps: null, ns_per_packet: perElement, runs: RUNS });
  const perCheckRewrite = (at('check-rewrite-counter-discard 1k flows batch 256, one thread') - at('counter-discard 1k flows batch 256, one thread')) / 2;
  rows.push({ name: 'added cost of CheckIPHeader and of Rewrite, each (average of the two)', mpps: null, ns_per_packet: perCheckRewrite, runs: RUNS });
  rows.push(startup());
  printTable('Single-shard pipeline throughput (in-memory trace, 64 B frames, median of runs)', rows, ['spread', 'core_round_trip_ns', 'first_packet_ms']);
  console.log(`\nwrote ${writeResults('pipeline', rows)}`);
}
