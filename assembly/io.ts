import { Packet, DEFAULT_DATA_OFFSET, PORT_RESTEER, PACKET_WAITED } from "./packet";
import { Ring, Stack, RING_TAIL, ENTRY_RECYCLE } from "./ring";
import { Batch } from "./batch";
import { FlowKey } from "./flowtable";
import { IPv4, Transport, ICMP, Wire, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, ETHERTYPE_IPV4 } from "./headers";
import { orderWatching, orderStamp } from "./order";

// The I/O side: the thread that reads sources and writes sinks. It alone allocates slots from the
// pool's free stack; shards give slots back through their out rings. Sources call ioAllocate and
// ioSubmit per packet; the engine calls ioPublish and ioCollect once per batch.

/** I/O context block, laid out by the engine (engine/layout.ts mirrors these offsets). */
export const IO_FREE_STACK: u32 = 0;
export const IO_SHARD_COUNT: u32 = 4;
export const IO_SHARDS: u32 = 8;
export const IO_BUCKETS: u32 = 12;
export const IO_BUCKET_MASK: u32 = 16;
export const IO_SINKS: u32 = 20;
export const IO_NO_SLOT: u32 = 24;
export const IO_SLOT_SIZE: u32 = 32;
/**
 * Bits: STEER_BUCKETS while packets must be steered through the bucket table (more than one shard, or a move),
 * STEER_FRAGMENTS while some source orders fragments, STEER_HASH while every packet needs its steering hash.
 */
export const IO_STEER: u32 = 36;
/** Packets held while their bucket moves (or, on a trace's time, waits beside one that does): a Stack in arrival order. */
export const IO_HELD: u32 = 40;
/** Per source, how its packets are steered (a byte each: STEER_FLOW, STEER_SOURCE, STEER_DESTINATION, STEER_ELEMENT). */
export const IO_SOURCE_STEERING: u32 = 44;
/** Per source steered by an element, the element's state block (a u32 each) for its steer function. */
export const IO_STEERING_STATE: u32 = 48;
/** The area where later fragments wait for their first (FRAGMENTS_* below). */
export const IO_FRAGMENTS: u32 = 52;
/** The area where the order of moving buckets' packets is watched (assembly/order.ts). */
export const IO_ORDER: u32 = 56;
/** On a trace's time, the clock of the state a reload or a snapshot carried in (u64 ns; 0: none). */
export const IO_CLOCK_FLOOR: u32 = 64;
/**
 * With a carried clock, where each source's timestamp shift is (u64 ns per source, CLOCK_SHIFT_UNSET until its first
 * packet; 0: no carried clock): a source whose packets start before that clock's millisecond (a file read from its
 * start) has them shifted past it, so that time goes on rather than back; each source by its own, as files of other
 * years or a device's real time need.
 */
export const IO_CLOCK_SHIFTS: u32 = 72;
const CLOCK_SHIFT_UNSET: u64 = u64.MAX_VALUE;
const MILLISECOND: u64 = 1_000_000;
/**
 * Packets for a sink whose frame an element made run past its slot (p.length too large for where the frame starts): dropped,
 * not written, since the bytes past the slot are other packets' (u64).
 */
export const IO_OVERLONG: u32 = 80;
export const STEER_FLOW: u8 = 0;
export const STEER_SOURCE: u8 = 1;
export const STEER_DESTINATION: u8 = 2;
export const STEER_ELEMENT: u8 = 3;
/** Source mode bit: its later fragments wait for their datagram's first fragment (an element downstream needs the first first). */
export const ORDER_FRAGMENTS: u8 = 0x80;
/**
 * IO_STEER bits: steer through the bucket table; look at fragments of sources with ORDER_FRAGMENTS; give every
 * packet its steering hash (p.hash) also when it goes to the only shard unsteered, for the per-flow entries it
 * may make (they move with it when the pipeline scales): ioPublish hashes those in a loop of their own.
 */
export const STEER_BUCKETS: u32 = 1;
export const STEER_FRAGMENTS: u32 = 2;
export const STEER_HASH: u32 = 4;
/** Bucket table value for a bucket whose state is moving (or that waits beside one): its packets wait in the held list. */
export const BUCKET_HELD: u8 = 0xff;
/** Per shard record: [rx ring][out ring][stash][rx head][ring-full drops u64][rx limit]. */
export const SHARD_RECORD: u32 = 32;

