import { Batch, Outputs, Packet, FlowTable, FlowKey, IPv4, Transport, TCP, ICMP, Wire, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, keyBuffer, shardIndex, flowCreated, now, dropPacket, batchScratch, BATCH_SCRATCH_BYTES } from "wirepath";
import { FilterState, FilterConnectionsEntry } from "./layout";
import { Interpreter, NO_MATCH } from "../classifier/program";

const DENY: u32 = 0xffffffff;
/** rule_table (element.ts): [rule count u32][unused u32][action u32 per rule][hit rows from 8-byte alignment]. */
const ACTIONS: usize = 8;

// Connection states: TCP walks SYN_SENT -> SYN_RECEIVED -> ESTABLISHED -> CLOSING; UDP and ICMP are DATAGRAM.
const SYN_SENT: u8 = 1;
const SYN_RECEIVED: u8 = 2;
const ESTABLISHED: u8 = 3;
const CLOSING: u8 = 4;
const DATAGRAM: u8 = 5;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO: u8 = 8;
const SYN_ACK: u8 = TCP.SYN | TCP.ACK;

// Per packet, set by connectionKey: the packet's source endpoint and what kind of packet it is.
let packetSrc: u32 = 0;
let packetPort: u16 = 0;
let tcpFlags: u8 = 0;
let icmpType: u8 = 0;
let protocol: u8 = 0;
/** The packet is an ICMP error about a connection (the key is the connection's it quotes): it passes when that one is tracked, and opens nothing. */
let related: bool = false;

export function process(self: FilterState, batch: Batch, out: Outputs): void {
  processWith<Interpreter>(self, batch, out);
}

/** The batch loop around a decider (classifier/program.ts): a type parameter, so its call is direct. */
@inline export function processWith<Decider>(self: FilterState, batch: Batch, out: Outputs): void {
  const decider = changetype<Decider>(0);
  if (!self.hit_row) claimHitRow(self);
  // Read once and counted in locals: the hit counters' stores could alias the state's fields.
  const hits = <usize>self.hit_row;
  const actions = self.rule_table + ACTIONS;
  const program = self.program;
  const stateful = self.stateful;
  const unmatched: u32 = self.default == 0 ? DENY : 0;
  let allowed: u64 = 0, denied: u64 = 0, tracked: u64 = 0, invalid: u64 = 0;
  const t = now();
  if (stateful && self.connections.worthTouching()) touchConnections(self, batch);
  for (let i: u32 = 0; i < batch.count; i++) {
    const p = batch.packet(i);
    const key = stateful && connectionKey(p) ? keyBuffer() : 0;
    if (key) {
      const hash = FlowKey.hash(key);
      let entry = self.connections.find(key, hash, t);
      // A SYN on a closing connection opens a new one on its ports: that one meets the rules (it passed as the old one's).
      if (entry && !related && reopens(changetype<FilterConnectionsEntry>(entry))) {
        self.connections.remove(key, hash);
        entry = 0;
      }
      if (entry) {
        // An ICMP error about a tracked connection (fragmentation needed, unreachable) passes and moves it on not at all.
        if (related || follow(self, changetype<FilterConnectionsEntry>(entry), key, hash, t)) { tracked++; out.push(0, p); }
        else { invalid++; dropPacket(p); }
        continue;
      }
    }
    const rule = decider.decide(program, p);
    let action = unmatched;
    if (rule != NO_MATCH) {
      action = load<u32>(actions + (<usize>rule << 2));
      const hit = hits + (<usize>rule << 3);
      store<u64>(hit, load<u64>(hit) + 1);
    }
    if (action == DENY) { denied++; dropPacket(p); continue; }
    if (action == 0) {
      if (key && opens() && !open(self, p, key, t)) { dropPacket(p); continue; }
      allowed++;
    }
    out.push(<i32>action, p);
  }
  self.allowed += allowed;
  self.denied += denied;
  self.tracked += tracked;
  self.invalid += invalid;
  if (stateful) self.connections.sweep(t, 8);
}

