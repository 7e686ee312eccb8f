// Output equivalence (StateAlyzr): the same trace through one shard, and through several shards with
// scale events along the way, must leave every sink with the same packets per flow, in the same order,
// byte for byte; but for the IP ID (and so the header checksum) of datagrams that may be fragmented, which
// a NAT draws from counters its shards share (RFC 6864): those depend on the order in which shards run, so
// they are held to grouping datagrams alike (compare).

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type LoadOptions } from './config.ts';
import { Pipeline, type ScaleReport } from './pipeline.ts';
import { ConfigError, ConfigErrors } from './errors.ts';

export interface VerifyOptions extends LoadOptions {
  trace?: string;
  /** Shard counts: the run starts with the first and scales through the others in turn. */
  shards: number[];
  /** Packets between scale events; by default 10,000, or fewer on a shorter trace, so that it goes through the counts and back to the first. */
  scaleEvery?: number;
}

export interface VerifyResult {
  equivalent: boolean;
  packets: number;
  flows: number;
  scaleEvents: ScaleReport[];
  /** The first difference, in words, when not equivalent. */
  difference?: string;
}

interface Frame { ts: string; bytes: Buffer }

/** Records of a pcap written by ToPcap, grouped by flow (IPv4 5-tuple, or 'other'), in file order. */
export function flowsOf(file: string): Map<string, Frame[]> {
  const b = readFileSync(file);
  const flows = new Map<string, Frame[]>();
  // Digits of the fraction: the magic number tells microseconds from nanoseconds.
  const fraction = b.readUInt32LE(0) === 0xa1b23c4d ? 9 : 6;
  for (let at = 24; at + 16 <= b.length;) {
    const len = b.readUInt32LE(at + 8);
    const bytes = b.subarray(at + 16, at + 16 + len);
    const key = flowKey(bytes, b.readUInt32LE(at + 12));
    if (!flows.has(key)) flows.set(key, []);
    flows.get(key)!.push({ ts: `${b.readUInt32LE(at)}.${String(b.readUInt32LE(at + 4)).padStart(fraction, '0')}`, bytes });
    at += 16 + len;
  }
  return flows;
}

/** The tag types Ethernet.isTag takes. */
const VLAN_TAGS = [0x8100, 0x88a8, 0x9100];

/** Offset of the IPv4 header of a frame (after up to two VLAN tags), or undefined for other frames. */
function ipv4At(f: Buffer): number | undefined {
  let off = 12;
  // As the engine reads them (assembly/headers.ts Ethernet.etherType): at most two tags.
  for (let tags = 0; tags < 2 && off + 2 <= f.length && VLAN_TAGS.includes(f.readUInt16BE(off)); tags++) off += 4;
  return off + 2 > f.length || f.readUInt16BE(off) !== 0x0800 || f.length < off + 22 ? undefined : off + 2;
}

/**
 * A frame's flow as the engine steers it (io.ts, and FlowKey.fromPacket but for ICMP errors): the IPv4 5-tuple when the transport header is whole
 * (a first fragment's too), an ICMP query's identifier, else addresses and protocol; 'other' without a valid IPv4 header.
 * A frame a capture cut short (`wireLength` beyond its bytes) is keyed by its headers (IPv4.capturedHeader). A packet
 * in IP-in-IP (a LoadBalancer's output) by the one inside too: the engine steered and kept in order each inner flow.
 * An ICMP error by the flow it quotes as well, as the engine steers it (io.ts icmpHash).
 */
function flowKey(f: Buffer, wireLength: number, ip = ipv4At(f)): string {
  if (ip === undefined) return 'other';
  const hl = (f[ip] & 15) * 4;
  const total = f.readUInt16BE(ip + 2);
  if (f[ip] >> 4 !== 4 || hl < 20 || hl > f.length - ip || total < hl || total > Math.max(f.length, wireLength) - ip) return 'other';
  const proto = f[ip + 9];
  const addrs = addressesAt(f, ip);
  if ((f.readUInt16BE(ip + 6) & 0x1fff) !== 0) return addrs;
  if (proto === IPPROTO_IPIP && ip + hl + 20 <= f.length && f[ip + hl] >> 4 === 4) return `${addrs}[${flowKey(f, wireLength, ip + hl)}]`;
  const l4 = ip + hl, room = Math.min(total, f.length - ip) - hl;
  const offset = (f[l4 + 12] >> 4) * 4;
  const whole = proto === 6 ? room >= 20 && offset >= 20 && offset <= total - hl : room >= 8;
  if (!whole) return addrs;
  // With the error's own addresses too: under steering by an address (or a NAT's), those decide its shard.
  if (proto === 1 && ICMP_ERRORS.has(f[l4])) return `${addrs} ${quotedFlowKey(f, l4 + 8, ip + hl + room) ?? ''}`.trimEnd();
  if (proto === 6 || proto === 17) return `${addrs}:${f.readUInt16BE(l4)}>${f.readUInt16BE(l4 + 2)}`;
  return proto === 1 && ICMP_QUERIES.has(f[l4]) ? `${addrs}#${f.readUInt16BE(l4 + 4)}` : addrs;
}