let io: usize = 0;
let freeSlots: Stack = changetype<Stack>(0);
let freshRoom: u32 = 0;
let slotBytes: u32 = 0;

/** The graph's `steer` functions of elements, by source (set by the generated entry). */
let elementSteering: (p: Packet, self: usize) => u32 = (p: Packet, self: usize): u32 => 0;

export function ioSetElementSteering(steering: (p: Packet, self: usize) => u32): void {
  elementSteering = steering;
}

export function ioInit(context: usize): void {
  io = context;
  freeSlots = changetype<Stack>(load<u32>(context, IO_FREE_STACK));
  slotBytes = load<u32>(context, IO_SLOT_SIZE);
  freshRoom = slotBytes - DEFAULT_DATA_OFFSET;
  const shards = load<u32>(context, IO_SHARD_COUNT);
  for (let s: u32 = 0; s < shards; s++) {
    const rec = shardRecord(s);
    const ring = changetype<Ring>(load<u32>(rec));
    store<u32>(rec, ring.head, 12);
    store<u32>(rec, ring.limit(), 24);
  }
}

@inline function shardRecord(shard: u32): usize {
  return <usize>load<u32>(io, IO_SHARDS) + <usize>shard * SHARD_RECORD;
}

/**
 * A fresh slot from the pool, or null when every slot is in use. A source that then waits loses nothing; one
 * that drops what it could not place (a device's frame) says so with ioDroppedNoSlot.
 */
@inline export function ioAllocate(): Packet | null {
  const slot = freeSlots.pop();
  if (slot == 0) return null;
  // The 32 bytes of metadata in two stores: zeros, but the data offset (the u16 at byte 16).
  v128.store(slot, i64x2.splat(0));
  v128.store(slot, i32x4(DEFAULT_DATA_OFFSET, 0, 0, 0), 16);
  return changetype<Packet>(slot);
}

/** Bytes a fresh packet's slot can hold (from the default data offset on). */
@inline export function ioRoom(): u32 {
  return freshRoom;
}

/** Counts `count` packets a source dropped because the pool had no free slot (the engine's lost packets). */
export function ioDroppedNoSlot(count: u32): void {
  store<u64>(io, load<u64>(io, IO_NO_SLOT) + <u64>count, IO_NO_SLOT);
}

/** Returns a slot to the pool without sending it anywhere. */
@inline export function ioRelease(p: Packet): void {
  freeSlots.push(changetype<u32>(p));
}

/**
 * Hands a packet read by source number `source` to the shard that owns it. When that shard's ring
 * is full the packet is dropped and counted for the shard: a source is never blocked forever.
 */
@inline export function ioSubmit(p: Packet, source: u16): void {
  p.port = source;
  const shifts = <usize>load<u32>(io, IO_CLOCK_SHIFTS);
  if (shifts) {
    const at = shifts + (<usize>source << 3);
    let shift = load<u64>(at);
    if (shift == CLOCK_SHIFT_UNSET) shift = setClockShift(at, p.timestamp);
    p.timestamp += shift;
  }
  // Inlined into every source's loop, for the common cases: one shard and no move in progress; and with
  // fragment ordering on, a packet that is plainly no fragment while none waits (ordering has nothing to do).
  const steering = load<u32>(io, IO_STEER) & ~STEER_HASH;
  const direct = steering == 0 || (steering == STEER_FRAGMENTS && plainlyNoFragment(p) && !fragmentsWaiting());
  if (!direct || !enqueue(shardRecord(0), changetype<u32>(p))) submitSteered(p);
}

/**
 * A source's first packet after a reload or restore on a trace's time: when its millisecond is before the carried
 * clock's (the end of a millisecond), its source's packets are shifted to start just after that clock; else not at all
 * (a capture that goes on where the last one ended keeps its times).
 */
function setClockShift(at: usize, first: u64): u64 {
  const floor = load<u64>(io, IO_CLOCK_FLOOR);
  const shift = first / MILLISECOND < floor / MILLISECOND ? floor + 1 - first : 0;
  store<u64>(at, shift);
  return shift;
}

function submitSteered(p: Packet): void {
  const steering = load<u32>(io, IO_STEER);
  const ip = steering & STEER_FRAGMENTS ? orderedFragment(p) : 0;
  if (ip) orderFragment(p, ip, steering);
  else enqueueSteered(p, steering);
}

