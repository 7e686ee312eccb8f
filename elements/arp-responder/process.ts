import { Batch, Outputs, Packet, Ethernet, ARP, Wire, ETHERTYPE_ARP, dropPacket } from "wirepath";
import { ARPResponderState } from "./layout";

const REPLIES = 0;
const OTHER = 1;

export function process(self: ARPResponderState, batch: Batch, out: Outputs): void {
  // Replies stay in the batch, which goes on whole; other frames go to output 1 as they come.
  const n = batch.count;
  let kept: u32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const p = batch.packet(i);
    const answer = answerable(self, p);
    if (answer == 0) { self.other++; out.push(OTHER, p); continue; }
    if (answer < 0) { self.malformed++; dropPacket(p); continue; }
    reply(self, p, p.data + <usize>p.l3Offset);
    self.answered++;
    batch.set(kept++, p);
  }
  batch.count = kept;
  out.pushAll(REPLIES, batch);
}

/**
 * 1 for an ARP request for one of the addresses that Linux would answer, 0 for any other frame, -1 for an ARP frame too
 * short for the addresses of an Ethernet and IPv4 ARP message.
 */
@inline function answerable(self: ARPResponderState, p: Packet): i32 {
  if (Ethernet.etherType(p) != ETHERTYPE_ARP) return 0;
  const arp = p.data + <usize>p.l3Offset;
  if (<u32>p.l3Offset + ARP.LENGTH > p.length) return -1;
  // Ethernet (or, as Linux takes on Ethernet, IEEE 802) hardware and IPv4; a request sent to us or to all.
  const form = ARP.form(arp);
  if (form != ARP.ETHERNET_IPV4 && form != ARP.IEEE802_IPV4) return 0;
  if (Wire.get16(arp + ARP.OPERATION) != ARP.REQUEST) return 0;
  if (!(load<u8>(p.data) & 1) && Ethernet.address(p.data) != self.mac) return 0;
  // No answer to a group's address as the asker's.
  if (load<u8>(arp + ARP.SENDER_MAC) & 1) return 0;
  const target = Wire.get32(arp + ARP.TARGET_IP);
  // An announcement: the sender tells of its own address. And no multicast address is anyone's.
  if (target == Wire.get32(arp + ARP.SENDER_IP) || target >>> 28 == 14) return 0;
  return answersFor(self, target) ? 1 : 0;
}

@inline function answersFor(self: ARPResponderState, address: u32): bool {
  const table = <usize>self.address_table;
  const count = load<u32>(table);
  for (let i: u32 = 0; i < count; i++) {
    const prefix = table + 4 + (<usize>i << 3);
    if ((address & load<u32>(prefix, 4)) == load<u32>(prefix)) return true;
  }
  return false;
}

/** Turns the request at `arp` into its reply: `mac` has the target address; to the asker, from `mac`. */
function reply(self: ARPResponderState, p: Packet, arp: usize): void {
  const asked = load<u32>(arp + ARP.TARGET_IP);
  Wire.set16(arp + ARP.OPERATION, ARP.REPLY);
  Ethernet.setAddress(arp + ARP.TARGET_MAC, Ethernet.address(arp + ARP.SENDER_MAC));
  store<u32>(arp + ARP.TARGET_IP, load<u32>(arp + ARP.SENDER_IP));
  Ethernet.setAddress(arp + ARP.SENDER_MAC, self.mac);
  store<u32>(arp + ARP.SENDER_IP, asked);
  Ethernet.setAddress(Ethernet.dst(p), Ethernet.address(arp + ARP.TARGET_MAC));
  Ethernet.setAddress(Ethernet.src(p), self.mac);
}