/** An IPv4 header's source, destination and protocol, as a flow key begins. */
const addressesAt = (f: Buffer, ip: number) => `${f.subarray(ip + 12, ip + 16).join('.')}>${f.subarray(ip + 16, ip + 20).join('.')}/${f[ip + 9]}`;

/** The key of an ICMP error whose quote (at `inner`, up to `end`) holds an IPv4 header: the quoted flow's, marked. */
function quotedFlowKey(f: Buffer, inner: number, end: number): string | undefined {
  if (inner + 20 > end || f[inner] >> 4 !== 4) return undefined;
  const hl = (f[inner] & 15) * 4, proto = f[inner + 9], l4 = inner + hl;
  const addrs = addressesAt(f, inner);
  const first = (f.readUInt16BE(inner + 6) & 0x1fff) === 0;
  const ports = first && (proto === 6 || proto === 17) && l4 + 4 <= end ? `:${f.readUInt16BE(l4)}>${f.readUInt16BE(l4 + 2)}`
    : first && proto === 1 && l4 + 8 <= end && ICMP_QUERIES.has(f[l4]) ? `#${f.readUInt16BE(l4 + 4)}` : '';
  return `error about ${addrs}${ports}`;
}

const IPPROTO_IPIP = 4;
/** Destination unreachable, source quench, redirect, time exceeded, parameter problem: they quote a packet. */
const ICMP_ERRORS = new Set([3, 4, 5, 11, 12]);

/** ICMP messages matched to their replies by identifier (FlowKey.isIcmpQuery). */
const ICMP_QUERIES = new Set([0, 8, 13, 14, 15, 16, 17, 18]);

const DONT_FRAGMENT = 0x4000;
const FLAGS_AND_OFFSET = 0x7fff;
/** More fragments, or an offset: a fragment. */
const FRAGMENT = 0x3fff;

/** Where the IPv4 header of a datagram that may be fragmented (DF clear, or a fragment) starts: its ID is free. */
function freeIdAt(f: Buffer): number | undefined {
  const ip = ipv4At(f);
  return ip === undefined || (f.readUInt16BE(ip + 6) & FLAGS_AND_OFFSET) === DONT_FRAGMENT ? undefined : ip;
}

