// Throughput between two network namespaces through the engine namespace (test/topology.ts), in one
// run: (a) Linux forwarding, (b) Linux nftables NAT (masquerade), (c) wirepath as a bridge
// (configs/bridge.yaml; also with the TPACKET_V2 ring), (d) wirepath with Classifier -> Counter -> Rewrite
// (configs/nat-bridge.yaml); (c) and (d) on a shard worker and on the I/O thread.
// For each: 64-byte UDP packets per second (bench/udp-sender.ts, sendmmsg on the addon; received
// frames counted on the server's interface), TCP Gbit/s (one iperf3 stream) and the ping round trip. Offloads are off on
// all four veth ends, as in ../shared/research/anchor-click.md §4. Each wirepath row carries its ratio
// to the matching kernel row: the bridge to forwarding, the Rewrite pipeline to NAT. Medians of
// BENCH_RUNS trials (default 3) of BENCH_SECONDS (default 5), the setups taking turns (one trial of
// each per round). Needs root.

import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median } from './machine.ts';
import { devicesRunInline } from '../engine/pipeline.ts';
import { printTable, writeResults, type BenchRow } from './results.ts';
import { withTopology, startEngine, available, exited, waitFor, MACS, ADDRESSES, type Topology, type RouteMode, type KernelMode } from '../test/topology.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);

interface Setup {
  name: string;
  route: RouteMode;
  kernel: KernelMode;
  /** wirepath's config and the --set arguments naming the engine's interfaces. */
  engine?: (t: Topology) => string[];
  /** The kernel row a wirepath row is compared with. */
  versus?: string;
}

/** configs/bridge.yaml on the engine's two interfaces, with more --set arguments. */
const bridge = (t: Topology, ...extra: string[]) => ['configs/bridge.yaml', '--set', `a_in.device=${t.dev.engineClient}`, '--set', `b_out.device=${t.dev.engineClient}`,
  '--set', `b_in.device=${t.dev.engineServer}`, '--set', `a_out.device=${t.dev.engineServer}`, ...extra];

/** configs/nat-bridge.yaml (Classifier -> Rewrite both ways) on the engine's two interfaces. */
const classifierRewrite = (t: Topology, ...extra: string[]) => ['configs/nat-bridge.yaml', '--set', `from_client.device=${t.dev.engineClient}`,
  '--set', `to_client.device=${t.dev.engineClient}`, '--set', `from_server.device=${t.dev.engineServer}`, '--set', `to_server.device=${t.dev.engineServer}`, ...extra];

// Each wirepath setup runs on a shard worker and on the I/O thread (--threads worker / inline): with two
// cores, a shard worker and the I/O thread both poll while the peers' processes and the kernel's softirqs
// want the same cores. threads: auto, the default, picks the I/O thread for a device on two cores or fewer.
const DEFAULT_THREADS = devicesRunInline() ? 'inline' : 'worker';
const where = (threads: 'worker' | 'inline') => `${threads === 'worker' ? 'shard worker' : 'I/O thread'}${threads === DEFAULT_THREADS ? ' (the default here)' : ''}`;
const SETUPS: Setup[] = [
  { name: 'Linux forwarding', route: 'router', kernel: 'forward' },
  { name: 'Linux nftables NAT', route: 'router', kernel: 'nat' },
  ...(['worker', 'inline'] as const).map((threads): Setup => (
    { name: `wirepath bridge, ${where(threads)}`, route: 'bridge', kernel: 'off', versus: 'Linux forwarding', engine: (t) => bridge(t, '--threads', threads) })),
  {
    name: `wirepath bridge, ring: v2, ${where(DEFAULT_THREADS)}`, route: 'bridge', kernel: 'off', versus: 'Linux forwarding',
    engine: (t) => bridge(t, '--set', 'a_in.ring=v2', '--set', 'b_in.ring=v2'),
  },
  ...(['worker', 'inline'] as const).map((threads): Setup => ({
    name: `wirepath Classifier -> Rewrite, ${where(threads)}`, route: 'router', kernel: 'off', versus: 'Linux nftables NAT',
    engine: (t) => classifierRewrite(t, '--threads', threads),
  })),
];