/** What touchConnections read, kept so that its loads stay. */
let touched: u32 = 0;

/**
 * Starts the connection lookups of a batch: hashes each packet's connection key, then touches every
 * one's slot in one short loop before the first lookup, so that their cache misses overlap (as NAT's
 * touchSessions; a large table misses on nearly every lookup). The hashes are hints (FlowKey.hintHash:
 * writeKey's words for TCP and UDP, unchecked).
 */
function touchConnections(self: FilterState, batch: Batch): void {
  const hashes = batchScratch();
  const count = min(batch.count, BATCH_SCRATCH_BYTES >> 2);
  let n: u32 = 0;
  for (let i: u32 = 0; i < count; i++) {
    const hash = FlowKey.hintHash(batch.packet(i), true);
    if (!hash) continue;
    store<u32>(hashes + (<usize>n << 2), hash);
    n++;
  }
  touched += self.connections.touch(hashes, n);
}

/**
 * Finds this shard's row of hit counters, the row of its index: no other running shard writes it (counting by how many
 * rows were claimed ran out of rows after 64 shards made by scale events, and later ones shared the last).
 */
function claimHitRow(self: FilterState): void {
  const table = self.rule_table;
  const rules = load<u32>(table);
  const rows = (ACTIONS + (<usize>rules << 2) + 7) & ~<usize>7;
  self.hit_row = <u64>(table + rows + <usize>shardIndex() * <usize>rules * 8);
}

/**
 * Writes the connection key of an IPv4 TCP, UDP or ICMP echo packet into keyBuffer(): the two endpoints
 * in a fixed order, so that both directions find one entry. False for anything else (no connection). A frame
 * a capture cut short is keyed by its headers, as the dispatcher steers it (FlowKey.fromPacket).
 */
function connectionKey(p: Packet): bool {
  related = false;
  const ip = IPv4.capturedHeader(p);
  if (!ip) return false;
  const l4 = Transport.header(p, ip);
  if (!l4) return false;
  protocol = IPv4.protocol(ip);
  if (protocol == IPPROTO_ICMP) {
    icmpType = ICMP.type(l4);
    if (ICMP.isError(icmpType)) {
      // The key of the connection it quotes (the dispatcher steers it by that one too: io.ts icmpHash).
      const inner = l4 + 8, end = IPv4.end(p, ip);
      if (inner + 20 > end || (load<u8>(inner) >> 4) != 4) return false;
      const innerL4 = inner + IPv4.headerLength(inner);
      if (innerL4 + 8 > end || IPv4.fragmentOffset(inner) != 0) return false;
      related = true;
      protocol = IPv4.protocol(inner);
      return protocol == IPPROTO_ICMP
        ? writeKey(IPv4.src(inner), IPv4.dst(inner), Wire.get16(innerL4 + 4), 0)
        : (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP) && writeKey(IPv4.src(inner), IPv4.dst(inner), Transport.srcPort(innerL4), Transport.dstPort(innerL4));
    }
  }
  let srcPort: u16, dstPort: u16;
  if (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP) {
    srcPort = Transport.srcPort(l4);
    dstPort = Transport.dstPort(l4);
    tcpFlags = protocol == IPPROTO_TCP ? TCP.flags(l4) : 0;
  } else if (protocol == IPPROTO_ICMP) {
    if (icmpType != ICMP_ECHO && icmpType != ICMP_ECHO_REPLY) return false;
    // An echo exchange is identified by its identifier, on both sides; it stands where the source
    // port goes, as in FlowKey, so that the dispatcher and state moves agree on the connection's shard.
    srcPort = Wire.get16(l4 + 4);
    dstPort = 0;
  } else return false;
  const src = IPv4.src(ip), dst = IPv4.dst(ip);
  packetSrc = src;
  packetPort = srcPort;
  return writeKey(src, dst, srcPort, dstPort);
}


