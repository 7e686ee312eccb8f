import { ioAllocate, ioSubmit, ioRoom, copyBytes, copyRounds } from "wirepath";
import { FromPcapState } from "./layout";

// Per-record loops of FromPcap, run on the I/O side over a buffer of file bytes in linear memory.
// Each returns the bytes it consumed and says in self.stop why it stopped; the TypeScript half
// (element.ts) refills the buffer and handles the rare pcapng blocks that carry no packet.

export const STOP_BUDGET: u64 = 0;
export const STOP_NEED_MORE: u64 = 1;
export const STOP_OTHER_BLOCK: u64 = 2;
export const STOP_CORRUPT: u64 = 3;
export const STOP_PACED: u64 = 4;
export const STOP_NO_SLOT: u64 = 5;

// Why a record or block made no sense (self.corrupt, with STOP_CORRUPT): element.ts words it.
export const CORRUPT_RECORD_LENGTH: u64 = 1;
export const CORRUPT_BLOCK_LENGTH: u64 = 2;
export const CORRUPT_BLOCK_SHORT: u64 = 3;
export const CORRUPT_UNKNOWN_INTERFACE: u64 = 4;
export const CORRUPT_PACKET_PAST_BLOCK: u64 = 5;
export const CORRUPT_NO_INTERFACE: u64 = 6;

@inline function corrupt(self: FromPcapState, why: u64): void {
  self.stop = STOP_CORRUPT;
  self.corrupt = why;
}

/** Largest pcapng block accepted; anything longer is a corrupt length field. */
const MAX_BLOCK: u32 = 4 << 20;
const EPB: u32 = 6;
/** The obsolete Packet Block: an EPB whose interface id is 16 bits, followed by 16 bits of drop count. */
const PB: u32 = 2;
const SPB: u32 = 3;
const SHB: u32 = 0x0a0d0d0a;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b3c4d;

@inline function u32At(addr: usize, swapped: bool): u32 {
  const v = load<u32>(addr);
  return swapped ? bswap<u32>(v) : v;
}

@inline function u16At(addr: usize, swapped: bool): u32 {
  const v = load<u16>(addr);
  return swapped ? bswap<u16>(v) : v;
}

/**
 * A record's wire length, never less than what it captured: a writer that says otherwise made a mistake (tcpdump
 * prints "Invalid header: len < caplen"), and the frame had at least the bytes it holds.
 */
@inline function wireOf(caplen: u32, wire: u32): u32 {
  return wire < caplen ? caplen : wire;
}

/**
 * Copies one record into a fresh slot and submits it as the file's packet number `number` (counted
 * from 1, as tcpdump -# and Wireshark count, continuing across loops); false when the pool has no free
 * slot. The loops count packets, bytes and times (the latest, the earliest and the latest seen) in locals and store them once per call.
 */
@inline function submit(self: FromPcapState, data: usize, caplen: u32, wire: u32, ts: u64, port: u16, number: u64, spare: u32): bool {
  const p = ioAllocate();
  if (!p) { self.stop = STOP_NO_SLOT; return false; }
  const room = ioRoom();
  const copy = caplen < room ? caplen : room;
  if (copy < caplen) self.truncated++;
  // Whole rounds of 64 bytes when the slot and the buffer both have the bytes past the record.
  if (copy + 63 < room && spare >= 63) copyRounds(p.data, data, copy);
  else copyBytes(p.data, data, copy);
  p.length = copy;
  if (wire < caplen) self.short_wire++;
  p.wireLength = wireOf(caplen, wire);
  p.timestamp = ts;
  p.annotation = <u32>number;
  ioSubmit(p, port);
  return true;
}

/** Stores what a loop counted in its locals. */
@inline function account(self: FromPcapState, sent: u32, bytes: u64, last: u64, earliest: u64, latest: u64): void {
  if (sent == 0) return;
  self.read += sent;
  self.packets += sent;
  self.bytes += bytes;
  self.last_ns = last;
  self.earliest_ns = earliest;
  self.latest_ns = latest;
}

/** Paced sources stop at the first record later than `until` (self.until_ns; 0: no pacing). */
@inline function paced(self: FromPcapState, until: u64, ts: u64): bool {
  if (until != 0 && ts > until) { self.next_ns = ts; self.stop = STOP_PACED; return true; }
  return false;
}

/** Classic pcap records: [ts_sec][ts_frac][incl_len][orig_len] then the frame; an incl_len above maxRecord is corrupt. */
export function readPcap(self: FromPcapState, buf: usize, len: u32, budget: u32, port: u16, swapped: bool, nanos: bool, maxRecord: u32): u32 {
  // One loop per file kind, each with its byte order and time unit as constants.
  if (swapped) return nanos ? readRecords(self, buf, len, budget, port, true, true, maxRecord) : readRecords(self, buf, len, budget, port, true, false, maxRecord);
  return nanos ? readRecords(self, buf, len, budget, port, false, true, maxRecord) : readRecords(self, buf, len, budget, port, false, false, maxRecord);
}