function rxPackets(t: Topology): number {
  const link = JSON.parse(t.run(t.ns.server, ['ip', '-s', '-j', 'link', 'show', 'dev', t.dev.server]).stdout.toString())[0];
  return link.stats64.rx.packets;
}

/** One UDP trial: 64-byte frames sent for SECONDS; how many the server's interface received. */
function udpTrial(t: Topology, route: RouteMode) {
  const nextHop = route === 'bridge' ? MACS.server : MACS.engineClient;
  const before = rxPackets(t);
  const r = t.run(t.ns.client, [process.execPath, '--import', 'tsx', join(ROOT, 'bench/udp-sender.ts'), t.dev.client, MACS.client, nextHop, String(SECONDS)],
    { timeout: (SECONDS + 60) * 1000 });
  const { sent, seconds } = JSON.parse(r.stdout.toString());
  // Let frames still in rings and queues arrive before counting.
  spinWait(300);
  const received = rxPackets(t) - before;
  return { sentMpps: sent / seconds / 1e6, mpps: received / seconds / 1e6, loss: sent ? Math.max(0, 1 - received / sent) : 0 };
}

/** One latency trial: 200 pings 10 ms apart; their average round trip in ms. */
function pingTrial(t: Topology): number {
  const r = t.run(t.ns.client, ['ping', '-c', '200', '-i', '0.01', '-q', ADDRESSES.server], { timeout: 60_000 });
  const rtt = /= [\d.]+\/([\d.]+)\//.exec(r.stdout.toString());
  if (!rtt) throw new Error(`ping: ${r.stdout}${r.stderr}`);
  return Number(rtt[1]);
}