@inline function enqueueSteered(p: Packet, steering: u32): void {
  const shard = steering & STEER_BUCKETS ? steer(p) : 0;
  if (shard == BUCKET_HELD) {
    changetype<Stack>(load<u32>(io, IO_HELD)).push(changetype<u32>(p));
    return;
  }
  if (!enqueue(shardRecord(shard), changetype<u32>(p))) {
    store<u64>(shardRecord(shard), load<u64>(shardRecord(shard), 16) + 1, 16);
    ioRelease(p);
  }
}

@inline function enqueue(rec: usize, entry: u32): bool {
  const ring = changetype<Ring>(load<u32>(rec));
  const head = load<u32>(rec, 12);
  if (head == load<u32>(rec, 24)) {
    const limit = ring.limit();
    store<u32>(rec, limit, 24);
    if (head == limit) return false;
  }
  ring.setEntry(head, entry);
  store<u32>(rec, head + 1, 12);
  return true;
}

/** Free entries of a shard's receive ring (reads the consumer's tail: once per batch, not per packet). */
@inline function ringSpace(rec: usize): u32 {
  const limit = changetype<Ring>(load<u32>(rec)).limit();
  store<u32>(rec, limit, 24);
  return limit - load<u32>(rec, 12);
}

/** The shard for a packet: its source's steering hash (by default the symmetric 5-tuple's) looked up in the bucket indirection table. */
function steer(p: Packet): u32 {
  const h = steeringHash(p);
  p.hash = h;
  const bucket = h & load<u32>(io, IO_BUCKET_MASK);
  const order = <usize>load<u32>(io, IO_ORDER);
  if (orderWatching(order)) orderStamp(order, p, bucket);
  return <u32>load<u8>(<usize>load<u32>(io, IO_BUCKETS) + <usize>bucket);
}

/** The packet's steering hash, by its source's way of steering. */
function steeringHash(p: Packet): u32 {
  const mode = load<u8>(<usize>load<u32>(io, IO_SOURCE_STEERING) + <usize>p.port) & ~ORDER_FRAGMENTS;
  return mode == STEER_FLOW ? symmetricHash(p)
    : mode == STEER_ELEMENT ? elementSteering(p, <usize>load<u32>(<usize>load<u32>(io, IO_STEERING_STATE) + (<usize>p.port << 2)))
    : endpointHash(p, mode == STEER_SOURCE);
}

// Later fragments that come before their first. An element that reads ports (a NAT) can only place a
// datagram's later fragments (they carry none) once it has seen the first; for the sources whose packets
// reach such an element, a later fragment whose first has not come yet waits here, on the I/O side,
// and is sent on right after its first fragment. A fragment waits at most FRAGMENT_WAIT_NS of packet
// time, and at most FRAGMENTS_WAITING wait at once (then the oldest goes on): either way it goes on as
// it came, and the element decides what to do with it. Nothing here is state a snapshot carries.
// Area (engine/layout.ts FragmentArea): [waiting u32][released u32][clock u64][waited u64][unmatched u64][pad to 64]
//       [seen tags: FRAGMENTS_SEEN u32][waiting: FRAGMENTS_WAITING × (tag u32, slot u32)][released: FRAGMENTS_WAITING × slot u32]
export const FRAGMENTS_WAITING_COUNT: u32 = 0;
export const FRAGMENTS_RELEASED: u32 = 4;
/** Packet time: the latest timestamp of an ordered source's packet, moved only while fragments wait (plain packets skip it otherwise). */
export const FRAGMENTS_CLOCK: u32 = 8;
export const FRAGMENTS_WAITED: u32 = 16;
export const FRAGMENTS_UNMATCHED: u32 = 24;
export const FRAGMENTS_SEEN_AT: u32 = 64;
/** Datagrams whose first fragment is remembered (by tag, direct-mapped). */
export const FRAGMENTS_SEEN: u32 = 4096;
export const FRAGMENTS_WAITING: u32 = 256;
export const FRAGMENTS_WAITING_AT: u32 = FRAGMENTS_SEEN_AT + FRAGMENTS_SEEN * 4;
export const FRAGMENTS_RELEASED_AT: u32 = FRAGMENTS_WAITING_AT + FRAGMENTS_WAITING * 8;
/** Short next to how long hosts keep the pieces of a datagram to reassemble it (RFC 791: 15 s and up). */
const FRAGMENT_WAIT_NS: u64 = 2_000_000_000;

