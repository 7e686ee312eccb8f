import { Batch, Outputs, Packet, Ethernet, IPv4, Transport, TCP, ICMP, Wire, FlowKey, FlowTable, ETHERTYPE_IPV4, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, keyBuffer, flowCreated, copyBytes, dropPacket, now, updateChecksum16, symmetricHash, symmetricHashOf } from "wirepath";
import { BeamerBackendState, BeamerBackendConnectionsEntry } from "./layout";

const LOCAL = 0;
const FORWARDED = 1;
const OTHER = 2;

const IPPROTO_IPIP: u8 = 4;
/** LoadBalancer's option, first in the outer header: [158][16][flags][0][previous backend][generation][age ms]. */
const OPTION_TYPE: u8 = 158;
const OPTION_LENGTH: u8 = 16;
const OPTION_END: u32 = 20 + 16;
/** The flags byte's bit 0, seen in the 16-bit word of the flags byte and the next one. */
const MARK_FORWARDED: u16 = 0x0100;
const CLOSING_WINDOW: u32 = 65536;

export function process(self: BeamerBackendState, batch: Batch, out: Outputs): void {
  const table = self.connections;
  const t = now();
  const key = keyBuffer();
  for (let i: u32 = 0; i < batch.count; i++) {
    const p = batch.packet(i);
    const ip = IPv4.header(p);
    if (!ip && brokenTunnel(self, p)) { self.malformed++; dropPacket(p); continue; }
    if (!ip || IPv4.protocol(ip) != IPPROTO_IPIP || IPv4.dst(ip) != self.address) { self.other++; out.push(OTHER, p); continue; }
    const hl = IPv4.headerLength(ip);
    const inner = ip + hl;
    // A fragmented outer packet cannot be taken apart without reassembly.
    if (IPv4.isFragment(ip) || !innerValid(inner, IPv4.totalLength(ip) - hl)) { self.malformed++; dropPacket(p); continue; }
    const l4 = Transport.header(p, inner);
    if (!l4 && transportCutShort(inner)) { self.malformed++; dropPacket(p); continue; }
    if (l4 && IPv4.protocol(inner) == IPPROTO_TCP) {
      innerKey(inner, l4, key);
      const hash = FlowKey.hash(key);
      const flags = TCP.flags(l4);
      if ((flags & (TCP.SYN | TCP.ACK)) == TCP.SYN) {
        const value = table.lookupOrInsert(key, hash, t, p);
        if (!value) self.table_full++;
        else {
          const entry = changetype<BeamerBackendConnectionsEntry>(value);
          // A SYN on a closing connection's 5-tuple starts a new connection in its entry.
          if (flowCreated || entry.closing) self.learned++;
          entry.closing = 0;
        }
      } else {
        const value = table.find(key, hash, t);
        const seq = TCP.seq(l4);
        if (value && belongs(changetype<BeamerBackendConnectionsEntry>(value), seq)) {
          const entry = changetype<BeamerBackendConnectionsEntry>(value);
          if (flags & (TCP.FIN | TCP.RST)) {
            entry.closing = 1;
            entry.end_seq = seq + IPv4.totalLength(inner) - IPv4.headerLength(inner) - TCP.dataOffset(l4) + (flags & TCP.FIN ? 1 : 0);
          }
          FlowTable.refresh(value, t, entry.closing ? self.fin_timeout : self.timeout);
        } else if (self.daisy_chain && daisyChain(self, p, ip, hl)) {
          self.forwarded++;
          out.push(FORWARDED, p);
          continue;
        } else self.unknown++;
      }
    } else if (l4 && unknownQuoted(table, inner, l4, key, t)) {
      // An ICMP error about a connection this server does not know (path MTU, say) goes where the connection's packets go.
      if (self.daisy_chain && daisyChain(self, p, ip, hl)) {
        self.forwarded++;
        out.push(FORWARDED, p);
        continue;
      }
      self.unknown++;
    }
    decapsulate(p, hl);
    self.delivered++;
    out.push(LOCAL, p);
  }
  table.sweep(t, 8);
}

