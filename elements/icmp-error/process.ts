import { Batch, Outputs, Packet, IPv4, ICMP, IPPROTO_ICMP, META_SIZE, now } from "wirepath";
import { ICMPErrorState } from "./layout";

const ERRORS = 0;
const UNANSWERED = 1;
const TIME_EXCEEDED = 0; // the `error` parameter's values, in order
const FRAGMENTATION_NEEDED: u8 = 4;
/** Bytes quoted at most: the error stays within 576 (RFC 1812 §4.3.2.3). */
const QUOTE: u32 = 576 - ICMP.ERROR_HEADERS;
const SECOND: u64 = 1_000_000_000;

export function process(self: ICMPErrorState, batch: Batch, out: Outputs): void {
  const t = now();
  const type = self.error == TIME_EXCEEDED ? ICMP.TIME_EXCEEDED : ICMP.DESTINATION_UNREACHABLE;
  const code = <u8>self.code;
  const rest: u32 = type == ICMP.DESTINATION_UNREACHABLE && code == FRAGMENTATION_NEEDED ? <u32>self.mtu : 0;
  // Errors stay in the batch, which goes on whole; the others go to output 1 as they come.
  const n = batch.count;
  let kept: u32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const p = batch.packet(i);
    const ip = IPv4.capturedHeader(p);
    if (!ip) { self.not_ipv4++; out.push(UNANSWERED, p); continue; }
    // A router takes packets addressed to itself whatever their TTL (RFC 1812 §4.2.2.9): they did not expire.
    if (!answerable(p, ip) || (type == ICMP.TIME_EXCEEDED && IPv4.dst(ip) == self.src)) { self.not_allowed++; out.push(UNANSWERED, p); continue; }
    if (<u32>p.dataOffset < META_SIZE + ICMP.ERROR_HEADERS) { self.no_room++; out.push(UNANSWERED, p); continue; }
    if (!rateAllows(self, t)) { self.limited++; out.push(UNANSWERED, p); continue; }
    ICMP.answer(p, ip, type, code, rest, self.src, QUOTE);
    self.sent++;
    batch.set(kept++, p);
  }
  batch.count = kept;
  out.pushAll(ERRORS, batch);
}

/** Whether an error may be sent about the packet (RFC 1122 §3.2.2, RFC 1812 §4.3.2.7). */
@inline function answerable(p: Packet, ip: usize): bool {
  if (IPv4.fragmentOffset(ip) != 0 || !IPv4.checksumValid(ip)) return false;
  // Sent to a group: an Ethernet broadcast or multicast, or an IP one.
  if (load<u8>(p.data) & 1) return false;
  const dst = IPv4.dst(ip);
  if (dst >>> 28 >= 14) return false;
  const src = IPv4.src(ip);
  const first = src >>> 24;
  if (first == 0 || first == 127 || first >= 224) return false;
  if (IPv4.protocol(ip) == IPPROTO_ICMP) {
    // About an ICMP error, or a message whose type the slot does not hold.
    const l4 = ip + <usize>IPv4.headerLength(ip);
    return l4 < IPv4.end(p, ip) && !ICMP.isError(ICMP.type(l4));
  }
  return true;
}

/**
 * Whether the rate allows another error at `t`: a generic cell rate (due_ns is when the next one is due), as a bucket of
 * `burst` tokens that fills at `rate` a second.
 */
@inline function rateAllows(self: ICMPErrorState, t: u64): bool {
  if (!self.rate) return true;
  const interval = SECOND / <u64>self.rate;
  const due = max<u64>(self.due_ns, t);
  if (due - t > <u64>(self.burst - 1) * interval) return false;
  self.due_ns = due + interval;
  return true;
}
