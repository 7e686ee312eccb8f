import { Packet, IPv4, Transport, Wire, zeroBytes, packetRoom } from "wirepath";

// The messages of the Port Control Protocol (RFC 6887) as the NAT's PCP server reads and answers them:
// checks in the order of §8.3, and the answer written over the request, in its own slot. What a MAP does
// to the NAT's tables is in process.ts.

export const PCP_PORT: u16 = 5351;
export const OP_ANNOUNCE: u8 = 0;
export const OP_MAP: u8 = 1;
export const OP_PEER: u8 = 2;
/** Common header of requests and responses (§7.1, §7.2). */
export const HEADER: u32 = 24;
/** MAP's opcode-specific part: nonce (12), protocol, 3 reserved, internal port, external port, external address (16) (§11.1). */
export const MAP_BODY: u32 = 36;
/** PEER's: MAP's, then the remote peer's port, 2 reserved, and its address (16) (§12.1). */
export const PEER_BODY: u32 = 56;

// Result codes (§7.4).
export const SUCCESS: u8 = 0;
export const UNSUPP_VERSION: u8 = 1;
export const NOT_AUTHORIZED: u8 = 2;
export const MALFORMED_REQUEST: u8 = 3;
export const UNSUPP_OPCODE: u8 = 4;
export const UNSUPP_OPTION: u8 = 5;
export const MALFORMED_OPTION: u8 = 6;
export const NO_RESOURCES: u8 = 8;
export const UNSUPP_PROTOCOL: u8 = 9;
export const USER_EX_QUOTA: u8 = 10;
export const CANNOT_PROVIDE_EXTERNAL: u8 = 11;
export const ADDRESS_MISMATCH: u8 = 12;
/** Not a result code: the request is dropped without an answer. */
export const SILENT: i32 = -1;

/** The PREFER_FAILURE option (§13.2): a MAP wants its suggested external port and address, or no mapping. */
const OPTION_PREFER_FAILURE: u8 = 2;

/** The last request checkRequest passed carried PREFER_FAILURE. */
export let preferFailure = false;

const VERSION: u8 = 2;
const MAX_MESSAGE: u32 = 1100;
/** How long a client should take an error to last, in seconds: a long-lifetime error, and a short one (§7.4). */
const LONG_ERROR_S: u32 = 1800;
const SHORT_ERROR_S: u32 = 30;

/**
 * Checks the request of `length` bytes at `msg` from `source` as a server must (§8.3): a result code
 * (SUCCESS when the opcode may go ahead), or SILENT for a message not to answer.
 */
export function checkRequest(msg: usize, length: u32, source: u32): i32 {
  preferFailure = false;
  if (length < 2 || (load<u8>(msg, 1) & 0x80)) return SILENT; // too short to answer, or a response
  if (load<u8>(msg) != VERSION) return UNSUPP_VERSION;
  if (length < HEADER || length > MAX_MESSAGE || (length & 3) != 0) return MALFORMED_REQUEST;
  // The client's address as it sees it, IPv4-mapped (::ffff:a.b.c.d): another means a NAT in between.
  if (load<u64>(msg, 8) != 0 || load<u32>(msg, 16) != 0xffff0000 || Wire.get32(msg + 20) != source) return ADDRESS_MISMATCH;
  const opcode = load<u8>(msg, 1);
  if (opcode != OP_MAP && opcode != OP_PEER && opcode != OP_ANNOUNCE) return UNSUPP_OPCODE;
  const body = opcode == OP_MAP ? MAP_BODY : opcode == OP_PEER ? PEER_BODY : 0;
  if (length < HEADER + body) return MALFORMED_REQUEST;
  // Options: [code][reserved][length u16][data, padded to 4]. This server processes PREFER_FAILURE (a MAP's,
  // empty, at most once); any other in the mandatory range (0-127: THIRD_PARTY, FILTER) is refused and an
  // optional one (128-255) is skipped (§7.3).
  for (let at = HEADER + body; at < length;) {
    if (at + 4 > length) return MALFORMED_OPTION;
    const code = load<u8>(msg + at);
    const data = <u32>Wire.get16(msg + at + 2);
    const size = (data + 3) & ~3;
    if (at + 4 + size > length) return MALFORMED_OPTION;
    if (code == OPTION_PREFER_FAILURE && opcode == OP_MAP) {
      if (data != 0 || preferFailure) return MALFORMED_OPTION;
      preferFailure = true;
    } else if (code < 128) {
      return UNSUPP_OPTION;
    }
    at += 4 + size;
  }
  return SUCCESS;
}

