// The Internet checksum (RFC 1071) and its incremental update (RFC 1624). Values passed in and
// returned are in host order, as the header accessors give them.

@inline export function fold(sum: u64): u16 {
  sum = (sum & 0xffffffff) + (sum >> 32);
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return <u16>((sum & 0xffff) + (sum >> 16));
}

/** One's-complement sum of `len` bytes at `addr`, in network order words, not yet folded or inverted. */
export function sumBytes(addr: usize, len: u32, initial: u64 = 0): u64 {
  // The one's-complement sum is byte-order independent (RFC 1071 §2(B)): add little-endian words,
  // swap once at the end.
  let sum: u64 = 0;
  let i: u32 = 0;
  for (; i + 4 <= len; i += 4) sum += <u64>load<u32>(addr + i);
  if (i + 2 <= len) { sum += <u64>load<u16>(addr + i); i += 2; }
  if (i < len) sum += <u64>load<u8>(addr + i);
  return initial + <u64>bswap<u16>(fold(sum));
}

/** The checksum field value for `len` bytes at `addr` (with the field itself zeroed or included). */
@inline export function checksum(addr: usize, len: u32, initial: u64 = 0): u16 {
  return ~fold(sumBytes(addr, len, initial));
}

/**
 * Folds a 32-bit sum of 16-bit terms to 16 bits in two rounds: the first leaves at most 0x1fffe, the
 * second at most 0xffff. Incremental updates use it in place of fold's four rounds on 64 bits.
 */
@inline function foldSmall(sum: u32): u32 {
  sum = (sum & 0xffff) + (sum >>> 16);
  return (sum & 0xffff) + (sum >>> 16);
}

// Incremental updates (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')). Byte order does not matter as long as
// every value is in the same one (RFC 1071 §2(B)): callers that hold the wire's bytes pass them as
// loaded, without swapping. Several changes to one checksum add their deltas and apply them once.

/** The change of a 16-bit field from `old` to `updated` (~m + m'), to add up and apply with adjustChecksum. */
@inline export function delta16(old: u16, updated: u16): u32 {
  return (~<u32>old & 0xffff) + <u32>updated;
}

/** The change of a 32-bit field (an IPv4 address): the deltas of its two halves. */
@inline export function delta32(old: u32, updated: u32): u32 {
  return (~old & 0xffff) + (~old >>> 16) + (updated & 0xffff) + (updated >>> 16);
}

/** Stores `value` over the 16-bit field at `at` (both in wire order) and returns the change's delta. */
@inline export function replace16(at: usize, value: u16): u32 {
  const old = load<u16>(at);
  store<u16>(at, value);
  return delta16(old, value);
}

/** Stores `value` over the 32-bit field at `at` (both in wire order) and returns the change's delta. */
@inline export function replace32(at: usize, value: u32): u32 {
  const old = load<u32>(at);
  store<u32>(at, value);
  return delta32(old, value);
}

/** The checksum after changes whose deltas add up to `delta` (fewer than 32768 of them). */
@inline export function adjustChecksum(check: u16, delta: u32): u16 {
  return <u16>~foldSmall((~<u32>check & 0xffff) + delta);
}

/** The new checksum after a 16-bit field changed from `old` to `updated`. */
@inline export function updateChecksum16(check: u16, old: u16, updated: u16): u16 {
  return adjustChecksum(check, delta16(old, updated));
}

/** The new checksum after a 32-bit field (an IPv4 address) changed from `old` to `updated`. */
@inline export function updateChecksum32(check: u16, old: u32, updated: u32): u16 {
  return adjustChecksum(check, delta32(old, updated));
}
