import { Packet } from "./packet";
import { IPv4, Transport, ICMP, Wire, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP } from "./headers";
import { copyBytes, zeroBytes } from "./bytes";

// Open-addressing flow table with linear probing in linear memory, a fixed capacity chosen from the
// config, and lazy expiry on the batch clock: each entry carries the time it expires (a coarse
// deadline, no timer structure to keep sorted); an entry past it counts as gone, and a sweep per
// batch turns a few of those into free slots. Never evicts a live entry: when `capacity` entries are
// live (after a sweep of the whole table, at most once a second, for expired entries the per-batch
// sweep has not reached) an insert fails and is counted as `full`. The table's `timeout` is the default idle timeout;
// elements whose entries live by other rules (a TCP state machine) set each entry's deadline.
//
// Entry layout: [state u16][steering u16][hash u32][key 16 B][expires u64][value ...]. The engine lays out
// the header below (engine/layout.ts mirrors it) and the entries array. `steering` is STEERED plus the low
// bits of the steering hash of the packet that made the entry (lookupOrInsert's `p`), or 0: when shards
// scale, the entry moves with the bucket its packets are steered by, which its key alone does not tell when
// the sources steer by other than the flow (a NAT's subscriber) or an element before changed the 5-tuple.

export const ENTRY_EMPTY: u32 = 0;
export const ENTRY_LIVE: u32 = 1;
export const ENTRY_TOMBSTONE: u32 = 2;
/** An entry's `steering` half-word holds the steering hash of the packet that made it (low 15 bits). */
export const STEERED: u16 = 0x8000;
export const ENTRY_STEERING: u32 = 2;
export const ENTRY_KEY: u32 = 8;
export const ENTRY_EXPIRES: u32 = 24;
export const ENTRY_VALUE: u32 = 32;
export const KEY_SIZE: u32 = 16;
/** FlowTable.worthTouching: live entries beyond 1 MiB. */
const TOUCH_ABOVE_BYTES: u64 = 1 << 20;
/** A table at its capacity sweeps all of it at most this often (ns)... */
const FULL_SWEEP_GAP: u64 = 10_000_000;
/** ...and at least this often while it stays full (ns). */
const FULL_SWEEP_INTERVAL: u64 = 1_000_000_000;

/**
 * A 5-tuple key: [src u32][dst u32][ports u32: sport << 16 | dport][proto u32]. ICMP queries and
 * replies put their identifier where the source port goes.
 */
export namespace FlowKey {
  /**
   * Fills `key` with the packet's IPv4 5-tuple (ports 0 for non-first fragments and other protocols), of a
   * frame a capture cut short too (IPv4.capturedHeader): the headers are all it reads.
   */
  export function fromPacket(p: Packet, key: usize): bool {
    const ip = IPv4.capturedHeader(p);
    if (!ip) return false;
    store<u32>(key, IPv4.src(ip));
    store<u32>(key, IPv4.dst(ip), 4);
    const l4 = Transport.header(p, ip);
    const proto = IPv4.protocol(ip);
    let ports: u32 = 0;
    if (l4 && (proto == IPPROTO_TCP || proto == IPPROTO_UDP)) ports = (<u32>Transport.srcPort(l4) << 16) | <u32>Transport.dstPort(l4);
    // An ICMP query and its reply share the identifier (in the port slot; the dispatcher steers by it).
    else if (l4 && proto == IPPROTO_ICMP && FlowKey.isIcmpQuery(ICMP.type(l4))) ports = <u32>Wire.get16(l4 + 4) << 16;
    store<u32>(key, ports, 8);
    store<u32>(key, <u32>IPv4.protocol(ip), 12);
    return true;
  }

  /** ICMP messages that come in query/reply pairs matched by identifier (RFC 792, RFC 950). */
  export function isIcmpQuery(type: u8): bool {
    return type == 0 || type == 8 || (type >= 13 && type <= 18);
  }

