import { Batch, Outputs, Ethernet, IPv4, Transport, IPPROTO_TCP, IPPROTO_UDP, replace16, replace32, adjustChecksum, dropPacket } from "wirepath";
import { RewriteState } from "./layout";

const OUT = 0;
const EXPIRED = 1;

// Every change to the IPv4 header adds its delta to one sum, applied to the header checksum once; the
// address changes (in the pseudo-header) and the ports add theirs to a second, applied once to the TCP
// or UDP checksum. Values are the wire's bytes as loaded: nothing is byte-swapped per packet.

export function process(self: RewriteState, batch: Batch, out: Outputs): void {
  const decTtl = self.dec_ttl != 0;
  const ipSrc = bswap<u32>(self.ip_src);
  const ipDst = bswap<u32>(self.ip_dst);
  const srcPort = bswap<u16>(self.src_port);
  const dstPort = bswap<u16>(self.dst_port);
  const tos = <u16>self.dscp << 10; // the DSCP's place in the header's first 16 bits as loaded
  const ports = self.has_src_port || self.has_dst_port;
  const transportChanges = ports || self.has_ip_src || self.has_ip_dst;
  let rewritten: u64 = 0;
  // Packets for output 0 stay in the batch, which goes on whole; expired ones go to output 1 as they come.
  const n = batch.count;
  let kept: u32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const p = batch.packet(i);
    const ip = IPv4.capturedHeader(p);
    if (ip && decTtl && IPv4.ttl(ip) <= 1) { self.expired++; out.push(EXPIRED, p); continue; }
    const proto = ip ? IPv4.protocol(ip) : 0;
    const l4 = transportChanges && (proto == IPPROTO_TCP || proto == IPPROTO_UDP) ? Transport.header(p, ip) : 0;
    // A TCP or UDP header cut short: its checksum could not follow the new addresses or ports (a later fragment has none to).
    if (transportChanges && (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && !l4 && IPv4.fragmentOffset(ip) == 0) { self.malformed++; dropPacket(p); continue; }
    batch.set(kept++, p);
    if (p.length >= Ethernet.HEADER) {
      if (self.has_eth_src) Ethernet.setAddress(Ethernet.src(p), self.eth_src);
      if (self.has_eth_dst) Ethernet.setAddress(Ethernet.dst(p), self.eth_dst);
    }
    if (!ip) { self.not_ipv4++; continue; }
    rewritten++;
    let header: u32 = 0;
    let pseudo: u32 = 0;
    // As loaded, the TTL is the low byte of bytes 8-9 (the protocol the high one); TOS the high byte of 0-1.
    if (decTtl) header += replace16(ip + 8, load<u16>(ip + 8) - 1);
    if (self.has_dscp) header += replace16(ip, (load<u16>(ip) & 0x3ff) | tos);
    if (self.has_ip_src) pseudo += replace32(ip + 12, ipSrc);
    if (self.has_ip_dst) pseudo += replace32(ip + 16, ipDst);
    header += pseudo;
    if (header) store<u16>(ip + 10, adjustChecksum(load<u16>(ip + 10), header));
    if (l4) {
      let segment = pseudo;
      if (self.has_src_port) segment += replace16(l4, srcPort);
      if (self.has_dst_port) segment += replace16(l4 + 2, dstPort);
      const field = l4 + (proto == IPPROTO_TCP ? 16 : 6);
      const check = load<u16>(field);
      // A UDP checksum of 0 means none and stays so; one that comes out 0 is sent as 0xffff (RFC 768).
      if (proto == IPPROTO_TCP || check != 0) {
        const updated = adjustChecksum(check, segment);
        store<u16>(field, proto == IPPROTO_UDP && updated == 0 ? 0xffff : updated);
      }
    }
  }
  batch.count = kept;
  out.pushAll(OUT, batch);
  self.rewritten += rewritten;
}
