// Cost of the classification step and of the stateful filter, single thread (threads: 'inline'): each
// figure is the difference between a pipeline with the element and the same pipeline without it,
// run alternately in one process, medians of the runs. 64-byte frames from an in-memory trace.
//   10 rules: Click's 8-rule IPClassifier benchmark (anchor-click.md §3.1, b2) plus two more, as code
//     made for the rules (what pipelines run) and interpreted (specialize off), side by side;
//   1000 rules: random /24 destination prefixes of 198.18.0.0/15 with a destination port each;
//   stateful: 100k concurrent UDP connections (every flow of the trace is tracked).

import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { median } from './machine.ts';
import { printTable, writeResults, type BenchRow } from './results.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const TRACES = join(HERE, 'traces');
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const PACKETS = Number(process.env.BENCH_PACKETS ?? 5_000_000);
const SERVER_PORTS = [53, 80, 123, 443, 853, 1194, 3478, 5060, 8080, 8443];

function trace(name: string, args: string[]): string {
  const file = join(TRACES, name);
  if (!existsSync(file)) {
    mkdirSync(TRACES, { recursive: true });
    console.error(`generating ${file} ...`);
    execFileSync('python3', [join(HERE, 'gen-pcap.py'), '-n', '1000000', '-o', file, ...args], { stdio: 'inherit' });
  }
  return file;
}

const TEN_RULES = [
  'tcp dst port 80 or 443', 'udp dst port 53', 'udp dst port 123 and src net 100.64.0.0/12', 'tcp[tcpflags] & tcp-syn != 0',
  'dst net 198.19.0.0/16 and udp', 'tcp dst port 8080 or 8443', 'ip[8] < 10', 'udp dst port 3478', 'tcp dst port 1194', 'udp dst port 853',
];

/** Random /24 prefixes of 198.18.0.0/15 with a server port each (seeded, so every run compiles the same rules). */
function thousandRules(): string[] {
  let seed = 42;
  const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const seen = new Set<string>();
  while (seen.size < 1000) {
    const net = `198.${18 + Math.floor(random() * 2)}.${Math.floor(random() * 256)}.0/24`;
    seen.add(`dst net ${net} and dst port ${SERVER_PORTS[Math.floor(random() * SERVER_PORTS.length)]}`);
  }
  return [...seen];
}

/** src -> [el ->] drop, every output of el to drop. */
const pipeline = (traceFile: string, element: string | undefined, outputs: number) => `
batch: 256
elements:
  src: { type: FromPcap, file: ${traceFile}, preload: true, loop: true, count: ${PACKETS} }
${element ? `  el: ${element}\n` : ''}  drop: { type: Discard }
connections:
  - ${element ? 'src -> el -> drop' : 'src -> drop'}
${Array.from({ length: element ? outputs - 1 : 0 }, (_, i) => `  - el[${i + 1}] -> drop`).join('\n')}
`;

const filter = (rules: string[], extra = '') => `{ type: Filter, ${extra}rules: ${JSON.stringify(rules.map((r) => `allow ${r}`))} }`;

async function runOnce(name: string, yaml: string, specialize = true): Promise<{ seconds: number; pipeline: Pipeline }> {
  const dir = join(TRACES, 'configs');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `classifier-${name.replace(/[^A-Za-z0-9]+/g, '-')}.yaml`);
  writeFileSync(file, yaml);
  const p = await Pipeline.create(await loadConfig(file), { threads: 'inline', specialize });
  const result = await p.run();
  if (result.packets_in !== PACKETS) throw new Error(`${name}: ${result.packets_in} packets, expected ${PACKETS}`);
  return { seconds: result.busy_seconds, pipeline: p };
}

/** The element's added cost: runs with and without it alternately, the difference of the medians. */
async function step(name: string, traceFile: string, element: string, outputs = 1, specialize = true): Promise<BenchRow & { last: Pipeline }> {
  const without: number[] = [], withIt: number[] = [];
  let last!: Pipeline;
  for (let i = 0; i < RUNS; i++) {
    without.push((await runOnce(`${name}-baseline`, pipeline(traceFile, undefined, 0))).seconds);
    const r = await runOnce(name, pipeline(traceFile, element, outputs), specialize);
    withIt.push(r.seconds);
    last = r.pipeline;
  }
  const ns = ((median(withIt) - median(without)) * 1e9) / PACKETS;
  return {
    name, mpps: 1e3 / ns, ns_per_packet: ns, runs: RUNS, packets: PACKETS, last,
    pipeline_ns_per_packet: (median(withIt) * 1e9) / PACKETS, baseline_ns_per_packet: (median(without) * 1e9) / PACKETS,
  };
}

export async function main(): Promise<void> {
  const mixed = trace('udp_tcp_1M_f1k.pcap', ['-f', '1000', '--seed', '1']);
  const udp100k = trace('udp_1M_f100k.pcap', ['-f', '100000', '--seed', '3', '--tcp-share', '0']);
  const rows: BenchRow[] = [];
  const report = (row: BenchRow & { last?: Pipeline }) => {
    const { last, ...plain } = row;
    rows.push(plain);
    console.error(`${row.name}: ${row.ns_per_packet?.toFixed(1)} ns/packet`);
  };

  const classifier = `{ type: Classifier, patterns: ${JSON.stringify([...TEN_RULES, '-'])} }`;
  report(await step('Classifier, 10 rules (classification step)', mixed, classifier, TEN_RULES.length + 1));
  report(await step('Classifier, 10 rules, decision program interpreted (specialize off)', mixed, classifier, TEN_RULES.length + 1, false));
  const ten = await step('Filter, 10 rules (classification step)', mixed, filter(TEN_RULES));
  report(ten);
  const rules = thousandRules();
  const started = performance.now();
  const thousand = await step('Filter, 1000 rules: random /24 prefixes and ports', mixed, filter(rules));
  report({ ...thousand, compile_and_runs_s: Math.round((performance.now() - started) / 100) / 10, ratio_to_10_rules: thousand.ns_per_packet! / ten.ns_per_packet! });
  const stateful = await step('stateful Filter, 100k concurrent UDP connections', udp100k,
    filter(['udp', 'tcp'], 'stateful: true, capacity: 131072, udp_timeout: 1h, '));
  const view = stateful.last.view('el');
  const connections = Number(view.read('connections'));
  // The table's memory: slots (a power of two >= 1.5 x capacity) of 32 bytes of entry header plus the 8-byte value.
  const slots = 2 ** Math.ceil(Math.log2(Math.ceil(131072 * 1.5) + 1));
  const tableBytes = slots * (32 + 8);
  report({ ...stateful, connections, table_bytes: tableBytes, bytes_per_connection: Math.round(tableBytes / connections) });

  printTable('Classification and stateful filtering: added cost per packet, one thread (median of runs)', rows,
    ['pipeline_ns_per_packet', 'baseline_ns_per_packet', 'ratio_to_10_rules', 'connections', 'bytes_per_connection']);
  console.log(`\nwrote ${writeResults('classifier', rows)}`);
}
