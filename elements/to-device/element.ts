import { defineElement, param, state, type IoContext, type SinkDriver } from '../../engine/api.ts';
import { afpacket, checkDevice, deviceError, disableOffloads, releaseOffloads, type AfPacket } from '../../native/afpacket.ts';

export default defineElement({
  type: 'ToDevice',
  summary: 'sends packets out of a network interface (AF_PACKET)',
  description: 'Sends every packet it receives, as a whole Ethernet frame, out of a Linux interface through an AF_PACKET '
    + 'socket: the native addon (native/) passes bursts of frames to sendmmsg straight from the shared memory, without '
    + 'copying them in JavaScript. Frames the kernel refuses (its queue full, a frame longer than the MTU) are counted in '
    + 'errors, not retried, and each cause is logged once. With offloads: disable (the default) it turns off GRO, GSO, TSO and checksum offloads on the '
    + 'interface and logs it (see FromDevice). Needs root or CAP_NET_RAW.',
  inputs: 1,
  outputs: [],
  params: {
    device: param.string('the interface to send on', { required: true }),
    burst: param.int('most frames per sendmmsg call', 1, 1024, { default: 256, fixed: true }),
    offloads: param.enum('turn off the interface\'s GRO/GSO/TSO/checksum offloads, or keep them', ['disable', 'keep'], { default: 'disable', fixed: true }),
  },
  state: {
    packets: state.counter('frames sent'),
    bytes: state.counter('bytes of the frames sent'),
    errors: state.counter('frames the kernel refused'),
  },
  ioExports: ['frames', 'sent'],
  sink: (ctx) => new DeviceWriter(ctx),
  check: ({ name, params, slotRoom }) => checkDevice(name, params.device, slotRoom),
  example: 'out: { type: ToDevice, device: eth1 }',
});

class DeviceWriter implements SinkDriver {
  private readonly addon: AfPacket;
  private readonly socket: number;
  /** (frame address, length) pairs for sendmmsg. */
  private readonly descs: number;
  /** Causes of refused frames logged so far. */
  private readonly causes = new Set<string>();

  constructor(private readonly ctx: IoContext) {
    const { name, params } = ctx;
    this.addon = afpacket(name);
    if (params.offloads === 'disable') disableOffloads(name, this.addon, params.device, ctx.log);
    try {
      this.socket = this.addon.openTx(params.device, ctx.slotRoom);
    } catch (e) {
      throw deviceError(name, e);
    }
    this.descs = ctx.arena.alloc(8 * params.burst, 8);
  }

  write(batch: number): void {
    const { exports, self, arena, params } = this.ctx;
    const count = arena.view.getUint32(batch, true);
    for (let start = 0; start < count; start += params.burst) {
      const n = exports.ToDevice__frames(self, batch, start, params.burst, this.descs);
      const sent = this.addon.send(this.socket, arena.u8, this.descs, n);
      exports.ToDevice__sent(self, batch, start, n, sent, this.descs);
      if (sent < n) this.sayWhyRefused();
    }
    arena.view.setUint32(batch, 0, true);
  }

  /** Logs each cause of refused frames once (an MTU smaller than the frames, a full queue): errors counts them all. */
  private sayWhyRefused(): void {
    const why = this.addon.sendError(this.socket);
    if (!why || this.causes.has(why)) return;
    this.causes.add(why);
    this.ctx.log(`${this.ctx.params.device}: the kernel refused frames: ${why}; they are counted in errors (logged once)`);
  }

  close(): void {
    this.addon.close(this.socket);
    if (this.ctx.params.offloads === 'disable') releaseOffloads(this.addon, this.ctx.params.device, this.ctx.log);
  }
}