/**
 * The IPv4 header of `p` when it is a fragment from a source whose fragments are put in order, else 0
 * (and moves the clock they wait on).
 */
@inline function orderedFragment(p: Packet): usize {
  if (!(load<u8>(<usize>load<u32>(io, IO_SOURCE_STEERING) + <usize>p.port) & ORDER_FRAGMENTS)) return 0;
  const area = <usize>load<u32>(io, IO_FRAGMENTS);
  if (p.timestamp > load<u64>(area, FRAGMENTS_CLOCK)) store<u64>(area, p.timestamp, FRAGMENTS_CLOCK);
  if (plainlyNoFragment(p)) return 0;
  const ip = IPv4.header(p);
  return ip != 0 && IPv4.isFragment(ip) ? ip : 0;
}

/** Untagged IPv4 that is no fragment, told in a few loads (flags and offset are the wire's bytes 20-21). */
@inline function plainlyNoFragment(p: Packet): bool {
  return p.length >= 22 && load<u16>(p.data, 12) == bswap<u16>(ETHERTYPE_IPV4) && (load<u16>(p.data, 20) & bswap<u16>(0x3fff)) == 0;
}

@inline function fragmentsWaiting(): bool {
  return load<u32>(<usize>load<u32>(io, IO_FRAGMENTS), FRAGMENTS_WAITING_COUNT) != 0;
}

/**
 * An IPv4 fragment in order: a first fragment goes on and takes the later ones that came before it
 * along; a later fragment whose first has not come waits for it (one that waited once goes on).
 */
function orderFragment(p: Packet, ip: usize, steering: u32): void {
  const area = <usize>load<u32>(io, IO_FRAGMENTS);
  const tag = symmetricHashOf(IPv4.src(ip), IPv4.dst(ip), <u32>IPv4.id(ip), IPv4.protocol(ip)) | 1;
  const seen = area + FRAGMENTS_SEEN_AT + (<usize>(tag & (FRAGMENTS_SEEN - 1)) << 2);
  if (IPv4.fragmentOffset(ip) == 0) {
    enqueueSteered(p, steering);
    // When its last piece came before it, the datagram is whole: its ID may come again, for another one.
    store<u32>(seen, releaseWaiting(area, tag, 0) ? 0 : tag);
  } else if (load<u32>(seen) == tag || (p.flags & PACKET_WAITED)) {
    enqueueSteered(p, steering);
    // Its last piece: forget the datagram, or a later one under the same ID would not wait for its own first.
    if (!IPv4.moreFragments(ip) && load<u32>(seen) == tag) store<u32>(seen, 0);
  } else {
    let waiting = load<u32>(area, FRAGMENTS_WAITING_COUNT);
    if (waiting == FRAGMENTS_WAITING) {
      releaseOldest(area);
      waiting--;
    }
    const entry = area + FRAGMENTS_WAITING_AT + (<usize>waiting << 3);
    store<u32>(entry, tag);
    store<u32>(entry, changetype<u32>(p), 4);
    store<u32>(area, waiting + 1, FRAGMENTS_WAITING_COUNT);
    store<u64>(area, load<u64>(area, FRAGMENTS_WAITED) + 1, FRAGMENTS_WAITED);
    p.flags |= PACKET_WAITED;
  }
  // Those released (by their first, or to make room) go on after this one, in the order they came.
  submitReleased(area);
}

/**
 * Moves the waiting fragments tagged `tag` (any tag when 0) that came before `before` ns (any time when
 * 0) to the released list, keeping the others, both in the order they came. True when one of them was a
 * datagram's last piece.
 */
