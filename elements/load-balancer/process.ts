import { Batch, Outputs, Packet, Ethernet, IPv4, Transport, ICMP, Wire, ETHERTYPE_IPV4, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, META_SIZE, copyBytes, dropPacket, fold, now, shardIndex } from "wirepath";
import { LoadBalancerState } from "./layout";

const ENCAPSULATED = 0;
const OTHER = 1;

// The table (table.ts describes it).
const HEADER: usize = 64;
const VIP_ENTRY: usize = 16;
const BACKEND_ENTRY: usize = 48;
const BUCKET_ENTRY: usize = 16;
const NONE: u32 = 0xffff;
const ROWS: usize = 8;
const CLOCK_START: usize = 24;

/** The outer header: 20 bytes and the 16-byte option (element.ts documents it). */
const OUTER: u32 = 36;
const OPTION_TYPE: u8 = 158;
const IPPROTO_IPIP: u8 = 4;
const DONT_FRAGMENT: u16 = 0x4000;

const NOT_VIP: i32 = -1;
const MALFORMED: i32 = -2;

// Set by classify for a VIP packet: the hash that picks its bucket.
let flowHash: u32 = 0;

export function process(self: LoadBalancerState, batch: Batch, out: Outputs): void {
  if (!self.counter_row) claimRow(self);
  const table = self.table;
  const size = load<u32>(table);
  const vips = load<u32>(table, 4);
  const backends = table + HEADER + <usize>vips * VIP_ENTRY;
  const buckets = backends + <usize>load<u32>(table, 8) * BACKEND_ENTRY;
  const vipRow = <usize>self.counter_row;
  const backendRow = vipRow + <usize>vips * 16;
  const t = now();
  // Changes made before the first packet (stamped 0) count as made at its time.
  if (!atomic.load<u64>(table + CLOCK_START)) atomic.cmpxchg<u64>(table + CLOCK_START, 0, t);
  const clockStart = atomic.load<u64>(table + CLOCK_START);
  for (let i: u32 = 0; i < batch.count; i++) {
    const p = batch.packet(i);
    const ip = IPv4.header(p);
    const vip = ip ? classify(self, table + HEADER, vips, p, ip) : brokenHeader(table + HEADER, vips, p);
    if (vip == NOT_VIP) { self.other++; out.push(OTHER, p); continue; }
    if (vip == MALFORMED) { self.malformed++; dropPacket(p); continue; }
    const bucket = buckets + <usize>((<u64>flowHash * <u64>size) >> 32) * BUCKET_ENTRY;
    const word = atomic.load<u64>(bucket);
    const current = <u32>word & 0xffff;
    if (current == NONE) { self.no_backend++; dropPacket(p); continue; }
    if (<u32>p.dataOffset < META_SIZE + OUTER) { self.no_headroom++; dropPacket(p); continue; }
    const previous = <u32>(word >> 16) & 0xffff;
    const changed = load<u64>(bucket, 8);
    const age = previous == NONE ? <u64>0xffffffff : ageMs(t, changed ? changed : clockStart);
    encapsulate(p, ip, outerSource(self, flowHash), load<u32>(backends + <usize>current * BACKEND_ENTRY),
      previous == NONE ? 0 : load<u32>(backends + <usize>previous * BACKEND_ENTRY), <u32>(word >> 32), <u32>age);
    const bytes = <u64>p.wireLength;
    count(vipRow + (<usize>vip << 4), bytes);
    count(backendRow + (<usize>current << 4), bytes);
    self.encapsulated++;
    out.push(ENCAPSULATED, p);
  }
}

/** Milliseconds from `changed` to `t`, at most 2^32 - 1 (a change stamped after this batch's clock is 0 old). */
@inline function ageMs(t: u64, changed: u64): u64 {
  const ms = t > changed ? (t - changed) / 1000000 : 0;
  return ms < 0xffffffff ? ms : 0xffffffff;
}

@inline function count(at: usize, bytes: u64): void {
  store<u64>(at, load<u64>(at) + 1);
  store<u64>(at, load<u64>(at, 8) + bytes, 8);
}

/**
 * The VIP a packet is for, and its bucket hash in flowHash; NOT_VIP, or MALFORMED for a packet to a
 * VIP address whose headers are cut short.
 */
