import { Packet } from "./packet";
import { dropFull, misrouted } from "./shard";
import { copyBytes } from "./bytes";

// A batch is a vector of packet addresses: [count u32][capacity u32][addresses u32...].
// Elements receive one batch per call and push packets to output batches (VPP's vectors).

export const BATCH_HEADER: u32 = 8;

@unmanaged
export class Batch {
  count: u32;
  capacity: u32;

  @inline packet(i: u32): Packet {
    return changetype<Packet>(load<u32>(changetype<usize>(this) + BATCH_HEADER + (<usize>i << 2)));
  }

  /** Puts `p` at position `i` (below count): for elements that keep their batch and pass it on whole. */
  @inline set(i: u32, p: Packet): void {
    store<u32>(changetype<usize>(this) + BATCH_HEADER + (<usize>i << 2), changetype<u32>(p));
  }

  @inline push(p: Packet): void {
    const n = this.count;
    if (n < this.capacity) {
      store<u32>(changetype<usize>(this) + BATCH_HEADER + (<usize>n << 2), changetype<u32>(p));
      this.count = n + 1;
    } else {
      dropFull(this, p); // an element that sends more packets than it receives without declaring `expands`
    }
  }

  /** Appends every packet of `batch`. */
  @inline append(batch: Batch): void {
    const count = batch.count;
    const have = this.count;
    if (have + count <= this.capacity) {
      const base = changetype<usize>(this) + BATCH_HEADER;
      copyBytes(base + (<usize>have << 2), changetype<usize>(batch) + BATCH_HEADER, <usize>count << 2);
      this.count = have + count;
    } else {
      for (let i: u32 = 0; i < count; i++) this.push(batch.packet(i));
    }
  }
}

/**
 * An element's output ports: an array of batch addresses, one per port, after the number of ports. A port
 * the element does not have takes the packet nowhere: the runtime drops and counts it (misrouted), rather
 * than write into whatever lies after the array.
 */
@unmanaged
export class Outputs {
  @inline port(n: i32): Batch {
    const at = changetype<usize>(this);
    if (<u32>n >= load<u32>(at - 4)) return misrouted();
    return changetype<Batch>(load<u32>(at + (<usize>n << 2)));
  }

  /** Sends one packet out of output port `n`. */
  @inline push(n: i32, p: Packet): void {
    this.port(n).push(p);
  }

  /** Sends a whole batch out of output port `n`. */
  @inline pushAll(n: i32, batch: Batch): void {
    this.port(n).append(batch);
  }
}
