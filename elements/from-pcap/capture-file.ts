// The parts of pcap and pcapng files read once per file or section, in TypeScript; the per-record
// loops are in process.ts.

import { EnvironmentError } from '../../engine/errors.ts';

export const LINKTYPE_ETHERNET = 1;

export interface CaptureFormat {
  kind: 'pcap' | 'pcapng';
  /** True when the file's byte order is big-endian (the opposite of this machine's). */
  swapped: boolean;
  /** pcap only: nanosecond timestamps. */
  nanos: boolean;
  snaplen: number;
  linkType: number;
}

/**
 * An interface's snap length (0: none), how its timestamp units become ns (0 multiply by factor, 1 divide by it, 2 binary
 * fraction of factor bits), and the ns added to each of its timestamps (if_tsoffset).
 */
export interface Interface {
  snaplen: number;
  scale: { kind: 0 | 1 | 2; factor: bigint };
  offset: bigint;
}

const PCAP_MICRO = 0xa1b2c3d4;
const PCAP_NANO = 0xa1b23c4d;
const PCAPNG_SHB = 0x0a0d0d0a;
const PCAPNG_BYTE_ORDER = 0x1a2b3c4d;
const PCAPNG_IDB = 1;
const OPT_IF_TSRESOL = 9;
const OPT_IF_TSOFFSET = 14;

const UNFOLLOWED = 'the file is corrupt, or was written by a tool that wirepath cannot follow; rewrite it with editcap or tshark -w';
const DAMAGED = 'the file may be cut short or damaged, or not a capture; tshark -r FILE says what it reads of it';

function notEthernet(file: string, linkType: number): never {
  throw new EnvironmentError(`${file} has link type ${linkType}${LINK_NAMES[linkType] ? ` (${LINK_NAMES[linkType]})` : ''}; wirepath reads Ethernet captures (link type 1) only`,
    'capture on an Ethernet or veth interface itself (tcpdump -i any writes Linux cooked frames), or rewrite the frames with Ethernet headers: '
    + 'tcprewrite --dlt=enet --enet-smac=02:00:00:00:00:01 --enet-dmac=02:00:00:00:00:02 -i IN -o OUT (Debian package tcpreplay; editcap -T only relabels them)');
}

const LINK_NAMES: Record<number, string> = { 0: 'BSD loopback', 101: 'raw IP', 113: 'Linux cooked', 276: 'Linux cooked v2', 228: 'raw IPv4' };

/** Refuses a pcapng file whose interfaces in `head` (its first bytes) are not Ethernet, before the pipeline starts rather than at its packets. */
function checkInterfaces(head: Buffer, file: string, swapped: boolean): void {
  for (let at = 0; at + 12 <= head.length;) {
    const type = u32(head, at, swapped);
    const length = u32(head, at + 4, swapped);
    if (length < 12 || at + length > head.length || (at > 0 && type === PCAPNG_SHB)) return; // cut off here, or a new section
    if (type === PCAPNG_IDB && length >= 20 && u16(head, at + 8, swapped) !== LINKTYPE_ETHERNET) notEthernet(file, u16(head, at + 8, swapped));
    at += length;
  }
}

export function readCaptureHeader(head: Buffer, file: string): CaptureFormat {
  if (head.length < 24 && !(head.length >= 12 && head.readUInt32LE(0) === PCAPNG_SHB)) {
    throw new EnvironmentError(`${file} is too short to be a pcap or pcapng file (${head.length} bytes)`, DAMAGED);
  }
  const magic = head.readUInt32LE(0);
  for (const [value, nanos] of [[PCAP_MICRO, false], [PCAP_NANO, true]] as const) {
    for (const swapped of [false, true]) {
      if ((swapped ? head.readUInt32BE(0) : magic) !== value) continue;
      const u32 = (off: number) => (swapped ? head.readUInt32BE(off) : head.readUInt32LE(off));
      const linkType = u32(20) & 0xffff;
      if (linkType !== LINKTYPE_ETHERNET) notEthernet(file, linkType);
      return { kind: 'pcap', swapped, nanos, snaplen: u32(16), linkType };
    }
  }
  if (magic === PCAPNG_SHB) {
    const order = head.readUInt32LE(8);
    if (order !== PCAPNG_BYTE_ORDER && head.readUInt32BE(8) !== PCAPNG_BYTE_ORDER) throw new EnvironmentError(`${file}: pcapng section header has a bad byte-order magic`, DAMAGED);
    checkInterfaces(head, file, order !== PCAPNG_BYTE_ORDER);
    return { kind: 'pcapng', swapped: order !== PCAPNG_BYTE_ORDER, nanos: false, snaplen: 0, linkType: LINKTYPE_ETHERNET };
  }
  throw new EnvironmentError(`${file} is not a pcap or pcapng file (magic 0x${magic.toString(16).padStart(8, '0')})`,
    'wirepath reads classic pcap (tcpdump -w) and pcapng (Wireshark, tshark, dumpcap)');
}