function releaseWaiting(area: usize, tag: u32, before: u64): bool {
  const waiting = load<u32>(area, FRAGMENTS_WAITING_COUNT);
  let released = load<u32>(area, FRAGMENTS_RELEASED);
  let kept: u32 = 0;
  let last = false;
  for (let i: u32 = 0; i < waiting; i++) {
    const entry = area + FRAGMENTS_WAITING_AT + (<usize>i << 3);
    const slot = load<u32>(entry, 4);
    const goes = (tag == 0 || load<u32>(entry) == tag) && (before == 0 || changetype<Packet>(slot).timestamp < before);
    if (goes) {
      store<u32>(area + FRAGMENTS_RELEASED_AT + (<usize>released << 2), slot);
      released++;
      const ip = IPv4.header(changetype<Packet>(slot));
      if (ip && !IPv4.moreFragments(ip)) last = true;
      // Released for want of their first (not by it): the element sees them as they are.
      if (tag == 0) store<u64>(area, load<u64>(area, FRAGMENTS_UNMATCHED) + 1, FRAGMENTS_UNMATCHED);
    } else {
      if (kept != i) store<u64>(area + FRAGMENTS_WAITING_AT + (<usize>kept << 3), load<u64>(entry));
      kept++;
    }
  }
  store<u32>(area, kept, FRAGMENTS_WAITING_COUNT);
  store<u32>(area, released, FRAGMENTS_RELEASED);
  return last;
}

/** The oldest waiting fragment goes on, to make room (at most FRAGMENTS_WAITING wait). */
function releaseOldest(area: usize): void {
  const released = load<u32>(area, FRAGMENTS_RELEASED);
  store<u32>(area + FRAGMENTS_RELEASED_AT + (<usize>released << 2), load<u32>(area + FRAGMENTS_WAITING_AT, 4));
  store<u32>(area, released + 1, FRAGMENTS_RELEASED);
  store<u64>(area, load<u64>(area, FRAGMENTS_UNMATCHED) + 1, FRAGMENTS_UNMATCHED);
  const waiting = load<u32>(area, FRAGMENTS_WAITING_COUNT) - 1;
  memory.copy(area + FRAGMENTS_WAITING_AT, area + FRAGMENTS_WAITING_AT + 8, <usize>waiting << 3);
  store<u32>(area, waiting, FRAGMENTS_WAITING_COUNT);
}

/** Submits the released fragments, in order, as their source had just read them. */
function submitReleased(area: usize): void {
  const released = load<u32>(area, FRAGMENTS_RELEASED);
  if (!released) return;
  const steering = load<u32>(io, IO_STEER);
  for (let i: u32 = 0; i < released; i++) enqueueSteered(changetype<Packet>(load<u32>(area + FRAGMENTS_RELEASED_AT + (<usize>i << 2))), steering);
  store<u32>(area, 0, FRAGMENTS_RELEASED);
}

/**
 * Lets the fragments that waited longer than FRAGMENT_WAIT_NS go on (every one with `all`, when the
 * sources are done); returns how many went. The engine calls it once per round.
 */
export function ioReleaseFragments(all: bool): u32 {
  if (!fragmentsWaiting()) return 0;
  const area = <usize>load<u32>(io, IO_FRAGMENTS);
  const clock = load<u64>(area, FRAGMENTS_CLOCK);
  if (all) releaseWaiting(area, 0, 0);
  else if (clock > FRAGMENT_WAIT_NS) releaseWaiting(area, 0, clock - FRAGMENT_WAIT_NS);
  const released = load<u32>(area, FRAGMENTS_RELEASED);
  submitReleased(area);
  return released;
}

/**
 * A hash that is the same for both directions of a connection (RSS with a symmetric key): of the
 * 5-tuple as FlowKey.fromPacket keys it, so that a flow's entry lives on the shard its packets go to:
 * a first fragment with its ports, later fragments (none to read) by addresses and protocol; a frame a
 * capture cut short by its headers too.
 */
export function symmetricHash(p: Packet): u32 {
  const ip = IPv4.capturedHeader(p);
  if (!ip) return 0;
  let ports: u32 = 0;
  const proto = IPv4.protocol(ip);
  const l4 = Transport.header(p, ip);
  if (l4 && proto == IPPROTO_ICMP) return icmpHash(p, ip, l4);
  if (l4) ports = <u32>Transport.srcPort(l4) ^ <u32>Transport.dstPort(l4);
  return symmetricHashOf(IPv4.src(ip), IPv4.dst(ip), ports, proto);
}

/**
 * ICMP queries (echo, timestamp, information, address mask) meet their replies by identifier; an
 * error goes where the flow it reports on goes (the header it quotes, ports included).
 */