@inline function readRecords(self: FromPcapState, buf: usize, len: u32, budget: u32, port: u16, swapped: bool, nanos: bool, maxRecord: u32): u32 {
  let at: u32 = 0;
  let sent: u32 = 0;
  let bytes: u64 = 0;
  let last: u64 = 0;
  const base = self.read;
  let earliest = base == 0 ? u64.MAX_VALUE : self.earliest_ns;
  let latest = self.latest_ns;
  const offset = self.ts_offset;
  const until = self.until_ns;
  self.stop = STOP_BUDGET;
  while (sent < budget) {
    if (len - at < 16) { self.stop = STOP_NEED_MORE; break; }
    const rec = buf + at;
    const caplen = u32At(rec + 8, swapped);
    if (caplen > maxRecord) { corrupt(self, CORRUPT_RECORD_LENGTH); break; }
    if (len - at - 16 < caplen) { self.stop = STOP_NEED_MORE; break; }
    const frac = <u64>u32At(rec + 4, swapped);
    const ts = <u64>u32At(rec, swapped) * 1_000_000_000 + (nanos ? frac : frac * 1000) + offset;
    if (paced(self, until, ts)) break;
    const wire = u32At(rec + 12, swapped);
    if (!submit(self, rec + 16, caplen, wire, ts, port, base + sent + 1, len - at - 16 - caplen)) break;
    bytes += wireOf(caplen, wire);
    last = ts;
    if (ts < earliest) earliest = ts;
    if (ts > latest) latest = ts;
    at += 16 + caplen;
    sent++;
  }
  account(self, sent, bytes, last, earliest, latest);
  return at;
}

/**
 * pcapng Enhanced, Simple and (obsolete) Packet Blocks. `ifaces` holds 32 bytes per interface (from its IDB):
 * [snaplen u32 (0: none)][scale kind u32: 0 multiply, 1 divide, 2 binary fraction][factor u64][if_tsoffset in ns i64][unused u64].
 */
export function readPcapng(self: FromPcapState, buf: usize, len: u32, budget: u32, port: u16, swapped: bool, ifaces: usize, ifaceCount: u32): u32 {
  let at: u32 = 0;
  let sent: u32 = 0;
  let bytes: u64 = 0;
  let last: u64 = self.last_ns;
  const base = self.read;
  let earliest = base == 0 ? u64.MAX_VALUE : self.earliest_ns;
  let latest = self.latest_ns;
  const offset = self.ts_offset;
  const until = self.until_ns;
  self.stop = STOP_BUDGET;
  while (sent < budget) {
    if (len - at < 12) { self.stop = STOP_NEED_MORE; break; }
    const block = buf + at;
    const type = u32At(block, swapped);
    // A section header may switch the byte order: its length is in the order it declares.
    const total = u32At(block + 4, type == SHB ? load<u32>(block + 8) != BYTE_ORDER_MAGIC : swapped);
    if (total < 12 || (total & 3) != 0 || total > MAX_BLOCK) { corrupt(self, CORRUPT_BLOCK_LENGTH); break; }
    if (len - at < total) { self.stop = STOP_NEED_MORE; break; }
    if (type == EPB || type == PB) {
      if (total < 32) { corrupt(self, CORRUPT_BLOCK_SHORT); break; }
      const iface = type == EPB ? u32At(block + 8, swapped) : u16At(block + 8, swapped);
      const caplen = u32At(block + 20, swapped);
      if (iface >= ifaceCount) { corrupt(self, CORRUPT_UNKNOWN_INTERFACE); break; }
      if (caplen > total - 32) { corrupt(self, CORRUPT_PACKET_PAST_BLOCK); break; }
      const units = (<u64>u32At(block + 12, swapped) << 32) | <u64>u32At(block + 16, swapped);
      const ts = toNanoseconds(ifaces + (<usize>iface << 5), units) + offset;
      if (paced(self, until, ts)) break;
      const wire = u32At(block + 24, swapped);
      if (!submit(self, block + 28, caplen, wire, ts, port, base + sent + 1, len - at - 28 - caplen)) break;
      bytes += wireOf(caplen, wire);
      last = ts;
      if (ts < earliest) earliest = ts;
      if (ts > latest) latest = ts;
    } else if (type == SPB) {
      if (total < 16) { corrupt(self, CORRUPT_BLOCK_SHORT); break; }
      if (ifaceCount == 0) { corrupt(self, CORRUPT_NO_INTERFACE); break; }
      // What it captured is the least of its wire length and interface 0's snaplen (pcapng spec): its block holds padding too.
      const wire = u32At(block + 8, swapped);
      const snaplen = load<u32>(ifaces);
      let caplen = wire < total - 16 ? wire : total - 16;
      if (snaplen != 0 && caplen > snaplen) caplen = snaplen;
      if (!submit(self, block + 12, caplen, wire, last, port, base + sent + 1, len - at - 12 - caplen)) break;
      bytes += wireOf(caplen, wire);
    } else {
      self.stop = STOP_OTHER_BLOCK;
      break;
    }
    at += total;
    sent++;
  }
  account(self, sent, bytes, last, earliest, latest);
  return at;
}

function toNanoseconds(iface: usize, units: u64): u64 {
  const ns = scaled(iface, units);
  const shift = load<i64>(iface, 16);
  // A negative if_tsoffset takes a time before 1970 to 0, not round to the far future.
  return shift < 0 && <u64>-shift > ns ? 0 : ns + <u64>shift;
}

function scaled(iface: usize, units: u64): u64 {
  const kind = load<u32>(iface, 4);
  const factor = load<u64>(iface, 8);
  if (kind == 0) return units * factor;
  if (kind == 1) return units / factor;
  const whole = units >> factor;
  const fraction = units & ((<u64>1 << factor) - 1);
  return whole * 1_000_000_000 + ((fraction * 1_000_000_000) >> factor);
}