/** How an interface's timestamp units become nanoseconds; a unit finer than 64 bits of timestamp can count (10^-19 s, 2^-63 s) is an error. */
function scaleOf(tsresol: number | undefined, where: string): Interface['scale'] {
  if (tsresol === undefined) return { kind: 0, factor: 1000n };
  if ((tsresol & 0x7f) > (tsresol & 0x80 ? 63 : 19)) {
    throw new EnvironmentError(`${where}: an interface's if_tsresol is ${tsresol & 0x80 ? `2^-${tsresol & 0x7f}` : `10^-${tsresol}`} s, finer than 64-bit timestamps can count`,
      UNFOLLOWED);
  }
  if (tsresol & 0x80) return { kind: 2, factor: BigInt(tsresol & 0x7f) };
  return tsresol <= 9 ? { kind: 0, factor: 10n ** BigInt(9 - tsresol) } : { kind: 1, factor: 10n ** BigInt(tsresol - 9) };
}

/** An interface's if_tsoffset (seconds) in ns; one past what 64-bit nanoseconds count (292 years) is an error. */
function offsetOf(seconds: bigint, where: string): bigint {
  const ns = seconds * 1_000_000_000n;
  if (BigInt.asIntN(64, ns) !== ns) {
    throw new EnvironmentError(`${where}: an interface's if_tsoffset is ${seconds} s, more than 64-bit nanosecond timestamps can count`,
      UNFOLLOWED);
  }
  return ns;
}

/**
 * Handles one pcapng block that is not a packet block: a section header (new byte order, interfaces
 * forgotten), an interface description (appended), anything else (skipped). `block` starts at the
 * block and may run past it.
 */
export function readPcapngBlock(block: Buffer, format: CaptureFormat, interfaces: Interface[], where: string): { length: number; interfaces?: Interface[] } {
  if (block.readUInt32LE(0) === PCAPNG_SHB) {
    const order = block.readUInt32LE(8);
    format.swapped = order !== PCAPNG_BYTE_ORDER;
    if (format.swapped && block.readUInt32BE(8) !== PCAPNG_BYTE_ORDER) throw new EnvironmentError(`${where}: bad byte-order magic in a section header`, DAMAGED);
    return { length: u32(block, 4, format.swapped), interfaces: [] };
  }
  const type = u32(block, 0, format.swapped);
  const length = u32(block, 4, format.swapped);
  if (type !== PCAPNG_IDB) return { length };
  // Link type, reserved and snap length come before the trailing length.
  if (length < 20) throw new EnvironmentError(`${where}: an interface description block of ${length} bytes, too short for its link type`, DAMAGED);
  const linkType = u16(block, 8, format.swapped);
  if (linkType !== LINKTYPE_ETHERNET) notEthernet(where, linkType);
  let tsresol: number | undefined;
  let tsoffset = 0n;
  for (let off = 16; off + 4 <= length - 4;) {
    const code = u16(block, off, format.swapped);
    const len = u16(block, off + 2, format.swapped);
    if (code === 0) break;
    if (code === OPT_IF_TSRESOL && len === 1) tsresol = block[off + 4];
    if (code === OPT_IF_TSOFFSET && len === 8) tsoffset = format.swapped ? block.readBigInt64BE(off + 4) : block.readBigInt64LE(off + 4);
    off += 4 + Math.ceil(len / 4) * 4;
  }
  return { length, interfaces: [...interfaces, { snaplen: u32(block, 12, format.swapped), scale: scaleOf(tsresol, where), offset: offsetOf(tsoffset, where) }] };
}

const u32 = (b: Buffer, off: number, swapped: boolean) => (swapped ? b.readUInt32BE(off) : b.readUInt32LE(off));
const u16 = (b: Buffer, off: number, swapped: boolean) => (swapped ? b.readUInt16BE(off) : b.readUInt16LE(off));
