import { Batch, Outputs, Packet, Ethernet, IPv4, ARP, Wire, ETHERTYPE_ARP, addressHash, dropPacket, newPacket, now } from "wirepath";
import { ARPQuerierState } from "./layout";

const OUT = 0;
/** Shortest Ethernet frame without its FCS: requests are padded to it. */
const MIN_FRAME: u32 = 60;
const SECOND: u64 = 1_000_000_000;

// The neighbours (element.ts `neighbours`): [slot count u32], then from byte SLOT slots of [address u32][version u32]
// [MAC | KNOWN u64][learned u64][queried u64], shared by the shards. A shard changes a slot's address or MAC only while
// it holds the slot's version odd (a sequence lock); a reader takes the address and MAC it read only when the version
// was even and the same before and after, so it never pairs one neighbour's address with another's MAC. The other
// fields are hints (when to ask, which slot to give up), read and written atomically.
const SLOT: u32 = 32;
const VERSION_AT = 4;
const MAC_AT = 8;
const LEARNED_AT = 16;
const QUERIED_AT = 24;
const KNOWN: u64 = 1 << 63;
const MAC_BITS: u64 = 0xffff_ffff_ffff;
const BROADCAST: u64 = MAC_BITS;
/** Slots looked at for a neighbour from its hash. */
const PROBES: u32 = 8;
/** Tries at a slot another shard is writing (a few stores long) before giving up. */
const LOCK_TRIES: u32 = 1000;

/** Time from `then` to `t`, 0 when `then` is later: shards' clocks may differ a little, and a u64 must not wrap. */
@inline function since(t: u64, then: u64): u64 {
  return t > then ? t - then : 0;
}

export function process(self: ARPQuerierState, batch: Batch, out: Outputs, port: i32): void {
  const t = now();
  if (port == 1) {
    for (let i: u32 = 0; i < batch.count; i++) {
      const p = batch.packet(i);
      learnFrom(self, p, t, out);
      dropPacket(p);
    }
    dropStale(self, t);
    return;
  }
  // Packets for known neighbours stay in the batch, which goes on whole; requests go as they come.
  const n = batch.count;
  let kept: u32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const p = batch.packet(i);
    const ip = IPv4.capturedHeader(p);
    if (!ip) { self.not_ipv4++; dropPacket(p); continue; }
    const dst = IPv4.dst(ip);
    const group = groupMac(self, dst);
    if (group) { sendTo(self, p, group); self.resolved++; batch.set(kept++, p); continue; }
    const hop = nextHop(self, dst);
    // No one has 0.0.0.0 (RFC 1122 3.2.1.3): asking who has it would only put a bogus request on the link.
    if (!hop) { self.unresolved++; dropPacket(p); continue; }
    const slot = find(self, hop);
    const mac = slot ? knownMac(slot, hop) : 0;
    // Known, and answered within timeout and the 3 s of asking again after it: a neighbour that stopped answering is unknown.
    const age = mac ? since(t, atomic.load<u64>(slot, LEARNED_AT)) : 0;
    if (mac && age < self.timeout + HOLD_NS) {
      sendTo(self, p, mac);
      self.resolved++;
      batch.set(kept++, p);
      if (age >= self.timeout && mayAsk(slot, t)) ask(self, p, hop, out);
      continue;
    }
    const waiting = slot ? slot : claim(self, hop, t, true);
    if (!waiting) { self.table_full++; dropPacket(p); continue; }
    if (mayAsk(waiting, t)) ask(self, p, hop, out);
    if (!hold(self, p, hop, t)) { self.unresolved++; dropPacket(p); continue; }
    self.held++;
    // The answer may have come to another shard since the look above, and found nothing held yet.
    const answered = knownMac(waiting, hop);
    if (answered && since(t, atomic.load<u64>(waiting, LEARNED_AT)) < self.timeout) release(self, hop, answered, out);
  }
  batch.count = kept;
  out.pushAll(OUT, batch);
  dropStale(self, t);
}

/** Packets held longer than this for a neighbour that does not answer are dropped (Linux gives up after 3 requests). */
const HOLD_NS: u64 = 3 * SECOND;

