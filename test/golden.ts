// Shared by the golden and robustness tests (elements, pcap, malformed): temp folders, comparing pcap
// records field by field, frames ipv4Frame does not make, and tshark's checksum verdicts.

import * as assert from 'uvu/assert';
import { tempDir, removeDir, runConfig, tshark, internetChecksum, type PcapRecord } from './helpers.ts';

export async function inTempDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const dir = tempDir();
  try {
    return await body(dir);
  } finally {
    removeDir(dir);
  }
}

/** runConfig on one shard, whatever the machine: packets of different flows then leave in the order they came. */
export function runInOrder(dir: string, yaml: string, options?: Parameters<typeof runConfig>[2]) {
  return runConfig(dir, `shards: 1\n${yaml}`, options);
}

/** A record as the tests compare it: every field, the frame in hex so that a failure shows where it differs. */
export const recordFields = (r: PcapRecord) => ({ sec: r.sec, frac: r.frac, caplen: r.caplen, origlen: r.origlen, data: r.data.toString('hex') });

export function assertRecords(actual: PcapRecord[], expected: PcapRecord[], what: string): void {
  assert.equal(actual.map(recordFields), expected.map(recordFields), what);
}

/** The records a pcap file written by writePcap from `frames` holds (its default timestamps). */
export function recordsOf(frames: Buffer[]): PcapRecord[] {
  return frames.map((data, i) => ({ sec: 1_700_000_000, frac: i, caplen: data.length, origlen: data.length, data }));
}

/** A copy of `frame` whose IPv4 header (at `l3`) `edit` changed, with its checksum then recomputed over 20 bytes. */
export function editIpHeader(frame: Buffer, edit: (ip: Buffer) => void, l3 = 14): Buffer {
  const copy = Buffer.from(frame);
  const ip = copy.subarray(l3, l3 + 20);
  edit(ip);
  ip.writeUInt16BE(0, 10);
  ip.writeUInt16BE(internetChecksum(ip), 10);
  return copy;
}

/** `frame` (untagged IPv4) with `options` (a multiple of 4 bytes) inserted after its 20-byte IP header. */
export function withIpOptions(frame: Buffer, options: Buffer): Buffer {
  const out = Buffer.concat([frame.subarray(0, 34), options, frame.subarray(34)]);
  const ip = out.subarray(14, 34 + options.length);
  ip[0] = 0x40 | (ip.length >> 2);
  ip.writeUInt16BE(ip.readUInt16BE(2) + options.length, 2);
  ip.writeUInt16BE(0, 10);
  ip.writeUInt16BE(internetChecksum(ip), 10);
  return out;
}

const ETH = Buffer.from('020000000002020000000001', 'hex');

/** `frame` with an outer tag of VLAN `vlan` before its first ethertype: 802.1ad (QinQ), or another tag `type`. */
export function withOuterTag(frame: Buffer, vlan = 100, type = 0x88a8): Buffer {
  return Buffer.concat([frame.subarray(0, 12), Buffer.from([type >> 8, type & 255, vlan >> 8, vlan & 255]), frame.subarray(12)]);
}

/** An ARP request (ethertype 0x0806). */
export function arpFrame(): Buffer {
  return Buffer.concat([ETH, Buffer.from('0806' + '0001080006040001' + '020000000001c0000201' + '000000000000c0000202', 'hex')]);
}

/** An IPv6/UDP frame (ethertype 0x86dd) with an empty payload. */
export function ipv6Frame(): Buffer {
  const ip = Buffer.alloc(48);
  ip[0] = 0x60;
  ip.writeUInt16BE(8, 4);
  ip[6] = 17;
  ip[7] = 64;
  ip.writeUInt16BE(8, 44);
  return Buffer.concat([ETH, Buffer.from('86dd', 'hex'), ip]);
}

/** Patches the Ethernet addresses (12 hex digits each) of a copy of `frame`. */
export function withMacs(frame: Buffer, macs: { dst?: string; src?: string }): Buffer {
  const copy = Buffer.from(frame);
  if (macs.dst && copy.length >= 14) Buffer.from(macs.dst, 'hex').copy(copy, 0);
  if (macs.src && copy.length >= 14) Buffer.from(macs.src, 'hex').copy(copy, 6);
  return copy;
}

/** tshark's checksum verdict per frame: '1' good, '0' bad, '3' not present (UDP 0), '' not checked. */
export interface Verdicts {
  ip: string;
  tcp: string;
  udp: string;
  icmp: string;
}

export function checksumVerdicts(file: string): Verdicts[] {
  return tshark(file, ['ip.checksum.status', 'tcp.checksum.status', 'udp.checksum.status', 'icmp.checksum.status'])
    .map(([ip = '', tcp = '', udp = '', icmp = '']) => ({ ip, tcp, udp, icmp }));
}

/** Asserts that tshark finds `count` frames, each with a good IP checksum and no bad transport checksum; returns the verdicts. */
export function assertChecksumsGood(file: string, count: number): Verdicts[] {
  const verdicts = checksumVerdicts(file);
  assert.is(verdicts.length, count, 'frames tshark read');
  verdicts.forEach((v, i) => {
    assert.is(v.ip, '1', `frame ${i + 1}: IP checksum`);
    for (const proto of ['tcp', 'udp', 'icmp'] as const) assert.ok(v[proto] !== '0', `frame ${i + 1}: bad ${proto} checksum`);
  });
  return verdicts;
}