  /** Fills `key` with the packet's IPv4 source address alone (a cross-flow key: per host). */
  export function fromSource(p: Packet, key: usize): bool {
    const ip = IPv4.capturedHeader(p);
    if (!ip) return false;
    store<u64>(key, <u64>IPv4.src(ip));
    store<u64>(key, 0, 8);
    return true;
  }

  /** Hash of a 16-byte key (murmur3's 32-bit finaliser over xor-folded words). */
  @inline export function hash(key: usize): u32 {
    return hashOf(load<u32>(key), load<u32>(key, 4), load<u32>(key, 8), load<u32>(key, 12));
  }

  /**
   * hash() of a TCP or UDP packet's key as fromPacket writes it (with `ordered`, its two endpoints in a fixed order,
   * lower address first, so that both directions give one hash), read without the header checks: a hint for
   * FlowTable.touch, for which a packet the lookup will refuse (malformed, a later fragment, another protocol) only
   * touches some slot for nothing (half the cost of the checked parse: NAT at 100k sessions 7.4 -> 8.2 Mpps). The
   * reads stay within the packet; 0 (no hint) when they could not.
   */
  @inline export function hintHash(p: Packet, ordered: bool): u32 {
    if (p.l3Offset == 0 && !IPv4.capturedHeader(p)) return 0;
    const off = <u32>p.l3Offset;
    if (off + 20 > p.length) return 0;
    const ip = p.data + off;
    const l4 = off + ((<u32>load<u8>(ip) & 15) << 2);
    if (l4 + 4 > p.length) return 0;
    let a = bswap<u32>(load<u32>(ip, 12)), b = bswap<u32>(load<u32>(ip, 16));
    // The ports as one number, the source's in the high half.
    let ports = bswap<u32>(load<u32>(p.data + l4));
    if (ordered && (a > b || (a == b && (ports >>> 16) > (ports & 0xffff)))) {
      const first = b;
      b = a;
      a = first;
      ports = rotr<u32>(ports, 16);
    }
    return hashOf(a, b, ports, <u32>load<u8>(ip, 9));
  }

  /** hash() of the key whose four words these are, without the key in memory. */
  @inline export function hashOf(w0: u32, w1: u32, w2: u32, w3: u32): u32 {
    let h = w0 * 0x9e3779b1;
    h ^= w1 * 0x85ebca77;
    h = rotl<u32>(h, 13) ^ w2 * 0xc2b2ae3d;
    h ^= w3;
    h ^= h >>> 16; h *= 0x85ebca6b; h ^= h >>> 13; h *= 0xc2b2ae35; h ^= h >>> 16;
    return h;
  }
}

@unmanaged
export class FlowTable {
  slots: u32;      // a power of two
  entrySize: u32;
  capacity: u32;   // most live entries allowed
  live: u32;
  timeout: u64;    // default idle timeout in ns
  cursor: u32;     // sweep position
  entries: u32;    // address of the entries array
  inserts: u64;
  full: u64;
  expired: u64;
  expiryHandler: u32; // whenExpired: a function's address in the compiled module, or 0
  expiryContext: u32;
  fullSweepAfter: u64; // when the table may next sweep all its slots because it is at its capacity

  @inline entry(index: u32): usize {
    return <usize>this.entries + <usize>(index & (this.slots - 1)) * <usize>this.entrySize;
  }

  @inline private isExpired(e: usize, now: u64): bool {
    return now >= load<u64>(e, ENTRY_EXPIRES);
  }

  /** Sets when the entry whose value is at `value` expires: `timeout` ns from `now`. */
  @inline static refresh(value: usize, now: u64, timeout: u64): void {
    store<u64>(value - ENTRY_VALUE, now + timeout, ENTRY_EXPIRES);
  }

  /** When the entry whose value is at `value` expires. */
  @inline static expires(value: usize): u64 {
    return load<u64>(value - ENTRY_VALUE, ENTRY_EXPIRES);
  }

  /** Whether touch() pays: the live entries outgrow what a core's L2 cache keeps (below that, lookups hit anyway). */
  @inline worthTouching(): bool {
    return <u64>this.live * <u64>this.entrySize > TOUCH_ABOVE_BYTES;
  }

