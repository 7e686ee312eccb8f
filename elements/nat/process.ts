import {
  Batch, Outputs, Packet, FlowTable, FlowKey, Ethernet, IPv4, Transport, TCP, ICMP, Wire, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP,
  ENTRY_LIVE, ENTRY_KEY, ENTRY_VALUE, PACKET_RESTEERED, keyBuffer, batchScratch, BATCH_SCRATCH_BYTES, flowCreated, now, dropPacket, newPacket, resteer, addressHash, symmetricHashOf, checksum,
  replace16, replace32, adjustChecksum, copyBytes, zeroBytes, META_SIZE,
} from "wirepath";
import { NATState, NATSubscribersEntry, NATMappingsEntry, NATSessionsEntry, NATFragmentIdsEntry } from "./layout";
import {
  PCP_PORT, OP_MAP, OP_PEER, HEADER, MAP_BODY, PEER_BODY, SUCCESS, SILENT, NOT_AUTHORIZED, MALFORMED_REQUEST, UNSUPP_PROTOCOL, NO_RESOURCES, USER_EX_QUOTA,
  CANNOT_PROVIDE_EXTERNAL, preferFailure, checkRequest, errorLifetime, errorAnswerLength, prepareAnswer, writeHeader, sendBack,
} from "./pcp";

// The small helpers of a translated packet's path are @inline: V8 saves every live register around a
// WebAssembly call, which cost more than their bodies (measured: CheckIPHeader -> NAT at 1k sessions 12 %
// faster with them and FlowTable.find, FlowKey.hash, IPv4.header and Transport.header inlined).

// The pool data's header (pool.ts HEADER): u32 fields at these offsets.
const POOL_ADDRESSES: usize = 0;
const POOL_BLOCK_SHIFT: usize = 4;
const POOL_DETERMINISTIC: usize = 8;
const POOL_DET_PORTS: usize = 12;
const POOL_DET_RATIO: usize = 16;
const POOL_INSIDE_COUNT: usize = 20;
const POOL_LOG_WRITE: usize = 24;
const POOL_LOG_READ: usize = 28;
const POOL_LOG_CAPACITY: usize = 32;
const POOL_EXEMPT_COUNT: usize = 36;
const POOL_ADDRESSES_AT: usize = 40;
const POOL_BLOCKS_AT: usize = 44;
const POOL_INSIDE_AT: usize = 48;
const POOL_EXEMPT_AT: usize = 52;
const POOL_LOG_AT: usize = 56;
const POOL_EXEMPT_PORTS_AT: usize = 60;
const POOL_ICMP_SOURCE: usize = 64;
const POOL_MIN: usize = 68;
const POOL_MAX: usize = 72;
const POOL_SALT: usize = 76;
const POOL_LOGGING: usize = 80;
const POOL_PCP_EPOCH: usize = 88;
const POOL_IDS_AT: usize = 96;
const POOL_ID_BUCKETS: usize = 100;
const LOG_RECORD: usize = 32;

// Outputs.
const OUTSIDE = 0;
const INSIDE = 1;

// Kinds of entries in the mappings table (the key's last word: protocol | kind << 8).
const KIND_OUT: u32 = 1;    // [inside][remote or 0][inside port << 16 | remote port or 0] -> external port
const KIND_IN: u32 = 2;     // [inside][0][external port << 16] -> inside port, remote
const KIND_FILTER: u32 = 3; // [inside][remote][external port << 16] -> a remote address the mapping has sent to
const KIND_FRAGMENT: u32 = 4; // [inside][remote][IP id]: the first fragment of an inbound datagram went to this subscriber, so its later ones may
const KIND_FRAGMENT_AT: u32 = 5; // [external][remote][IP id] -> inside: the same, found without fragment_owners (on the shard that translated the first)
/**
 * A KIND_OUT entry's remote_port: bit 0 MADE_BY_REQUEST (made by a PCP or NAT-PMP request, and no session has used it
 * since: usedByTraffic), the bits above it the sessions that use the mapping (countOnMapping).
 */
const MADE_BY_REQUEST: u16 = 1;
const SESSION_COUNT_SHIFT: u16 = 1;

// Mapping and filtering behaviours (element.ts MAPPINGS).
const ENDPOINT_INDEPENDENT: u8 = 0;
const ADDRESS_DEPENDENT: u8 = 1;
const ADDRESS_AND_PORT_DEPENDENT: u8 = 2;

// TCP session bits: which directions were seen, FIN, RST.
const TCP_OUT: u8 = 1;
const TCP_IN: u8 = 2;
const TCP_FIN: u8 = 4;
const TCP_RST: u8 = 8;

const FRAGMENT_TIMEOUT: u64 = 2_000_000_000;
const SECOND: u64 = 1_000_000_000;
/** Subscriber entries live until the NAT removes them (after giving their blocks back). */
const FOREVER: u64 = 0x7fffffffffffffff;
/** Blocks slots per protocol in a subscriber entry (b0..b11: TCP, UDP, ICMP; u0..u11 until when, c0..c11 live mappings). */
const SLOTS: u32 = 4;
const NO_SLOT: u32 = 0xffffffff;
/**
 * In a block's count of live mappings: its `until` was brought forward when the count came to 0 (a closed connection's
 * mapping ends long before the deadline its block was given), so before it is released its ports are looked through
 * for live mappings; a count that went wrong (a mapping moved in without its subscriber's count) holds the block then.
 */
const BLOCK_LOWERED: u16 = 0x8000;
const FAILED: u32 = 0x10000;

// Why a mapping could not be made.
const FAIL_TABLE: u32 = 1;
const FAIL_PORTS: u32 = 2;
const FAIL_POOL: u32 = 3;
const FAIL_SESSIONS: u32 = 4;
const FAIL_LOG: u32 = 5;

// Per packet, set by the parsers.
let protocol: u8 = 0;
let localPort: u16 = 0;  // the inside host's port (outbound: source; inbound: after lookup)
let remotePort: u16 = 0;
let failure: u32 = 0;
/**
 * While a PCP or NAT-PMP request makes a mapping: the external port and address the client suggested (0: none),
 * taken when free; with `wantedOnly` (PREFER_FAILURE), those or no mapping.
 */
let wantedPort: u16 = 0;
let wantedAddress: u32 = 0;
let wantedOnly = false;

// While a batch runs: where the answers to unsolicited SYNs go, and how many more it may send (each
// output has room for twice the packets its inputs bring: expands in element.ts).
let answers: Outputs | null = null;
let answerBudget: u32 = 0;
// The outside output's room is shared by the two inputs as element.ts `expands` sizes it: each packet of an
// input batch's capacity may take the pieces of a 1500-byte packet and one answer. A batch stays within its
// share whatever the other input's does; a packet that needs more pieces takes only room that the packets
// after it in the batch, and the answers still to come, cannot need (fragment).
let outsideAtStart: u32 = 0;
let outsideShare: u32 = 0;
let packetsLeft: u32 = 0;

export function process(self: NATState, batch: Batch, out: Outputs, port: i32): void {
  const t = now();
  expireWith(self, out);
  answerBudget = batch.capacity;
  outsideAtStart = out.port(OUTSIDE).count;
  outsideShare = batch.capacity * roomPerPacket(self);
  if (port == 0 && self.sessions.worthTouching()) touchSessions(self, batch);
  for (let i: u32 = 0; i < batch.count; i++) {
    const p = batch.packet(i);
    packetsLeft = batch.count - i - 1;
    if (port == 0) outbound(self, p, out, t);
    else inbound(self, p, out, t, false);
  }
  expireDue(self, t);
  answers = null;
}

/**
 * The sweeps go round each table at least about this often (ns of the clock), however often batches come: an expired
 * mapping is found, and its block's count of mappings lowered, within it (8 slots a batch took hours on a quiet NAT).
 */
const SWEEP_ROUND_NS: u64 = 5 * SECOND;

/**
 * No packets for 100 ms of the clock (element.ts `tick`): idle blocks are given back and unsolicited SYNs answered
 * when due, not at the next packet, which a quiet NAT may not see for minutes.
 */
export function tick(self: NATState, out: Outputs): void {
  expireWith(self, out);
  const outside = out.port(OUTSIDE);
  answerBudget = outside.capacity - outside.count;
  expireDue(self, now());
  answers = null;
}

/** What expires when this shard's tables find an entry past its time (set for each batch: `answers` is the batch's). */
@inline function expireWith(self: NATState, out: Outputs): void {
  self.sessions.whenExpired(sessionExpired, changetype<usize>(self));
  self.mappings.whenExpired(mappingExpired, changetype<usize>(self));
  if (self.syn_icmp) self.unsolicited.whenExpired(answerUnsolicited, changetype<usize>(self));
  answers = out;
}

/** The timed work: a sweep of each table, then blocks whose mappings have all ended, due SYN answers. */
function expireDue(self: NATState, t: u64): void {
  sweepTables(self, t);
  releaseIdleBlocks(self, t, idleSearchBudget(self, t));
  if (self.syn_icmp) answerDueSyns(self, t);
}

/** Sweeps each table as far as the clock moved since the last sweep asks (a round in SWEEP_ROUND_NS). */
function sweepTables(self: NATState, t: u64): void {
  const elapsed = self.sweep_ns != 0 && t > self.sweep_ns ? t - self.sweep_ns : 0;
  self.sweep_ns = t;
  self.sessions.sweep(t, sweepBudget(self.sessions, elapsed));
  sweepMappings(self, t, sweepBudget(self.mappings, elapsed));
  self.fragment_ids.sweep(t, sweepBudget(self.fragment_ids, elapsed));
}

/**
 * Slots a sweep looks at after `elapsed` ns of the clock: 8, or so many that a round takes SWEEP_ROUND_NS (all after a
 * longer gap); none in a table with no entry (a quiet NAT's ticks cost nothing).
 */
function sweepBudget(table: FlowTable, elapsed: u64): u32 {
  if (!table.live) return 0;
  const share = elapsed >= SWEEP_ROUND_NS ? table.slots : <u32>((<u64>table.slots * elapsed) / SWEEP_ROUND_NS);
  return max<u32>(share, 8);
}

/**
 * Sweeps `budget` slots of the mappings table, noting when a round ends: a mapping that expired before the round
 * began has been found then (mappingExpired counted it off its block), so mappings_swept_ns is that beginning.
 */
function sweepMappings(self: NATState, t: u64, budget: u32): void {
  const table = self.mappings;
  if (!table.live) {
    // Nothing in it, expired or not: nothing left to find.
    self.mappings_swept_ns = self.mappings_round_ns = t;
    return;
  }
  const wraps = <u64>table.cursor + budget >= <u64>table.slots;
  table.sweep(t, budget);
  if (!wraps) return;
  self.mappings_swept_ns = budget >= table.slots ? t : self.mappings_round_ns;
  self.mappings_round_ns = t;
}

/** How often the whole unsolicited table is looked through while it holds SYNs: their answers come this late at most. */
const UNSOLICITED_SWEEP_NS: u64 = 100_000_000;

/**
 * Answers the unsolicited SYNs whose 6 s are over. A few slots per batch would reach one late on a quiet NAT (the
 * table has 8192): while it holds any, all of it is looked through every UNSOLICITED_SWEEP_NS of the clock.
 */
function answerDueSyns(self: NATState, t: u64): void {
  const table = self.unsolicited;
  if (table.live && t >= self.syn_sweep_ns) {
    table.sweep(t, table.slots);
    self.syn_sweep_ns = t + UNSOLICITED_SWEEP_NS;
  } else table.sweep(t, 32);
}

/** What touchSessions read, kept so that its loads stay. */
let touched: u32 = 0;

/**
 * Starts the session lookups of a batch from inside: hashes each packet's session key, then touches every one's
 * slot before the first lookup, so that their cache misses overlap instead of coming one per packet (at 100k
 * sessions a miss costs more than the rest of a packet's work). The touches must come in one short loop: spread
 * over the packets' work, each would stall as long as a lookup (measured: slower than none). The hashes are
 * hints (FlowKey.hintHash: sessionKey's words, unchecked).
 */
function touchSessions(self: NATState, batch: Batch): void {
  const hashes = batchScratch();
  const count = min(batch.count, BATCH_SCRATCH_BYTES >> 2);
  let n: u32 = 0;
  for (let i: u32 = 0; i < count; i++) {
    const hash = FlowKey.hintHash(batch.packet(i), false);
    if (!hash) continue;
    store<u32>(hashes + (<usize>n << 2), hash);
    n++;
  }
  touched += self.sessions.touch(hashes, n);
}

/**
 * The dispatcher's steering (element.ts `steer`): by the subscriber that sent the packet, or that holds its destination
 * port. A frame a capture cut short goes by its headers too: the NAT drops it, but elements before it key its flow.
 */
export function steer(self: NATState, p: Packet): u32 {
  const ip = IPv4.capturedHeader(p);
  if (!ip) return 0;
  const pool = <usize>self.pool;
  // From a subscriber (also when hairpinned): its own shard.
  if (isInside(pool, IPv4.src(ip))) return addressHash(IPv4.src(ip));
  let external = IPv4.dst(ip);
  let port: u16 = 0;
  let proto = IPv4.protocol(ip);
  // A later fragment (no ports) follows its datagram's first fragment, where that one came first.
  if (IPv4.fragmentOffset(ip) != 0) return addressHash(fragmentOwner(self, ip, 0));
  const l4 = Transport.header(p, ip);
  if (!l4) return addressHash(external);
  if (proto == IPPROTO_ICMP) {
    const type = ICMP.type(l4);
    if (ICMP.isError(type)) {
      const inner = quoted(p, ip, l4);
      if (!inner) return 0;
      external = IPv4.src(inner);
      proto = IPv4.protocol(inner);
      port = quotedPort(inner, true);
    } else port = Wire.get16(l4 + 4);
  } else port = Transport.dstPort(l4);
  const a = poolIndex(pool, external);
  if (a < 0) return addressHash(external);
  const owner = ownerOf(pool, <u32>a, port, classOf(proto));
  const target = owner ? owner : external;
  if (IPv4.moreFragments(ip)) fragmentOwner(self, ip, target);
  return addressHash(target);
}

/** Slots of fragment_owners (element.ts): [datagram tag u32][subscriber, or address whose shard has it u32] each, stored as one u64. */
const FRAGMENT_OWNERS: u32 = 65536;

/**
 * Memory of inbound fragmented datagrams, shared by the dispatcher and the shards: records `owner` for the packet's
 * datagram when it is not 0 (the dispatcher, for every first fragment it steers; a shard, for each one it
 * translates), and returns the one recorded, or the packet's destination when none is (a later fragment that
 * came first, or one whose slot another datagram took since: its shard counts it as a fragment without a first).
 */
function fragmentOwner(self: NATState, ip: usize, owner: u32): u32 {
  const tag = datagramTag(IPv4.src(ip), IPv4.dst(ip), ip);
  if (owner) {
    recordFragmentOwner(self, tag, owner);
    return owner;
  }
  const recorded = recordedFragmentOwner(self, tag);
  return recorded ? recorded : IPv4.dst(ip);
}