/**
 * The dispatcher's steering (element.ts `steer`): an IP-in-IP packet by its inner TCP connection, as its
 * table entry is keyed, so the packet finds the entry on whichever shard holds it; anything else by its
 * own flow (the same hash for a packet before a LoadBalancer encapsulates it).
 */
export function steer(self: BeamerBackendState, p: Packet): u32 {
  const ip = IPv4.header(p);
  if (ip && IPv4.protocol(ip) == IPPROTO_IPIP && !IPv4.isFragment(ip)) {
    const hl = IPv4.headerLength(ip);
    const inner = ip + hl;
    if (innerValid(inner, IPv4.totalLength(ip) - hl) && IPv4.fragmentOffset(inner) == 0) {
      const l4 = inner + IPv4.headerLength(inner);
      const room = IPv4.totalLength(inner) - IPv4.headerLength(inner);
      if (IPv4.protocol(inner) == IPPROTO_TCP && room >= 4) return connectionHash(IPv4.src(inner), IPv4.dst(inner), Transport.srcPort(l4), Transport.dstPort(l4));
      // An ICMP error about a connection goes with it, to the shard that holds its entry.
      const quoted = room >= 8 ? quotedTcp(inner, l4) : 0;
      if (quoted) {
        const ql4 = quoted + IPv4.headerLength(quoted);
        return connectionHash(IPv4.src(quoted), IPv4.dst(quoted), Transport.srcPort(ql4), Transport.dstPort(ql4));
      }
    }
  }
  return symmetricHash(p);
}

@inline function connectionHash(a: u32, b: u32, portA: u16, portB: u16): u32 {
  return symmetricHashOf(a, b, <u32>(portA ^ portB), IPPROTO_TCP);
}

/** When the inner packet at `inner` is an ICMP error quoting a first TCP fragment (RFC 792: its IP header and at least 8 bytes), the quoted header; else 0. */
function quotedTcp(inner: usize, l4: usize): usize {
  if (IPv4.protocol(inner) != IPPROTO_ICMP || !ICMP.isError(ICMP.type(l4))) return 0;
  const quoted = l4 + 8;
  const end = inner + IPv4.totalLength(inner);
  if (quoted + IPv4.MIN_HEADER > end || (load<u8>(quoted) >> 4) != 4) return 0;
  const qhl = IPv4.headerLength(quoted);
  if (qhl < IPv4.MIN_HEADER || quoted + qhl + 8 > end || IPv4.protocol(quoted) != IPPROTO_TCP || IPv4.fragmentOffset(quoted) != 0) return 0;
  return quoted;
}

/** The key of the connection a quoted packet the server sent belongs to, as the client's packets make it (innerKey). */
function quotedKey(quoted: usize, key: usize): void {
  const ql4 = quoted + IPv4.headerLength(quoted);
  store<u32>(key, IPv4.dst(quoted));
  store<u32>(key, IPv4.src(quoted), 4);
  store<u32>(key, (<u32>Transport.dstPort(ql4) << 16) | <u32>Transport.srcPort(ql4), 8);
  store<u32>(key, <u32>IPPROTO_TCP, 12);
}

/** Whether the inner packet is an ICMP error about a TCP connection the table does not hold. */
function unknownQuoted(table: FlowTable, inner: usize, l4: usize, key: usize, t: u64): bool {
  const quoted = quotedTcp(inner, l4);
  if (!quoted) return false;
  quotedKey(quoted, key);
  return !table.find(key, FlowKey.hash(key), t);
}

