// When a shard that takes no packets ticks (element.ts `tick`), and at what time on its clock: shared by the worker
// thread (shard-worker.js, plain JavaScript) and the shard run inline (shard.ts).

/** A shard on real time without packets for this long ticks (and the generated code ticks an element this long idle). */
export const TICK_NS = 100_000_000n;

export class IdleTicks {
  /**
   * @param {'trace' | 'wall'} clock the elements' clock: real time, or trace time fed only by devices
   * @param {bigint} wallOffset engine/shard.ts wallNanos: the epoch in the monotonic clock's terms
   */
  constructor(clock, wallOffset) {
    this.clock = clock;
    this.wallOffset = wallOffset;
    this.busy = true;
    this.idleSince = 0n;
    this.anchorClock = 0n;
    this.anchorAt = 0n;
  }

  /**
   * After each step of the shard (`taken`: entries it took; `shardNow` reads its clock): the time to tick at, or 0n.
   * A busy step reads no clock.
   */
  after(taken, shardNow) {
    if (taken) { this.busy = true; return 0n; }
    const now = process.hrtime.bigint();
    if (this.busy) {
      this.busy = false;
      this.idleSince = now;
      this.anchorClock = shardNow();
      this.anchorAt = now;
    }
    if (now - this.idleSince < TICK_NS) return 0n;
    this.idleSince = now;
    if (this.clock === 'wall') return this.wallOffset + now;
    // Trace time fed by devices: the kernel's stamps, which follow the system's real-time clock, set or not; so the
    // last packets' time moved on by the monotonic time since (nothing to tick for before the first packet).
    return this.anchorClock ? this.anchorClock + (now - this.anchorAt) : 0n;
  }
}