function icmpHash(p: Packet, ip: usize, l4: usize): u32 {
  const type = ICMP.type(l4);
  const end = IPv4.end(p, ip);
  if (ICMP.isError(type)) {
    const inner = l4 + 8;
    if (inner + 20 <= end && (load<u8>(inner) >> 4) == 4) {
      const hl = IPv4.headerLength(inner);
      const innerProto = IPv4.protocol(inner);
      let ports: u32 = 0;
      if ((innerProto == IPPROTO_TCP || innerProto == IPPROTO_UDP) && IPv4.fragmentOffset(inner) == 0 && inner + hl + 4 <= end) {
        ports = <u32>Transport.srcPort(inner + hl) ^ <u32>Transport.dstPort(inner + hl);
      } else if (innerProto == IPPROTO_ICMP && IPv4.fragmentOffset(inner) == 0 && inner + hl + 8 <= end && FlowKey.isIcmpQuery(ICMP.type(inner + hl))) {
        ports = <u32>Wire.get16(inner + hl + 4); // a quoted echo: steered by its identifier, as the echo itself
      }
      return symmetricHashOf(IPv4.src(inner), IPv4.dst(inner), ports, innerProto);
    }
  }
  return symmetricHashOf(IPv4.src(ip), IPv4.dst(ip), FlowKey.isIcmpQuery(type) ? <u32>Wire.get16(l4 + 4) : 0, IPPROTO_ICMP);
}

/**
 * The hash of one address of the packet, for state owned by a host rather than a flow (a NAT's
 * subscriber): every packet from (or to) that address reaches the shard that owns it.
 */
function endpointHash(p: Packet, source: bool): u32 {
  const ip = IPv4.capturedHeader(p);
  if (!ip) return 0;
  return addressHash(source ? IPv4.src(ip) : IPv4.dst(ip));
}

/** The bucket hash of an address (host-owned state and its migration agree on it). */
export function addressHash(address: u32): u32 {
  return symmetricHashOf(address, 0, 0, 0);
}

/** The symmetric hash from its parts: `ports` is the xor of the two ports (0 for later fragments). */
export function symmetricHashOf(a: u32, b: u32, ports: u32, protocol: u8): u32 {
  let h = (a ^ b) * 0x9e3779b1 + (a + b);
  h ^= (ports | (<u32>protocol << 16)) * 0x85ebca77;
  h ^= h >>> 16; h *= 0x85ebca6b; h ^= h >>> 13; h *= 0xc2b2ae35; h ^= h >>> 16;
  return h;
}

/**
 * Hands the oldest held packets, in arrival order, each to the shard that `owners` (a byte per bucket) names for
 * its bucket, until one finds that shard's receive ring full; at most `limit`. Returns how many were released;
 * the rest stay held, in order.
 */
export function ioReleaseHeld(owners: usize, limit: u32): u32 {
  const held = changetype<Stack>(load<u32>(io, IO_HELD));
  const entries = changetype<usize>(held) + 8;
  const mask = load<u32>(io, IO_BUCKET_MASK);
  const count = held.count < limit ? held.count : limit;
  let n: u32 = 0;
  while (n < count) {
    const slot = load<u32>(entries + (<usize>n << 2));
    // The dispatcher kept each packet's hash when it held it.
    const shard = <u32>load<u8>(owners + <usize>(changetype<Packet>(slot).hash & mask));
    // No shard (a map that names none, after a scale event that failed): it stays held, and the stall watch says so.
    if (shard >= load<u32>(io, IO_SHARD_COUNT) || !enqueue(shardRecord(shard), slot)) break;
    n++;
  }
  memory.copy(entries, entries + (<usize>n << 2), <usize>(held.count - n) << 2);
  held.count -= n;
  return n;
}

/**
 * Most packets a file source keeps waiting in one shard's ring. Enough to cover a worker's scheduling
 * hiccups; more only lengthens what a scale event must wait for: an old owner takes every packet before
 * the move's mark first (with 65536 waiting at a busy FlowStats shard, 8-88 ms of a 100k-flow move).
 */
const RUN_AHEAD: u32 = 8192;

/**
 * How many packets a source may submit now without any being dropped: the fewest free entries of
 * any shard's receive ring (counting no more than RUN_AHEAD waiting in it), and no more than the free
 * slots. Sources that read files respect it;
 * live sources do not wait and count drops instead.
 */
export function ioSpace(): u32 {
  const shards = load<u32>(io, IO_SHARD_COUNT);
  let space = freeSlots.count;
  for (let s: u32 = 0; s < shards; s++) {
    const rec = shardRecord(s);
    const free = ringSpace(rec);
    const waiting = changetype<Ring>(load<u32>(rec)).mask + 1 - free;
    const ahead = waiting < RUN_AHEAD ? RUN_AHEAD - waiting : 0;
    if (free < space) space = free;
    if (ahead < space) space = ahead;
  }
  return space;
}