/** A datagram's tag (never 0): its addresses (either way round), ID and protocol hashed. */
@inline function datagramTag(a: u32, b: u32, ip: usize): u32 {
  return symmetricHashOf(a, b, <u32>IPv4.id(ip), IPv4.protocol(ip)) | 1;
}

@inline function fragmentOwnerSlot(self: NATState, tag: u32): usize {
  return <usize>self.fragment_owners + (<usize>(tag & (FRAGMENT_OWNERS - 1)) << 3);
}

/** Tag and owner in one store: a reader on another thread never sees one datagram's tag with another's owner. */
@inline function recordFragmentOwner(self: NATState, tag: u32, owner: u32): void {
  atomic.store<u64>(fragmentOwnerSlot(self, tag), (<u64>owner << 32) | <u64>tag);
}

@inline function recordedFragmentOwner(self: NATState, tag: u32): u32 {
  const slot = atomic.load<u64>(fragmentOwnerSlot(self, tag));
  return <u32>slot == tag ? <u32>(slot >> 32) : 0;
}

// ---------------------------------------------------------------------------------------------
// Inside to outside.

/** A packet from inside. Inlined into process, its one caller: a call less per packet (measured: 3 %). */
@inline function outbound(self: NATState, p: Packet, out: Outputs, t: u64): void {
  // A hairpinned packet handed over by the sender's shard: already translated, now for its target.
  if (p.flags & PACKET_RESTEERED) { inbound(self, p, out, t, true); return; }
  const ip = IPv4.header(p);
  if (!ip) { self.drop_malformed++; dropPacket(p); return; }
  const pool = <usize>self.pool;
  const inside = IPv4.src(ip);
  const remote = IPv4.dst(ip);
  if (!isInside(pool, inside)) { self.drop_not_inside++; dropPacket(p); return; }
  // Unless exempt: an operator may pass multicast through untranslated.
  if (!isHostAddress(remote) && !isExempt(pool, remote, 0)) { self.drop_bad_destination++; dropPacket(p); return; }
  if (self.has_pcp_server && remote == self.pcp_server) {
    // The NAT's own address answers PCP requests, and nothing else: the rest would leave with an inside destination.
    if (isPcp(p, ip)) pcpRequest(self, p, ip, out, t);
    else { self.drop_unsupported++; dropPacket(p); }
    return;
  }
  if (self.mtu && IPv4.totalLength(ip) > self.mtu && (Wire.get16(ip + 6) & IP_DONT_FRAGMENT) && poolIndex(pool, remote) < 0) {
    tooBig(self, p, ip, out);
    return;
  }
  if (IPv4.fragmentOffset(ip) != 0) { outboundLaterFragment(self, p, ip, out, t); return; }
  protocol = IPv4.protocol(ip);
  if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP && protocol != IPPROTO_ICMP) { self.drop_unsupported++; dropPacket(p); return; }
  const l4 = Transport.header(p, ip);
  if (!l4 || udpLengthWrong(ip, l4)) { self.drop_malformed++; dropPacket(p); return; }
  if (protocol == IPPROTO_ICMP) {
    const type = ICMP.type(l4);
    if (ICMP.isError(type)) { outboundIcmpError(self, p, ip, l4, out, t); return; }
    if (!isIcmpRequest(type)) { self.drop_unsupported++; dropPacket(p); return; }
    localPort = Wire.get16(l4 + 4);
    remotePort = 0;
  } else {
    localPort = Transport.srcPort(l4);
    remotePort = Transport.dstPort(l4);
  }
  if (isExempt(pool, remote, protocol == IPPROTO_ICMP ? 0 : remotePort)) {
    if (IPv4.moreFragments(ip)) exemptDatagram(self, inside, remote, ip, true, t);
    self.exempted++; sendOut(self, p, out); return;
  }

  let session = outboundSession(self, inside, remote, t);
  if (!session) { refuse(self, p, ip, out); return; }
  let s = changetype<NATSessionsEntry>(session);
  const flags: u8 = protocol == IPPROTO_TCP ? TCP.flags(l4) : 0;
  const timeout = sessionTimeout(self, s, flags, TCP_OUT);
  const deadline = t + timeout;
  // Outbound packets refresh the mapping (RFC 4787 REQ-6). It is pushed an eighth of the timeout further
  // than the session needs, so that a busy session looks its mapping up once per that eighth, not per packet.
  if (deadline > s.mapping_until) {
    const mappingDeadline = deadline + (timeout >> 3);
    if (!refreshMapping(self, inside, remote, s.external_port, mappingDeadline, t)) {
      // The mapping is gone (the table was full when it was to be made again): start over.
      const key = keyBuffer();
      sessionKey(key, inside, remote, localPort, remotePort);
      if (self.sessions.remove(key, FlowKey.hash(key))) countSession(self, inside, t, -1);
      session = outboundSession(self, inside, remote, t);
      if (!session) { refuse(self, p, ip, out); return; }
      s = changetype<NATSessionsEntry>(session);
      sessionTimeout(self, s, flags, TCP_OUT);
      // The new mapping lives as long as the session counts on (mapping_until below), not the idle timeout it was made with.
      refreshMapping(self, inside, remote, s.external_port, mappingDeadline, t);
    }
    s.mapping_until = mappingDeadline;
  }
  setSessionDeadline(session, s, deadline);
  if (flags & (TCP.FIN | TCP.RST)) endsWithSession(self, inside, remote, s, deadline, t);
  translate(ip, l4, s.external, s.external_port, true);
  renumber(self, ip, inside, s.external, t);
  if (self.syn_icmp && (flags & (TCP.SYN | TCP.ACK)) == TCP.SYN) forgetUnsolicited(self, inside, s.external, s.external_port, remote);
  self.translated_out++;
  if (poolIndex(pool, remote) >= 0) {
    // Hairpinning (RFC 4787 REQ-9): back inside, seen from the sender's external address and port.
    inbound(self, p, out, t, true);
    return;
  }
  sendOut(self, p, out);
}

/** The session of the packet's inside 5-tuple, made (with its mapping) when there is none; 0 when it cannot be. */
@inline function outboundSession(self: NATState, inside: u32, remote: u32, t: u64): usize {
  const key = keyBuffer();
  sessionKey(key, inside, remote, localPort, remotePort);
  const hash = FlowKey.hash(key);
  const found = self.sessions.find(key, hash, t);
  return found ? found : newOutboundSession(self, inside, remote, hash, t);
}

/** A new session for the packet's inside 5-tuple (outboundSession found none), with its mapping; 0 when it cannot be made. */
function newOutboundSession(self: NATState, inside: u32, remote: u32, hash: u32, t: u64): usize {
  if (!sessionAllowed(self, inside, t)) { failure = FAIL_SESSIONS; return 0; }
  const mapped = outboundMapping(self, inside, remote, t);
  if (mapped & FAILED) { failure = mapped & 0xffff; return 0; }
  const external = subscriberExternal(self, inside, t);
  const key = keyBuffer();
  sessionKey(key, inside, remote, localPort, remotePort);
  const session = self.sessions.lookupOrInsert(key, hash, t);
  if (!session) { failure = FAIL_TABLE; return 0; }
  FlowTable.refresh(session, 0, t); // its first packet sets its timer (setSessionDeadline)
  countSession(self, inside, t, 1);
  const s = changetype<NATSessionsEntry>(session);
  s.external = external;
  s.external_port = <u16>mapped;
  s.tcp = 0;
  s.mapping_until = 0;
  countOnMapping(self, inside, remote, t);
  if (filteringByEntries(self) == ADDRESS_DEPENDENT) allowFrom(self, inside, remote, <u16>mapped, t + protocolTimeout(self), t, false);
  if (self.has_pcp_server) usedByTraffic(self, inside, remote, t);
  return session;
}

/** The external port of the mapping for (inside, local port) toward this remote, made when there is none; FAILED | reason when it cannot be. */
function outboundMapping(self: NATState, inside: u32, remote: u32, t: u64): u32 {
  const key = keyBuffer();
  mappingOutKey(self, key, inside, remote);
  const hash = FlowKey.hash(key);
  const found = self.mappings.find(key, hash, t);
  if (found) return <u32>changetype<NATMappingsEntry>(found).port;

  const subscriber = subscriberEntry(self, inside, t);
  if (!subscriber) return FAILED | FAIL_TABLE;
  const sub = changetype<NATSubscribersEntry>(subscriber);
  const external = allocatePortOrReclaim(self, sub, inside, t);
  if (external & FAILED) return external;
  const deadline = t + protocolTimeout(self);
  mappingOutKey(self, key, inside, remote);
  const forward = self.mappings.lookupOrInsert(key, hash, t);
  if (!forward) return FAILED | FAIL_TABLE;
  const f = changetype<NATMappingsEntry>(forward);
  f.port = <u16>external;
  FlowTable.refresh(forward, 0, deadline);
  mappingInKey(key, inside, <u16>external);
  const back = self.mappings.lookupOrInsert(key, FlowKey.hash(key), t);
  if (!back) {
    mappingOutKey(self, key, inside, remote);
    self.mappings.remove(key, hash);
    return FAILED | FAIL_TABLE;
  }
  const b = changetype<NATMappingsEntry>(back);
  b.port = localPort;
  b.remote = remote;
  b.remote_port = remotePort;
  FlowTable.refresh(back, 0, deadline);
  holdBlockUntil(self, sub, <u16>external, deadline);
  countInBlock(self, sub, classOf(protocol), <u16>external);
  sub.mappings++;
  self.mappings_created++;
  return external;
}

/**
 * Pushes the deadlines of a mapping (both directions, and its filter entry) and of its block to `deadline`, or
 * with `exact` sets the mapping's to it (a PCP lifetime); false when the mapping is gone.
 */
function refreshMapping(self: NATState, inside: u32, remote: u32, external: u16, deadline: u64, t: u64, exact: bool = false): bool {
  const key = keyBuffer();
  mappingOutKey(self, key, inside, remote);
  const forward = self.mappings.find(key, FlowKey.hash(key), t);
  mappingInKey(key, inside, external);
  const back = self.mappings.find(key, FlowKey.hash(key), t);
  if (!forward || !back) return false;
  if (exact || FlowTable.expires(forward) < deadline) FlowTable.refresh(forward, 0, deadline);
  if (exact || FlowTable.expires(back) < deadline) FlowTable.refresh(back, 0, deadline);
  if (filteringByEntries(self) == ADDRESS_DEPENDENT) allowFrom(self, inside, remote, external, deadline, t, exact);
  const sub = findSubscriber(self, inside, key, t);
  if (sub) holdBlockUntil(self, sub, external, deadline);
  return true;
}

/**
 * The filtering that filter entries and sessions enforce: the parameter's. Without it, filtering is as strict as the
 * mapping, which a mapping made for one remote host (address-dependent or address-and-port-dependent mapping) is by
 * itself (inbound takes packets from that host alone), so no entries are needed. element.ts refuses a looser one.
 */
@inline function filteringByEntries(self: NATState): u8 {
  return self.has_filtering ? self.filtering : ENDPOINT_INDEPENDENT;
}

/** A session uses the mapping: it is no longer one only a PCP or NAT-PMP request made (a delete leaves it to its traffic). */
function usedByTraffic(self: NATState, inside: u32, remote: u32, t: u64): void {
  const key = keyBuffer();
  mappingOutKey(self, key, inside, remote);
  const forward = self.mappings.find(key, FlowKey.hash(key), t);
  if (forward) changetype<NATMappingsEntry>(forward).remote_port &= ~MADE_BY_REQUEST;
}

/** Counts a session made on the mapping it uses (the packet's: localPort, remotePort and protocol); sessionExpired uncounts it. */
function countOnMapping(self: NATState, inside: u32, remote: u32, t: u64): void {
  const key = keyBuffer();
  mappingOutKey(self, key, inside, remote);
  const forward = self.mappings.find(key, FlowKey.hash(key), t);
  if (forward) changeSessionCount(changetype<NATMappingsEntry>(forward), 1);
}

@inline function changeSessionCount(f: NATMappingsEntry, change: i32): void {
  const count = <i32>(f.remote_port >> SESSION_COUNT_SHIFT) + change;
  if (count >= 0 && count < <i32>(0xffff >> SESSION_COUNT_SHIFT)) f.remote_port = (f.remote_port & MADE_BY_REQUEST) | <u16>(count << SESSION_COUNT_SHIFT);
}

/**
 * A TCP session closes (a FIN or RST): when it is the only session on its mapping, the mapping ends with it (RFC 7857
 * §2.2), unless a PCP lifetime or a PEER session holds it longer. Else it lived until the established timeout that an
 * earlier packet pushed it to, holding its port for hours after the connection closed.
 */
function endsWithSession(self: NATState, inside: u32, remote: u32, s: NATSessionsEntry, deadline: u64, t: u64): void {
  const key = keyBuffer();
  mappingOutKey(self, key, inside, remote);
  const forward = self.mappings.find(key, FlowKey.hash(key), t);
  if (!forward) return;
  const f = changetype<NATMappingsEntry>(forward);
  if ((f.remote_port >> SESSION_COUNT_SHIFT) != 1) return;
  let until = max<u64>(deadline, <u64>f.remote * SECOND); // f.remote: until when a PEER session needs it
  filterKey(key, inside, 0, s.external_port);
  const permit = self.mappings.find(key, FlowKey.hash(key), t);
  if (permit) until = max<u64>(until, FlowTable.expires(permit));
  if (FlowTable.expires(forward) <= until) return;
  refreshMapping(self, inside, remote, s.external_port, until, t, true);
  s.mapping_until = until;
}

/**
 * Address-dependent filtering: the mapping has sent to `remote`, so packets from it may come in until `deadline`, as
 * long as that sending keeps the mapping (an established TCP connection's for hours, refreshed an eighth at a time);
 * `exact`: until then and no longer (the mapping ends with the session, and its port may serve another mapping then).
 */
function allowFrom(self: NATState, inside: u32, remote: u32, external: u16, deadline: u64, t: u64, exact: bool): void {
  if (remote == 0) return; // 0.0.0.0 is no host to allow, and its key is a PCP permit's
  const key = keyBuffer();
  filterKey(key, inside, remote, external);
  const hash = FlowKey.hash(key);
  // Found first: lookupOrInsert would set the table's idle timeout, cutting short the refresh of another session.
  const found = self.mappings.find(key, hash, t);
  const entry = found ? found : self.mappings.lookupOrInsert(key, hash, t);
  if (entry && (exact || !found || FlowTable.expires(entry) < deadline)) FlowTable.refresh(entry, 0, deadline);
}

/** A later fragment carries no ports: only the address changes, to the subscriber's (paired pooling). */
function outboundLaterFragment(self: NATState, p: Packet, ip: usize, out: Outputs, t: u64): void {
  const inside = IPv4.src(ip);
  protocol = IPv4.protocol(ip);
  localPort = 0xffff; // no port to read: an address is chosen, if it must be, where high ports are free
  if (isExempt(<usize>self.pool, IPv4.dst(ip), 0) || exemptDatagram(self, inside, IPv4.dst(ip), ip, false, t)) { self.exempted++; sendOut(self, p, out); return; }
  const subscriber = subscriberEntry(self, inside, t);
  const external = subscriber ? assignAddress(self, changetype<NATSubscribersEntry>(subscriber), inside, t) : 0;
  if (!external) { self.drop_pool_exhausted++; dropPacket(p); return; }
  IPv4.setSrc(p, ip, external);
  renumber(self, ip, inside, external, t);
  self.translated_out++;
  sendOutOrHairpin(self, p, ip, out, t);
}