export function tick(self: ARPQuerierState, out: Outputs): void {
  dropStale(self, now());
}

/** Sends a request for `address` beside `p` (a new packet with p's VLAN tags). */
function ask(self: ARPQuerierState, p: Packet, address: u32, out: Outputs): void {
  const q = newPacket();
  if (!q) return;
  q.timestamp = p.timestamp;
  copyTags(q, p);
  writeRequest(self, q, address);
  out.push(OUT, q);
}

// Packets waiting for their next hop's MAC (element.ts `held_packets`): [count u32] then from byte HELD_AT entries of [packet u32]
// [address u32][since u64], one packet per neighbour, taken and given back by any shard with atomics. An entry is
// claimed by writing RESERVED into its packet word, then its address and time, then the packet: a shard that finds a
// packet there finds the address it waits for.
const HELD_AT: usize = 16;
const HELD_ENTRY: usize = 16;
const HELD_ENTRIES: u32 = 64;
const RESERVED: u32 = 1;

@inline function heldEntry(area: usize, i: u32): usize {
  return area + HELD_AT + <usize>i * HELD_ENTRY;
}

/**
 * Holds `p` until `address` answers; false when a packet for it already waits, or every entry is taken. The packet is
 * put in an entry first and then the others are looked through, so that of two shards holding for one neighbour at
 * once, one at least sees the other's and takes its own back.
 */
function hold(self: ARPQuerierState, p: Packet, address: u32, t: u64): bool {
  const area = <usize>self.held_packets;
  const packet = changetype<u32>(p);
  let mine: usize = 0;
  for (let i: u32 = 0; i < HELD_ENTRIES && !mine; i++) {
    const e = heldEntry(area, i);
    if (atomic.cmpxchg<u32>(e, 0, RESERVED) != 0) continue;
    atomic.store<u32>(e, address, 4);
    atomic.store<u64>(e, t, 8);
    atomic.store<u32>(e, packet);
    atomic.add<u32>(area, 1);
    mine = e;
  }
  if (!mine) return false;
  for (let i: u32 = 0; i < HELD_ENTRIES; i++) {
    const e = heldEntry(area, i);
    if (e == mine || atomic.load<u32>(e) <= RESERVED || atomic.load<u32>(e, 4) != address) continue;
    // Another waits for it: take ours back, unless an answer sent it meanwhile.
    return !takeHeld(area, mine, packet);
  }
  return true;
}

/** Takes the packet of entry `e` when it is `packet` (no other shard took it first). */
@inline function takeHeld(area: usize, e: usize, packet: u32): bool {
  if (packet <= RESERVED || atomic.cmpxchg<u32>(e, packet, 0) != packet) return false;
  atomic.sub<u32>(area, 1);
  return true;
}

/** Sends the packet that waits for `address`, now that its MAC is known. */
function release(self: ARPQuerierState, address: u32, mac: u64, out: Outputs): void {
  const area = <usize>self.held_packets;
  if (!atomic.load<u32>(area)) return;
  for (let i: u32 = 0; i < HELD_ENTRIES; i++) {
    const e = heldEntry(area, i);
    const packet = atomic.load<u32>(e);
    if (packet <= RESERVED || atomic.load<u32>(e, 4) != address || !takeHeld(area, e, packet)) continue;
    const p = changetype<Packet>(packet);
    sendTo(self, p, mac);
    self.released++;
    out.push(OUT, p);
  }
}

/** Drops the packets held HOLD_NS or longer. */
function dropStale(self: ARPQuerierState, t: u64): void {
  const area = <usize>self.held_packets;
  if (!atomic.load<u32>(area)) return;
  for (let i: u32 = 0; i < HELD_ENTRIES; i++) {
    const e = heldEntry(area, i);
    const packet = atomic.load<u32>(e);
    if (packet <= RESERVED || since(t, atomic.load<u64>(e, 8)) < HOLD_NS || !takeHeld(area, e, packet)) continue;
    self.unresolved++;
    dropPacket(changetype<Packet>(packet));
  }
}

@inline function sendTo(self: ARPQuerierState, p: Packet, mac: u64): void {
  Ethernet.setAddress(Ethernet.dst(p), mac & MAC_BITS);
  Ethernet.setAddress(Ethernet.src(p), self.mac);
}