function classify(self: LoadBalancerState, vipTable: usize, vips: u32, p: Packet, ip: usize): i32 {
  const proto = IPv4.protocol(ip);
  const dst = IPv4.dst(ip);
  if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
    if (IPv4.isFragment(ip)) {
      const vip = findVip(vipTable, vips, dst, proto, 0, false);
      if (vip >= 0) { self.fragments++; flowHash = hashOf(IPv4.src(ip), 0); }
      return vip;
    }
    const l4 = Transport.header(p, ip);
    if (!l4) return findVip(vipTable, vips, dst, proto, 0, false) >= 0 ? MALFORMED : NOT_VIP;
    const vip = findVip(vipTable, vips, dst, proto, Transport.dstPort(l4), true);
    if (vip >= 0) flowHash = hashOf(IPv4.src(ip), Transport.srcPort(l4));
    return vip;
  }
  if (proto != IPPROTO_ICMP) return NOT_VIP;
  const l4 = Transport.header(p, ip);
  // Cut short, it may be an error about a VIP's connection: malformed, as a TCP or UDP packet cut short is. A later fragment has no header.
  if (!l4) return IPv4.fragmentOffset(ip) == 0 && findVip(vipTable, vips, dst, 0, 0, false) >= 0 ? MALFORMED : NOT_VIP;
  if (!ICMP.isError(ICMP.type(l4))) return NOT_VIP;
  // The error quotes the header of a packet the VIP sent (RFC 792): source VIP:port, destination the client.
  const quoted = l4 + 8;
  const room = IPv4.totalLength(ip) - IPv4.headerLength(ip) - 8;
  const vihl = room >= IPv4.MIN_HEADER ? load<u8>(quoted) : 0;
  const qhl = (<u32>vihl & 15) << 2;
  if ((vihl >> 4) != 4 || qhl < IPv4.MIN_HEADER || qhl + 4 > room) return findVip(vipTable, vips, dst, 0, 0, false) >= 0 ? MALFORMED : NOT_VIP;
  if (IPv4.src(quoted) != dst) return NOT_VIP; // about a VIP's packet, but not sent to the VIP
  const qproto = IPv4.protocol(quoted);
  // VIPs serve TCP and UDP: findVip takes protocol 0 for any.
  if (qproto != IPPROTO_TCP && qproto != IPPROTO_UDP) return NOT_VIP;
  const ports = IPv4.fragmentOffset(quoted) == 0;
  const vip = findVip(vipTable, vips, IPv4.src(quoted), qproto, ports ? Wire.get16(quoted + qhl) : 0, ports);
  if (vip >= 0) {
    self.icmp_errors++;
    flowHash = hashOf(IPv4.dst(quoted), ports ? <u32>Wire.get16(quoted + qhl + 2) : 0);
  }
  return vip;
}

/**
 * For a frame whose IPv4 header IPv4.header refused (IHL below 5 or past the frame, total length shorter than
 * the header or past the frame): MALFORMED when it is IPv4 to a VIP address, NOT_VIP otherwise.
 */
function brokenHeader(vipTable: usize, vips: u32, p: Packet): i32 {
  if (Ethernet.etherType(p) != ETHERTYPE_IPV4 || <u32>p.length < <u32>p.l3Offset + IPv4.MIN_HEADER) return NOT_VIP;
  // A frame a capture cut short is whole but for the bytes it lacks: not malformed, though no tunnel can carry it.
  if (IPv4.capturedHeader(p)) return NOT_VIP;
  return findVip(vipTable, vips, IPv4.dst(p.data + <usize>p.l3Offset), 0, 0, false) >= 0 ? MALFORMED : NOT_VIP;
}


/** Index of the VIP for address, protocol (0: any) and port (when checkPort), or NOT_VIP. A short list: scanned. */
function findVip(table: usize, vips: u32, address: u32, proto: u8, port: u16, checkPort: bool): i32 {
  for (let i: u32 = 0; i < vips; i++) {
    const v = table + <usize>i * VIP_ENTRY;
    if (load<u32>(v) != address) continue;
    if (proto && load<u8>(v, 6) != proto) continue;
    if (checkPort && !load<u8>(v, 7) && load<u16>(v, 4) != port) continue;
    return <i32>i;
  }
  return NOT_VIP;
}