/** A fragment_ids key's kind (fragmentKey; 0: a datagram renumbered): the datagram left untranslated. */
const EXEMPT_DATAGRAM: u32 = 1;

/**
 * Whether the datagram of a fragment between an inside address and a remote one passes untranslated (its first
 * fragment went to an exempt port, or came from one, which its later ones do not carry), noted with `first` (the I/O
 * side holds a later fragment until its first has come); kept 2 s after its last fragment.
 */
function exemptDatagram(self: NATState, inside: u32, remote: u32, ip: usize, first: bool, t: u64): bool {
  const key = keyBuffer();
  fragmentKey(key, inside, remote, ip, EXEMPT_DATAGRAM);
  const hash = FlowKey.hash(key);
  const entry = first ? self.fragment_ids.lookupOrInsert(key, hash, t) : self.fragment_ids.find(key, hash, t);
  if (entry) FlowTable.refresh(entry, t, FRAGMENT_TIMEOUT);
  return entry != 0;
}

/** A translated packet from inside leaves, or goes back inside when it is for a pool address (hairpinning, RFC 4787 REQ-9, RFC 5508 REQ-7). */
function sendOutOrHairpin(self: NATState, p: Packet, ip: usize, out: Outputs, t: u64): void {
  if (poolIndex(<usize>self.pool, IPv4.dst(ip)) >= 0) inbound(self, p, out, t, true);
  else sendOut(self, p, out);
}

/** An ICMP error from inside about a packet that came in: the quoted packet's destination is translated too. */
function outboundIcmpError(self: NATState, p: Packet, ip: usize, l4: usize, out: Outputs, t: u64): void {
  const inner = quoted(p, ip, l4);
  if (!inner) { self.drop_malformed++; dropPacket(p); return; }
  const inside = IPv4.src(ip);
  protocol = IPv4.protocol(inner);
  localPort = quotedPort(inner, false);
  remotePort = protocol == IPPROTO_ICMP ? 0 : quotedPort(inner, true);
  const key = keyBuffer();
  sessionKey(key, IPv4.dst(inner), IPv4.src(inner), localPort, remotePort);
  const session = self.sessions.find(key, FlowKey.hash(key), t);
  if (!session || IPv4.dst(inner) != inside) {
    // About a packet that came in untranslated (from an exempt address or port): it leaves untranslated too.
    if (IPv4.dst(inner) == inside && quotesExempt(<usize>self.pool, inner, true)) { self.exempted++; sendOut(self, p, out); return; }
    self.drop_no_mapping++; dropPacket(p); return;
  }
  const s = changetype<NATSessionsEntry>(session);
  rewriteQuoted(ip, l4, inner, false, s.external, s.external_port);
  IPv4.setSrc(p, ip, s.external);
  renumber(self, ip, inside, s.external, t);
  self.translated_out++;
  sendOutOrHairpin(self, p, ip, out, t);
}

/** A UDP header whose length is shorter than itself or longer than the IP payload (Linux drops those too). Not for fragments: the header speaks for the whole datagram. */
@inline function udpLengthWrong(ip: usize, l4: usize): bool {
  if (protocol != IPPROTO_UDP || IPv4.isFragment(ip)) return false;
  const length = <u32>Wire.get16(l4 + 4);
  return length < 8 || length > IPv4.totalLength(ip) - IPv4.headerLength(ip);
}

/** A UDP datagram, not a later fragment, to the PCP server's port. */
@inline function isPcp(p: Packet, ip: usize): bool {
  if (IPv4.protocol(ip) != IPPROTO_UDP || IPv4.fragmentOffset(ip) != 0) return false;
  const udp = Transport.header(p, ip);
  return udp != 0 && Transport.dstPort(udp) == PCP_PORT;
}

/** The lifetime granted for `requested` seconds: at least 2 minutes (RFC 6887 §15) and at most pcp_max_lifetime. */
function grantedFor(self: NATState, requested: u32): u32 {
  const most = <u32>(self.pcp_max_lifetime / SECOND);
  return max<u32>(min<u32>(requested, most), min<u32>(120, most));
}

/** What the last mapPort granted: the lifetime in seconds, and the external port (0: none). */
let grantedLifetime: u32 = 0;
let grantedPort: u16 = 0;

/**
 * A request to the PCP server's port from a subscriber (pcp_server): answered back inside, never translated.
 * PCP (RFC 6887): MAP makes, renews or deletes a mapping for inbound traffic, ANNOUNCE is answered with the
 * epoch, anything else gets its error. Version 0 is NAT-PMP (RFC 6886), PCP's predecessor, which a PCP server
 * may answer (RFC 6887 Appendix A). A message too short to answer, or a response, is dropped as malformed.
 */
function pcpRequest(self: NATState, p: Packet, ip: usize, out: Outputs, t: u64): void {
  const udp = Transport.header(p, ip);
  const udpLength = <u32>Wire.get16(udp + 4);
  const room = IPv4.totalLength(ip) - IPv4.headerLength(ip);
  if (udpLength < 8 || udpLength > room) { self.drop_malformed++; dropPacket(p); return; }
  const msg = udp + 8;
  const received = udpLength - 8;
  // Seconds since the server first answered, on any shard: a subscriber that moves sees no step back.
  const began = <usize>self.pool + POOL_PCP_EPOCH;
  atomic.cmpxchg<u64>(began, 0, t | 1); // 0 is "not begun"
  const start = atomic.load<u64>(began);
  const epoch = t > start ? <u32>((t - start) / SECOND) : 0;
  const answered = received >= 2 && load<u8>(msg) == 0 ? natPmp(self, p, ip, udp, received, epoch, t) : pcp(self, p, ip, udp, received, epoch, t);
  if (!answered) { self.drop_malformed++; dropPacket(p); return; }
  self.pcp_requests++;
  out.push(INSIDE, p);
}

/** Answers a PCP request in place (see pcpRequest); false when it is not to be answered. */
function pcp(self: NATState, p: Packet, ip: usize, udp: usize, received: u32, epoch: u32, t: u64): bool {
  const msg = udp + 8;
  let result = checkRequest(msg, received, IPv4.src(ip));
  if (result == SILENT) return false;
  const opcode = load<u8>(msg, 1);
  const parsed = result == SUCCESS;
  const map = parsed && opcode == OP_MAP;
  const peer = parsed && opcode == OP_PEER;
  if (map) result = pcpMap(self, msg, IPv4.src(ip), t);
  if (peer) result = pcpPeer(self, msg, IPv4.src(ip), t);
  // A success answers with the opcode's own part (options are not repeated); an error with the request as it came.
  const length = result != SUCCESS ? errorAnswerLength(received) : HEADER + (map ? MAP_BODY : peer ? PEER_BODY : 0);
  if (!prepareAnswer(p, udp, received, length)) return false;
  writeHeader(msg, <u8>result, result != SUCCESS ? errorLifetime(<u8>result) : map || peer ? grantedLifetime : 0, epoch, parsed);
  sendBack(p, ip, udp, length);
  if (result != SUCCESS) self.pcp_errors++;
  return true;
}

/** MAP (RFC 6887 §11) of the request at `msg`: mapPort, and the assigned external port and address written into it. A result code. */
function pcpMap(self: NATState, msg: usize, inside: u32, t: u64): i32 {
  const proto = load<u8>(msg, 36);
  if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) return UNSUPP_PROTOCOL;
  const internal = Wire.get16(msg + 40);
  if (internal == 0) return MALFORMED_REQUEST; // every port: only with protocol 0, which this server does not map
  const lifetime = Wire.get32(msg + 4);
  // The suggested external address: IPv4-mapped (::ffff:a.b.c.d), or all zeros for none; an IPv6 one this NAT cannot give.
  const top = load<u64>(msg, 44);
  const mark = load<u32>(msg, 52);
  const ipv4 = top == 0 && mark == 0xffff0000;
  if (!ipv4 && (top | <u64>mark | <u64>load<u32>(msg, 56)) != 0 && preferFailure && lifetime != 0) return CANNOT_PROVIDE_EXTERNAL;
  // The mapping nonce, 96 bits folded to the 64 a permit's value holds.
  const result = mapPort(self, inside, proto, internal, lifetime, load<u64>(msg, 24) ^ <u64>load<u32>(msg, 32), t,
    Wire.get16(msg + 42), ipv4 ? Wire.get32(msg + 56) : 0, preferFailure);
  if (result == SUCCESS && grantedPort) writeMapped(msg, subscriberExternal(self, inside, t), grantedPort);
  return result;
}

/**
 * PEER (RFC 6887 §12): the session of the subscriber's internal port with one remote peer, made as its first
 * outbound packet would make it (its mapping too), and kept for the lifetime granted (within 2 minutes and
 * pcp_max_lifetime); the assigned external port and address written into the request. A lifetime of 0 makes
 * nothing and answers what the session has left. Traffic only pushes the session's timer further, but for a
 * closing TCP connection (setSessionDeadline). A result code.
 */
function pcpPeer(self: NATState, msg: usize, inside: u32, t: u64): i32 {
  protocol = load<u8>(msg, 36);
  if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP) return UNSUPP_PROTOCOL;
  localPort = Wire.get16(msg + 40);
  remotePort = Wire.get16(msg + 60);
  // The remote peer, IPv4-mapped (::ffff:a.b.c.d): this NAT translates IPv4 only.
  if (localPort == 0 || remotePort == 0 || load<u64>(msg, 64) != 0 || load<u32>(msg, 72) != 0xffff0000) return MALFORMED_REQUEST;
  const remote = Wire.get32(msg + 76);
  if (remote == 0) return MALFORMED_REQUEST;
  // Traffic to an exempt destination is not translated: there is no session to make.
  if (isExempt(<usize>self.pool, remote, remotePort)) return NOT_AUTHORIZED;
  const requested = Wire.get32(msg + 4);
  grantedLifetime = 0;
  const key = keyBuffer();
  if (requested == 0) {
    sessionKey(key, inside, remote, localPort, remotePort);
    const found = self.sessions.find(key, FlowKey.hash(key), t);
    if (found) {
      const s = changetype<NATSessionsEntry>(found);
      grantedLifetime = <u32>((FlowTable.expires(found) - t) / SECOND);
      writeMapped(msg, s.external, s.external_port);
    } else {
      zeroBytes(msg + 42, 18); // no session: no external port or address to tell
    }
    return SUCCESS;
  }
  const session = outboundSession(self, inside, remote, t);
  if (!session) return failure == FAIL_PORTS || failure == FAIL_SESSIONS ? USER_EX_QUOTA : NO_RESOURCES;
  const s = changetype<NATSessionsEntry>(session);
  const lifetime = grantedFor(self, requested);
  const deadline = t + <u64>lifetime * SECOND;
  if (deadline > s.mapping_until) {
    if (!refreshMapping(self, inside, remote, s.external_port, deadline, t)) return NO_RESOURCES;
    s.mapping_until = deadline;
  }
  // The mapping remembers (in its forward entry's unused remote field, in seconds) until when a PEER session
  // needs it, so that a MAP delete does not cut it shorter.
  mappingOutKey(self, key, inside, remote);
  const forward = self.mappings.find(key, FlowKey.hash(key), t);
  if (forward) {
    const f = changetype<NATMappingsEntry>(forward);
    f.remote = max<u32>(f.remote, <u32>(deadline / SECOND) + 1);
  }
  if (FlowTable.expires(session) < deadline) FlowTable.refresh(session, 0, deadline);
  writeMapped(msg, s.external, s.external_port);
  grantedLifetime = lifetime;
  self.pcp_mappings++;
  return SUCCESS;
}

// NAT-PMP (RFC 6886 §3): opcodes and result codes.
const PMP_ADDRESS: u8 = 0;
const PMP_MAP_UDP: u8 = 1;
const PMP_MAP_TCP: u8 = 2;
const PMP_REFUSED: u16 = 2;
const PMP_NETWORK_FAILURE: u16 = 3;
const PMP_NO_RESOURCES: u16 = 4;
const PMP_UNSUPPORTED_OPCODE: u16 = 5;

/**
 * Answers a NAT-PMP request in place: the external address (opcode 0), or a UDP or TCP mapping (1, 2) made
 * as a PCP MAP makes it (mapPort, with no nonce); false when it is not to be answered.
 */
function natPmp(self: NATState, p: Packet, ip: usize, udp: usize, received: u32, epoch: u32, t: u64): bool {
  const msg = udp + 8;
  const opcode = load<u8>(msg, 1);
  if (opcode & 0x80) return false; // a response
  const inside = IPv4.src(ip);
  const map = opcode == PMP_MAP_UDP || opcode == PMP_MAP_TCP;
  if (map && received < 12) return false;
  // The answers: 8 bytes of header, then the external address (4) or the mapping (8).
  const length: u32 = opcode == PMP_ADDRESS ? 12 : map ? 16 : 8;
  const internal = map ? Wire.get16(msg + 4) : 0;
  const requested = map ? Wire.get32(msg + 8) : 0;
  if (!prepareAnswer(p, udp, received, length)) return false;
  let result: u16 = 0;
  if (opcode == PMP_ADDRESS) {
    // The address its mappings get: assigned now if it has none yet (paired pooling keeps it), where a UDP block
    // of high ports is free.
    protocol = IPPROTO_UDP;
    localPort = 0xffff;
    const subscriber = subscriberEntry(self, inside, t);
    const external = subscriber ? assignAddress(self, changetype<NATSubscribersEntry>(subscriber), inside, t) : 0;
    if (!external) result = PMP_NETWORK_FAILURE;
    Wire.set32(msg + 8, external);
  } else if (map) {
    const proto = opcode == PMP_MAP_UDP ? IPPROTO_UDP : IPPROTO_TCP;
    // Internal port 0: with lifetime 0 (and external port 0), every mapping of the protocol it asked for (§3.4).
    const mapped = internal != 0 ? mapPort(self, inside, proto, internal, requested, 0, t, Wire.get16(msg + 6), 0, false)
      : requested == 0 && Wire.get16(msg + 6) == 0 ? unmapAll(self, inside, proto, t) : NOT_AUTHORIZED;
    result = mapped == SUCCESS ? 0 : mapped == NOT_AUTHORIZED ? PMP_REFUSED : PMP_NO_RESOURCES;
    Wire.set16(msg + 8, internal);
    Wire.set16(msg + 10, mapped == SUCCESS && requested != 0 ? grantedPort : 0); // a delete answers port 0 (RFC 6886 §3.4)
    Wire.set32(msg + 12, mapped == SUCCESS ? grantedLifetime : 0);
  } else {
    result = PMP_UNSUPPORTED_OPCODE;
  }
  store<u8>(msg, 0);
  store<u8>(msg, 0x80 | opcode, 1);
  Wire.set16(msg + 2, result);
  Wire.set32(msg + 4, epoch);
  sendBack(p, ip, udp, length);
  if (result != 0) self.pcp_errors++;
  return true;
}

