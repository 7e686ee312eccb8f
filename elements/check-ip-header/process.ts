import { Batch, Outputs, Packet, Ethernet, IPv4, ETHERTYPE_IPV4 } from "wirepath";
import { CheckIPHeaderState } from "./layout";

const OK = 0;
const BAD = 1;

export function process(self: CheckIPHeaderState, batch: Batch, out: Outputs): void {
  // Good packets stay in the batch, which goes on whole; bad ones go to output 1 as they come.
  const n = batch.count;
  let kept: u32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const p = batch.packet(i);
    if (check(self, p) == OK) batch.set(kept++, p);
    else out.push(BAD, p);
  }
  batch.count = kept;
  out.pushAll(OK, batch);
}

@inline function check(self: CheckIPHeaderState, p: Packet): i32 {
  let off: u32 = Ethernet.HEADER;
  // Untagged IPv4 in one load (0x0800 as loaded little-endian); anything else takes the full parse.
  if (p.length >= Ethernet.HEADER && load<u16>(p.data + 12) == bswap<u16>(ETHERTYPE_IPV4)) {
    p.l3Offset = <u16>off;
  } else if (Ethernet.etherType(p) == ETHERTYPE_IPV4) {
    off = <u32>p.l3Offset;
  } else {
    if (self.non_ipv4 == 1 && p.length >= Ethernet.HEADER) return OK;
    self.not_ipv4++;
    return BAD;
  }
  if (p.length < off + IPv4.MIN_HEADER) { self.truncated++; return BAD; }
  const ip = p.data + off;
  const room = p.length - off;
  if ((load<u8>(ip) >> 4) != 4) { self.bad_version++; return BAD; }
  const hl = IPv4.headerLength(ip);
  if (hl < IPv4.MIN_HEADER || hl > room) { self.bad_header_length++; return BAD; }
  const total = IPv4.totalLength(ip);
  const cut = total > room && p.wireLength > p.length;
  if (total < hl || total > (cut ? p.wireLength - off : room)) { self.bad_total_length++; return BAD; }
  if (self.verify_checksum && !IPv4.checksumValid(ip)) { self.bad_checksum++; return BAD; }
  if (cut) self.cut++;
  return OK;
}