  /**
   * Reads the first slot each of `count` hashes (u32s at `hashes`, say in batchScratch()) probes, so
   * that a batch loop can start the cache misses of all its lookups before it makes the first:
   * WebAssembly has no prefetch, but the processor overlaps independent loads that come close together
   * (measured here: 165 ns per miss one after another, 30 ns overlapped), as in this short loop. Both
   * ends of each entry, which may straddle two cache lines. Returns a value to keep, or the loads go.
   */
  touch(hashes: usize, count: u32): u32 {
    let sink: u32 = 0;
    for (let i: u32 = 0; i < count; i++) sink += this.touchSlot(load<u32>(hashes + (<usize>i << 2)));
    return sink;
  }

  /** Reads both ends of the first slot `hash` probes (see touch); returns a value to keep. */
  @inline touchSlot(hash: u32): u32 {
    const e = this.entry(hash);
    return <u32>load<u16>(e) + <u32>load<u8>(e + <usize>this.entrySize - 1);
  }

  /** Value address of the live entry for `key`, or 0. Does not change its deadline. */
  @inline find(key: usize, hash: u32, now: u64): usize {
    for (let i: u32 = 0; i < this.slots; i++) {
      const e = this.entry(hash + i);
      const state = <u32>load<u16>(e);
      if (state == ENTRY_EMPTY) return 0;
      if (state == ENTRY_LIVE && load<u32>(e, 4) == hash && keysEqual(e + ENTRY_KEY, key)) {
        if (this.isExpired(e, now)) { this.retire(e); return 0; }
        return e + ENTRY_VALUE;
      }
    }
    return 0;
  }

  /** Value address of the live entry for `key`, or 0. Pushes its deadline to now + the table's timeout. */
  lookup(key: usize, hash: u32, now: u64): usize {
    const value = this.find(key, hash, now);
    if (value) FlowTable.refresh(value, now, this.timeout);
    return value;
  }

  /**
   * Value address for `key`, creating a zeroed entry when there is none (then `flowCreated` is
   * true). Either way the deadline becomes now + the table's timeout. Returns 0 when the table is
   * full; nothing live is evicted. A per-flow table (owner 'flow') passes `p`, the packet the entry is
   * for: when shards scale, the entry moves with the bucket the dispatcher steered that packet by (an entry
   * that has none recorded takes the first packet's that finds it). Without it, or for a packet an element
   * made (newPacket: never steered), the entry moves with its key's flow hash, which is that bucket only
   * when the sources steer by the flow and no element before changed the 5-tuple.
   */
  lookupOrInsert(key: usize, hash: u32, now: u64, p: Packet | null = null): usize {
    flowCreated = false;
    let reuse: usize = 0;
    for (let i: u32 = 0; i < this.slots; i++) {
      const e = this.entry(hash + i);
      const state = <u32>load<u16>(e);
      if (state == ENTRY_EMPTY) { if (!reuse) reuse = e; break; }
      if (state == ENTRY_TOMBSTONE) { if (!reuse) reuse = e; continue; }
      if (this.isExpired(e, now)) { this.retire(e); if (!reuse) reuse = e; continue; }
      if (load<u32>(e, 4) == hash && keysEqual(e + ENTRY_KEY, key)) {
        store<u64>(e, now + this.timeout, ENTRY_EXPIRES);
        if (p && !(load<u16>(e, ENTRY_STEERING) & STEERED)) store<u16>(e, steeringOf(p), ENTRY_STEERING);
        return e + ENTRY_VALUE;
      }
    }
    if (!reuse || (this.live >= this.capacity && !this.sweepAllWhenFull(now))) { this.full++; return 0; }
    store<u16>(reuse, <u16>ENTRY_LIVE);
    store<u16>(reuse, p ? steeringOf(p) : 0, ENTRY_STEERING);
    store<u32>(reuse, hash, 4);
    copyBytes(reuse + ENTRY_KEY, key, KEY_SIZE);
    store<u64>(reuse, now + this.timeout, ENTRY_EXPIRES);
    zeroBytes(reuse + ENTRY_VALUE, this.entrySize - ENTRY_VALUE);
    this.live++;
    this.inserts++;
    flowCreated = true;
    return reuse + ENTRY_VALUE;
  }

