// The Beamer mux (LoadBalancer), one thread (threads: 'inline', one shard): 64-byte TCP frames of 100k
// client flows (source address and port) to one VIP, 100 backends, M = 65537, every packet
// encapsulated. Side by side with the same pipeline without the mux (medians of the runs): the whole
// pipeline's rate and the mux's added cost per packet (Katran: 5.16 Mpps per core; Beamer: 3.3 Mpps
// per core, ../shared/research/anchors-domain.md §1.1, §1.3). Then the control plane: rebuilding the
// Maglev table for 1000 backends, and a whole change (rebuild, diff, write) removing one of them.

import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatIPv4 } from '../engine/params.ts';
import { maglevTable } from '../elements/load-balancer/maglev.ts';
import { LiveTable, initTable, tableBytes, type TableParams } from '../elements/load-balancer/table.ts';
import { ipv4Frame, writePcap } from '../test/helpers.ts';
import { median } from './machine.ts';
import { measureSideBySide, PACKETS } from './pipeline.ts';
import { printTable, writeResults, type BenchRow } from './results.ts';

const TRACES = join(dirname(fileURLToPath(import.meta.url)), 'traces');
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const VIP = '198.18.100.1';
const M = 65537;

/** 100k TCP frames of 64 bytes (14 + 20 + 20 + 10 of payload), one per client flow. */
function trace(): string {
  const file = join(TRACES, 'lb_64B_f100k.pcap');
  if (!existsSync(file)) {
    mkdirSync(TRACES, { recursive: true });
    console.error(`generating ${file} ...`);
    writePcap(file, Array.from({ length: 100_000 }, (_, i) => ipv4Frame({
      src: formatIPv4(0x64400000 + ((i * 2654435761) >>> 10 & 0x3fffff)), dst: VIP, sport: 1024 + (i % 64000), dport: 80, payload: 10,
    })));
  }
  return file;
}

const backends = (n: number) => Array.from({ length: n }, (_, i) => `b${i} ${formatIPv4(0xc6120000 + 256 + i)} ${1 + (i % 3)}`);

const pipeline = (traceFile: string, lb: boolean) => `
batch: 256
elements:
  src: { type: FromPcap, file: ${traceFile}, preload: true, loop: true, count: ${PACKETS} }
${lb ? `  lb: { type: LoadBalancer, vips: ['${VIP} tcp 80'], source: 198.18.3.0/24, backends: ${JSON.stringify(backends(100))} }\n` : ''}  drop: { type: Discard }
connections:
  - ${lb ? 'src -> lb -> drop' : 'src -> drop'}
`;

function rebuild(): BenchRow {
  const params: TableParams = {
    vips: [{ address: 0xc6126401, protocol: 'tcp', port: 80 }], table_size: M, max_backends: 1024,
    backends: Array.from({ length: 1000 }, (_, i) => ({ name: `backend-${i}`, address: 0xc6120000 + 256 + i, weight: 1 + (i % 3) })),
  };
  const build: number[] = [], change: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    let started = performance.now();
    maglevTable(params.backends, M);
    build.push(performance.now() - started);
    const view = new DataView(new SharedArrayBuffer(tableBytes(params)));
    initTable(params, view);
    started = performance.now();
    new LiveTable(view).update(params.backends.slice(1), 0n);
    change.push(performance.now() - started);
  }
  const ms = (xs: number[]) => Math.round(median(xs) * 10) / 10;
  return { name: 'table rebuild, 1000 backends, M = 65537 (control plane, TypeScript)', mpps: null, ns_per_packet: null, runs: RUNS, build_ms: ms(build), change_ms: ms(change) };
}

export async function main(): Promise<void> {
  const file = trace();
  const [without, withLb] = await measureSideBySide([
    { name: 'FromPcap -> Discard (baseline)', yaml: pipeline(file, false) },
    { name: 'FromPcap -> LoadBalancer -> Discard, 64 B, 100k flows, 100 backends', yaml: pipeline(file, true) },
  ]);
  const added = withLb.ns_per_packet! - without.ns_per_packet!;
  const rows: BenchRow[] = [
    without, withLb,
    { name: 'LoadBalancer alone (added cost: classify, bucket, encapsulate, count)', mpps: 1e3 / added, ns_per_packet: added, runs: RUNS },
    rebuild(),
  ];
  printTable('Beamer mux, one thread (median of runs side by side)', rows, ['build_ms', 'change_ms']);
  console.log(`\nwrote ${writeResults('lb', rows)}`);
}
