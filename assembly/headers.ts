import { Packet, META_SIZE } from "./packet";
import { copyBytes } from "./bytes";
import { sumBytes, checksum, fold, updateChecksum32 as csum32 } from "./checksum";

// Header accessors. Every parser checks each offset against the packet's length: a truncated or
// lying header yields 0 ("no such header"), never a read past the frame. Field values are host order.

export const ETHERTYPE_IPV4: u16 = 0x0800;
export const ETHERTYPE_IPV6: u16 = 0x86dd;
export const ETHERTYPE_VLAN: u16 = 0x8100;
export const ETHERTYPE_QINQ: u16 = 0x88a8;
/** The tag type QinQ had before 802.1ad, which some switches still send (tcpdump's vlan takes it too). */
export const ETHERTYPE_QINQ_9100: u16 = 0x9100;
export const ETHERTYPE_ARP: u16 = 0x0806;
export const IPPROTO_ICMP: u8 = 1;
export const IPPROTO_TCP: u8 = 6;
export const IPPROTO_UDP: u8 = 17;

@inline function be16(addr: usize): u16 { return bswap<u16>(load<u16>(addr)); }
@inline function be32(addr: usize): u32 { return bswap<u32>(load<u32>(addr)); }
@inline function setBe16(addr: usize, v: u16): void { store<u16>(addr, bswap<u16>(v)); }
@inline function setBe32(addr: usize, v: u32): void { store<u32>(addr, bswap<u32>(v)); }

export namespace Ethernet {
  export const HEADER: u32 = 14;
  @inline export function dst(p: Packet): usize { return p.data; }
  @inline export function src(p: Packet): usize { return p.data + 6; }
  /** Writes an address given as six wire-order bytes in the low bytes of a little-endian u64. */
  @inline export function setAddress(addr: usize, mac: u64): void {
    store<u32>(addr, <u32>mac);
    store<u16>(addr + 4, <u16>(mac >> 32));
  }

  /** The address at `addr` as setAddress takes it: six wire-order bytes in the low bytes of a u64. */
  @inline export function address(addr: usize): u64 {
    return <u64>load<u32>(addr) | (<u64>load<u16>(addr + 4) << 32);
  }

  /** Whether `type` is a VLAN tag's: 802.1Q, 802.1ad or the older 0x9100. */
  @inline export function isTag(type: u16): bool {
    return type == ETHERTYPE_VLAN || type == ETHERTYPE_QINQ || type == ETHERTYPE_QINQ_9100;
  }

  /**
   * The ethertype after up to two VLAN tags (802.1Q, 802.1ad, 0x9100), or 0 when the frame is too short.
   * Records the network header's offset in p.l3Offset.
   */
  export function etherType(p: Packet): u16 {
    const d = p.data;
    const len = p.length;
    if (len < HEADER) return 0;
    let off: u32 = 12;
    let type = be16(d + off);
    for (let tags = 0; tags < 2 && isTag(type); tags++) {
      off += 4;
      if (off + 2 > len) return 0;
      type = be16(d + off);
    }
    p.l3Offset = <u16>(off + 2);
    return type;
  }

  /** VLAN ID of the outer tag (isTag), or -1 when the frame has none. */
  export function vlanId(p: Packet): i32 {
    if (p.length < 18) return -1;
    if (!isTag(be16(p.data + 12))) return -1;
    return <i32>(be16(p.data + 14) & 0x0fff);
  }
}

export namespace IPv4 {
  export const MIN_HEADER: u32 = 20;

  /**
   * Address of the packet's IPv4 header, or 0 unless the frame carries one whose version is 4, whose
   * IHL is at least 5 and whose total length covers the header and fits in the frame. Inlined, as
   * Transport.header: elements call them per packet, and a call costs more than their checks.
   */
  @inline export function header(p: Packet): usize {
    return headerWithin(p, p.length);
  }

  /**
   * The IPv4 header of a frame that a capture may have cut short (snaplen: p.wireLength is what the frame
   * had): as header(), but the total length need only fit the frame as it was on the wire; the header
   * itself is whole in the slot. For elements that read or rewrite headers only (a flow key, steering,
   * counting, Rewrite); the bytes past p.length are not there to read.
   */
  @inline export function capturedHeader(p: Packet): usize {
    const wire = p.wireLength;
    return headerWithin(p, wire > p.length ? wire : p.length);
  }