/** Publishes every shard's receive head; returns a bit mask of shards that wait to be woken. */
export function ioPublish(): u32 {
  const shards = load<u32>(io, IO_SHARD_COUNT);
  let sleeping: u32 = 0;
  for (let s: u32 = 0; s < shards; s++) {
    const ring = publishReceived(s);
    if (atomic.load<u32>(changetype<usize>(ring), 128)) sleeping |= 1 << s;
  }
  return sleeping;
}

/** Publishes shard `s`'s receive head; returns its ring. */
function publishReceived(s: u32): Ring {
  const rec = shardRecord(s);
  const ring = changetype<Ring>(load<u32>(rec));
  const head = load<u32>(rec, 12);
  // Unsteered packets that need their hash get it here, in a short loop: in the sources' loops it cost more.
  if ((load<u32>(io, IO_STEER) & (STEER_HASH | STEER_BUCKETS)) == STEER_HASH) hashUnpublished(ring, head);
  ring.publishHead(head);
  return ring;
}

/** Sets p.hash of the packets in `ring` from its published head up to `head` (recycled slots are no packets). */
function hashUnpublished(ring: Ring, head: u32): void {
  for (let i = ring.head; i != head; i++) {
    const entry = ring.entry(i);
    if (!(entry & ENTRY_RECYCLE)) changetype<Packet>(entry).hash = steeringHash(changetype<Packet>(entry));
  }
}

/**
 * Refills each shard's clone stash by sending it free slots (marked
 * ENTRY_RECYCLE) through its receive ring. Call before ioPublish.
 */
export function ioTopUpStashes(): void {
  const shards = load<u32>(io, IO_SHARD_COUNT);
  for (let s: u32 = 0; s < shards; s++) {
    const rec = shardRecord(s);
    const stash = changetype<Stack>(load<u32>(rec, 8));
    const want = <i32>stash.capacity - <i32>atomic.load<u32>(changetype<usize>(stash));
    for (let i = 0; i < want; i++) {
      const slot = freeSlots.pop();
      if (slot == 0) return;
      if (!enqueue(rec, slot | ENTRY_RECYCLE)) { freeSlots.push(slot); return; }
    }
  }
}

/**
 * Takes what the shards sent out: recycles freed slots and appends packets for sinks to the sink's
 * batch (`IO_SINKS` is an array of batch addresses indexed by sink number). Returns packets for sinks.
 */
export function ioCollect(): u32 {
  const shards = load<u32>(io, IO_SHARD_COUNT);
  const sinks = <usize>load<u32>(io, IO_SINKS);
  let toSinks: u32 = 0;
  let resteered: u32 = 0;
  for (let s: u32 = 0; s < shards; s++) {
    const out = changetype<Ring>(load<u32>(shardRecord(s), 4));
    const head = out.head;
    let tail = load<u32>(changetype<usize>(out), RING_TAIL);
    while (tail != head) {
      const entry = out.entry(tail);
      tail++;
      if (entry & ENTRY_RECYCLE) {
        freeSlots.push(entry & ~ENTRY_RECYCLE);
      } else {
        const p = changetype<Packet>(entry);
        if (p.port & PORT_RESTEER) {
          // Handed back by an element (already past any fragment ordering): steered again, as it is.
          p.port &= ~PORT_RESTEER;
          enqueueSteered(p, load<u32>(io, IO_STEER));
          resteered++;
          continue;
        }
        // Compared without the sum, which a length an element took below 0 (wrapped) would bring round under it.
        if (<u32>p.dataOffset > slotBytes || p.length > slotBytes - <u32>p.dataOffset) {
          store<u64>(io, load<u64>(io, IO_OVERLONG) + 1, IO_OVERLONG);
          freeSlots.push(entry);
          continue;
        }
        changetype<Batch>(load<u32>(sinks + (<usize>p.port << 2))).push(p);
        toSinks++;
      }
    }
    out.publishTail(tail);
  }
  // Packets handed back are published at once, so that a pipeline never looks idle while they wait.
  if (resteered) {
    for (let s: u32 = 0; s < shards; s++) publishReceived(s);
  }
  return toSinks;
}
