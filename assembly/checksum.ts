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

/** RFC 1624 eqn. 3: the new checksum after a 16-bit field changed from `old` to `updated`. */
@inline export function updateChecksum16(check: u16, old: u16, updated: u16): u16 {
  return ~fold(<u64>(~check & 0xffff) + <u64>(~old & 0xffff) + <u64>updated);
}

/** RFC 1624 eqn. 3 for a 32-bit field (an IPv4 address). */
@inline export function updateChecksum32(check: u16, old: u32, updated: u32): u16 {
  return ~fold(<u64>(~check & 0xffff) + <u64>(~old & 0xffff) + <u64>(~old >>> 16)
    + <u64>(updated & 0xffff) + <u64>(updated >>> 16));
}
