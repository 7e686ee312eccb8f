// Byte copies for packet-sized data. V8 implements memory.copy and memory.fill on a shared memory
// as a call out of the generated code, which costs more than moving a 64-byte frame; inline 16-byte
// SIMD moves are several times faster for what packets are (measured: engine spike §2, bench/pipeline).

const CALL_OUT_ABOVE: usize = 512;

@inline export function copyBytes(dst: usize, src: usize, len: usize): void {
  if (len > CALL_OUT_ABOVE) { memory.copy(dst, src, len); return; }
  let i: usize = 0;
  // 64 bytes per round: V8 puts an interrupt check on every loop back edge.
  for (; i + 64 <= len; i += 64) {
    v128.store(dst + i, v128.load(src + i));
    v128.store(dst + i, v128.load(src + i, 16), 16);
    v128.store(dst + i, v128.load(src + i, 32), 32);
    v128.store(dst + i, v128.load(src + i, 48), 48);
  }
  for (; i + 16 <= len; i += 16) v128.store(dst + i, v128.load(src + i));
  if (i + 8 <= len) { store<u64>(dst + i, load<u64>(src + i)); i += 8; }
  if (i + 4 <= len) { store<u32>(dst + i, load<u32>(src + i)); i += 4; }
  if (i + 2 <= len) { store<u16>(dst + i, load<u16>(src + i)); i += 2; }
  if (i < len) store<u8>(dst + i, load<u8>(src + i));
}

/**
 * Copies `len` bytes in whole rounds of 64: up to 63 bytes past `len` are read from `src` and written
 * to `dst`, so the caller must own both. A packet-sized copy then takes no branch on its length.
 */
@inline export function copyRounds(dst: usize, src: usize, len: usize): void {
  for (let i: usize = 0; i < len; i += 64) {
    v128.store(dst + i, v128.load(src + i));
    v128.store(dst + i, v128.load(src + i, 16), 16);
    v128.store(dst + i, v128.load(src + i, 32), 32);
    v128.store(dst + i, v128.load(src + i, 48), 48);
  }
}

@inline export function zeroBytes(dst: usize, len: usize): void {
  if (len > CALL_OUT_ABOVE) { memory.fill(dst, 0, len); return; }
  const zero = i64x2.splat(0);
  let i: usize = 0;
  for (; i + 16 <= len; i += 16) v128.store(dst + i, zero);
  if (i + 8 <= len) { store<u64>(dst + i, 0); i += 8; }
  if (i + 4 <= len) { store<u32>(dst + i, 0); i += 4; }
  if (i + 2 <= len) { store<u16>(dst + i, 0); i += 2; }
  if (i < len) store<u8>(dst + i, 0);
}
