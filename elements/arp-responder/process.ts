import { Batch, Outputs, Packet, Ethernet, Wire, dropPacket } from "wirepath";
import { ARPResponderState } from "./layout";

const REPLIES = 0;
const OTHER = 1;
const ETHERTYPE_ARP: u16 = 0x0806;
/** An Ethernet and IPv4 ARP message (RFC 826): hardware type 1, protocol 0x0800, lengths 6 and 4. */
const ARP_ETHERNET_IPV4: u64 = 0x0406_0008_0100; // its first 6 bytes as loaded
const ARP_IEEE802_IPV4: u64 = 0x0406_0008_0600;
const ARP_LENGTH: u32 = 28;
const REQUEST: u16 = 1;
const REPLY: u16 = 2;

// Offsets in the ARP message.
const OPERATION = 6;
const SENDER_MAC = 8;
const SENDER_IP = 14;
const TARGET_MAC = 18;
const TARGET_IP = 24;

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
  if (<u32>p.l3Offset + ARP_LENGTH > p.length) return -1;
  // Ethernet (or, as Linux takes on Ethernet, IEEE 802) hardware and IPv4; a request sent to us or to all.
  const form = load<u64>(arp) & 0xffff_ffff_ffff;
  if (form != ARP_ETHERNET_IPV4 && form != ARP_IEEE802_IPV4) return 0;
  if (Wire.get16(arp + OPERATION) != REQUEST) return 0;
  if (!(load<u8>(p.data) & 1) && (load<u64>(p.data) & 0xffff_ffff_ffff) != self.mac) return 0;
  // No answer to a group's address as the asker's.
  if (load<u8>(arp + SENDER_MAC) & 1) return 0;
  const target = Wire.get32(arp + TARGET_IP);
  // An announcement: the sender tells of its own address. And no multicast address is anyone's.
  if (target == Wire.get32(arp + SENDER_IP) || target >>> 28 == 14) return 0;
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
  const asked = load<u32>(arp + TARGET_IP);
  Wire.set16(arp + OPERATION, REPLY);
  copyMac(arp + TARGET_MAC, arp + SENDER_MAC);
  store<u32>(arp + TARGET_IP, load<u32>(arp + SENDER_IP));
  Ethernet.setAddress(arp + SENDER_MAC, self.mac);
  store<u32>(arp + SENDER_IP, asked);
  copyMac(Ethernet.dst(p), arp + TARGET_MAC);
  Ethernet.setAddress(Ethernet.src(p), self.mac);
}

@inline function copyMac(to: usize, from: usize): void {
  store<u32>(to, load<u32>(from));
  store<u16>(to, load<u16>(from, 4), 4);
}
