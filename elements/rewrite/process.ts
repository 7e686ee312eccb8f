import { Batch, Outputs, Ethernet, IPv4, Transport, IPPROTO_TCP, IPPROTO_UDP } from "wirepath";
import { RewriteState } from "./layout";

const OUT = 0;
const EXPIRED = 1;

export function process(self: RewriteState, batch: Batch, out: Outputs): void {
  for (let i: u32 = 0; i < batch.count; i++) {
    const p = batch.packet(i);
    const ip = IPv4.header(p);
    if (ip && self.dec_ttl) {
      const ttl = IPv4.ttl(ip);
      if (ttl <= 1) { self.expired++; out.push(EXPIRED, p); continue; }
      IPv4.setTtl(ip, ttl - 1);
    }
    if (p.length >= Ethernet.HEADER) {
      if (self.has_eth_src) Ethernet.setAddress(Ethernet.src(p), self.eth_src);
      if (self.has_eth_dst) Ethernet.setAddress(Ethernet.dst(p), self.eth_dst);
    }
    if (!ip) { self.not_ipv4++; out.push(OUT, p); continue; }
    self.rewritten++;
    if (self.has_ip_src) IPv4.setSrc(p, ip, self.ip_src);
    if (self.has_ip_dst) IPv4.setDst(p, ip, self.ip_dst);
    if (self.has_dscp) IPv4.setTos(ip, (<u8>self.dscp << 2) | (IPv4.tos(ip) & 3));
    if (self.has_src_port || self.has_dst_port) {
      const proto = IPv4.protocol(ip);
      const l4 = Transport.header(p, ip);
      if (l4 && (proto == IPPROTO_TCP || proto == IPPROTO_UDP)) {
        if (self.has_src_port) Transport.setSrcPort(ip, l4, self.src_port);
        if (self.has_dst_port) Transport.setDstPort(ip, l4, self.dst_port);
      }
    }
    out.push(OUT, p);
  }
}