/** Whether a frame whose IPv4 header IPv4.header refused (its lengths are wrong) is IP-in-IP to this backend. */
function brokenTunnel(self: BeamerBackendState, p: Packet): bool {
  if (Ethernet.etherType(p) != ETHERTYPE_IPV4 || <u32>p.length < <u32>p.l3Offset + IPv4.MIN_HEADER || IPv4.capturedHeader(p)) return false;
  const ip = p.data + <usize>p.l3Offset;
  return IPv4.protocol(ip) == IPPROTO_IPIP && IPv4.dst(ip) == self.address;
}

/**
 * After a FIN or RST only the last packets of a connection belong to it: those up to CLOSING_WINDOW
 * bytes before the end of its sequence space. A client that reuses the 5-tuple for a new connection
 * (HTTP servers close first, so the client's port is free at once) starts at a random sequence number
 * and is then not taken for the old one, which would stall it on a server that no longer knows it.
 */
@inline function belongs(entry: BeamerBackendConnectionsEntry, seq: u32): bool {
  return !entry.closing || entry.end_seq - seq <= CLOSING_WINDOW;
}

/** True when `room` bytes at `inner` hold a whole IPv4 header and the packet its total length claims. */
function innerValid(inner: usize, room: u32): bool {
  if (room < IPv4.MIN_HEADER) return false;
  const vihl = load<u8>(inner);
  const hl = (<u32>vihl & 15) << 2;
  const total = IPv4.totalLength(inner);
  return (vihl >> 4) == 4 && hl >= IPv4.MIN_HEADER && total >= hl && total <= room;
}

/** An inner TCP, UDP or ICMP packet (its first fragment, if fragmented) without its whole transport header (Transport.header found none). */
@inline function transportCutShort(inner: usize): bool {
  const proto = IPv4.protocol(inner);
  return IPv4.fragmentOffset(inner) == 0 && (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_ICMP);
}

/** The inner TCP packet's 5-tuple, as FlowKey.fromPacket writes it. */
function innerKey(inner: usize, l4: usize, key: usize): void {
  store<u32>(key, IPv4.src(inner));
  store<u32>(key, IPv4.dst(inner), 4);
  store<u32>(key, (<u32>Transport.srcPort(l4) << 16) | <u32>Transport.dstPort(l4), 8);
  store<u32>(key, <u32>IPPROTO_TCP, 12);
}

/**
 * Re-addresses the packet to the previous backend its option names, if the bucket changed within the
 * window and no backend forwarded it before, and marks it forwarded. False when it stays here.
 */
function daisyChain(self: BeamerBackendState, p: Packet, ip: usize, hl: u32): bool {
  if (hl < OPTION_END || load<u8>(ip, 20) != OPTION_TYPE || load<u8>(ip, 21) != OPTION_LENGTH) return false;
  const flags = Wire.get16(ip + 22);
  const previous = Wire.get32(ip + 24);
  const ageNs = <u64>Wire.get32(ip + 32) * 1000000;
  if (flags & MARK_FORWARDED || !isHost(previous) || previous == self.address || ageNs >= self.daisy_window) return false;
  IPv4.setDst(p, ip, previous);
  const marked = flags | MARK_FORWARDED;
  Wire.set16(ip + 22, marked);
  Wire.set16(ip + 10, updateChecksum16(Wire.get16(ip + 10), flags, marked));
  return true;
}

/** 0.0.0.0 (the mux's "no previous backend") and 224.0.0.0 up (multicast, reserved, broadcast) name no backend. */
@inline function isHost(address: u32): bool {
  return address != 0 && address < 0xe0000000;
}

/** Removes the outer header, keeping the layer 2 header in front of the inner packet. */
function decapsulate(p: Packet, hl: u32): void {
  const l2 = <usize>p.l3Offset;
  const from = p.data;
  // copyBytes copies forwards in blocks: only for headers that do not overlap their new place.
  if (l2 <= <usize>hl) copyBytes(from + hl, from, l2);
  else memory.copy(from + hl, from, l2);
  p.dataOffset += <u16>hl;
  p.length -= hl;
  p.wireLength = p.wireLength > hl ? p.wireLength - hl : p.length;
}