/**
 * The MAC of a destination no one answers ARP for, or 0: the broadcast one for the limited broadcast address and, with
 * network, its broadcast address; for a multicast group its MAC (RFC 1112 §6.4: 01:00:5e and the group's low 23 bits).
 */
@inline function groupMac(self: ARPQuerierState, dst: u32): u64 {
  if (dst == 0xffffffff || (self.has_network && dst == (self.network_address | ~self.network_mask))) return BROADCAST;
  if (dst >>> 28 != 14) return 0;
  // Wire order in the low bytes: 01 00 5e, then the group's low 23 bits.
  return 0x5e0001 | (<u64>((dst >>> 16) & 0x7f) << 24) | (<u64>((dst >>> 8) & 0xff) << 32) | (<u64>(dst & 0xff) << 40);
}

@inline function nextHop(self: ARPQuerierState, dst: u32): u32 {
  return self.has_network && (dst & self.network_mask) != self.network_address ? self.gateway : dst;
}

/**
 * The MAC of the neighbour in `slot` with the KNOWN bit, or 0 while it is not known, or the slot is another's or being
 * written (see the slots' layout).
 */
function knownMac(slot: usize, address: u32): u64 {
  const before = atomic.load<u32>(slot, VERSION_AT);
  if (before & 1) return 0;
  const held = atomic.load<u32>(slot);
  const mac = atomic.load<u64>(slot, MAC_AT);
  return held == address && atomic.load<u32>(slot, VERSION_AT) == before ? mac : 0;
}

/** Takes the slot's lock (its version made odd); returns the even version it had, or -1 when another shard holds on. */
function lock(slot: usize): i64 {
  for (let i: u32 = 0; i < LOCK_TRIES; i++) {
    const version = atomic.load<u32>(slot, VERSION_AT);
    if (!(version & 1) && atomic.cmpxchg<u32>(slot, version, version + 1, VERSION_AT) == version) return <i64>version;
  }
  return -1;
}

@inline function unlock(slot: usize, version: i64): void {
  atomic.store<u32>(slot, <u32>version + 2, VERSION_AT);
}

/** Whether a request for the neighbour in `slot` may go now (one a second): if so, notes that it went. */
function mayAsk(slot: usize, t: u64): bool {
  const last = atomic.load<u64>(slot, QUERIED_AT);
  if (last != 0 && since(t, last) < SECOND) return false;
  return atomic.cmpxchg<u64>(slot, last, t | 1, QUERIED_AT) == last;
}

@inline function slotAt(self: ARPQuerierState, index: u32): usize {
  const table = <usize>self.neighbours;
  return table + SLOT + <usize>(index & (load<u32>(table) - 1)) * SLOT;
}

/** The slot of `address`, or 0 (a hint: knownMac and the lock tell whether it still is). */
function find(self: ARPQuerierState, address: u32): usize {
  const h = addressHash(address);
  for (let i: u32 = 0; i < PROBES; i++) {
    const slot = slotAt(self, h + i);
    const held = atomic.load<u32>(slot);
    if (held == address) return slot;
    if (held == 0) return 0;
  }
  return 0;
}

/**
 * The slot of `address`, or (when `fresh`) one for it, nothing known of it yet: a free one, or the one whose neighbour was last heard
 * (answered, or asked for when it never answered) longest ago if that is more than `timeout` ago; 0 when there is none.
 */
function claim(self: ARPQuerierState, address: u32, t: u64, fresh: bool): usize {
  const h = addressHash(address);
  let oldest: usize = 0;
  let oldestTime: u64 = U64.MAX_VALUE;
  for (let i: u32 = 0; i < PROBES; i++) {
    const slot = slotAt(self, h + i);
    const held = atomic.load<u32>(slot);
    if (held == address) return slot;
    if (held == 0) return fresh ? take(slot, 0, address) : 0;
    const learned = atomic.load<u64>(slot, LEARNED_AT);
    const heard = learned ? learned : atomic.load<u64>(slot, QUERIED_AT);
    if (heard < oldestTime) { oldest = slot; oldestTime = heard; }
  }
  if (!fresh || !oldest || since(t, oldestTime) < self.timeout) return 0;
  return take(oldest, atomic.load<u32>(oldest), address);
}