  /** The IPv4 header when it is whole in the slot and its total length fits `frameLength` bytes of frame. */
  @inline function headerWithin(p: Packet, frameLength: u32): usize {
    // The offset found by the first parse is kept in the packet (elements that change the layer 2
    // header reset it to 0); only the ethertype before it is read again.
    let off = <u32>p.l3Offset;
    if (off == 0) {
      if (Ethernet.etherType(p) != ETHERTYPE_IPV4) return 0;
      off = <u32>p.l3Offset;
    } else if (off > p.length || be16(p.data + off - 2) != ETHERTYPE_IPV4) {
      return 0;
    }
    if (p.length < off + MIN_HEADER) return 0;
    const ip = p.data + off;
    const vihl = load<u8>(ip);
    if ((vihl >> 4) != 4) return 0;
    const hl = (<u32>vihl & 15) << 2;
    if (hl < MIN_HEADER || hl > p.length - off) return 0;
    const total = <u32>be16(ip + 2);
    if (total < hl || total > frameLength - off) return 0;
    return ip;
  }

  /** Address just past the bytes of the IPv4 packet at `ip` that the slot holds: its total length, or as far as a capture kept. */
  @inline export function end(p: Packet, ip: usize): usize {
    const whole = ip + <usize>totalLength(ip);
    const kept = p.data + <usize>p.length;
    return whole < kept ? whole : kept;
  }

  @inline export function headerLength(ip: usize): u32 { return (<u32>load<u8>(ip) & 15) << 2; }
  @inline export function totalLength(ip: usize): u32 { return <u32>be16(ip + 2); }
  @inline export function tos(ip: usize): u8 { return load<u8>(ip + 1); }
  @inline export function id(ip: usize): u16 { return be16(ip + 4); }
  @inline export function ttl(ip: usize): u8 { return load<u8>(ip + 8); }
  @inline export function protocol(ip: usize): u8 { return load<u8>(ip + 9); }
  @inline export function headerChecksum(ip: usize): u16 { return be16(ip + 10); }
  @inline export function src(ip: usize): u32 { return be32(ip + 12); }
  @inline export function dst(ip: usize): u32 { return be32(ip + 16); }
  /** Fragment offset in 8-byte units. */
  @inline export function fragmentOffset(ip: usize): u32 { return <u32>(be16(ip + 6) & 0x1fff); }
  @inline export function moreFragments(ip: usize): bool { return (be16(ip + 6) & 0x2000) != 0; }
  @inline export function isFragment(ip: usize): bool { return (be16(ip + 6) & 0x3fff) != 0; }

  /** True when the header checksum verifies. */
  @inline export function checksumValid(ip: usize): bool {
    const hl = headerLength(ip);
    // The usual 20-byte header in five loads, without a loop.
    if (hl == MIN_HEADER) {
      return fold(<u64>load<u32>(ip) + <u64>load<u32>(ip, 4) + <u64>load<u32>(ip, 8) + <u64>load<u32>(ip, 12) + <u64>load<u32>(ip, 16)) == 0xffff;
    }
    return fold(sumBytes(ip, hl)) == 0xffff;
  }

  export function setHeaderChecksum(ip: usize): void {
    store<u16>(ip + 10, 0);
    setBe16(ip + 10, checksum(ip, headerLength(ip)));
  }

  /** Sets the source address, updating the IP checksum and the TCP/UDP pseudo-header checksum. */
  export function setSrc(p: Packet, ip: usize, value: u32): void {
    setAddress(p, ip, 12, value);
  }

  /** Sets the destination address, updating the IP checksum and the TCP/UDP pseudo-header checksum. */
  export function setDst(p: Packet, ip: usize, value: u32): void {
    setAddress(p, ip, 16, value);
  }

  function setAddress(p: Packet, ip: usize, offset: u32, value: u32): void {
    const old = load<u32>(ip + offset);
    const wire = bswap<u32>(value);
    store<u32>(ip + offset, wire);
    store<u16>(ip + 10, csum32(load<u16>(ip + 10), old, wire));
    const l4 = Transport.header(p, ip);
    if (l4) Transport.updateChecksum32(ip, l4, old, wire);
  }
}

export namespace IPv6 {
  export const HEADER: u32 = 40;

  /** Address of the packet's IPv6 header, or 0 unless the frame carries a complete one. */
  export function header(p: Packet): usize {
    if (Ethernet.etherType(p) != ETHERTYPE_IPV6) return 0;
    const off = <u32>p.l3Offset;
    if (p.length < off + HEADER) return 0;
    const ip = p.data + off;
    if ((load<u8>(ip) >> 4) != 6) return 0;
    if (<u32>be16(ip + 4) > p.length - off - HEADER) return 0;
    return ip;
  }

