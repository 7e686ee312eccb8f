import { FlowTable, FlowKey, ENTRY_LIVE, ENTRY_TOMBSTONE, ENTRY_STEERING, STEERED, ENTRY_KEY, ENTRY_EXPIRES, ENTRY_VALUE, KEY_SIZE } from "./flowtable";
import { symmetricHashOf, addressHash } from "./io";
import { copyBytes } from "./bytes";

// Moving per-flow state between shards: a shard exports the live entries of the buckets that move
// (removing them) into a transfer buffer; the new owner imports them. Records in the buffer are
// [key 16 B][expires u64][steering u32][0 u32][value]: the entry minus its bookkeeping (steering: the entry's
// half-word, flowtable.ts). Runs on the owning shard's thread only: a shard never writes another shard's table.

/** Bytes of a transfer record ahead of its value (engine/pipeline.ts TRANSFER_KEY). */
const RECORD_HEAD: u32 = KEY_SIZE + 16;
const RECORD_STEERING: u32 = KEY_SIZE + 8;

/** Keys of tables owned by flows (a 5-tuple) or by hosts (an address in the key's first word). */
export const OWNER_FLOW: u32 = 0;
export const OWNER_ADDRESS: u32 = 1;

/**
 * Bucket of an entry (or a record) whose key is at `key` and steering half-word is `steering`: of the address in
 * its key for a table owned by addresses; else the bucket of the packet that made it, when that was recorded (the
 * mask, at most 1023, keeps within the 15 bits recorded); else as the dispatcher computes it for its key.
 */
@inline function bucketOf(key: usize, steering: u16, owner: u32, mask: u32): u32 {
  if (owner == OWNER_ADDRESS) return addressHash(load<u32>(key)) & mask;
  if (steering & STEERED) return <u32>steering & mask;
  const ports = load<u32>(key, 8);
  return symmetricHashOf(load<u32>(key), load<u32>(key, 4), (ports >>> 16) ^ (ports & 0xffff), <u8>load<u32>(key, 12)) & mask;
}

let exportCursor: u32 = 0;

/**
 * Moves the live entries of `table` whose bucket (by `owner`: OWNER_FLOW or OWNER_ADDRESS) is marked in
 * `buckets` (one byte per bucket, non-zero = moving; `buckets` 0 means every entry, for snapshots,
 * which keep the entries) into `out`. Resumes
 * where the last call stopped when `resume` is true. Returns the records written; `exportDone()` says
 * whether the whole table was walked.
 */
export function tableExport(table: FlowTable, buckets: usize, mask: u32, out: usize, capacity: u32, now: u64, resume: bool, owner: u32): u32 {
  if (!resume) exportCursor = 0;
  const record = RECORD_HEAD + table.entrySize - ENTRY_VALUE;
  let written: u32 = 0;
  while (exportCursor < table.slots) {
    const e = table.entry(exportCursor);
    const steering = load<u16>(e, ENTRY_STEERING);
    if (load<u16>(e) == ENTRY_LIVE && load<u64>(e, ENTRY_EXPIRES) > now
        && (!buckets || load<u8>(buckets + bucketOf(e + ENTRY_KEY, steering, owner, mask)))) {
      if ((written + 1) * record > capacity) return written;
      const r = out + <usize>(written * record);
      copyBytes(r, e + ENTRY_KEY, KEY_SIZE + 8);
      store<u64>(r + RECORD_STEERING, <u64>steering);
      copyBytes(r + RECORD_HEAD, e + ENTRY_VALUE, table.entrySize - ENTRY_VALUE);
      if (buckets) {
        store<u32>(e, ENTRY_TOMBSTONE);
        table.live--;
      }
      written++;
    }
    exportCursor++;
  }
  return written;
}

export function exportDone(table: FlowTable): bool {
  return exportCursor >= table.slots;
}

/** Records imported per round: their slots are touched together first, so that the cache misses overlap. */
const IMPORT_ROUND: u32 = 64;

/**
 * Inserts `count` records into `table`, each replacing an entry of its key. Returns the records that did
 * not fit (the table was full).
 */
export function tableImport(table: FlowTable, input: usize, count: u32, now: u64): u32 {
  const record = RECORD_HEAD + table.entrySize - ENTRY_VALUE;
  const valueSize = table.entrySize - ENTRY_VALUE;
  let failed: u32 = 0;
  for (let first: u32 = 0; first < count; first += IMPORT_ROUND) {
    const n = min(IMPORT_ROUND, count - first);
    // Hashed twice rather than kept: this runs on the I/O side too (snapshot restore), which has no scratch.
    for (let i: u32 = 0; i < n; i++) touched += table.touchSlot(FlowKey.hash(input + <usize>((first + i) * record)));
    for (let i: u32 = 0; i < n; i++) {
      const r = input + <usize>((first + i) * record);
      const expires = load<u64>(r, KEY_SIZE);
      if (expires <= now) continue;
      // A replaced entry or a new one: either way it takes the record's value and deadline.
      const value = table.lookupOrInsert(r, FlowKey.hash(r), now);
      if (!value) { failed++; continue; }
      copyBytes(value, r + RECORD_HEAD, valueSize);
      store<u16>(value - ENTRY_VALUE, <u16>load<u32>(r, RECORD_STEERING), ENTRY_STEERING);
      FlowTable.refresh(value, 0, expires);
    }
  }
  return failed;
}

/** What the touches read, kept so that their loads stay. */
let touched: u32 = 0;