/**
 * Deletes every mapping of the protocol the subscriber made with NAT-PMP (a permit with no nonce), as a delete of
 * each would (mapPort), found by the external ports of its blocks (or its deterministic range): a few thousand
 * lookups, for a request a client sends when it takes an address over. SUCCESS.
 */
function unmapAll(self: NATState, inside: u32, proto: u8, t: u64): i32 {
  protocol = proto;
  grantedLifetime = 0;
  grantedPort = 0;
  const pool = <usize>self.pool;
  const key = keyBuffer();
  const sub = findSubscriber(self, inside, key, t);
  if (!sub) return SUCCESS;
  const shift = load<u32>(pool + POOL_BLOCK_SHIFT);
  const deterministic = load<u32>(pool + POOL_DETERMINISTIC) != 0;
  const slots = changetype<usize>(sub) + offsetof<NATSubscribersEntry>("b0") + <usize>(classOf(proto) * SLOTS << 2);
  const ranges: u32 = deterministic ? 1 : self.blocks_per_subscriber;
  for (let slot: u32 = 0; slot < ranges; slot++) {
    let first: u32 = 0;
    let last: u32 = 0;
    if (deterministic) {
      first = deterministicStart(pool, inside);
      last = first + load<u32>(pool + POOL_DET_PORTS) - 1;
    } else {
      const block = load<u32>(slots + (<usize>slot << 2));
      if (!block) continue;
      first = blockStart(block, shift);
      last = first + (1 << shift) - 1;
    }
    for (let port = max<u32>(first, 1); port <= last; port++) {
      filterKey(key, inside, 0, <u16>port);
      const permit = self.mappings.find(key, FlowKey.hash(key), t);
      if (!permit || load<u64>(permit) != 0) continue;
      mappingInKey(key, inside, <u16>port);
      const back = self.mappings.find(key, FlowKey.hash(key), t);
      if (back) mapPort(self, inside, proto, changetype<NATMappingsEntry>(back).port, 0, 0, t, 0, 0, false);
    }
  }
  return SUCCESS;
}

/**
 * Maps the subscriber's internal port (TCP or UDP) for inbound traffic from any host, for the lifetime asked
 * (within 2 minutes and pcp_max_lifetime), on the mapping its outbound traffic uses or would use
 * (endpoint-independent); a lifetime of 0 takes the permission back and leaves the mapping to its traffic (one no
 * session used goes at once).
 * Only the client that made a mapping (its `nonce`) may renew or delete it (RFC 6887 §11.3). A new mapping
 * takes the suggested external port (`port`, 0: none) when it is free in a block the subscriber holds or in a
 * free block it may claim, and the suggested address (`address`) when the subscriber has none yet and that
 * one has room; with `only` (PREFER_FAILURE, §13.2) those or nothing: CANNOT_PROVIDE_EXTERNAL. A PCP result
 * code; what was granted is in grantedLifetime and grantedPort.
 */
function mapPort(self: NATState, inside: u32, proto: u8, internal: u16, requested: u32, nonce: u64, t: u64, port: u16, address: u32, only: bool): i32 {
  wantedPort = port;
  wantedAddress = address;
  wantedOnly = only;
  const result = mapPortAsWanted(self, inside, proto, internal, requested, nonce, t);
  wantedPort = 0;
  wantedAddress = 0;
  wantedOnly = false;
  return result;
}

function mapPortAsWanted(self: NATState, inside: u32, proto: u8, internal: u16, requested: u32, nonce: u64, t: u64): i32 {
  protocol = proto;
  localPort = internal;
  remotePort = 0;
  grantedLifetime = 0;
  grantedPort = 0;
  const key = keyBuffer();
  if (requested == 0) {
    mappingOutKey(self, key, inside, 0);
    const forward = self.mappings.find(key, FlowKey.hash(key), t);
    if (forward) {
      const external = changetype<NATMappingsEntry>(forward).port;
      filterKey(key, inside, 0, external);
      const permit = self.mappings.find(key, FlowKey.hash(key), t);
      if (permit && load<u64>(permit) != nonce) return NOT_AUTHORIZED;
      if (permit) {
        self.mappings.remove(key, FlowKey.hash(key));
        const f = changetype<NATMappingsEntry>(forward);
        const peersUntil = <u64>f.remote * SECOND;
        if ((f.remote_port & MADE_BY_REQUEST) && peersUntil <= t) {
          // No outbound traffic ever used it and no PEER session needs it: gone, or any host could still reach the port.
          self.mappings.remove(forward - ENTRY_VALUE + ENTRY_KEY, load<u32>(forward - ENTRY_VALUE, 4));
          mappingInKey(key, inside, external);
          self.mappings.remove(key, FlowKey.hash(key));
          const sub = findSubscriber(self, inside, key, t);
          if (sub) mappingGone(self, sub, classOf(protocol), external, t);
        } else {
          // The mapping goes on as one its traffic made: no longer than an outbound packet now could have kept it
          // (the longest session timeout and the eighth a refresh adds) or a PEER session needs it, so that no live
          // session loses it.
          const timeout = protocol == IPPROTO_UDP ? self.udp_timeout : max<u64>(self.tcp_established, self.tcp_transitory);
          const deadline = max<u64>(t + timeout + (timeout >> 3), peersUntil);
          if (FlowTable.expires(forward) > deadline) refreshMapping(self, inside, 0, external, deadline, t, true);
        }
      }
      grantedPort = external;
    }
    self.pcp_mappings++;
    return SUCCESS;
  }
  const lifetime = grantedFor(self, requested);
  if (wantedOnly && wantedAddress) {
    const external = subscriberExternal(self, inside, t);
    if (external && external != wantedAddress) return CANNOT_PROVIDE_EXTERNAL;
  }
  const made = self.mappings_created;
  const mapped = outboundMapping(self, inside, 0, t);
  if (mapped & FAILED) {
    const reason = mapped & 0xffff;
    if (wantedOnly && (reason == FAIL_PORTS || reason == FAIL_POOL)) return CANNOT_PROVIDE_EXTERNAL;
    return reason == FAIL_PORTS ? USER_EX_QUOTA : NO_RESOURCES;
  }
  // An existing mapping keeps its port (endpoint-independent: one per internal port).
  if (wantedOnly && wantedPort && <u16>mapped != wantedPort) return CANNOT_PROVIDE_EXTERNAL;
  filterKey(key, inside, 0, <u16>mapped);
  const held = self.mappings.find(key, FlowKey.hash(key), t);
  if (held && load<u64>(held) != nonce) return NOT_AUTHORIZED;
  const deadline = t + <u64>lifetime * SECOND;
  // A mapping made for this request lives its lifetime, not an idle timeout; one that traffic uses, the longer of the two.
  if (self.mappings_created != made) {
    refreshMapping(self, inside, 0, <u16>mapped, deadline, t, true);
    mappingOutKey(self, key, inside, 0);
    const forward = self.mappings.find(key, FlowKey.hash(key), t);
    if (forward) changetype<NATMappingsEntry>(forward).remote_port |= MADE_BY_REQUEST;
  } else if (!refreshMapping(self, inside, 0, <u16>mapped, deadline, t)) return NO_RESOURCES;
  // The permission for any remote host (admits), as long as the lifetime.
  filterKey(key, inside, 0, <u16>mapped);
  const permit = self.mappings.lookupOrInsert(key, FlowKey.hash(key), t);
  if (!permit) return NO_RESOURCES;
  store<u64>(permit, nonce); // the value's fields are a filter's, unused with remote 0
  FlowTable.refresh(permit, 0, deadline);
  grantedLifetime = lifetime;
  grantedPort = <u16>mapped;
  self.pcp_mappings++;
  return SUCCESS;
}

/** The assigned external port and address of a MAP response (the address IPv4-mapped, ::ffff:a.b.c.d). */
function writeMapped(msg: usize, external: u32, port: u16): void {
  Wire.set16(msg + 42, port);
  store<u64>(msg, 0, 44);
  store<u32>(msg, 0xffff0000, 52);
  Wire.set32(msg + 56, external);
}

// ---------------------------------------------------------------------------------------------
// Outside to inside (and hairpinned packets, whose source is already translated).

function inbound(self: NATState, p: Packet, out: Outputs, t: u64, hairpin: bool): void {
  const ip = IPv4.header(p);
  if (!ip) { self.drop_malformed++; dropPacket(p); return; }
  const pool = <usize>self.pool;
  const external = IPv4.dst(ip);
  const remote = IPv4.src(ip);
  if (!isHostAddress(remote)) { self.drop_bad_source++; dropPacket(p); return; }
  const a = poolIndex(pool, external);
  if (a < 0) {
    // Replies to exempt traffic come back to the inside address itself.
    if (isInside(pool, external) && answersExempt(self, p, ip, t)) { self.exempted++; out.push(INSIDE, p); return; }
    self.drop_no_mapping++; dropPacket(p); return;
  }
  if (IPv4.fragmentOffset(ip) != 0) { inboundLaterFragment(self, p, ip, out, t, hairpin); return; }
  protocol = IPv4.protocol(ip);
  if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP && protocol != IPPROTO_ICMP) { self.drop_unsupported++; dropPacket(p); return; }
  const l4 = Transport.header(p, ip);
  if (!l4 || udpLengthWrong(ip, l4)) { self.drop_malformed++; dropPacket(p); return; }
  let externalPort: u16 = 0;
  if (protocol == IPPROTO_ICMP) {
    const type = ICMP.type(l4);
    if (ICMP.isError(type)) { inboundIcmpError(self, p, ip, l4, out, t, hairpin); return; }
    if (!isIcmpReply(type)) { self.drop_unsupported++; dropPacket(p); return; }
    externalPort = Wire.get16(l4 + 4);
    remotePort = 0;
  } else {
    externalPort = Transport.dstPort(l4);
    remotePort = Transport.srcPort(l4);
  }
  const flags: u8 = protocol == IPPROTO_TCP ? TCP.flags(l4) : 0;
  const syn = (flags & (TCP.SYN | TCP.ACK)) == TCP.SYN;

  const inside = ownerOf(pool, <u32>a, externalPort, classOf(protocol));
  const key = keyBuffer();
  let back: usize = 0;
  if (inside) {
    mappingInKey(key, inside, externalPort);
    back = self.mappings.find(key, FlowKey.hash(key), t);
  }
  if (!back && handOver(self, p, hairpin && inside != 0)) return;
  if (!back) {
    if (syn) {
      self.drop_unsolicited_syn++;
      if (self.syn_icmp) rememberUnsolicited(self, p, ip, inside ? inside : external, external, externalPort, remote, t);
    } else self.drop_no_mapping++;
    dropPacket(p);
    return;
  }
  const m = changetype<NATMappingsEntry>(back);
  localPort = m.port;
  // A mapping made for one remote (address- or port-dependent mapping) is that remote's alone.
  if ((self.mapping >= ADDRESS_DEPENDENT && m.remote != remote) || (self.mapping == ADDRESS_AND_PORT_DEPENDENT && m.remote_port != remotePort)) {
    self.drop_filtered++; dropPacket(p); return;
  }
  sessionKey(key, inside, remote, localPort, remotePort);
  const hash = FlowKey.hash(key);
  let session = self.sessions.find(key, hash, t);
  if (!session) {
    if (!admits(self, inside, remote, externalPort, t)) { self.drop_filtered++; dropPacket(p); return; }
    // A TCP connection from outside starts with a SYN; anything else without a session is stale.
    if (protocol == IPPROTO_TCP && !syn) { self.drop_invalid_tcp++; dropPacket(p); return; }
    if (!sessionAllowed(self, inside, t)) { self.drop_session_limit++; dropPacket(p); return; }
    sessionKey(key, inside, remote, localPort, remotePort);
    session = self.sessions.lookupOrInsert(key, hash, t);
    if (!session) { self.drop_table_full++; dropPacket(p); return; }
    FlowTable.refresh(session, 0, t); // its first packet sets its timer (setSessionDeadline)
    countSession(self, inside, t, 1);
    const fresh = changetype<NATSessionsEntry>(session);
    fresh.external = external;
    fresh.external_port = externalPort;
    fresh.tcp = 0;
    fresh.mapping_until = 0;
    countOnMapping(self, inside, remote, t);
    if (self.has_pcp_server) usedByTraffic(self, inside, remote, t);
  }
  const s = changetype<NATSessionsEntry>(session);
  // Only outbound packets keep a mapping (RFC 4787 REQ-6): a session does not outlive it.
  const deadline = t + sessionTimeout(self, s, flags, TCP_IN);
  const mappingEnds = FlowTable.expires(back);
  setSessionDeadline(session, s, deadline < mappingEnds ? deadline : mappingEnds);
  if (flags & (TCP.FIN | TCP.RST)) endsWithSession(self, inside, remote, s, deadline, t);
  translate(ip, l4, inside, localPort, false);
  if (IPv4.moreFragments(ip)) rememberFragment(self, external, remote, ip, inside, t);
  countIn(self, p, hairpin);
  out.push(INSIDE, p);
}

/**
 * Whether a packet from outside to an inside address answers traffic that left untranslated: it comes from an exempt
 * address, or from an exempt port (the destination port of that traffic; of a later fragment, its first's), or it
 * is an ICMP error (from a router on the way, say) about a packet the address sent to one.
 */
function answersExempt(self: NATState, p: Packet, ip: usize, t: u64): bool {
  const pool = <usize>self.pool;
  const inside = IPv4.dst(ip), remote = IPv4.src(ip);
  if (IPv4.fragmentOffset(ip) != 0) return isExempt(pool, remote, 0) || exemptDatagram(self, inside, remote, ip, false, t);
  const l4 = Transport.header(p, ip);
  if (!l4) return isExempt(pool, remote, 0);
  if (IPv4.protocol(ip) != IPPROTO_ICMP) {
    if (!isExempt(pool, remote, Transport.srcPort(l4))) return false;
    if (IPv4.moreFragments(ip)) exemptDatagram(self, inside, remote, ip, true, t);
    return true;
  }
  const inner = ICMP.isError(ICMP.type(l4)) ? quoted(p, ip, l4) : 0;
  if (inner && IPv4.src(inner) == inside && quotesExempt(pool, inner, false)) return true;
  return isExempt(pool, remote, 0);
}

/** Whether the packet an ICMP error quotes comes from (`source`), or goes to, an exempt address or TCP or UDP port. */
function quotesExempt(pool: usize, inner: usize, source: bool): bool {
  const proto = IPv4.protocol(inner);
  const port = proto == IPPROTO_TCP || proto == IPPROTO_UDP ? quotedPort(inner, source) : 0;
  return isExempt(pool, source ? IPv4.src(inner) : IPv4.dst(inner), port);
}

/**
 * A hairpinned packet whose target subscriber this shard does not hold (`elsewhere`) is handed to the dispatcher,
 * which takes it to the shard that does (once: one handed over already is not sent round again). True when handed over.
 */
function handOver(self: NATState, p: Packet, elsewhere: bool): bool {
  if (!elsewhere || (p.flags & PACKET_RESTEERED)) return false;
  self.hairpin_handovers++;
  resteer(p);
  return true;
}