  @inline export function payloadLength(ip: usize): u32 { return <u32>be16(ip + 4); }
  @inline export function nextHeader(ip: usize): u8 { return load<u8>(ip + 6); }
  @inline export function hopLimit(ip: usize): u8 { return load<u8>(ip + 7); }
  @inline export function src(ip: usize): usize { return ip + 8; }
  @inline export function dst(ip: usize): usize { return ip + 24; }
}

/** TCP, UDP and ICMP headers carried by IPv4. */
export namespace Transport {
  /**
   * Address of the transport header of an IPv4 packet (from IPv4.header or IPv4.capturedHeader), or 0 when
   * the packet is a non-first fragment or its fixed header (TCP's 20 bytes, UDP's and ICMP's 8) is not whole in
   * the slot, or a TCP data offset does not fit the packet. Of a frame a capture cut short, the TCP options and
   * payload may lie past p.length: IPv4.end says where the slot's bytes end.
   */
  @inline export function header(p: Packet, ip: usize): usize {
    if (fragmentOffsetNonZero(ip)) return 0;
    const hl = IPv4.headerLength(ip);
    const room = <u32>(IPv4.end(p, ip) - ip) - hl;
    const proto = IPv4.protocol(ip);
    const l4 = ip + hl;
    if (proto == IPPROTO_TCP) {
      if (room < 20) return 0;
      const doff = (<u32>load<u8>(l4 + 12) >> 4) << 2;
      // Options a capture cut off were on the wire: the data offset need only fit the total length.
      if (doff < 20 || doff > IPv4.totalLength(ip) - hl) return 0;
      return l4;
    }
    if (proto == IPPROTO_UDP || proto == IPPROTO_ICMP) return room < 8 ? 0 : l4;
    return 0;
  }

  @inline function fragmentOffsetNonZero(ip: usize): bool { return IPv4.fragmentOffset(ip) != 0; }

  @inline export function srcPort(l4: usize): u16 { return be16(l4); }
  @inline export function dstPort(l4: usize): u16 { return be16(l4 + 2); }

  /** Offset of the checksum field in the transport header, or -1 when the protocol has none to fix. */
  @inline function checksumOffset(ip: usize): i32 {
    const proto = IPv4.protocol(ip);
    return proto == IPPROTO_TCP ? 16 : proto == IPPROTO_UDP ? 6 : -1;
  }

  /**
   * Applies a 32-bit change of a pseudo-header field (an address) to the TCP or UDP checksum. `old`
   * and `value` are the field's bytes as loaded (wire order), as IPv4.setSrc passes them.
   */
  export function updateChecksum32(ip: usize, l4: usize, old: u32, value: u32): void {
    const off = checksumOffset(ip);
    if (off < 0) return;
    const field = l4 + <usize>off;
    const check = load<u16>(field);
    if (off == 6 && check == 0) return; // UDP without checksum stays without (RFC 768)
    const updated = csum32(check, old, value);
    store<u16>(field, off == 6 && updated == 0 ? 0xffff : updated);
  }

  /**
   * Recomputes the TCP or UDP checksum from scratch over the pseudo-header and segment (used by
   * packet generators; rewrites use the incremental updates above).
   */
  export function setChecksum(ip: usize, l4: usize): void {
    const off = checksumOffset(ip);
    if (off < 0) return;
    const len = IPv4.totalLength(ip) - IPv4.headerLength(ip);
    const pseudo: u64 = <u64>(IPv4.src(ip) >>> 16) + <u64>(IPv4.src(ip) & 0xffff)
      + <u64>(IPv4.dst(ip) >>> 16) + <u64>(IPv4.dst(ip) & 0xffff)
      + <u64>IPv4.protocol(ip) + <u64>len;
    store<u16>(l4 + <usize>off, 0);
    let sum = checksum(l4, len, pseudo);
    if (off == 6 && sum == 0) sum = 0xffff;
    setBe16(l4 + <usize>off, sum);
  }
}

export namespace TCP {
  export const FIN: u8 = 0x01;
  export const SYN: u8 = 0x02;
  export const RST: u8 = 0x04;
  export const PSH: u8 = 0x08;
  export const ACK: u8 = 0x10;
  export const URG: u8 = 0x20;
  @inline export function flags(l4: usize): u8 { return load<u8>(l4 + 13); }
  @inline export function seq(l4: usize): u32 { return be32(l4 + 4); }
  @inline export function ack(l4: usize): u32 { return be32(l4 + 8); }
  @inline export function dataOffset(l4: usize): u32 { return (<u32>load<u8>(l4 + 12) >> 4) << 2; }
}