/** The bucket hash of a source address and port (murmur3's finaliser). */
@inline function hashOf(address: u32, port: u32): u32 {
  let h = address * 0x9e3779b1 ^ (port * 0x85ebca77 + 0x165667b1);
  h ^= h >>> 16; h *= 0x85ebca6b; h ^= h >>> 13; h *= 0xc2b2ae35; h ^= h >>> 16;
  return h;
}

/** Puts the outer header between the layer 2 header and the packet, in the headroom. */
function encapsulate(p: Packet, inner: usize, src: u32, dst: u32, previous: u32, generation: u32, age: u32): void {
  const l2 = <usize>p.l3Offset;
  const from = p.data;
  p.dataOffset -= <u16>OUTER;
  p.length += OUTER;
  p.wireLength += OUTER;
  moveLayer2(p.data, from, l2);
  const ip = p.data + l2;
  store<u8>(ip, 0x40 | <u8>(OUTER >> 2));
  store<u8>(ip, IPv4.tos(inner), 1);
  Wire.set16(ip + 2, <u16>(IPv4.totalLength(inner) + OUTER));
  const dontFragment = Wire.get16(inner + 6) & DONT_FRAGMENT;
  // A fragmentable outer header needs an identification unique per outer source and destination for a while
  // (RFC 6864): the inner one, which its sender keeps unique, mixed with the flow so that flows sharing an outer
  // source do not repeat each other's; no state, so every mux and shard writes the same. Atomic (DF): 0.
  Wire.set16(ip + 4, dontFragment ? 0 : Wire.get16(inner + 4) ^ <u16>(flowHash >>> 16));
  Wire.set16(ip + 6, dontFragment);
  store<u8>(ip, 64, 8);
  store<u8>(ip, IPPROTO_IPIP, 9);
  store<u16>(ip, 0, 10);
  Wire.set32(ip + 12, src);
  Wire.set32(ip + 16, dst);
  store<u8>(ip, OPTION_TYPE, 20);
  store<u8>(ip, 16, 21);
  store<u16>(ip, 0, 22);
  Wire.set32(ip + 24, previous);
  Wire.set32(ip + 28, generation);
  Wire.set32(ip + 32, age);
  // The header checksum as nine 32-bit words, without a loop (its field was zeroed above). Summed in memory
  // order and stored the same way: the one's-complement sum does not care about byte order (RFC 1071).
  const sum = <u64>load<u32>(ip) + <u64>load<u32>(ip, 4) + <u64>load<u32>(ip, 8) + <u64>load<u32>(ip, 12) + <u64>load<u32>(ip, 16)
    + <u64>load<u32>(ip, 20) + <u64>load<u32>(ip, 24) + <u64>load<u32>(ip, 28) + <u64>load<u32>(ip, 32);
  store<u16>(ip + 10, ~fold(sum));
}

/** Moves the layer 2 header (14 bytes, or 18 with a VLAN tag) to the new frame start, OUTER bytes before. */
@inline function moveLayer2(to: usize, from: usize, length: usize): void {
  if (length == 14) {
    store<u64>(to, load<u64>(from));
    store<u32>(to, load<u32>(from, 8), 8);
    store<u16>(to, load<u16>(from, 12), 12);
  } else copyBytes(to, from, length);
}

/**
 * The outer source: the flow hash as the host part of `source`, never the prefix's network or broadcast address when it
 * has others (routers that know the subnet take those for martians): the two move to their neighbours.
 */
@inline function outerSource(self: LoadBalancerState, flowHash: u32): u32 {
  const hostBits = ~self.source_mask;
  let host = flowHash & hostBits;
  if (hostBits >= 3 && (host == 0 || host == hostBits)) host ^= 1;
  return self.source_address | host;
}

/** Finds this shard's row of counters, the row of its index: no other running shard writes it (see Filter's claimHitRow). */
function claimRow(self: LoadBalancerState): void {
  const counters = self.counters;
  const row = shardIndex();
  const table = self.table;
  const rowBytes = (<usize>load<u32>(table, 4) + <usize>load<u32>(table, 8)) << 4;
  self.counter_row = <u64>(counters + ROWS + <usize>row * rowBytes);
}