function spinWait(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** One TCP trial: a single iperf3 stream for SECONDS; the receiver's Gbit/s. */
async function tcpTrial(t: Topology): Promise<number> {
  const server = t.start(t.ns.server, ['iperf3', '-s', '-1', '-B', ADDRESSES.server]);
  spinWait(300);
  const r = t.run(t.ns.client, ['iperf3', '-c', ADDRESSES.server, '-t', String(SECONDS), '-J'], { timeout: (SECONDS + 60) * 1000, check: false });
  await exited(server);
  const result = JSON.parse(r.stdout.toString());
  if (result.error) throw new Error(`iperf3: ${result.error}`);
  return result.end.sum_received.bits_per_second / 1e9;
}

/** One round of a setup: its engine started (if any), one UDP, one TCP and one ping trial, the engine stopped. */
async function trial(t: Topology, setup: Setup) {
  t.route(setup.route);
  t.kernel(setup.kernel);
  const engine = setup.engine ? await startEngine(t, setup.engine(t), 4, ROOT) : undefined;
  try {
    if (engine && engine.child.exitCode !== null) throw new Error(`${setup.name}: wirepath exited: ${engine.stderr()}`);
    const udp = udpTrial(t, setup.route);
    const tcp = await tcpTrial(t);
    const rtt = pingTrial(t);
    // Stopped before its counters are read; stop() again in finally is then a no-op.
    await engine?.stop();
    return { udp, tcp, rtt, engineOutput: engine?.stdout() ?? '' };
  } finally {
    await engine?.stop();
  }
}

/**
 * The receive path alone: the engine-side ring filled by the sender for a second while nobody reads,
 * then drained into WebAssembly memory (bench/rx-drain.ts).
 */
async function drain(t: Topology, version: 2 | 3) {
  t.route('bridge');
  t.kernel('off');
  const drainer = t.start(t.ns.engine, [process.execPath, '--import', 'tsx', join(ROOT, 'bench/rx-drain.ts'), t.dev.engineClient, String(version)], { cwd: ROOT });
  let out = '';
  drainer.stdout!.on('data', (d) => (out += d));
  await waitFor(() => out.includes('ready') || drainer.exitCode !== null, 30_000, 'rx-drain to open its socket');
  t.run(t.ns.client, [process.execPath, '--import', 'tsx', join(ROOT, 'bench/udp-sender.ts'), t.dev.client, MACS.client, MACS.server, '1'], { timeout: 60_000 });
  drainer.stdin!.write('go\n');
  await exited(drainer);
  return JSON.parse(out.split('\n').find((l) => l.startsWith('{'))!) as { frames: number; seconds: number };
}

export async function main(): Promise<void> {
  const why = available();
  if (why) {
    console.error(`veth benchmark skipped: ${why}`);
    return;
  }
  const rows: BenchRow[] = [];
  await withTopology(async (t) => {
    for (const version of [3, 2] as const) {
      const drains = [];
      for (let i = 0; i < RUNS; i++) drains.push(await drain(t, version));
      const drainMpps = median(drains.map((d) => d.frames / d.seconds / 1e6));
      console.error(`receive path (TPACKET_V${version} ring drained into WASM memory): ${drainMpps.toFixed(1)} Mpps, ${median(drains.map((d) => d.frames))} frames`);
      rows.push({ name: `receive path: TPACKET_V${version} ring drained into WASM memory, 64 B`, mpps: drainMpps, ns_per_packet: 1e3 / drainMpps, runs: RUNS,
        frames: median(drains.map((d) => d.frames)) });
    }
    // Round-robin: one trial of every setup per round, so that each ratio compares trials minutes apart at most
    // (the machine's speed drifts over a run).
    const trials = new Map(SETUPS.map((s) => [s, [] as Awaited<ReturnType<typeof trial>>[]]));
    for (let i = 0; i < RUNS; i++) for (const setup of SETUPS) trials.get(setup)!.push(await trial(t, setup));
    for (const setup of SETUPS) {
      const runs = trials.get(setup)!;
      const m = { udp: runs.map((r) => r.udp), tcp: runs.map((r) => r.tcp), rtt: runs.map((r) => r.rtt), engineOutput: runs.at(-1)!.engineOutput };
      const mpps = median(m.udp.map((u) => u.mpps));
      const gbps = median(m.tcp);
      console.error(`${setup.name}: UDP 64 B ${mpps.toFixed(3)} Mpps (sent ${median(m.udp.map((u) => u.sentMpps)).toFixed(3)}), TCP ${gbps.toFixed(2)} Gbit/s`);
      if (m.engineOutput) console.error(m.engineOutput.trim());
      rows.push({
        name: `${setup.name}: UDP 64 B`, mpps, ns_per_packet: mpps ? 1e3 / mpps : null, runs: RUNS,
        gbps: +(mpps * 64 * 8 / 1e3).toFixed(3), sent_mpps: +median(m.udp.map((u) => u.sentMpps)).toFixed(3),
        loss: +median(m.udp.map((u) => u.loss)).toFixed(4), trials_mpps: m.udp.map((u) => +u.mpps.toFixed(3)),
      });
      rows.push({ name: `${setup.name}: TCP 1 stream`, mpps: null, ns_per_packet: null, runs: RUNS, gbps: +gbps.toFixed(3), trials_gbps: m.tcp.map((g) => +g.toFixed(3)) });
      rows.push({ name: `${setup.name}: ping round trip`, mpps: null, ns_per_packet: null, runs: RUNS, rtt_ms: +median(m.rtt).toFixed(3), trials_rtt_ms: m.rtt });
    }
  });
  for (const setup of SETUPS.filter((s) => s.versus)) {
    for (const kind of ['UDP 64 B', 'TCP 1 stream']) {
      const row = rows.find((r) => r.name === `${setup.name}: ${kind}`)!;
      const base = rows.find((r) => r.name === `${setup.versus}: ${kind}`)!;
      const value = (r: BenchRow) => (kind === 'TCP 1 stream' ? (r.gbps as number) : r.mpps!);
      row.ratio = value(base) ? +(value(row) / value(base)).toFixed(2) : null;
      row.versus = setup.versus;
    }
  }
  printTable(`Throughput and latency through the engine namespace on veth (offloads off, ${SECONDS} s trials, median of ${RUNS})`, rows, ['gbps', 'sent_mpps', 'loss', 'rtt_ms', 'ratio', 'versus']);
  console.log(`\nwrote ${writeResults('veth', rows)}`);
}
