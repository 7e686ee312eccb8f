import { defineElement, state } from '../../engine/api.ts';

export default defineElement({
  type: 'Counter',
  summary: 'counts packets and bytes and measures their rate',
  description: 'Passes packets unchanged from its input to its output, counting them and their bytes (as on the wire). '
    + 'Rates are measured on the packets\' timestamps, from the first to the last (as capinfos measures a capture): the capture\'s '
    + 'from a file, the kernel\'s arrival time on a device, the Generator\'s own.',
  inputs: 1,
  outputs: [{ name: 'out', doc: 'every packet received' }],
  params: {},
  state: {
    packets: state.counter('packets received'),
    bytes: state.counter('bytes received, as on the wire'),
    first_ns: state.internal('timestamp of the earliest packet, in ns', 'min'),
    last_ns: state.internal('timestamp of the latest packet, in ns'),
  },
  handlers: {
    rate: {
      doc: 'average packets per second from the earliest packet\'s timestamp to the latest\'s',
      read: (v) => rate(v.read('packets'), v.read('first_ns'), v.read('last_ns')),
    },
    bit_rate: {
      doc: 'average bits per second from the earliest packet\'s timestamp to the latest\'s',
      read: (v) => rate(v.read('bytes') * 8n, v.read('first_ns'), v.read('last_ns')),
    },
  },
  example: 'count: { type: Counter }',
});

function rate(amount: bigint, first: bigint, last: bigint): number {
  const seconds = Number(last - first) / 1e9;
  return seconds > 0 ? Math.round(Number(amount) / seconds) : 0;
}
