// Shared test helpers: temp folders, running configs, reading and writing pcap files, building frames.

import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { spawn, spawnSync, execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadConfig, type LoadOptions } from '../engine/config.ts';
import { Pipeline, type PipelineOptions, type RunResult } from '../engine/pipeline.ts';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export function tempDir(prefix = 'wirepath-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Writes `yaml` as config.yaml in `dir` and runs it to the end. */
export async function runConfig(dir: string, yaml: string, options: LoadOptions & PipelineOptions = {}): Promise<RunResult> {
  const file = join(dir, 'config.yaml');
  writeFileSync(file, yaml);
  const config = await loadConfig(file, options);
  const pipeline = await Pipeline.create(config, options);
  return pipeline.run();
}

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs the wirepath command as a user would. */
export function cli(args: string[], cwd = ROOT): CliResult {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/wirepath.js'), ...args], { cwd, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** The wirepath command, without blocking this process (whose event loop may serve the control API it talks to). */
export function cliAsync(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(ROOT, 'bin/wirepath.js'), ...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ status: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr });
    });
  });
}

export interface PcapRecord {
  sec: number;
  frac: number;
  caplen: number;
  origlen: number;
  data: Buffer;
}

export interface Pcap {
  nanos: boolean;
  snaplen: number;
  linkType: number;
  records: PcapRecord[];
}

export function readPcap(file: string): Pcap {
  const b = readFileSync(file);
  const magic = b.readUInt32LE(0);
  if (magic !== 0xa1b2c3d4 && magic !== 0xa1b23c4d) throw new Error(`${file}: not a little-endian pcap`);
  const records: PcapRecord[] = [];
  for (let at = 24; at + 16 <= b.length;) {
    const caplen = b.readUInt32LE(at + 8);
    records.push({ sec: b.readUInt32LE(at), frac: b.readUInt32LE(at + 4), caplen, origlen: b.readUInt32LE(at + 12), data: b.subarray(at + 16, at + 16 + caplen) });
    at += 16 + caplen;
  }
  return { nanos: magic === 0xa1b23c4d, snaplen: b.readUInt32LE(16), linkType: b.readUInt32LE(20), records };
}