/** The one's complement sum of an IPv4 header: 0xffff when its checksum is good. */
function headerSum(f: Buffer, ip: number): number {
  const end = Math.min(ip + (f[ip] & 15) * 4, f.length - 1);
  let sum = 0;
  for (let at = ip; at < end; at += 2) sum += f.readUInt16BE(at);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/**
 * The first difference between one shard's frames (`expected`) and the scaled run's, per flow. A datagram that
 * may be fragmented is compared without its ID and header checksum; but both checksums must then be as good (or, when
 * the packet came in with a bad one, as bad) as each other, and
 * fragments' IDs must group them alike: an ID of one run stands for one ID of the other, for each source,
 * destination and protocol (so fragments that shared an ID still do).
 */
export function compare(sink: string, expected: Map<string, Frame[]>, actual: Map<string, Frame[]>): string | undefined {
  const ids = new Map<string, string>();
  const idsBack = new Map<string, string>();
  for (const [flow, want] of expected) {
    const got = actual.get(flow) ?? [];
    for (let i = 0; i < Math.max(want.length, got.length); i++) {
      if (!got[i] || !want[i]) return `${sink}: flow ${flow} has ${got.length} packets, one shard gave ${want.length}`;
      const w = want[i].bytes, g = got[i].bytes;
      const ip = freeIdAt(w);
      let same = w.equals(g);
      if (ip !== undefined && freeIdAt(g) === ip) {
        if (!same && headerSum(w, ip) !== headerSum(g, ip)) return `${sink}: flow ${flow}, packet ${i + 1}: bad IP header checksum`;
        if (w.readUInt16BE(ip + 6) & FRAGMENT) {
          const triple = `${w.subarray(ip + 12, ip + 20).toString('hex')}/${w[ip + 9]}`;
          const [a, b] = [`${triple}#${w.readUInt16BE(ip + 4)}`, `${triple}#${g.readUInt16BE(ip + 4)}`];
          if ((ids.get(a) ?? b) !== b || (idsBack.get(b) ?? a) !== a) return `${sink}: flow ${flow}, packet ${i + 1}: its IP ID groups it with other fragments than one shard did`;
          ids.set(a, b);
          idsBack.set(b, a);
        }
        const masked = (f: Buffer) => Buffer.concat([f.subarray(0, ip + 4), f.subarray(ip + 6, ip + 10), f.subarray(ip + 12)]);
        same ||= masked(w).equals(masked(g));
      }
      if (!same || want[i].ts !== got[i].ts) {
        return `${sink}: flow ${flow}, packet ${i + 1} differs: expected ts ${want[i].ts} ${w.toString('hex')}, got ts ${got[i].ts} ${g.toString('hex')}`;
      }
    }
  }
  for (const flow of actual.keys()) if (!expected.has(flow)) return `${sink}: flow ${flow} appears only with several shards`;
  return undefined;
}

/** Packets between scale events on a long trace. */
const DEFAULT_SCALE_EVERY = 10_000;

export async function verify(configFile: string, options: VerifyOptions): Promise<VerifyResult> {
  const dir = mkdtempSync(join(tmpdir(), 'wirepath-verify-'));
  try {
    const run = async (label: string, shards: number, scaleAt: { packets: number; shards: number }[]) => {
      const probe = await loadConfig(configFile, options);
      const overrides = [...(options.overrides ?? [])];
      const sinks: string[] = [];
      for (const e of probe.elements.values()) {
        if (e.type.type === 'ToPcap') { overrides.push(`${e.name}.file=${join(dir, `${label}-${e.name}.pcap`)}`); sinks.push(e.name); }
        if (options.trace && e.type.type === 'FromPcap') overrides.push(`${e.name}.file=${options.trace}`);
      }
      if (!sinks.length) throw new ConfigErrors([new ConfigError('the config has no ToPcap sink to compare', { file: configFile, line: 1, col: 1 }, 'verify compares what ToPcap elements write: add one')]);
      const pipeline = await Pipeline.create(await loadConfig(configFile, { ...options, overrides }), { shards, scaleAt });
      const result = await pipeline.run();
      return { result, reports: pipeline.scaleReports, outputs: new Map(sinks.map((s) => [s, flowsOf(join(dir, `${label}-${s}.pcap`))])) };
    };
    // Output that differs from run to run by design cannot be compared.
    const varying = [...(await loadConfig(configFile, options)).elements.values()].flatMap((e) => {
      const reason = e.type.varies?.(e.params);
      return reason ? [new ConfigError(`verify cannot compare runs of '${e.name}' (${e.type.type}): ${reason.why}`, e.position, reason.hint)] : [];
    });
    if (varying.length) throw new ConfigErrors(varying);
    const baseline = await run('one', 1, []);
    const [first, ...rest] = options.shards;
    const cycle = rest.length ? rest : [first];
    const packets = baseline.result.packets_in;
    const every = options.scaleEvery ?? Math.max(1, Math.min(DEFAULT_SCALE_EVERY, Math.floor(packets / (cycle.length + 2))));
    // Only events that change the count: with one count (--shards 2) the run stays on it.
    const events = Array.from({ length: Math.max(0, Math.floor(packets / every)) }, (_, i) => ({
      packets: (i + 1) * every, shards: [...cycle, first][i % (cycle.length + 1)],
    })).filter((e, i, all) => e.packets < packets && e.shards !== (i ? all[i - 1].shards : first));
    const scaled = await run('scaled', first, events);
    // The counts were named to be gone through: a run that made no scale event did not check what was asked.
    let difference = !scaled.reports.length
      ? `no scale event: the trace has ${packets} packets, not more than --scale-every ${every}; give a smaller --scale-every` : undefined;
    for (const [sink, expected] of baseline.outputs) {
      difference ??= compare(sink, expected, scaled.outputs.get(sink)!);
    }
    if (![...baseline.outputs.values()].some((flows) => flows.size)) difference = 'no packet reached a ToPcap sink in the one-shard run: nothing to compare';
    const lost = scaled.reports.reduce((s, r) => s + r.packets_lost, 0);
    if (!difference && lost) difference = `${lost} packets lost during scale events`;
    // And what the engine's own order watch saw while buckets moved (packets of a flow no sink writes count too).
    const reordered = scaled.reports.reduce((s, r) => s + r.packets_reordered, 0);
    if (!difference && reordered) difference = `${reordered} packets taken out of order within their flow during scale events`;
    return {
      equivalent: !difference,
      packets: baseline.result.packets_in,
      flows: [...baseline.outputs.values()].reduce((s, m) => s + m.size, 0),
      scaleEvents: scaled.reports,
      difference,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
