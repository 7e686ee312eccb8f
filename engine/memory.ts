// The one shared WebAssembly.Memory of a pipeline, and a bump allocator over it. Everything the
// fast path touches (slots, rings, batches, element state, flow tables, I/O buffers) is laid out
// here by the engine before the shards start; nothing is allocated per packet.

import { ConfigError, ConfigErrors } from './errors.ts';
import { adviseHugePages } from '../native/huge-pages.ts';

/** A WebAssembly memory page, in bytes. */
export const PAGE = 65536;
/** The operating system's page: the unit the kernel maps memory in on first touch. */
const OS_PAGE = 4096;
/** Kept free at the bottom: the module's own static data, if any, lives there. */
const RESERVED = 1 << 20;
/** The modules are compiled with this maximum (engine/compile.ts); a memory may not exceed it. */
export const MAX_PAGES = 65536;

export class MemoryArena {
  readonly memory: WebAssembly.Memory;
  /**
   * Whether alloc makes the pages it grows the memory by resident at once (prefault): while no packet flows on this
   * thread. Later (a scale event's new shard, a pipeline built for a reload beside the running one) the touch would
   * hold the I/O thread for its length, so those pages come one by one at their first use.
   */
  prefaulting = true;
  private top = RESERVED;
  private u8View: Uint8Array;
  private dataView: DataView;

  constructor(memory?: WebAssembly.Memory) {
    this.memory = memory ?? new WebAssembly.Memory({ initial: RESERVED / PAGE, maximum: MAX_PAGES, shared: true });
    this.u8View = new Uint8Array(this.memory.buffer);
    this.dataView = new DataView(this.memory.buffer);
  }

  /** Allocates `bytes` zeroed bytes aligned to `align`, growing the memory when needed. */
  alloc(bytes: number, align = 64): number {
    const start = Math.ceil(this.top / align) * align;
    const end = start + bytes;
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      const pages = Math.ceil((end - have) / PAGE);
      if (have / PAGE + pages > MAX_PAGES) {
        throw new ConfigErrors([new ConfigError(`the pipeline needs more than the 4 GiB of memory WebAssembly allows (${(end / 2 ** 30).toFixed(1)} GiB so far)`, undefined,
          'give its tables less capacity, or the config fewer pool_slots or a smaller slot_size')]);
      }
      this.memory.grow(pages);
      if (this.prefaulting) {
        // Faulted in 2 MiB at a time where the kernel can: a table of a million sessions then misses the TLB far less
        // (measured: NAT at 1M sessions 4.86 -> 5.37 Mpps; the same at 1k and 100k). Not for pages that come one by
        // one at first use on the fast path: each fault would zero 2 MiB there.
        adviseHugePages(this.memory, have, this.memory.buffer.byteLength);
        this.prefault(have, this.memory.buffer.byteLength);
      }
    }
    this.top = end;
    return start;
  }

  /**
   * Writes one byte of each 4 KiB page of a grown range, so that the kernel maps all of it now: a page's first
   * touch costs 2-4 µs here (a fault, and the page zeroed), which a table filling up under traffic would pay
   * per page on the fast path (measured: NAT at 100k sessions 7.2 -> 7.7 Mpps). The memory is resident from the start.
   */
  private prefault(from: number, to: number): void {
    const u8 = new Uint8Array(this.memory.buffer);
    for (let at = from; at < to; at += OS_PAGE) u8[at] = 0;
  }

  get used(): number {
    return this.top;
  }

  get u8(): Uint8Array {
    if (this.u8View.byteLength !== this.memory.buffer.byteLength) this.refresh();
    return this.u8View;
  }

  get view(): DataView {
    if (this.dataView.byteLength !== this.memory.buffer.byteLength) this.refresh();
    return this.dataView;
  }

  get i32(): Int32Array {
    return new Int32Array(this.memory.buffer);
  }

  private refresh(): void {
    this.u8View = new Uint8Array(this.memory.buffer);
    this.dataView = new DataView(this.memory.buffer);
  }
}