  /** Removes the live entry for `key`, if any. */
  remove(key: usize, hash: u32): bool {
    for (let i: u32 = 0; i < this.slots; i++) {
      const e = this.entry(hash + i);
      const state = <u32>load<u16>(e);
      if (state == ENTRY_EMPTY) return false;
      if (state == ENTRY_LIVE && load<u32>(e, 4) == hash && keysEqual(e + ENTRY_KEY, key)) {
        store<u32>(e, ENTRY_TOMBSTONE);
        this.live--;
        return true;
      }
    }
    return false;
  }

  /**
   * Examines `budget` slots from the sweep cursor: expired entries become tombstones, and a tombstone
   * followed by an empty slot becomes empty, so probe chains stay short. Call once per batch. Returns the
   * earliest deadline of the live entries it passed (u64.MAX_VALUE for none).
   */
  sweep(now: u64, budget: u32): u64 {
    let c = this.cursor;
    let earliest = u64.MAX_VALUE;
    for (let n: u32 = 0; n < budget; n++, c++) {
      const e = this.entry(c);
      const state = <u32>load<u16>(e);
      if (state == ENTRY_LIVE) {
        const expires = load<u64>(e, ENTRY_EXPIRES);
        if (now >= expires) this.retire(e);
        else if (expires < earliest) earliest = expires;
      }
      if (load<u16>(e) == ENTRY_TOMBSTONE && load<u16>(this.entry(c + 1)) == ENTRY_EMPTY) {
        let back = c;
        while (load<u16>(this.entry(back)) == ENTRY_TOMBSTONE) { store<u16>(this.entry(back), ENTRY_EMPTY); back--; }
      }
    }
    this.cursor = c & (this.slots - 1);
    return earliest;
  }

  /**
   * At its capacity, the live count may still include expired entries: sweeps them all, unless done recently. The
   * next sweep comes when the first entry left expires (one before frees nothing; waiting a whole interval refused
   * new flows while expired entries filled the table), at least FULL_SWEEP_GAP and at most FULL_SWEEP_INTERVAL later
   * (an entry's deadline may come sooner than the sweep saw), so that a flood of new flows costs little.
   */
  private sweepAllWhenFull(now: u64): bool {
    if (now < this.fullSweepAfter) return false;
    const earliest = this.sweep(now, this.slots);
    const soonest = now + FULL_SWEEP_GAP, latest = now + FULL_SWEEP_INTERVAL;
    this.fullSweepAfter = earliest < soonest ? soonest : earliest > latest ? latest : earliest;
    return this.live < this.capacity;
  }

  /**
   * Has `handler(value, context)` called for each entry that expires from now on, once it is a
   * tombstone (not for entries removed or moved to another shard). Set it before each batch: the
   * address of a function belongs to the compiled module. The entry is dead by then: the handler may
   * use its key and value as scratch (the shard's key buffer may be in use by the table's caller).
   */
  whenExpired(handler: (value: usize, context: usize) => void, context: usize): void {
    this.expiryHandler = changetype<u32>(handler);
    this.expiryContext = <u32>context;
  }

  private retire(e: usize): void {
    store<u32>(e, ENTRY_TOMBSTONE);
    this.live--;
    this.expired++;
    const handler = this.expiryHandler;
    if (handler) changetype<(value: usize, context: usize) => void>(handler)(e + ENTRY_VALUE, <usize>this.expiryContext);
  }
}

/** An entry's steering half-word for a packet: its steering hash, unless it has none (0: made by an element, never steered). */
@inline function steeringOf(p: Packet): u16 {
  return p.hash ? STEERED | <u16>(p.hash & ~STEERED) : 0;
}

/** True when the last lookupOrInsert created the entry. */
export let flowCreated: bool = false;

@inline function keysEqual(a: usize, b: usize): bool {
  return load<u64>(a) == load<u64>(b) && load<u64>(a, 8) == load<u64>(b, 8);
}
