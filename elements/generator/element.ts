import { defineElement, param, state, type IoContext, type SourceDriver } from '../../engine/api.ts';

/** Where generated time starts: 2026-01-01T00:00:00Z, so that captures of it read naturally. */
const EPOCH_NS = 1_767_225_600n * 1_000_000_000n;
const TEMPLATE_BYTES = 64;

export default defineElement({
  type: 'Generator',
  summary: 'generates synthetic IPv4 TCP and UDP traffic',
  description: 'Makes `flows` distinct 5-tuples (clients in src_net, servers in dst_net, client ports 1024-65535, '
    + 'server ports from 53, 80, 123, 443, 853, 1194, 3478, 5060, 8080, 8443) and sends `count` packets, each from a flow '
    + 'drawn at random, with valid IP and TCP/UDP checksums. Everything follows from seed: the same parameters give the '
    + 'same packets. Timestamps start at 2026-01-01 and advance by 1/rate seconds per packet; with timing: original '
    + 'packets leave at that rate in real time, with fast as fast as the shards take them.',
  inputs: 0,
  outputs: [{ name: 'out', doc: 'the generated packets' }],
  params: {
    count: param.int('packets to send (0: until stopped)', 0, Number.MAX_SAFE_INTEGER, { default: 1000 }),
    flows: param.int('distinct 5-tuples', 1, 16_000_000, { default: 1, fixed: true }),
    frame_size: param.size('bytes per Ethernet frame, without FCS', { min: 60, max: 9216, default: 64, fixed: true }),
    protocol: param.enum('transport protocol of the flows', ['mixed', 'tcp', 'udp'], { default: 'mixed', fixed: true }),
    seed: param.int('seed of the random choices', 0, 0xffffffff, { default: 1, fixed: true }),
    rate: param.int('packets per second of the timestamps', 1, 1_000_000_000, { default: 1_000_000, fixed: true }),
    timing: param.enum('pace of sending', ['fast', 'original'], { default: 'fast', fixed: true }),
    src_net: param.cidr('client addresses', { default: { address: 0x64400000, prefix: 10, mask: 0xffc00000 }, fixed: true }),
    dst_net: param.cidr('server addresses', { default: { address: 0xc6120000, prefix: 15, mask: 0xfffe0000 }, fixed: true }),
  },
  state: {
    packets: state.counter('packets sent'),
    sent: state.internal('packets sent since the start, which pacing and count follow (reset leaves it)'),
    bytes: state.counter('bytes sent'),
    templates: state.address('address of the per-flow header templates'),
    rng: state.internal('random generator state'),
    start_ns: state.internal('timestamp of the first packet'),
    until_ns: state.internal('pacing: send no packet later than this'),
  },
  ioExports: ['buildTemplates', 'generate'],
  source: (ctx) => new GeneratorDriver(ctx),
  invalid: (params: GeneratorParams, { slotSize, slotRoom }) => [
    ...params.frame_size <= slotRoom ? [] : [{
      param: 'frame_size', message: `${params.frame_size} bytes do not fit a packet slot (${slotRoom} bytes after the headroom)`,
      hint: `raise slot_size in the config to ${2 ** Math.ceil(Math.log2(params.frame_size + slotSize - slotRoom))}, or send smaller frames`,
    }],
    ...params.flows <= tuples(params) ? [] : [{
      param: 'flows', message: `${params.flows} distinct 5-tuples do not fit src_net, dst_net and protocol (${tuples(params)} do)`,
      hint: 'widen src_net or dst_net, or make fewer flows',
    }],
  ],
  example: 'gen: { type: Generator, count: 1000000, flows: 1000, frame_size: 64 }',
});

interface GeneratorParams { frame_size: number; flows: number; protocol: string; src_net: { prefix: number }; dst_net: { prefix: number } }

/** How many distinct 5-tuples the flows can have: client and server addresses, client ports, services, protocols. */
const tuples = (p: GeneratorParams) => 2 ** (32 - p.src_net.prefix) * 2 ** (32 - p.dst_net.prefix) * 64512 * 10 * (p.protocol === 'mixed' ? 2 : 1);

class GeneratorDriver implements SourceDriver {
  private paceStart?: bigint;

  constructor(private readonly ctx: IoContext) {
    const { params, arena, exports, self } = ctx;
    const templates = arena.alloc(params.flows * TEMPLATE_BYTES, 64);
    const scratch = arena.alloc(params.frame_size, 64);
    // The 5-tuples drawn so far, to draw again one that an earlier flow has: at least twice the flows' entries.
    const seen = 2 ** Math.ceil(Math.log2(2 * params.flows));
    this.set('templates', BigInt(templates));
    this.set('start_ns', EPOCH_NS);
    exports.Generator__buildTemplates(self, scratch, arena.alloc(4 * seen, 64), seen - 1);
  }

  private set(field: string, value: bigint): void {
    this.ctx.arena.view.setBigUint64(this.ctx.self + this.ctx.fieldOffset(field), value, true);
  }

  private sent(): number {
    return Number(this.ctx.arena.view.getBigUint64(this.ctx.self + this.ctx.fieldOffset('sent'), true));
  }

  get done(): boolean {
    return this.ctx.params.count !== 0 && this.sent() >= this.ctx.params.count;
  }

  pump(budget: number): number {
    const { exports, self, port, params } = this.ctx;
    budget = Math.min(budget, exports.ioSpace());
    if (params.timing === 'original') {
      const now = process.hrtime.bigint();
      this.paceStart ??= now;
      this.set('until_ns', EPOCH_NS + (now - this.paceStart) + 1n);
    }
    return exports.Generator__generate(self, budget, port);
  }

  waitNs(): number {
    if (this.ctx.params.timing !== 'original' || this.paceStart === undefined) return 0;
    const due = BigInt(this.sent()) * 1_000_000_000n / BigInt(this.ctx.params.rate);
    const elapsed = process.hrtime.bigint() - this.paceStart;
    return due > elapsed ? Number(due - elapsed) : 0;
  }

  progress(): number | undefined {
    return this.ctx.params.count ? this.sent() / this.ctx.params.count : undefined;
  }

  close(): void {}
}