/** An error answer's length: the request copied, padded to whole 32-bit words, at most the 1100 bytes a PCP message may have (§7). */
@inline export function errorAnswerLength(received: u32): u32 {
  return min<u32>((max<u32>(received, HEADER) + 3) & ~3, MAX_MESSAGE);
}

/** The lifetime an error response carries: how long the client should take the error to last. */
@inline export function errorLifetime(result: u8): u32 {
  // The suggested port may be free again soon, as resources and quota may.
  return result == NO_RESOURCES || result == USER_EX_QUOTA || result == CANNOT_PROVIDE_EXTERNAL ? SHORT_ERROR_S : LONG_ERROR_S;
}

/**
 * Readies the slot for an answer of `length` bytes written over the request's `received` (zeros past the
 * request, as a whole PCP header answering a shorter NAT-PMP message); false when the slot has no room.
 */
export function prepareAnswer(p: Packet, udp: usize, received: u32, length: u32): bool {
  const msg = udp + 8;
  if (<u32>(msg - p.data) + length > packetRoom(p)) return false;
  if (received < length) zeroBytes(msg + received, length - received);
  return true;
}

/**
 * The response header over the request's (§7.2): the request's bytes after it stay, so an error answer carries
 * what was asked. `parsed`: the request passed checkRequest (an error, if any, came from the opcode).
 */
export function writeHeader(msg: usize, result: u8, lifetime: u32, epoch: u32, parsed: bool): void {
  const opcode = load<u8>(msg, 1) & 0x7f;
  store<u8>(msg, VERSION);
  store<u8>(msg, 0x80 | opcode, 1);
  store<u8>(msg, 0, 2);
  store<u8>(msg, result, 3);
  Wire.set32(msg + 4, lifetime);
  Wire.set32(msg + 8, epoch);
  // Reserved; the answer to a request that could not be parsed keeps there the last 96 bits of the client's
  // address as the request gave it (§7.2).
  if (parsed) zeroBytes(msg + 12, 12);
}

/**
 * Turns the packet, whose UDP payload is now an answer of `length` bytes, into one back to its sender:
 * Ethernet and IP addresses and UDP ports swapped, lengths and checksums anew.
 */
export function sendBack(p: Packet, ip: usize, udp: usize, length: u32): void {
  const mac = load<u64>(p.data) & 0xffffffffffff;
  store<u32>(p.data, load<u32>(p.data, 6));
  store<u16>(p.data, load<u16>(p.data, 10), 4);
  store<u32>(p.data, <u32>mac, 6);
  store<u16>(p.data, <u16>(mac >> 32), 10);
  const client = load<u32>(ip, 12);
  store<u32>(ip, load<u32>(ip, 16), 12);
  store<u32>(ip, client, 16);
  const hl = IPv4.headerLength(ip);
  Wire.set16(ip + 2, <u16>(hl + 8 + length));
  Wire.set16(ip + 6, 0);
  store<u8>(ip, 64, 8);
  IPv4.setHeaderChecksum(ip);
  const clientPort = load<u16>(udp);
  store<u16>(udp, load<u16>(udp, 2));
  store<u16>(udp, clientPort, 2);
  Wire.set16(udp + 4, <u16>(8 + length));
  Transport.setChecksum(ip, udp);
  p.length = <u32>(udp + 8 - p.data) + length;
  p.wireLength = p.length;
}