/** Counts a packet that goes in: hairpinned (a packet handed over by another shard may come in on either input, by its source address), or translated. */
@inline function countIn(self: NATState, p: Packet, hairpin: bool): void {
  if (hairpin || (p.flags & PACKET_RESTEERED)) self.hairpinned++;
  else self.translated_in++;
}

/** Whether the filtering behaviour lets a packet from `remote` start a session on the mapping. */
function admits(self: NATState, inside: u32, remote: u32, externalPort: u16, t: u64): bool {
  if (filteringByEntries(self) == ENDPOINT_INDEPENDENT) return true;
  const key = keyBuffer();
  // A PCP MAP lets any host in (remote 0); address-dependent filtering, a host the mapping has sent to.
  filterKey(key, inside, 0, externalPort);
  if (self.mappings.find(key, FlowKey.hash(key), t)) return true;
  if (filteringByEntries(self) == ADDRESS_AND_PORT_DEPENDENT) return false;
  filterKey(key, inside, remote, externalPort);
  return self.mappings.find(key, FlowKey.hash(key), t) != 0;
}

/** An ICMP error from outside about a packet that went out: translated back, with the packet it quotes. */
function inboundIcmpError(self: NATState, p: Packet, ip: usize, l4: usize, out: Outputs, t: u64, hairpin: bool): void {
  const inner = quoted(p, ip, l4);
  if (!inner) { self.drop_malformed++; dropPacket(p); return; }
  const pool = <usize>self.pool;
  const external = IPv4.src(inner);
  protocol = IPv4.protocol(inner);
  const externalPort = quotedPort(inner, true);
  const a = poolIndex(pool, external);
  const inside = a < 0 ? 0 : ownerOf(pool, <u32>a, externalPort, classOf(protocol));
  const key = keyBuffer();
  let back: usize = 0;
  if (inside) {
    mappingInKey(key, inside, externalPort);
    back = self.mappings.find(key, FlowKey.hash(key), t);
  }
  if (!back && IPv4.dst(ip) == external && handOver(self, p, hairpin && inside != 0)) return;
  if (!back || IPv4.dst(ip) != external) { self.drop_no_mapping++; dropPacket(p); return; }
  // ICMP never refreshes nor ends a mapping (RFC 4787 REQ-12, RFC 5382 REQ-10).
  rewriteQuoted(ip, l4, inner, true, inside, changetype<NATMappingsEntry>(back).port);
  IPv4.setDst(p, ip, inside);
  countIn(self, p, hairpin);
  out.push(INSIDE, p);
}

/**
 * A later fragment of an inbound datagram goes where its first fragment went: to the subscriber fragment_owners
 * names, when that one's shard translated the first (an entry keyed by the subscriber, so that it moves with
 * the subscriber's bucket when shards scale).
 */
function inboundLaterFragment(self: NATState, p: Packet, ip: usize, out: Outputs, t: u64, hairpin: bool): void {
  let inside = recordedFragmentOwner(self, datagramTag(IPv4.src(ip), IPv4.dst(ip), ip));
  const key = keyBuffer();
  let entry: usize = 0;
  if (inside) {
    fragmentKey(key, inside, IPv4.src(ip), ip, KIND_FRAGMENT);
    entry = self.mappings.find(key, FlowKey.hash(key), t);
  }
  // Another datagram took its fragment_owners slot since: the entry by external address, unless that one moved.
  if (!entry) {
    fragmentKey(key, IPv4.dst(ip), IPv4.src(ip), ip, KIND_FRAGMENT_AT);
    entry = self.mappings.find(key, FlowKey.hash(key), t);
    if (entry) inside = changetype<NATMappingsEntry>(entry).remote;
  }
  // A hairpinned one whose first fragment went to another shard's subscriber follows it there.
  if (!entry && handOver(self, p, hairpin)) return;
  if (!entry) { self.drop_fragment++; dropPacket(p); return; }
  IPv4.setDst(p, ip, inside);
  countIn(self, p, hairpin);
  out.push(INSIDE, p);
}

/**
 * Gives a datagram from inside that may be fragmented (DF clear, or a fragment already) a new IP ID (RFC 7857
 * §10, RFC 6864 §5.3.1): subscribers sharing an external address would otherwise send a host the same IDs,
 * and its reassembly would mix their fragments. The IDs come from counters in the shared pool, one per hash
 * bucket of (external address, destination, protocol) as Linux's ip_idents, taken with an atomic add so that
 * shards sharing an address do not hand out the same one before a bucket's 65536 wrap, and started at random
 * places (not hidden further, RFC 7739's concern: a host that shares a bucket sees its counter move). The
 * fragments of one datagram keep one new ID through an entry keyed by the old one (fragment_ids; when that table
 * is full, an ID hashed from the key).
 */
@inline function renumber(self: NATState, ip: usize, inside: u32, external: u32, t: u64): void {
  const field = Wire.get16(ip + 6);
  // Atomic datagrams (DF set, not a fragment) are never fragmented, so their ID means nothing (RFC 6864 §4).
  if (!self.rewrite_ip_id || (field & (IP_DONT_FRAGMENT | IP_MORE_FRAGMENTS | IP_FRAGMENT_OFFSET)) == IP_DONT_FRAGMENT) return;
  giveNewId(self, ip, field, inside, external, t);
}

function giveNewId(self: NATState, ip: usize, field: u16, inside: u32, external: u32, t: u64): void {
  const remote = IPv4.dst(ip);
  const proto = IPv4.protocol(ip);
  let id: u16;
  if (field & (IP_MORE_FRAGMENTS | IP_FRAGMENT_OFFSET)) {
    const key = keyBuffer();
    fragmentKey(key, inside, remote, ip, 0);
    const hash = FlowKey.hash(key);
    const entry = self.fragment_ids.lookupOrInsert(key, hash, t);
    if (entry) {
      const e = changetype<NATFragmentIdsEntry>(entry);
      if (flowCreated) e.id = nextId(self, external, remote, proto);
      FlowTable.refresh(entry, t, FRAGMENT_TIMEOUT);
      id = e.id;
    } else {
      // The table is full: an ID from the key itself, the same for every fragment that finds no entry either.
      id = <u16>(symmetricHashOf(hash, load<u32>(<usize>self.pool + POOL_SALT), 0, proto) >>> 16);
      self.fragment_ids_full++;
    }
  } else {
    id = nextId(self, external, remote, proto);
  }
  store<u16>(ip + 10, adjustChecksum(load<u16>(ip + 10), replace16(ip + 4, bswap<u16>(id))));
}

@inline function nextId(self: NATState, external: u32, remote: u32, proto: u8): u16 {
  const pool = <usize>self.pool;
  const salt = load<u32>(pool + POOL_SALT);
  const bucket = symmetricHashOf(external ^ salt, remote ^ rotr(salt, 16), 0, proto) & (load<u32>(pool + POOL_ID_BUCKETS) - 1);
  return <u16>atomic.add<u32>(pool + <usize>load<u32>(pool + POOL_IDS_AT) + (<usize>bucket << 2), 1);
}