export namespace ICMP {
  export const DESTINATION_UNREACHABLE: u8 = 3;
  export const TIME_EXCEEDED: u8 = 11;
  /** Bytes an error puts in front of what it quotes: its IPv4 header (no options) and its ICMP header. */
  export const ERROR_HEADERS: u32 = 28;

  @inline export function type(l4: usize): u8 { return load<u8>(l4); }
  @inline export function code(l4: usize): u8 { return load<u8>(l4 + 1); }

  /** The message types that report on another datagram (RFC 792): no error is ever sent about one (RFC 1122 §3.2.2). */
  @inline export function isError(type: u8): bool {
    return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
  }

  /**
   * Writes, at `ip`, the IPv4 and ICMP headers of an error of `type` and `code` from `src` to `dst` whose `quoted` bytes
   * already follow them (at ip + ERROR_HEADERS); `rest` is the ICMP header's second word (a next-hop MTU, a pointer).
   * An atomic datagram (DF set, ID 0: RFC 6864 §4), TTL 64, precedence internetwork control (RFC 1812 §4.3.2.5).
   */
  export function writeError(ip: usize, type: u8, code: u8, rest: u32, src: u32, dst: u32, quoted: u32): void {
    setBe32(ip, 0x45c00000 | (ERROR_HEADERS + quoted));
    setBe32(ip + 4, 0x4000);
    setBe32(ip + 8, 0x40010000);
    setBe32(ip + 12, src);
    setBe32(ip + 16, dst);
    IPv4.setHeaderChecksum(ip);
    const icmp = ip + 20;
    setBe32(icmp, (<u32>type << 24) | (<u32>code << 16));
    setBe32(icmp + 4, rest);
    setBe16(icmp + 2, checksum(icmp, 8 + quoted));
  }

  /**
   * Turns the packet, in place, into an ICMP error about it from `src` back to its sender: the Ethernet addresses
   * swapped (VLAN tags kept), the error's headers in front of the packet's IPv4 header, which is quoted with as much
   * of what follows as makes `quote` bytes (RFC 792 asks for the header and 8 bytes, RFC 1812 §4.3.2.3 for as much as
   * keeps the error within 576) and the slot holds. False, the packet unchanged, without ERROR_HEADERS bytes of room
   * in front of the frame.
   */
  export function answer(p: Packet, ip: usize, type: u8, code: u8, rest: u32, src: u32, quote: u32): bool {
    if (<u32>p.dataOffset < ERROR_HEADERS + META_SIZE) return false;
    const l2 = <u32>(ip - p.data);
    const kept = <u32>(IPv4.end(p, ip) - ip);
    const quoted = quote < kept ? quote : kept;
    const data = p.data - ERROR_HEADERS;
    copyBytes(data, p.data + 6, 6);
    copyBytes(data + 6, p.data, 6);
    copyBytes(data + 12, p.data + 12, l2 - 12); // any VLAN tags, the ethertype
    writeError(data + l2, type, code, rest, src, IPv4.src(ip), quoted);
    p.dataOffset -= <u16>ERROR_HEADERS;
    p.length = l2 + ERROR_HEADERS + quoted;
    p.wireLength = p.length;
    p.l3Offset = 0;
    return true;
  }
}

/** ARP messages of Ethernet and IPv4 (RFC 826): their length, field offsets and values. */
export namespace ARP {
  export const LENGTH: u32 = 28;
  export const OPERATION: usize = 6;
  export const SENDER_MAC: usize = 8;
  export const SENDER_IP: usize = 14;
  export const TARGET_MAC: usize = 18;
  export const TARGET_IP: usize = 24;
  export const REQUEST: u16 = 1;
  export const REPLY: u16 = 2;
  /** The first 6 bytes as loaded (a u64's low 48 bits): hardware type 1 (Ethernet), protocol 0x0800, lengths 6 and 4. */
  export const ETHERNET_IPV4: u64 = 0x0406_0008_0100;
  /** The same with hardware type 6 (IEEE 802), which Linux takes as Ethernet. */
  export const IEEE802_IPV4: u64 = 0x0406_0008_0600;

  /** The first 6 bytes of the message at `arp` as ETHERNET_IPV4 is written. */
  @inline export function form(arp: usize): u64 {
    return load<u64>(arp) & 0xffff_ffff_ffff;
  }
}

/** Accessors shared with code that writes headers: big-endian loads and stores. */
export namespace Wire {
  @inline export function get16(addr: usize): u16 { return be16(addr); }
  @inline export function get32(addr: usize): u32 { return be32(addr); }
  @inline export function set16(addr: usize, v: u16): void { setBe16(addr, v); }
  @inline export function set32(addr: usize, v: u32): void { setBe32(addr, v); }
}
