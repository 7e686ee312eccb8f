import { ioAllocate, ioSubmit, Ethernet, IPv4, Transport, Wire, IPPROTO_TCP, IPPROTO_UDP, copyBytes, zeroBytes } from "wirepath";
import { GeneratorState } from "./layout";

const TEMPLATE: u32 = 64;
const SERVICES: StaticArray<u16> = [53, 80, 123, 443, 853, 1194, 3478, 5060, 8080, 8443];

/** xorshift64*: small, fast and deterministic. */
function next(self: GeneratorState): u64 {
  let x = self.rng;
  x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
  self.rng = x;
  return x * 0x2545f4914f6cdd1d;
}

/**
 * The generator's first state: splitmix64 of the seed, a one-to-one mix, so that no two seeds give one stream (a
 * constant or-ed onto the seed erased bits of it: seeds 1, 3, 9 and 11 made the same flows). Never 0, where
 * xorshift stays.
 */
function splitmix64(seed: u64): u64 {
  let z = seed + 0x9e3779b97f4a7c15;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  z ^= z >> 31;
  return z ? z : 1;
}

/**
 * Claims a 5-tuple for flow f in `seen` (a table of mask + 1 flow numbers + 1, open addressing): false when an earlier
 * flow, whose template is written, has it already.
 */
function claim(self: GeneratorState, seen: usize, mask: u32, f: u32, proto: u8, src: u32, dst: u32, ports: u32): bool {
  let h = <u32>((((<u64>src << 32) | dst) ^ ((<u64>ports << 8) | proto)) * 0x9e3779b97f4a7c15 >> 32) & mask;
  let g: u32;
  while ((g = load<u32>(seen + (<usize>h << 2))) != 0) {
    const t = <usize>self.templates + <usize>(g - 1) * TEMPLATE;
    if (load<u8>(t + 23) == proto && Wire.get32(t + 26) == src && Wire.get32(t + 30) == dst && Wire.get32(t + 34) == ports) return false;
    h = (h + 1) & mask;
  }
  store<u32>(seen + (<usize>h << 2), f + 1);
  return true;
}

/**
 * Builds each flow's first 64 bytes (headers with checksums valid for a zero payload) into self.templates; a flow
 * drawn with an earlier one's 5-tuple is drawn again (on small nets they met: 2000 flows between two hosts made
 * 1997), with `seen` as scratch (mask + 1 entries, at least twice the flows).
 */
export function buildTemplates(self: GeneratorState, scratch: usize, seen: usize, mask: u32): void {
  self.rng = splitmix64(self.seed);
  const size = self.frame_size;
  for (let f: u32 = 0; f < self.flows; f++) {
    let r: u64, r2: u64, tcp: bool, src: u32, dst: u32, ports: u32;
    do {
      r = next(self);
      tcp = self.protocol == 1 || (self.protocol == 0 && (r & 1) == 0);
      src = self.src_net_address | (<u32>(r >> 8) & ~self.src_net_mask);
      dst = self.dst_net_address | (<u32>(r >> 40) & ~self.dst_net_mask);
      r2 = next(self);
      ports = (1024 + <u32>(r2 % 64512)) << 16 | <u32>unchecked(SERVICES[<i32>((r2 >> 32) % 10)]);
    } while (!claim(self, seen, mask, f, tcp ? IPPROTO_TCP : IPPROTO_UDP, src, dst, ports));
    memory.fill(scratch, 0, size);
    Ethernet.setAddress(scratch, 0x020000000002); // 02:00:00:00:00:02
    Ethernet.setAddress(scratch + 6, 0x010000000002); // 02:00:00:00:00:01
    Wire.set16(scratch + 12, 0x0800);
    const ip = scratch + 14;
    store<u8>(ip, 0x45);
    Wire.set16(ip + 2, <u16>(size - 14));
    Wire.set16(ip + 4, <u16>f);
    Wire.set16(ip + 6, 0x4000);
    store<u8>(ip + 8, 64);
    store<u8>(ip + 9, tcp ? IPPROTO_TCP : IPPROTO_UDP);
    Wire.set32(ip + 12, src);
    Wire.set32(ip + 16, dst);
    IPv4.setHeaderChecksum(ip);
    const l4 = ip + 20;
    Wire.set32(l4, ports);
    if (tcp) {
      Wire.set32(l4 + 4, <u32>(r2 >> 16));
      store<u8>(l4 + 12, 0x50);
      store<u8>(l4 + 13, 0x18);
      Wire.set16(l4 + 14, 65535);
    } else {
      Wire.set16(l4 + 4, <u16>(size - 34));
    }
    Transport.setChecksum(ip, l4);
    memory.copy(<usize>self.templates + <usize>f * TEMPLATE, scratch, size < TEMPLATE ? size : TEMPLATE);
  }
}

/**
 * Packet number n's time after the first: n/rate seconds in ns, rounded down. (A whole interval of 1e9/rate ns
 * rounded once made a rate of 300,000,000 send 333,333,333 packets a second.) Split so that n * 1e9 cannot overflow.
 */
function offsetNs(n: u64, rate: u64): u64 {
  return n / rate * 1_000_000_000 + n % rate * 1_000_000_000 / rate;
}

/** Sends up to `budget` packets; returns how many. Stops at count, at the pacing limit, or when no slot is free. */
export function generate(self: GeneratorState, budget: u32, port: u16): u32 {
  const size = self.frame_size;
  const head = size < TEMPLATE ? size : TEMPLATE;
  let sent: u32 = 0;
  // The next packet's time, then each one's from the last: whole ns and a remainder of ns * rate, no division a packet.
  const rate = self.rate;
  const step = <u64>1_000_000_000 / rate, stepRest = <u64>1_000_000_000 % rate;
  let ts = self.start_ns + offsetNs(self.sent, rate);
  let rest = self.sent % rate * 1_000_000_000 % rate;
  while (sent < budget) {
    if (self.count != 0 && self.sent >= <u64>self.count) break;
    if (self.until_ns != 0 && ts > self.until_ns) break;
    const p = ioAllocate();
    if (!p) break;
    const flow = <u32>(next(self) >> 33) % self.flows;
    copyBytes(p.data, <usize>self.templates + <usize>flow * TEMPLATE, head);
    if (size > TEMPLATE) zeroBytes(p.data + TEMPLATE, size - TEMPLATE);
    p.length = size;
    p.wireLength = size;
    p.timestamp = ts;
    ioSubmit(p, port);
    self.sent++;
    self.packets++;
    self.bytes += size;
    sent++;
    ts += step;
    rest += stepRest;
    if (rest >= rate) { rest -= rate; ts++; }
  }
  return sent;
}