/** Writes the key of the connection between two endpoints into keyBuffer(), in a fixed order so that both directions find one entry. */
function writeKey(src: u32, dst: u32, srcPort: u16, dstPort: u16): bool {
  const srcFirst = src < dst || (src == dst && srcPort <= dstPort);
  const key = keyBuffer();
  store<u32>(key, srcFirst ? src : dst);
  store<u32>(key, srcFirst ? dst : src, 4);
  // An echo's identifier stays where the source port goes in either direction.
  const ports = protocol == IPPROTO_ICMP ? <u32>srcPort << 16 : srcFirst ? (<u32>srcPort << 16) | dstPort : (<u32>dstPort << 16) | srcPort;
  store<u32>(key, ports, 8);
  store<u32>(key, <u32>protocol, 12);
  return true;
}

/** True when an allowed packet starts a connection: a TCP SYN, a UDP datagram, an ICMP echo request. */
@inline function opens(): bool {
  if (related) return false;
  if (protocol == IPPROTO_TCP) return (tcpFlags & (TCP.SYN | TCP.ACK | TCP.RST | TCP.FIN)) == TCP.SYN;
  if (protocol == IPPROTO_ICMP) return icmpType == ICMP_ECHO;
  return true;
}

/** Creates the entry of a connection the rules allowed; false when the table is full and when_full is deny. */
function open(self: FilterState, p: Packet, key: usize, t: u64): bool {
  const value = self.connections.lookupOrInsert(key, FlowKey.hash(key), t, p);
  if (!value) { self.table_full++; return self.when_full == 1; }
  const entry = changetype<FilterConnectionsEntry>(value);
  if (flowCreated) {
    entry.orig_src = packetSrc;
    entry.orig_port = packetPort;
    entry.state = protocol == IPPROTO_TCP ? SYN_SENT : DATAGRAM;
  }
  FlowTable.refresh(value, t, timeout(self, entry.state));
  return true;
}

/** Whether this packet, a TCP SYN on a connection that is closing, starts a new connection on the same ports. */
@inline function reopens(entry: FilterConnectionsEntry): bool {
  return protocol == IPPROTO_TCP && entry.state == CLOSING && (tcpFlags & (SYN_ACK | TCP.RST)) == TCP.SYN;
}

/** Moves a tracked connection on with this packet; false when the packet does not fit its state. */
function follow(self: FilterState, entry: FilterConnectionsEntry, key: usize, hash: u32, t: u64): bool {
  const fromOriginator = packetSrc == entry.orig_src && packetPort == entry.orig_port;
  if (protocol == IPPROTO_ICMP) {
    if (icmpType != (fromOriginator ? ICMP_ECHO : ICMP_ECHO_REPLY)) return false;
  } else if (protocol == IPPROTO_TCP) {
    if (tcpFlags & TCP.RST) { self.connections.remove(key, hash); return true; }
    const syn = (tcpFlags & SYN_ACK) == TCP.SYN, synAck = (tcpFlags & SYN_ACK) == SYN_ACK;
    const state = entry.state;
    if (state == SYN_SENT) {
      if (!fromOriginator && synAck) entry.state = SYN_RECEIVED;
      else if (!(fromOriginator && syn)) return false;
    } else if (state == SYN_RECEIVED) {
      if (fromOriginator && (tcpFlags & SYN_ACK) == TCP.ACK) entry.state = ESTABLISHED;
      else if (!(fromOriginator ? syn : synAck)) return false;
    }
    // After the handshake a SYN belongs to no connection; a SYN-ACK is the responder's, sent again.
    else if (tcpFlags & TCP.SYN && !(synAck && !fromOriginator)) return false;
    if (tcpFlags & TCP.FIN && entry.state >= ESTABLISHED) entry.state = CLOSING;
  }
  FlowTable.refresh(changetype<usize>(entry), t, timeout(self, entry.state));
  return true;
}

@inline function timeout(self: FilterState, state: u8): u64 {
  if (state == ESTABLISHED) return self.tcp_established;
  if (state == CLOSING) return self.tcp_closing;
  if (state == DATAGRAM) return protocol == IPPROTO_ICMP ? self.icmp_timeout : self.udp_timeout;
  return self.tcp_handshake;
}