export function writePcap(file: string, frames: (Buffer | { data: Buffer; sec?: number; usec?: number; origlen?: number })[], options: { nanos?: boolean; snaplen?: number } = {}): void {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(options.nanos ? 0xa1b23c4d : 0xa1b2c3d4, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(options.snaplen ?? 65535, 16);
  header.writeUInt32LE(1, 20);
  const parts: Buffer[] = [header];
  frames.forEach((f, i) => {
    const rec = Buffer.isBuffer(f) ? { data: f } : f;
    const h = Buffer.alloc(16);
    h.writeUInt32LE(rec.sec ?? 1_700_000_000, 0);
    h.writeUInt32LE(rec.usec ?? i, 4);
    h.writeUInt32LE(rec.data.length, 8);
    h.writeUInt32LE(rec.origlen ?? rec.data.length, 12);
    parts.push(h, rec.data);
  });
  writeFileSync(file, Buffer.concat(parts));
}

/** RFC 1071 checksum of `b`, for building test frames. */
export function internetChecksum(b: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length & 1) sum += b[b.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export interface FrameSpec {
  src?: string;
  dst?: string;
  proto?: 'tcp' | 'udp' | 'icmp' | number;
  sport?: number;
  dport?: number;
  ttl?: number;
  tos?: number;
  payload?: number | Buffer;
  /** Fragment offset in 8-byte units and the more-fragments flag. */
  fragOffset?: number;
  moreFragments?: boolean;
  dontFragment?: boolean;
  /** The IPv4 identification (0x1111 when not given). */
  id?: number;
  vlan?: number;
  tcpFlags?: number;
  udpChecksum?: boolean;
}

const ip = (s: string) => Buffer.from(s.split('.').map(Number));

/** An Ethernet/IPv4 frame with valid IP and TCP/UDP/ICMP checksums. */
export function ipv4Frame(spec: FrameSpec = {}): Buffer {
  const proto = spec.proto === 'udp' ? 17 : spec.proto === 'icmp' ? 1 : spec.proto === undefined || spec.proto === 'tcp' ? 6 : spec.proto;
  const payload = Buffer.isBuffer(spec.payload) ? spec.payload : Buffer.alloc(spec.payload ?? 6, 0xab);
  let l4: Buffer;
  const src = ip(spec.src ?? '100.64.0.1'), dst = ip(spec.dst ?? '198.18.0.1');
  if (proto === 6) {
    l4 = Buffer.alloc(20);
    l4.writeUInt16BE(spec.sport ?? 40000, 0);
    l4.writeUInt16BE(spec.dport ?? 80, 2);
    l4.writeUInt32BE(1000, 4);
    l4[12] = 0x50;
    l4[13] = spec.tcpFlags ?? 0x18;
    l4.writeUInt16BE(65535, 14);
  } else if (proto === 17) {
    l4 = Buffer.alloc(8);
    l4.writeUInt16BE(spec.sport ?? 40000, 0);
    l4.writeUInt16BE(spec.dport ?? 53, 2);
    l4.writeUInt16BE(8 + payload.length, 4);
  } else if (proto === 1) {
    l4 = Buffer.alloc(8);
    l4[0] = 8;
    l4.writeUInt16BE(0x1234, 4);
  } else l4 = Buffer.alloc(0);
  const segment = Buffer.concat([l4, payload]);
  const first = !spec.fragOffset;
  if (first && (proto === 6 || proto === 17)) {
    const pseudo = Buffer.concat([src, dst, Buffer.from([0, proto]), Buffer.from([segment.length >> 8, segment.length & 255])]);
    let sum = 0;
    for (let i = 0; i < pseudo.length; i += 2) sum += pseudo.readUInt16BE(i);
    const c = internetChecksum(segment, sum);
    if (proto === 6) segment.writeUInt16BE(c, 16);
    else if (spec.udpChecksum !== false) segment.writeUInt16BE(c === 0 ? 0xffff : c, 6);
  } else if (first && proto === 1) {
    segment.writeUInt16BE(internetChecksum(segment), 2);
  }
  const iph = Buffer.alloc(20);
  iph[0] = 0x45;
  iph[1] = spec.tos ?? 0;
  iph.writeUInt16BE(20 + segment.length, 2);
  iph.writeUInt16BE(spec.id ?? 0x1111, 4);
  iph.writeUInt16BE((spec.dontFragment ? 0x4000 : 0) | ((spec.moreFragments ? 1 : 0) << 13) | (spec.fragOffset ?? 0), 6);
  iph[8] = spec.ttl ?? 64;
  iph[9] = proto;
  src.copy(iph, 12);
  dst.copy(iph, 16);
  iph.writeUInt16BE(internetChecksum(iph), 10);
  const eth = Buffer.from('020000000002020000000001', 'hex');
  const tag = spec.vlan !== undefined ? Buffer.from([0x81, 0x00, spec.vlan >> 8, spec.vlan & 255]) : Buffer.alloc(0);
  return Buffer.concat([eth, tag, Buffer.from([0x08, 0x00]), iph, segment]);
}

/** tshark's dissection of a capture as rows of the given fields. */
export function tshark(file: string, fields: string[], extra: string[] = []): string[][] {
  const args = ['-r', file, '-o', 'ip.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE', '-T', 'fields', ...extra, ...fields.flatMap((f) => ['-e', f])];
  const r = spawnSync('tshark', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tshark failed: ${r.stderr}`);
  return r.stdout.trimEnd().split('\n').filter((l) => l.length).map((l) => l.split('\t'));
}

/** An ICMP error from `from` about the frame `about`, to its source (quoting its IP header and `quote` bytes after it). */
export function icmpError(from: string, about: Buffer, type = 3, code = 3, quote = 8): Buffer {
  const inner = about.subarray(14, 14 + 20 + quote);
  const icmp = Buffer.concat([Buffer.from([type, code, 0, 0, 0, 0, 0, 0]), inner]);
  icmp.writeUInt16BE(internetChecksum(icmp), 2);
  const f = ipv4Frame({ proto: 'icmp', src: from, dst: [...about.subarray(26, 30)].join('.'), payload: 0 });
  const ip = Buffer.from(f.subarray(14, 34));
  ip.writeUInt16BE(20 + icmp.length, 2);
  ip.writeUInt16BE(0, 10);
  ip.writeUInt16BE(internetChecksum(ip), 10);
  return Buffer.concat([f.subarray(0, 14), ip, icmp]);
}

/**
 * A FIFO's reader: says "ready" once it has the FIFO open, then copies what it reads into a file until the writer has
 * closed it; `lagging` takes nothing before the file `go` exists, `slow` reads 2000 bytes a millisecond. Opened without
 * waiting for a writer, and polled: a read before any writer came would be an end.
 */
const FIFO_READER = `
import os, sys, time, select
fifo, got, go, mode = sys.argv[1:]
fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
print("ready", flush=True)
while mode == "lagging" and not os.path.exists(go): time.sleep(0.01)
poller = select.poll()
poller.register(fd, select.POLLIN)
with open(got, "wb") as out:
  while True:
    poller.poll()
    try: chunk = os.read(fd, 2000 if mode == "slow" else 65536)
    except BlockingIOError: continue
    if not chunk: break
    out.write(chunk)
    if mode == "slow": time.sleep(0.001)
`;

/**
 * Makes the FIFO `fifo` and starts a reader of it (FIFO_READER), returning once the reader has it open: `go()` lets a
 * lagging one start reading; `done` is the file of what it read, once the writer has closed the FIFO.
 */
export async function readFifo(fifo: string, mode: 'lagging' | 'slow'): Promise<{ go: () => void; done: Promise<string> }> {
  spawnSync('mkfifo', [fifo]);
  const got = `${fifo}.got`, go = `${fifo}.go`;
  const reader = spawn('python3', ['-c', FIFO_READER, fifo, got, go, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => reader.on('exit', resolve));
  await new Promise((resolve) => reader.stdout!.once('data', resolve));
  return { go: () => writeFileSync(go, ''), done: exited.then(() => got) };
}
