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
    // Gauges, so that reset zeroes them with the counts (a shard with no packets since holds 0, which takes no part).
    first_ns: state.gauge('timestamp of the earliest packet, in ns', 'min'),
    last_ns: state.gauge('timestamp of the latest packet, in ns', 'max'),
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
    // Times in ns are no counters for the table: read on demand.
    first_ns: { doc: 'timestamp of the earliest packet since the start or a reset, in ns', read: (v) => v.read('first_ns'), counter: false },
    last_ns: { doc: 'timestamp of the latest packet, in ns', read: (v) => v.read('last_ns'), counter: false },
  },
  example: 'count: { type: Counter }',
});

function rate(amount: bigint, first: bigint, last: bigint): number {
  const seconds = Number(last - first) / 1e9;
  return seconds > 0 ? Math.round(Number(amount) / seconds) : 0;
}
