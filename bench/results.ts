// One JSON shape for every benchmark: {machine, date, results: [{name, mpps, ns_per_packet, runs, ...}]}.

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { machine, machineLine, type Machine } from './machine.ts';

export interface BenchRow {
  name: string;
  mpps: number | null;
  ns_per_packet: number | null;
  runs: number;
  [extra: string]: unknown;
}

export interface BenchFile {
  machine: Machine;
  date: string;
  results: BenchRow[];
}

const RESULTS = join(dirname(fileURLToPath(import.meta.url)), 'results');

export function writeResults(name: string, results: BenchRow[]): string {
  const file: BenchFile = { machine: machine(), date: new Date().toISOString(), results };
  mkdirSync(RESULTS, { recursive: true });
  const path = join(RESULTS, `${name}.json`);
  writeFileSync(path, JSON.stringify(file, null, 2) + '\n');
  return path;
}

export function printTable(title: string, rows: BenchRow[], extraColumns: string[] = []): void {
  const header = ['benchmark', 'Mpps', 'ns/pkt', 'runs', ...extraColumns];
  const body = rows.map((r) => [r.name, r.mpps?.toFixed(2) ?? '-', r.ns_per_packet?.toFixed(1) ?? '-', String(r.runs), ...extraColumns.map((c) => String(r[c] ?? ''))]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log(`\n${title}\n${machineLine(machine())}\n`);
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const b of body) console.log(line(b));
  // Rows on shard workers: each trial with the cores' round trip measured just before it (machine.ts).
  for (const r of rows) {
    const trials = r.trials as { mpps: number; core_round_trip_ns: number }[] | undefined;
    if (trials) console.log(`  ${r.name}: ${trials.map((t) => `${t.mpps} Mpps at ${t.core_round_trip_ns} ns`).join(', ')}`);
  }
}