/** Takes `slot` from `held` for `address`, nothing known of it yet; 0 when another shard changed it first (or holds it). */
function take(slot: usize, held: u32, address: u32): usize {
  const version = lock(slot);
  if (version < 0) return 0;
  const now = atomic.load<u32>(slot);
  if (now == held) {
    atomic.store<u32>(slot, address);
    atomic.store<u64>(slot, 0, MAC_AT);
    atomic.store<u64>(slot, 0, LEARNED_AT);
    atomic.store<u64>(slot, 0, QUERIED_AT);
  }
  unlock(slot, version);
  return now == held || now == address ? slot : 0;
}

/**
 * Learns from an ARP frame, as Click does: the sender of an answer (whether asked for on this shard or another, which
 * may have made its slot after the answer came here), or of a request for our address; any neighbour known is updated.
 * Not from a probe, a group MAC, or a sender outside the network. A packet that waited for the sender goes out.
 */
function learnFrom(self: ARPQuerierState, p: Packet, t: u64, out: Outputs): void {
  if (Ethernet.etherType(p) != ETHERTYPE_ARP || <u32>p.l3Offset + ARP.LENGTH > p.length) { self.not_arp++; return; }
  const arp = p.data + <usize>p.l3Offset;
  const form = ARP.form(arp);
  if (form != ARP.ETHERNET_IPV4 && form != ARP.IEEE802_IPV4) { self.not_arp++; return; }
  const sender = Wire.get32(arp + ARP.SENDER_IP);
  const mac = Ethernet.address(arp + ARP.SENDER_MAC);
  const outside = self.has_network && (sender & self.network_mask) != self.network_address;
  if (sender == 0 || outside || (mac & 1)) { self.ignored++; return; }
  const operation = Wire.get16(arp + ARP.OPERATION);
  const wanted = operation == ARP.REPLY || (operation == ARP.REQUEST && Wire.get32(arp + ARP.TARGET_IP) == self.address);
  const slot = claim(self, sender, t, wanted);
  const version = slot ? lock(slot) : -1;
  if (version < 0) { self.ignored++; return; }
  // The slot may have gone to another neighbour since claim found it.
  const still = atomic.load<u32>(slot) == sender;
  if (still) {
    atomic.store<u64>(slot, mac | KNOWN, MAC_AT);
    atomic.store<u64>(slot, t | 1, LEARNED_AT);
  }
  unlock(slot, version);
  if (!still) { self.ignored++; return; }
  self.learned++;
  release(self, sender, mac, out);
}

/** Copies the VLAN tags of `from` (its layer 2 header past the addresses) into `to`, whose l3Offset it sets alike. */
function copyTags(to: Packet, from: Packet): void {
  for (let at: u32 = 12; at < <u32>from.l3Offset; at++) store<u8>(to.data + at, load<u8>(from.data + at));
  to.l3Offset = from.l3Offset;
}

/** Makes `p` (its layer 2 header up to l3Offset kept, tags and all) the broadcast ARP request for `address`. */
function writeRequest(self: ARPQuerierState, p: Packet, address: u32): void {
  const d = p.data;
  const l3 = <u32>p.l3Offset;
  Ethernet.setAddress(d, MAC_BITS);
  Ethernet.setAddress(d + 6, self.mac);
  Wire.set16(d + l3 - 2, ETHERTYPE_ARP);
  const arp = d + l3;
  store<u64>(arp, ARP.ETHERNET_IPV4 | (<u64>bswap<u16>(ARP.REQUEST) << 48));
  Ethernet.setAddress(arp + ARP.SENDER_MAC, self.mac);
  Wire.set32(arp + ARP.SENDER_IP, self.address);
  Ethernet.setAddress(arp + ARP.TARGET_MAC, 0);
  Wire.set32(arp + ARP.TARGET_IP, address);
  const end = l3 + ARP.LENGTH;
  const length = max<u32>(end, MIN_FRAME);
  for (let at = end; at < length; at++) store<u8>(d + at, 0);
  p.length = length;
  p.wireLength = length;
  self.queries++;
}
