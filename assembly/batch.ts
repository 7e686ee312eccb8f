import { Packet } from "./packet";
import { dropOverrun } from "./shard";
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
      dropOverrun(p); // an element that sends more packets than it receives without declaring `expands`
    }
  }
}

/** An element's output ports: an array of batch addresses, one per port. */
@unmanaged
export class Outputs {
  @inline port(n: i32): Batch {
    return changetype<Batch>(load<u32>(changetype<usize>(this) + (<usize>n << 2)));
  }

  /** Sends one packet out of output port `n`. */
  @inline push(n: i32, p: Packet): void {
    this.port(n).push(p);
  }

  /** Sends a whole batch out of output port `n`. */
  @inline pushAll(n: i32, batch: Batch): void {
    const out = this.port(n);
    const count = batch.count;
    const have = out.count;
    if (have + count <= out.capacity) {
      const base = changetype<usize>(out) + BATCH_HEADER;
      copyBytes(base + (<usize>have << 2), changetype<usize>(batch) + BATCH_HEADER, <usize>count << 2);
      out.count = have + count;
    } else {
      for (let i: u32 = 0; i < count; i++) out.push(batch.packet(i));
    }
  }
}