/** Notes where the later fragments of an inbound datagram must go (they carry no port to look up). */
function rememberFragment(self: NATState, external: u32, remote: u32, ip: usize, inside: u32, t: u64): void {
  recordFragmentOwner(self, datagramTag(remote, external, ip), inside);
  const key = keyBuffer();
  fragmentKey(key, inside, remote, ip, KIND_FRAGMENT);
  const entry = self.mappings.lookupOrInsert(key, FlowKey.hash(key), t);
  if (entry) FlowTable.refresh(entry, t, FRAGMENT_TIMEOUT);
  fragmentKey(key, external, remote, ip, KIND_FRAGMENT_AT);
  const at = self.mappings.lookupOrInsert(key, FlowKey.hash(key), t);
  if (!at) return;
  changetype<NATMappingsEntry>(at).remote = inside;
  FlowTable.refresh(at, t, FRAGMENT_TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// Unsolicited inbound SYNs (RFC 5382 REQ-4, with syn_icmp): no answer for 6 s (the unsolicited
// table's timeout); if an outbound SYN of the connection comes meanwhile, the inbound one was part of
// a simultaneous open and is forgotten; otherwise, when its entry expires, ICMP port unreachable goes
// back to the sender. The entry keeps what the answer needs: the frame's Ethernet header with its VLAN tags
// (the answer goes back with them), and what it quotes: the IP header, options too, and 8 bytes (RFC 792).
// Entry: [Ethernet header length u8][quoted length u8][Ethernet header, at most 22 bytes][quote, from byte 24].

/** Most bytes of Ethernet header kept: the addresses, two VLAN tags, the EtherType. */
const MOST_L2: u32 = 22;
const QUOTE_AT: usize = 24;

/** The unsolicited table's key: first the address whose shard handles the connection (the block's subscriber, else the external address); the remote port is the packet's. */
@inline function unsolicitedKey(key: usize, owner: u32, external: u32, externalPort: u16, remote: u32): void {
  store<u32>(key, owner);
  store<u32>(key, remote, 4);
  store<u32>(key, (<u32>externalPort << 16) | <u32>remotePort, 8);
  store<u32>(key, external, 12);
}

function rememberUnsolicited(self: NATState, p: Packet, ip: usize, owner: u32, external: u32, externalPort: u16, remote: u32, t: u64): void {
  const l2 = <u32>(ip - p.data);
  const quoted = IPv4.headerLength(ip) + 8;
  // A SYN's TCP header has its 8 bytes; the caller read its ports from the slot.
  if (l2 > MOST_L2 || IPv4.totalLength(ip) < quoted || l2 + quoted > p.length) return;
  const key = keyBuffer();
  unsolicitedKey(key, owner, external, externalPort, remote);
  const entry = self.unsolicited.lookupOrInsert(key, FlowKey.hash(key), t);
  if (!entry) return; // full: dropped silently, as REQ-4a allows
  store<u8>(entry, <u8>l2);
  store<u8>(entry, <u8>quoted, 1);
  copyBytes(entry + 2, p.data, l2);
  copyBytes(entry + QUOTE_AT, ip, quoted);
}

/** An outbound SYN for a connection an inbound SYN is waiting on: that one gets no answer. */
function forgetUnsolicited(self: NATState, inside: u32, external: u32, externalPort: u16, remote: u32): void {
  const key = keyBuffer();
  unsolicitedKey(key, inside, external, externalPort, remote);
  if (self.unsolicited.remove(key, FlowKey.hash(key))) return;
  // Waiting since before the block was the subscriber's.
  unsolicitedKey(key, external, external, externalPort, remote);
  self.unsolicited.remove(key, FlowKey.hash(key));
}

/** An unsolicited SYN waited 6 s without an outbound SYN (FlowTable.whenExpired): ICMP port unreachable to its sender. */
function answerUnsolicited(value: usize, context: usize): void {
  const self = changetype<NATState>(context);
  if (!answers || !answerBudget) return; // expired outside a batch (a move between shards) or too many at once: silent
  // Both inputs' batches may answer into the one outside output; fragments may have filled it.
  const dest = changetype<Outputs>(answers).port(OUTSIDE);
  if (dest.count >= dest.capacity) return;
  const p = newPacket();
  if (!p) return;
  answerBudget--;
  const key = value - ENTRY_VALUE + ENTRY_KEY;
  const l2 = <u32>load<u8>(value), quoted = <u32>load<u8>(value, 1);
  const data = p.data;
  // The SYN's Ethernet header, its tags and EtherType kept, its addresses swapped.
  copyBytes(data, value + 2, l2);
  copyBytes(data, value + 2 + 6, 6);
  copyBytes(data + 6, value + 2, 6);
  const ip = data + l2;
  copyBytes(ip + ICMP.ERROR_HEADERS, value + QUOTE_AT, quoted);
  ICMP.writeError(ip, ICMP.DESTINATION_UNREACHABLE, ICMP_PORT_UNREACHABLE, 0, load<u32>(key, 12), load<u32>(key, 4), quoted);
  p.length = l2 + ICMP.ERROR_HEADERS + quoted;
  p.wireLength = p.length;
  p.timestamp = now();
  self.syn_icmp_sent++;
  dest.push(p);
}

// ---------------------------------------------------------------------------------------------
// Subscribers, blocks and ports.

/** The subscribers table's key: the inside address. */
@inline function subscriberKey(key: usize, inside: u32): void {
  store<u32>(key, inside); store<u32>(key, 0, 4); store<u64>(key, 0, 8);
}

function subscriberEntry(self: NATState, inside: u32, t: u64): usize {
  const key = keyBuffer();
  subscriberKey(key, inside);
  const entry = self.subscribers.lookupOrInsert(key, FlowKey.hash(key), t);
  if (!entry) return 0;
  if (flowCreated) changetype<NATSubscribersEntry>(entry).external = 0;
  FlowTable.refresh(entry, 0, FOREVER);
  changetype<NATSubscribersEntry>(entry).last_s = <u32>(t / SECOND);
  return entry;
}

/** The subscriber's entry, if it has one (does not make one). */
function findSubscriber(self: NATState, inside: u32, key: usize, t: u64): NATSubscribersEntry | null {
  subscriberKey(key, inside);
  const entry = self.subscribers.find(key, FlowKey.hash(key), t);
  return entry ? changetype<NATSubscribersEntry>(entry) : null;
}

/**
 * Whether the subscriber may have one more session (sessions_per_subscriber). Sessions are counted off
 * as the table finds them expired (lookups, the sweep); once every mapping of the subscriber has expired,
 * so has every session (none outlives its mapping), and the count starts again from 0.
 */
function sessionAllowed(self: NATState, inside: u32, t: u64): bool {
  if (!self.sessions_per_subscriber) return true;
  const sub = findSubscriber(self, inside, keyBuffer(), t);
  if (!sub) return true;
  if (sub.sessions >= self.sessions_per_subscriber && <u32>(t / SECOND) >= sub.mappings_until_s) {
    sub.sessions = 0;
    sub.sessions_since_ns = t;
  }
  // Sessions count down as expired ones are found, which the per-batch sweep may not have done yet: at the limit,
  // all of them are looked at, at most once a second of the clock (a subscriber held there costs no more).
  if (sub.sessions >= self.sessions_per_subscriber && self.sessions_swept_s != t / SECOND + 1) {
    self.sessions_swept_s = t / SECOND + 1;
    self.sessions.sweep(t, self.sessions.slots);
  }
  return sub.sessions < self.sessions_per_subscriber;
}

/** Counts a session made (+1) or ended (-1) in its subscriber's entry (only with sessions_per_subscriber). */
function countSession(self: NATState, inside: u32, t: u64, change: i32): void {
  if (!self.sessions_per_subscriber) return;
  const sub = findSubscriber(self, inside, keyBuffer(), t);
  if (sub && (change > 0 || sub.sessions > 0)) sub.sessions = <u32>(<i32>sub.sessions + change);
}

/**
 * A session expired (FlowTable.whenExpired): one session fewer on its mapping, and for its subscriber (the first
 * word of its key). The dead entry's key holds the keys for the lookups: the shard's key buffer may be in use by
 * the table operation that found the session expired, and so may the packet's globals (localPort...).
 */
function sessionExpired(value: usize, context: usize): void {
  const self = changetype<NATState>(context);
  const key = value - ENTRY_VALUE + ENTRY_KEY;
  const inside = load<u32>(key), remote = load<u32>(key, 4), ports = load<u32>(key, 8), proto = load<u32>(key, 12);
  const ended = FlowTable.expires(value);
  const t = now();
  // The mapping's key, as mappingOutKey makes it from the session's 5-tuple.
  store<u32>(key, self.mapping >= ADDRESS_DEPENDENT ? remote : 0, 4);
  store<u32>(key, self.mapping == ADDRESS_AND_PORT_DEPENDENT ? ports : ports & 0xffff0000, 8);
  store<u32>(key, proto | (KIND_OUT << 8), 12);
  const forward = self.mappings.find(key, FlowKey.hash(key), t);
  if (forward) changeSessionCount(changetype<NATMappingsEntry>(forward), -1);
  if (!self.sessions_per_subscriber) return;
  const sub = findSubscriber(self, inside, key, t);
  // One that ended before its subscriber's count started again from 0 is not in the count.
  if (sub && sub.sessions > 0 && ended > sub.sessions_since_ns) sub.sessions--;
}

function subscriberExternal(self: NATState, inside: u32, t: u64): u32 {
  const sub = findSubscriber(self, inside, keyBuffer(), t);
  return sub ? sub.external : 0;
}

/**
 * The subscriber's external address: fixed in deterministic mode; otherwise chosen once, where a block
 * of the current protocol is free, and kept for every protocol (paired pooling, RFC 4787 REQ-2).
 */
function assignAddress(self: NATState, sub: NATSubscribersEntry, inside: u32, t: u64): u32 {
  if (sub.external) return sub.external;
  const pool = <usize>self.pool;
  const count = load<u32>(pool + POOL_ADDRESSES);
  if (load<u32>(pool + POOL_DETERMINISTIC)) {
    const index = insideIndex(pool, inside);
    if (index < 0) return 0;
    const a = <u32>index / load<u32>(pool + POOL_DET_RATIO);
    if (a >= count || (wantedOnly && wantedAddress && addressAt(pool, a) != wantedAddress)) return 0;
    sub.external = addressAt(pool, a);
    return sub.external;
  }
  const cls = classOf(protocol);
  const low = localPort < 1024 && protocol != IPPROTO_ICMP;
  // With PREFER_FAILURE and a suggested port, only an address where that port's block is free will do: a
  // request refused pins no address on the subscriber.
  const strict = wantedOnly && wantedPort != 0;
  if (strict && (wantedPort < 1024) != low) return 0;
  const seed = strict ? blockSeed(pool, low, wantedPort) : addressHash(inside ^ load<u32>(pool + POOL_SALT));
  // The suggested address first (with PREFER_FAILURE, only it), else from a hashed place.
  const wanted = wantedAddress ? poolIndex(pool, wantedAddress) : -1;
  if (wantedAddress && wantedOnly && wanted < 0) return 0;
  const start = wanted >= 0 ? <u32>wanted : addressHash(inside) % count;
  const tries: u32 = wanted >= 0 && wantedOnly ? 1 : count;
  // An address with a free block of the port's range; for a low port, else one with a high block (allocatePort).
  for (let range = 0; range < (low && !strict ? 2 : 1); range++) {
    for (let i: u32 = 0; i < tries; i++) {
      const a = (start + i) % count;
      if (freeBlock(pool, a, cls, low && range == 0, seed, 0, quarantineEnd(self, t), strict) >= 0) {
        sub.external = addressAt(pool, a);
        return sub.external;
      }
    }
  }
  return 0;
}

/** The first port of the block a subscriber's block slot holds (its global block number + 1). */
@inline function blockStart(block: u32, shift: u32): u32 {
  return ((block - 1) & ((65536 >> shift) - 1)) << shift;
}

/** The first port of an inside address's range in deterministic mode (RFC 7422). */
@inline function deterministicStart(pool: usize, inside: u32): u32 {
  return 1024 + (<u32>insideIndex(pool, inside) % load<u32>(pool + POOL_DET_RATIO)) * load<u32>(pool + POOL_DET_PORTS);
}

/** The place of `port`'s block among the blocks of its range (0-1023 or 1024-65535): a seed for freeBlock that finds that block first. */
@inline function blockSeed(pool: usize, low: bool, port: u16): u32 {
  const shift = load<u32>(pool + POOL_BLOCK_SHIFT);
  return (<u32>port >> shift) - (low ? 0 : 1024 >> shift);
}

/**
 * A free external port for a new mapping of (inside, localPort): the suggested one (wantedPort, in the inside
 * port's range) when it is free in a block the subscriber holds or in a free block it may claim; else the
 * inside port itself (port preservation) or the next free one of its blocks of the protocol and range
 * (0-1023 or 1024-65535; same parity with `parity`); else one of a newly claimed block.
 */
/**
 * allocatePort, and once more when the pool had no free block and a look at every subscriber gave some back: the
 * per-batch search (releaseIdleBlocks) may not have reached them on a quiet NAT. At most one such look per second
 * of the clock, so that a pool that is really full costs no more than that.
 */
function allocatePortOrReclaim(self: NATState, sub: NATSubscribersEntry, inside: u32, t: u64): u32 {
  const port = allocatePort(self, sub, inside, t);
  if (port != (FAILED | FAIL_POOL) || self.reclaimed_s == t / SECOND + 1) return port;
  self.reclaimed_s = t / SECOND + 1;
  const released = self.blocks_released;
  // After a quiet while, a sweep finds the mappings that ended meanwhile (and their blocks may go); when busy, a batch's share.
  sweepTables(self, t);
  releaseIdleBlocks(self, t, self.subscribers.slots);
  return self.blocks_released == released ? port : allocatePort(self, sub, inside, t);
}

function allocatePort(self: NATState, sub: NATSubscribersEntry, inside: u32, t: u64): u32 {
  const pool = <usize>self.pool;
  const external = assignAddress(self, sub, inside, t);
  if (!external) return FAILED | FAIL_POOL;
  // RFC 4787 REQ-3: a port below 1024 maps below 1024 while a low block has room, else above (ICMP identifiers have no such range).
  const low = localPort < 1024 && protocol != IPPROTO_ICMP;
  if (load<u32>(pool + POOL_DETERMINISTIC)) {
    const ports = load<u32>(pool + POOL_DET_PORTS);
    const first = deterministicStart(pool, inside);
    const port = freePortIn(self, inside, first, first + ports - 1, t);
    return port >= 0 ? <u32>port : FAILED | FAIL_PORTS;
  }
  const shift = load<u32>(pool + POOL_BLOCK_SHIFT);
  const slots = changetype<usize>(sub) + offsetof<NATSubscribersEntry>("b0") + <usize>(classOf(protocol) * SLOTS << 2);
  const wantedHere = wantedPort != 0 && (wantedPort < 1024) == low;
  let held: u32 = 0;
  let wantedHeld = false;
  for (let slot: u32 = 0; slot < self.blocks_per_subscriber; slot++) {
    const block = load<u32>(slots + (<usize>slot << 2));
    if (!block) continue;
    held++;
    if (wantedHere && blockStart(block, shift) == (<u32>wantedPort >> shift) << shift) wantedHeld = true;
  }
  if (wantedHere) {
    if (wantedHeld && portFree(self, keyBuffer(), inside, wantedPort, t)) return <u32>wantedPort;
    if (!wantedHeld && held < self.blocks_per_subscriber) {
      const port = claimBlock(self, slots, external, blockSeed(pool, low, wantedPort), true, low, inside, t);
      if (!(port & FAILED)) return port;
    }
  }
  if (wantedOnly && wantedPort) return FAILED | FAIL_PORTS;
  const port = portInRange(self, slots, external, inside, held, low, t);
  return low && (port & FAILED) ? portInRange(self, slots, external, inside, held, false, t) : port;
}

/** A free port in a block the subscriber holds of the low (below 1024) or high range, else in a block it claims. */
function portInRange(self: NATState, slots: usize, external: u32, inside: u32, held: u32, low: bool, t: u64): u32 {
  const pool = <usize>self.pool;
  const shift = load<u32>(pool + POOL_BLOCK_SHIFT);
  for (let slot: u32 = 0; slot < self.blocks_per_subscriber; slot++) {
    const block = load<u32>(slots + (<usize>slot << 2));
    if (!block) continue;
    const first = blockStart(block, shift);
    if ((first < 1024) != low) continue;
    const port = freePortIn(self, inside, first, first + (1 << shift) - 1, t);
    if (port >= 0) return <u32>port;
  }
  if (held >= self.blocks_per_subscriber) return FAILED | FAIL_PORTS;
  const seed = self.port_preservation ? blockSeed(pool, low, localPort) : addressHash(inside ^ load<u32>(pool + POOL_SALT)) + held;
  return claimBlock(self, slots, external, seed, false, low, inside, t);
}

/**
 * Claims a free block of the packet's protocol, in the low (below 1024) or high range, on `external` (from `seed`; only that one with
 * `seedOnly`) into a free slot of the subscriber's `slots`, logs it, and returns a free port of it (freePortIn),
 * or FAILED | the reason. The caller has seen that a slot is free.
 */
function claimBlock(self: NATState, slots: usize, external: u32, seed: u32, seedOnly: bool, low: bool, inside: u32, t: u64): u32 {
  const pool = <usize>self.pool;
  const shift = load<u32>(pool + POOL_BLOCK_SHIFT);
  const cls = classOf(protocol);
  // A block the log could not record is not claimed: lawful logging needs a record of every one.
  if (logFull(pool)) return FAILED | FAIL_LOG;
  const a = <u32>poolIndex(pool, external);
  const b = freeBlock(pool, a, cls, low, seed, inside, quarantineEnd(self, t), seedOnly);
  if (b < 0) return FAILED | FAIL_POOL;
  for (let slot: u32 = 0; slot < self.blocks_per_subscriber; slot++) {
    if (load<u32>(slots + (<usize>slot << 2))) continue;
    const global = (cls * load<u32>(pool + POOL_ADDRESSES) + a) * (65536 >> shift) + <u32>b;
    store<u32>(slots + (<usize>slot << 2), global + 1);
    store<u32>(slots + (<usize>(SLOTS * 3 + 0) << 2) + (<usize>slot << 2), <u32>(t / SECOND));
    const first = <u32>b << shift;
    logBlock(self, 1, cls, inside, external, first, first + (1 << shift) - 1, t);
    self.blocks_allocated++;
    const port = freePortIn(self, inside, first, first + (1 << shift) - 1, t);
    return port >= 0 ? <u32>port : FAILED | FAIL_PORTS;
  }
  return FAILED | FAIL_PORTS;
}

/**
 * A port of [first, last] that no mapping of the subscriber uses: the suggested one (wantedPort) if it fits, else
 * (unless only it will do) the inside port if it fits, else from a hashed start.
 */
function freePortIn(self: NATState, inside: u32, first: u32, last: u32, t: u64): i32 {
  const key = keyBuffer();
  const lowest = first == 0 ? <u32>1 : first;
  if (<u32>wantedPort >= lowest && <u32>wantedPort <= last && portFree(self, key, inside, wantedPort, t)) return <i32>wantedPort;
  if (wantedOnly && wantedPort) return -1;
  if (self.port_preservation && <u32>localPort >= lowest && <u32>localPort <= last && portFree(self, key, inside, localPort, t)) return <i32>localPort;
  const size = last - lowest + 1;
  const start = lowest + addressHash(inside ^ (<u32>localPort << 16) ^ load<u32>(<usize>self.pool + POOL_SALT)) % size;
  for (let i: u32 = 0; i < size; i++) {
    let port = start + i;
    if (port > last) port -= size;
    // Parity port by port: a range of odd size (block 0 without port 0, a deterministic range) flips it where it wraps.
    if (self.parity && ((port ^ <u32>localPort) & 1)) continue;
    if (portFree(self, key, inside, <u16>port, t)) return <i32>port;
  }
  return -1;
}

@inline function portFree(self: NATState, key: usize, inside: u32, port: u16, t: u64): bool {
  mappingInKey(key, inside, port);
  return self.mappings.find(key, FlowKey.hash(key), t) == 0;
}

/**
 * Claims (when `owner` is set) or finds a free block of class `cls` in the low or high range of address
 * `a`, starting at a hashed place (RFC 6888 REQ-15: hard to guess; with `seedOnly`, only the seed's). A block released after `releasedBefore`
 * (seconds) is still in quarantine. Returns the block number, or -1.
 */
function freeBlock(pool: usize, a: u32, cls: u32, low: bool, seed: u32, owner: u32, releasedBefore: u32, seedOnly: bool = false): i32 {
  const shift = load<u32>(pool + POOL_BLOCK_SHIFT);
  const perAddress: u32 = 65536 >> shift;
  const lowBlocks: u32 = 1024 >> shift;
  const from = low ? 0 : lowBlocks;
  const count = low ? lowBlocks : perAddress - lowBlocks;
  const row = <usize>load<u32>(pool + POOL_BLOCKS_AT) + <usize>((cls * load<u32>(pool + POOL_ADDRESSES) + a) * perAddress) * 8;
  const tries: u32 = seedOnly ? 1 : count;
  for (let i: u32 = 0; i < tries; i++) {
    const b = from + (seed + i) % count;
    const record = pool + row + (<usize>b << 3);
    if (atomic.load<u32>(record) != 0) continue;
    const released = load<u32>(record, 4);
    if (released != 0 && released > releasedBefore) continue;
    if (!owner) return <i32>b;
    if (atomic.cmpxchg<u32>(record, 0, owner) == 0) return <i32>b;
  }
  return -1;
}

/** Blocks released after this second (the clock's) are still in quarantine. */
function quarantineEnd(self: NATState, t: u64): u32 {
  const q = self.quarantine / SECOND;
  const nowS = t / SECOND;
  return nowS > q ? <u32>(nowS - q) : 0;
}

/** Records that a mapping of the packet's protocol in the block of `port` lives until `deadline` (the block is given back after). */
function holdBlockUntil(self: NATState, sub: NATSubscribersEntry, port: u16, deadline: u64): void {
  const until = <u32>(deadline / SECOND) + 1;
  if (sub.mappings_until_s < until) sub.mappings_until_s = until;
  const slot = blockSlot(self, sub, classOf(protocol), port);
  if (slot == NO_SLOT) return;
  const at = untilAt(sub, slot);
  if (load<u32>(at) < until) store<u32>(at, until);
}

/** The slot (0 to SLOTS * 3 - 1) of the subscriber's block of class `cls` that holds `port`, or NO_SLOT. */
function blockSlot(self: NATState, sub: NATSubscribersEntry, cls: u32, port: u16): u32 {
  const shift = load<u32>(<usize>self.pool + POOL_BLOCK_SHIFT);
  const base = changetype<usize>(sub) + offsetof<NATSubscribersEntry>("b0");
  for (let slot = cls * SLOTS; slot < (cls + 1) * SLOTS; slot++) {
    const block = load<u32>(base + (<usize>slot << 2));
    if (block && blockStart(block, shift) == (<u32>port >> shift) << shift) return slot;
  }
  return NO_SLOT;
}

@inline function untilAt(sub: NATSubscribersEntry, slot: u32): usize {
  return changetype<usize>(sub) + offsetof<NATSubscribersEntry>("u0") + (<usize>slot << 2);
}

@inline function countAt(sub: NATSubscribersEntry, slot: u32): usize {
  return changetype<usize>(sub) + offsetof<NATSubscribersEntry>("c0") + (<usize>slot << 1);
}

/** A mapping was made on `port`: its block holds one more. */
function countInBlock(self: NATState, sub: NATSubscribersEntry, cls: u32, port: u16): void {
  const slot = blockSlot(self, sub, cls, port);
  if (slot == NO_SLOT) return;
  const at = countAt(sub, slot);
  const count = load<u16>(at);
  if ((count & ~BLOCK_LOWERED) < ~BLOCK_LOWERED) store<u16>(at, count + 1);
}

/**
 * The mapping on `port` ended (expired at `ended`, or removed): its block holds one fewer, and when that was the last
 * one the block is in use only until then (BLOCK_LOWERED), not until the deadline its longest-lived mapping once had.
 */
function mappingGone(self: NATState, sub: NATSubscribersEntry, cls: u32, port: u16, ended: u64): void {
  const slot = blockSlot(self, sub, cls, port);
  if (slot == NO_SLOT) return;
  const at = countAt(sub, slot);
  const count = load<u16>(at);
  if (!(count & ~BLOCK_LOWERED)) return;
  if ((count & ~BLOCK_LOWERED) > 1) { store<u16>(at, count - 1); return; }
  store<u16>(at, BLOCK_LOWERED);
  const until = <u32>(ended / SECOND) + 1;
  if (load<u32>(untilAt(sub, slot)) > until) store<u32>(untilAt(sub, slot), until);
}

/** A mapping expired (FlowTable.whenExpired): one fewer in its block. The table's caller may be using the key buffer. */
function mappingExpired(value: usize, context: usize): void {
  const key = value - ENTRY_VALUE + ENTRY_KEY;
  const kind = load<u32>(key, 12);
  if (kind >> 8 != KIND_OUT) return;
  const self = changetype<NATState>(context);
  const port = changetype<NATMappingsEntry>(value).port;
  const ended = FlowTable.expires(value);
  const sub = findSubscriber(self, load<u32>(key), key, now());
  if (sub) mappingGone(self, sub, classOf(<u8>kind), port, ended);
}

/**
 * Before a block whose `until` was brought forward is released: the live mappings on its ports (found by their
 * inbound entries), which its count says there are none of. When there are some, the block is held until the last
 * one's deadline, and counts them.
 */
function holdsLiveMappings(self: NATState, sub: NATSubscribersEntry, inside: u32, slot: u32, first: u32, last: u32, t: u64): bool {
  const packetProtocol = protocol;
  protocol = slot / SLOTS == 0 ? IPPROTO_TCP : slot / SLOTS == 1 ? IPPROTO_UDP : IPPROTO_ICMP;
  const key = keyBuffer();
  let live: u32 = 0;
  let latest: u64 = 0;
  for (let port = max<u32>(first, 1); port <= last; port++) {
    mappingInKey(key, inside, <u16>port);
    const back = self.mappings.find(key, FlowKey.hash(key), t);
    if (!back) continue;
    live++;
    latest = max<u64>(latest, FlowTable.expires(back));
  }
  protocol = packetProtocol;
  store<u16>(countAt(sub, slot), <u16>min<u32>(live, ~BLOCK_LOWERED));
  if (live) store<u32>(untilAt(sub, slot), <u32>(latest / SECOND) + 1);
  return live != 0;
}

/**
 * Gives back the blocks whose mappings have all expired, looking at `budget` subscriber entries per
 * batch, and removes subscribers that hold nothing, whose mappings have ended, and that have been idle for the UDP timeout.
 */
/** The per-batch search for idle blocks goes over the whole subscriber table at least this often (ns of the clock). */
const IDLE_SEARCH_ROUND_NS: u64 = 10 * SECOND;
/** Most subscriber slots one batch looks at (a quiet NAT of millions of subscribers takes a few batches for a round). */
const IDLE_SEARCH_MOST: u32 = 65536;

/**
 * Subscriber slots the search looks at in this batch: 4, or as many as keep a round of the table within
 * IDLE_SEARCH_ROUND_NS when batches come seldom (a quiet NAT gives blocks back about as soon as a busy one does).
 */
function idleSearchBudget(self: NATState, t: u64): u32 {
  // The first batch (of a run, or of a shard a scale event made) has nothing to catch up on.
  const elapsed = self.idle_search_ns != 0 && t > self.idle_search_ns ? t - self.idle_search_ns : 0;
  self.idle_search_ns = t;
  const slots = self.subscribers.slots;
  const share = elapsed >= IDLE_SEARCH_ROUND_NS ? slots : <u32>((<u64>slots * elapsed) / IDLE_SEARCH_ROUND_NS);
  return min<u32>(max<u32>(share, 4), IDLE_SEARCH_MOST);
}

function releaseIdleBlocks(self: NATState, t: u64, budget: u32): void {
  const pool = <usize>self.pool;
  const shift = load<u32>(pool + POOL_BLOCK_SHIFT);
  const table = self.subscribers;
  const nowS = <u32>(t / SECOND);
  const count = load<u32>(pool + POOL_ADDRESSES);
  const perAddress: u32 = 65536 >> shift;
  const deterministic = load<u32>(pool + POOL_DETERMINISTIC) != 0;
  for (let n: u32 = 0; n < budget; n++) {
    const e = table.entry(<u32>self.scan_cursor);
    self.scan_cursor++;
    if (load<u16>(e) != ENTRY_LIVE) continue;
    const inside = load<u32>(e, ENTRY_KEY);
    const sub = changetype<NATSubscribersEntry>(e + ENTRY_VALUE);
    const base = e + ENTRY_VALUE + offsetof<NATSubscribersEntry>("b0");
    let held: u32 = 0;
    for (let slot: u32 = 0; slot < SLOTS * 3; slot++) {
      const block = load<u32>(base + (<usize>slot << 2));
      if (!block) continue;
      const until = load<u32>(base + (<usize>(SLOTS * 3 + slot) << 2));
      // Not before every mapping that ended by then has been swept: one found later would count off a block claimed anew.
      if (until > nowS || <u64>until * SECOND > self.mappings_swept_ns) { held++; continue; }
      const global = block - 1;
      const first = (global % perAddress) << shift;
      if ((load<u16>(countAt(sub, slot)) & BLOCK_LOWERED) && holdsLiveMappings(self, sub, inside, slot, first, first + (1 << shift) - 1, t)) { held++; continue; }
      // Nor released unrecorded: it waits for room in the log's queue.
      if (logFull(pool)) { held++; continue; }
      // Released when its last mapping expired, which the search may see much later: the quarantine and the log
      // count from then.
      const record = pool + <usize>load<u32>(pool + POOL_BLOCKS_AT) + (<usize>global << 3);
      store<u32>(record, until, 4);
      atomic.store<u32>(record, 0);
      store<u32>(base + (<usize>slot << 2), 0);
      store<u16>(countAt(sub, slot), 0);
      const a = (global / perAddress) % count;
      logBlock(self, 2, slot / SLOTS, inside, addressAt(pool, a), first, first + (1 << shift) - 1, <u64>until * SECOND);
      self.blocks_released++;
    }
    // In deterministic mode no block is held for the mappings: the entry stays until they have ended, as their
    // sessions take the external address and the session count from it.
    if (deterministic && nowS < sub.mappings_until_s) continue;
    if (!held && nowS > sub.last_s + <u32>(self.udp_timeout / SECOND)) table.remove(e + ENTRY_KEY, load<u32>(e, 4));
  }
}

/** Whether the block log's queue has no room (while it has none, no block is claimed or released: logBlock). */
@inline function logFull(pool: usize): bool {
  return load<u32>(pool + POOL_LOGGING) != 0
    && atomic.load<u32>(pool + POOL_LOG_WRITE) - atomic.load<u32>(pool + POOL_LOG_READ) >= load<u32>(pool + POOL_LOG_CAPACITY);
}

/**
 * Queues a block record for the main thread's log (pool.ts drainLog). The callers looked for room first (logFull);
 * a record is lost, and counted, only when another shard took the last of it in between.
 */
function logBlock(self: NATState, event: u8, cls: u32, inside: u32, external: u32, first: u32, last: u32, t: u64): void {
  const pool = <usize>self.pool;
  if (!load<u32>(pool + POOL_LOGGING)) return;
  const capacity = load<u32>(pool + POOL_LOG_CAPACITY);
  let index: u32 = 0;
  for (;;) {
    index = atomic.load<u32>(pool + POOL_LOG_WRITE);
    if (index - atomic.load<u32>(pool + POOL_LOG_READ) >= capacity) { self.log_lost++; return; }
    if (atomic.cmpxchg<u32>(pool + POOL_LOG_WRITE, index, index + 1) == index) break;
  }
  const r = pool + <usize>load<u32>(pool + POOL_LOG_AT) + <usize>(index % capacity) * LOG_RECORD;
  store<u8>(r, event, 4);
  store<u8>(r, <u8>cls, 5);
  store<u32>(r, inside, 8);
  store<u32>(r, external, 12);
  store<u16>(r, <u16>first, 16);
  store<u16>(r, <u16>last, 18);
  store<u64>(r, t, 24);
  atomic.store<u32>(r, index + 1);
}

// ---------------------------------------------------------------------------------------------
// The pool data.

/** Index of `address` in the sorted pool, or -1. */
@inline function poolIndex(pool: usize, address: u32): i32 {
  if (address < load<u32>(pool + POOL_MIN) || address > load<u32>(pool + POOL_MAX)) return -1;
  const at = pool + <usize>load<u32>(pool + POOL_ADDRESSES_AT);
  let lo: i32 = 0;
  let hi: i32 = <i32>load<u32>(pool + POOL_ADDRESSES) - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const value = load<u32>(at + (<usize>mid << 2));
    if (value == address) return mid;
    if (value < address) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

@inline function addressAt(pool: usize, a: u32): u32 {
  return load<u32>(pool + <usize>load<u32>(pool + POOL_ADDRESSES_AT) + (<usize>a << 2));
}

/** The inside address that holds external port `port` of pool address `a` for class `cls`, or 0. */
function ownerOf(pool: usize, a: u32, port: u16, cls: u32): u32 {
  if (load<u32>(pool + POOL_DETERMINISTIC)) {
    const ports = load<u32>(pool + POOL_DET_PORTS);
    const ratio = load<u32>(pool + POOL_DET_RATIO);
    if (port < 1024 || (<u32>port - 1024) / ports >= ratio) return 0;
    return insideAddress(pool, a * ratio + (<u32>port - 1024) / ports);
  }
  const shift = load<u32>(pool + POOL_BLOCK_SHIFT);
  const perAddress: u32 = 65536 >> shift;
  const global = (cls * load<u32>(pool + POOL_ADDRESSES) + a) * perAddress + (<u32>port >> shift);
  return atomic.load<u32>(pool + <usize>load<u32>(pool + POOL_BLOCKS_AT) + (<usize>global << 3));
}

@inline function isInside(pool: usize, address: u32): bool {
  return insideIndex(pool, address) >= 0;
}

/** Position of an inside address among all inside addresses (prefixes in config order), or -1. */
@inline function insideIndex(pool: usize, address: u32): i32 {
  const at = pool + <usize>load<u32>(pool + POOL_INSIDE_AT);
  const count = load<u32>(pool + POOL_INSIDE_COUNT);
  for (let i: u32 = 0; i < count; i++) {
    const prefix = at + <usize>i * 12;
    const base = load<u32>(prefix);
    if ((address & load<u32>(prefix, 4)) == base) return <i32>(load<u32>(prefix, 8) + (address - base));
  }
  return -1;
}

/** The inside address at position `index` (the inverse of insideIndex), or 0. */
function insideAddress(pool: usize, index: u32): u32 {
  const at = pool + <usize>load<u32>(pool + POOL_INSIDE_AT);
  const count = load<u32>(pool + POOL_INSIDE_COUNT);
  for (let i: u32 = 0; i < count; i++) {
    const prefix = at + <usize>i * 12;
    const first = load<u32>(prefix, 8);
    const size = ~load<u32>(prefix, 4) + 1;
    if (index >= first && (size == 0 || index - first < size)) return load<u32>(prefix) + (index - first);
  }
  return 0;
}

/**
 * Whether an address can be one host's on the Internet: not "this network" (0/8), loopback (127/8), link-local
 * (169.254/16), multicast (224/4), or reserved and broadcast (240/4). A router forwards no packet to or from the others
 * (RFC 1812 §5.3.7, RFC 3927 §7, RFC 6890).
 */
@inline function isHostAddress(address: u32): bool {
  const first = address >>> 24;
  return first != 0 && first != 127 && first < 224 && (address >>> 16) != 0xa9fe;
}

@inline function isExempt(pool: usize, address: u32, port: u16): bool {
  if (port && (load<u8>(pool + <usize>load<u32>(pool + POOL_EXEMPT_PORTS_AT) + (<usize>port >> 3)) >> (port & 7)) & 1) return true;
  const count = load<u32>(pool + POOL_EXEMPT_COUNT);
  if (!count) return false;
  const at = pool + <usize>load<u32>(pool + POOL_EXEMPT_AT);
  for (let i: u32 = 0; i < count; i++) {
    if ((address & load<u32>(at + <usize>i * 8, 4)) == load<u32>(at + <usize>i * 8)) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Keys, timers, headers.

@inline function classOf(proto: u8): u32 {
  return proto == IPPROTO_TCP ? 0 : proto == IPPROTO_UDP ? 1 : 2;
}

@inline function sessionKey(key: usize, inside: u32, remote: u32, local: u16, remotePortValue: u16): void {
  store<u32>(key, inside);
  store<u32>(key, remote, 4);
  store<u32>(key, (<u32>local << 16) | <u32>remotePortValue, 8);
  store<u32>(key, <u32>protocol, 12);
}

@inline function mappingOutKey(self: NATState, key: usize, inside: u32, remote: u32): void {
  store<u32>(key, inside);
  store<u32>(key, self.mapping >= ADDRESS_DEPENDENT ? remote : 0, 4);
  store<u32>(key, (<u32>localPort << 16) | (self.mapping == ADDRESS_AND_PORT_DEPENDENT ? <u32>remotePort : 0), 8);
  store<u32>(key, <u32>protocol | (KIND_OUT << 8), 12);
}

@inline function mappingInKey(key: usize, inside: u32, external: u16): void {
  store<u32>(key, inside);
  store<u32>(key, 0, 4);
  store<u32>(key, <u32>external << 16, 8);
  store<u32>(key, <u32>protocol | (KIND_IN << 8), 12);
}

@inline function filterKey(key: usize, inside: u32, remote: u32, external: u16): void {
  store<u32>(key, inside);
  store<u32>(key, remote, 4);
  store<u32>(key, <u32>external << 16, 8);
  store<u32>(key, <u32>protocol | (KIND_FILTER << 8), 12);
}

@inline function fragmentKey(key: usize, address: u32, remote: u32, ip: usize, kind: u32): void {
  store<u32>(key, address);
  store<u32>(key, remote, 4);
  store<u32>(key, <u32>IPv4.id(ip), 8);
  store<u32>(key, <u32>IPv4.protocol(ip) | (kind << 8), 12);
}

function protocolTimeout(self: NATState): u64 {
  return protocol == IPPROTO_UDP ? self.udp_timeout : protocol == IPPROTO_ICMP ? self.icmp_timeout : self.tcp_transitory;
}

/**
 * Follows a session's TCP state for a packet in direction `way` and returns its idle timeout:
 * established once both sides have sent, transitory while opening or after a FIN, tcp_rst after a RST
 * until another packet comes (RFC 7857 §2.2). A SYN after a FIN or a RST starts a new connection, opening until answered.
 */
@inline function sessionTimeout(self: NATState, s: NATSessionsEntry, flags: u8, way: u8): u64 {
  if (protocol != IPPROTO_TCP) return protocolTimeout(self);
  let state = s.tcp;
  if ((flags & (TCP.SYN | TCP.ACK)) == TCP.SYN && (state & (TCP_FIN | TCP_RST))) state = 0;
  state |= way;
  if (flags & TCP.RST) state |= TCP_RST;
  else state &= ~TCP_RST;
  if (flags & TCP.FIN) state |= TCP_FIN;
  s.tcp = state;
  if (state & TCP_RST) return self.tcp_rst;
  if (state & TCP_FIN) return self.tcp_transitory;
  return (state & (TCP_OUT | TCP_IN)) == (TCP_OUT | TCP_IN) ? self.tcp_established : self.tcp_transitory;
}

/**
 * Moves a session's deadline: only later, so that a PCP PEER's lifetime holds, unless its TCP connection is
 * closing (after a FIN or a RST the shorter timers apply).
 */
@inline function setSessionDeadline(session: usize, s: NATSessionsEntry, deadline: u64): void {
  if (deadline > FlowTable.expires(session) || (s.tcp & (TCP_FIN | TCP_RST))) FlowTable.refresh(session, 0, deadline);
}

/**
 * Rewrites the inside host's address and port: the source going out, the destination coming in (for
 * ICMP queries the identifier), with the IP checksum and the transport checksum updated once for both.
 */
@inline function translate(ip: usize, l4: usize, address: u32, port: u16, source: bool): void {
  // On the wire's bytes as loaded: checksum updates do not depend on byte order (RFC 1071 §2(B)).
  const addressDelta = replace32(ip + (source ? 12 : 16), bswap<u32>(address));
  store<u16>(ip + 10, adjustChecksum(load<u16>(ip + 10), addressDelta));
  const portDelta = replace16(protocol == IPPROTO_ICMP ? l4 + 4 : l4 + (source ? 0 : 2), bswap<u16>(port));
  const checkAt = protocol == IPPROTO_TCP ? l4 + 16 : protocol == IPPROTO_UDP ? l4 + 6 : l4 + 2;
  const check = load<u16>(checkAt);
  if (protocol == IPPROTO_ICMP) { store<u16>(checkAt, adjustChecksum(check, portDelta)); return; }
  if (protocol == IPPROTO_UDP && check == 0) return; // no checksum stays none (RFC 768)
  const updated = adjustChecksum(check, addressDelta + portDelta);
  store<u16>(checkAt, protocol == IPPROTO_UDP && updated == 0 ? 0xffff : updated);
}

@inline function isIcmpRequest(type: u8): bool {
  return type == 8 || type == 13 || type == 15 || type == 17;
}

@inline function isIcmpReply(type: u8): bool {
  return type == 0 || type == 14 || type == 16 || type == 18;
}

/**
 * The IPv4 header an ICMP error quotes, or 0 when the quote is too short for it and the 8 bytes of
 * transport header the NAT needs (RFC 792), or is not a first fragment of TCP, UDP or an ICMP query.
 */
function quoted(p: Packet, ip: usize, l4: usize): usize {
  const end = IPv4.end(p, ip);
  const inner = l4 + 8;
  if (inner + 20 > end || (load<u8>(inner) >> 4) != 4) return 0;
  const hl = IPv4.headerLength(inner);
  if (hl < 20 || inner + hl + 8 > end || IPv4.fragmentOffset(inner) != 0) return 0;
  const proto = IPv4.protocol(inner);
  if (proto == IPPROTO_ICMP) return isIcmpRequest(ICMP.type(inner + hl)) || isIcmpReply(ICMP.type(inner + hl)) ? inner : 0;
  return proto == IPPROTO_TCP || proto == IPPROTO_UDP ? inner : 0;
}

/** The quoted packet's source (or destination) port; for a quoted ICMP query, its identifier. */
function quotedPort(inner: usize, source: bool): u16 {
  const l4 = inner + IPv4.headerLength(inner);
  if (IPv4.protocol(inner) == IPPROTO_ICMP) return Wire.get16(l4 + 4);
  return source ? Wire.get16(l4) : Wire.get16(l4 + 2);
}

/**
 * Rewrites the quoted packet's source (or destination) address and port, with its IP checksum and,
 * when quoted whole enough, its UDP or TCP checksum; then recomputes the ICMP checksum over the message.
 */
function rewriteQuoted(ip: usize, l4: usize, inner: usize, source: bool, address: u32, port: u16): void {
  const end = ip + IPv4.totalLength(ip);
  const hl = IPv4.headerLength(inner);
  const innerL4 = inner + hl;
  const proto = IPv4.protocol(inner);
  // As translate, on the wire's bytes as loaded.
  const addressDelta = replace32(inner + (source ? 12 : 16), bswap<u32>(address));
  store<u16>(inner + 10, adjustChecksum(load<u16>(inner + 10), addressDelta));
  const portDelta = replace16(proto == IPPROTO_ICMP ? innerL4 + 4 : innerL4 + (source ? 0 : 2), bswap<u16>(port));
  const checkAt = proto == IPPROTO_UDP ? innerL4 + 6 : proto == IPPROTO_TCP ? innerL4 + 16 : innerL4 + 2;
  if (checkAt + 2 <= end && !(proto == IPPROTO_UDP && load<u16>(checkAt) == 0)) {
    const updated = adjustChecksum(load<u16>(checkAt), proto == IPPROTO_ICMP ? portDelta : addressDelta + portDelta);
    // As translate: a UDP checksum that comes to 0 is sent as 0xffff, 0 being none (RFC 768).
    store<u16>(checkAt, proto == IPPROTO_UDP && updated == 0 ? 0xffff : updated);
  }
  Wire.set16(l4 + 2, 0);
  Wire.set16(l4 + 2, checksum(l4, <u32>(end - l4)));
}

/** No mapping could be made: counted by reason, dropped, and with icmp_errors answered with ICMP host unreachable. */
function refuse(self: NATState, p: Packet, ip: usize, out: Outputs): void {
  if (failure == FAIL_PORTS) self.drop_ports_exhausted++;
  else if (failure == FAIL_POOL) self.drop_pool_exhausted++;
  else if (failure == FAIL_SESSIONS) self.drop_session_limit++;
  else if (failure == FAIL_LOG) self.drop_log_full++;
  else self.drop_table_full++;
  if (self.icmp_errors && answerUnreachable(self, p, ip, ICMP_HOST_UNREACHABLE, 0)) { self.icmp_sent++; out.push(INSIDE, p); return; }
  dropPacket(p);
}

/**
 * Sends a packet out of the outside port. One larger than mtu (its DF flag clear: those with DF set were
 * answered before translation) leaves in fragments (RFC 4787 REQ-13).
 */
@inline function sendOut(self: NATState, p: Packet, out: Outputs): void {
  if (self.mtu) {
    const ip = IPv4.header(p);
    if (ip && IPv4.totalLength(ip) > <u32>self.mtu) { fragment(self, p, ip, out); return; }
  }
  out.push(OUTSIDE, p);
}

/**
 * Splits a packet into fragments of at most mtu bytes and sends them out in order (RFC 791): the packet
 * itself, cut short, is the first; each later one carries the options whose copied flag is set, and the
 * offsets go on from the packet's own (a fragment is fragmented further). The transport checksum covers
 * the whole datagram and stays in the first. Without slots or room for all the pieces, nothing is sent.
 */
function fragment(self: NATState, p: Packet, ip: usize, out: Outputs): void {
  const hl = IPv4.headerLength(ip);
  const payload = IPv4.totalLength(ip) - hl;
  const laterHl = laterHeader(ip, hl, 0);
  // mtu is at least 68 and a header at most 60 bytes: every piece carries at least 8.
  const first = (<u32>self.mtu - hl) & ~7;
  const each = (<u32>self.mtu - laterHl) & ~7;
  const pieces = 1 + (payload - first + each - 1) / each;
  const field = Wire.get16(ip + 6);
  // A fragment that would end past 64 KiB has no offsets for its pieces.
  if (((<u32>field & IP_FRAGMENT_OFFSET) << 3) + payload > 0xffff) { self.drop_malformed++; dropPacket(p); return; }
  const dest = out.port(OUTSIDE);
  const taken = dest.count - outsideAtStart;
  if (taken + pieces + packetsLeft * fragmentsOf1500(self) + answerBudget > outsideShare || dest.count + pieces > dest.capacity) {
    self.drop_no_buffer++;
    dropPacket(p);
    return;
  }
  const l2 = <u32>(ip - p.data);
  const mark = dest.count;
  Wire.set16(ip + 2, <u16>(hl + first));
  Wire.set16(ip + 6, field | IP_MORE_FRAGMENTS);
  IPv4.setHeaderChecksum(ip);
  p.length = l2 + hl + first;
  p.wireLength = p.length;
  dest.push(p);
  // The bytes past the first piece are still in the packet's slot.
  for (let at = first; at < payload; at += each) {
    const q = newPacket();
    if (!q) {
      for (let i = mark; i < dest.count; i++) dropPacket(dest.packet(i));
      dest.count = mark;
      self.drop_no_buffer++;
      return;
    }
    const size = min(each, payload - at);
    copyBytes(changetype<usize>(q), changetype<usize>(p), META_SIZE); // at the packet's data offset, so it fits as the packet did
    q.length = l2 + laterHl + size;
    q.wireLength = q.length;
    const qip = q.data + l2;
    copyBytes(q.data, p.data, l2);
    laterHeader(ip, hl, qip);
    copyBytes(qip + laterHl, ip + hl + at, size);
    Wire.set16(qip + 2, <u16>(laterHl + size));
    const last = at + size == payload;
    Wire.set16(qip + 6, <u16>((field & IP_FRAGMENT_OFFSET) + (at >> 3)) | (last ? field & IP_MORE_FRAGMENTS : IP_MORE_FRAGMENTS));
    IPv4.setHeaderChecksum(qip);
    dest.push(q);
  }
  self.fragmented++;
}

/**
 * Length of the header of a later fragment of the datagram whose header (`hl` bytes) is at `ip`: the fixed
 * 20 bytes and the options whose copied flag is set, padded to whole words; written at `to` unless it is 0.
 * A malformed option list is copied up to where it goes wrong.
 */
function laterHeader(ip: usize, hl: u32, to: usize): u32 {
  let length: u32 = IPv4.MIN_HEADER;
  if (to) copyBytes(to, ip, IPv4.MIN_HEADER);
  for (let at = IPv4.MIN_HEADER; at < hl;) {
    const type = load<u8>(ip + at);
    if (type == 0) break; // end of the option list
    if (type == 1) { at++; continue; } // no-operation, not copied
    const size = at + 1 < hl ? <u32>load<u8>(ip + at + 1) : 0;
    if (size < 2 || at + size > hl) break;
    if (type & 0x80) {
      if (to) copyBytes(to + length, ip + at, size);
      length += size;
    }
    at += size;
  }
  const padded = (length + 3) & ~3;
  if (to) {
    zeroBytes(to + length, padded - length); // end of the option list
    store<u8>(to, 0x40 | <u8>(padded >> 2));
  }
  return padded;
}

/**
 * Larger than the outside link takes, and not to be fragmented: dropped, and answered with ICMP
 * fragmentation needed (RFC 1191), unless it is an ICMP error itself (RFC 1122: no error about an error).
 */
function tooBig(self: NATState, p: Packet, ip: usize, out: Outputs): void {
  self.drop_too_big++;
  const l4 = Transport.header(p, ip);
  const icmpError = IPv4.protocol(ip) == IPPROTO_ICMP && l4 != 0 && ICMP.isError(ICMP.type(l4));
  if (!icmpError && answerUnreachable(self, p, ip, ICMP_FRAGMENTATION_NEEDED, self.mtu)) { self.icmp_sent++; out.push(INSIDE, p); return; }
  dropPacket(p);
}

/** Fragments a 1500-byte packet (a 20-byte header) leaves in at mtu: element.ts fragmentsOf1500. */
function fragmentsOf1500(self: NATState): u32 {
  if (self.mtu == 0 || self.mtu >= 1500) return 1;
  const each = (<u32>self.mtu - 20) & ~7;
  return (1480 + each - 1) / each;
}

/** Room in the outside output per packet of an input's capacity: element.ts expands. */
function roomPerPacket(self: NATState): u32 {
  const pieces = fragmentsOf1500(self);
  return pieces > 1 ? 2 + pieces : 2;
}

const IP_DONT_FRAGMENT: u16 = 0x4000;
const IP_MORE_FRAGMENTS: u16 = 0x2000;
const IP_FRAGMENT_OFFSET: u16 = 0x1fff;
const ICMP_HOST_UNREACHABLE: u8 = 1;
const ICMP_PORT_UNREACHABLE: u8 = 3;
const ICMP_FRAGMENTATION_NEEDED: u8 = 4;

/**
 * ICMP errors a shard sends back inside: one per ICMP_INTERVAL_NS, with bursts of up to ICMP_BURST (as Linux's
 * icmp_msgs_per_sec, 1000, and its burst, 50), so that a subscriber flooding a full pool gets no flood back.
 */
const ICMP_INTERVAL_NS: u64 = 1_000_000;
const ICMP_BURST: u64 = 50;

/** Whether the rate allows another ICMP error now (a generic cell rate: icmp_due_ns is when the next one is due; a bucket of ICMP_BURST). */
function icmpAllowed(self: NATState, t: u64): bool {
  const due = max<u64>(self.icmp_due_ns, t);
  if (due - t > (ICMP_BURST - 1) * ICMP_INTERVAL_NS) { self.icmp_limited++; return false; }
  self.icmp_due_ns = due + ICMP_INTERVAL_NS;
  return true;
}

/**
 * Turns the packet, in place, into an ICMP destination unreachable with `code` (host unreachable, RFC 6888
 * REQ-11; fragmentation needed, RFC 4787 REQ-13) back to its sender, from the NAT's ICMP source address,
 * quoting its IP header and first 8 bytes. False when the rate allows none now, or the packet has no room in front.
 */
function answerUnreachable(self: NATState, p: Packet, ip: usize, code: u8, nextHopMtu: u32): bool {
  if (!icmpAllowed(self, now())) return false;
  return ICMP.answer(p, ip, ICMP.DESTINATION_UNREACHABLE, code, nextHopMtu, load<u32>(<usize>self.pool + POOL_ICMP_SOURCE), IPv4.headerLength(ip) + 8);
}
