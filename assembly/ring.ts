// Single-producer single-consumer ring of u32 entries in shared memory (../shared/research spike §3).
// HEAD, TAIL and SLEEP each sit on their own cache line; indices run free and wrap through MASK.
// The producer writes entries and publishes HEAD once per batch; the consumer publishes TAIL once.

export const RING_HEAD: u32 = 0;
export const RING_TAIL: u32 = 64;
export const RING_SLEEP: u32 = 128;
export const RING_MASK: u32 = 192;
export const RING_ENTRIES: u32 = 256;
/**
 * An entry is a slot address (slots are aligned to at least 256 bytes); bit 0 set marks a slot that
 * only changes hands to be recycled, so the receiver need not touch the slot itself.
 */
export const ENTRY_RECYCLE: u32 = 1;

@unmanaged
export class Ring {
  @inline get head(): u32 { return atomic.load<u32>(changetype<usize>(this), RING_HEAD); }
  @inline get tail(): u32 { return atomic.load<u32>(changetype<usize>(this), RING_TAIL); }
  @inline get mask(): u32 { return load<u32>(changetype<usize>(this), RING_MASK); }

  @inline entry(index: u32): u32 {
    return load<u32>(changetype<usize>(this) + RING_ENTRIES + (<usize>(index & this.mask) << 2));
  }

  @inline setEntry(index: u32, value: u32): void {
    store<u32>(changetype<usize>(this) + RING_ENTRIES + (<usize>(index & this.mask) << 2), value);
  }

  @inline publishHead(head: u32): void { atomic.store<u32>(changetype<usize>(this), head, RING_HEAD); }
  @inline publishTail(tail: u32): void { atomic.store<u32>(changetype<usize>(this), tail, RING_TAIL); }

  /**
   * The index the producer may write up to (exclusive): the consumer's tail plus the capacity.
   * Producers keep it and reload it only when they reach it, so that they do not read the line
   * the consumer writes for every entry.
   */
  @inline limit(): u32 { return this.tail + this.mask + 1; }
}

/** A stack of u32 values: [count u32][capacity u32][values...]. Used for free slot lists. */
@unmanaged
export class Stack {
  count: u32;
  capacity: u32;

  @inline pop(): u32 {
    const n = this.count;
    if (n == 0) return 0;
    this.count = n - 1;
    return load<u32>(changetype<usize>(this) + 8 + (<usize>(n - 1) << 2));
  }

  @inline push(value: u32): bool {
    const n = this.count;
    if (n >= this.capacity) return false;
    store<u32>(changetype<usize>(this) + 8 + (<usize>n << 2), value);
    this.count = n + 1;
    return true;
  }
}
