import { defineElement, param, state } from '../../engine/api.ts';

export default defineElement({
  type: 'BeamerBackend',
  summary: "a backend's half of the Beamer load balancer: decapsulates, and daisy-chains packets of connections it does not know",
  description: 'Runs in front of a backend server. Takes IP-in-IP packets addressed to `address` (from a '
    + 'LoadBalancer, or daisy-chained by another BeamerBackend), removes the outer header and delivers the inner '
    + 'packet on output 0, toward the local server (the Ethernet header is kept: rewrite it for the server\'s '
    + 'link). It learns the connections it delivers: a TCP SYN creates an entry in its per-flow table (keyed by '
    + 'the inner 5-tuple), later packets of the connection refresh it, and a FIN or RST shortens it to '
    + 'fin_timeout; after a FIN or RST only packets within 64 KiB before the end of its sequence space belong to '
    + 'it (a client reusing the 5-tuple for a new connection starts elsewhere in sequence space, and is not taken '
    + 'for the old one; a segment sent again from further back is taken for an unknown connection, as below). A connection '
    + 'whose SYN found the table full (table_full) is delivered untracked, and its later packets are unknown too: while a '
    + 'bucket change is recent they are daisy-chained away from this server, so give capacity room for every connection a '
    + 'backend serves. A TCP packet that is not a SYN and whose connection is unknown started on another '
    + 'backend before its bucket moved: when the LoadBalancer option names a previous backend (a host\'s address: '
    + '0.0.0.0, multicast, reserved and broadcast addresses name none) and says the bucket changed less than '
    + 'daisy_window ago, the packet is re-encapsulated to that backend (outer destination rewritten, the option '
    + 'marked as forwarded) and leaves on output 1. A forwarded packet is never forwarded again: the previous '
    + 'backend delivers it whatever it knows, so there are no loops. An ICMP error quoting a TCP packet of the server (a '
    + 'router\'s "fragmentation needed", say) is about that connection: it is steered with the connection\'s packets, and '
    + 'forwarded as they are when the connection is unknown here. Everything else is delivered: UDP (daisy '
    + 'chaining is for TCP), packets without the option (plain IP-in-IP), changes older than the window (then the '
    + 'server answers an unknown connection with a RST, as it would anyway). With daisy_chain: false nothing is '
    + 'forwarded (to measure what daisy chaining saves). Packets that are not IP-in-IP to `address`, and frames a '
    + 'capture cut short, leave on output 2, or are dropped if it is not connected; an IP-in-IP packet to `address` that is a fragment (there '
    + 'is no reassembly), whose outer header is bad (its lengths do not fit the frame) or whose inner packet is '
    + 'cut short is counted in malformed and dropped. Its table is per-flow state keyed by the inner flow: with '
    + 'shards, give its sources steer: NAME (this element), which steers an IP-in-IP packet by its inner '
    + 'connection, so every packet finds its entry and entries move with their connections when the pipeline '
    + 'scales (check --shards N and run refuse sources that steer otherwise: packets of a connection from two '
    + 'muxes, or daisy-chained, carry other outer headers).',
  inputs: 1,
  outputs: [
    { name: 'local', doc: 'decapsulated packets, for the local server' },
    { name: 'forwarded', doc: 're-encapsulated to the previous backend (daisy chaining)', optional: true },
    { name: 'other', doc: 'packets that are not IP-in-IP to this backend, unchanged', optional: true },
  ],
  params: {
    address: param.ipv4('the backend address: outer destination of the packets it takes', { required: true }),
    daisy_chain: param.bool('forward mid-connection packets of unknown connections to the previous backend', { default: true }),
    daisy_window: param.duration('how long after a bucket changed its packets may be forwarded to the previous backend', { default: 600e9 }),
    capacity: param.int('most connections tracked at once by each shard', 1, 1 << 24, { default: 65536 }),
    timeout: param.duration('idle timeout of a connection', { default: 600e9 }),
    fin_timeout: param.duration('timeout of a connection after a FIN or RST', { default: 30e9 }),
  },
  state: {
    connections: state.flowTable({
      doc: 'connections delivered to the local server (TCP; inner 5-tuple)',
      // Keyed by the inner connection: packets of one reach the backend with other outer headers (from other muxes, daisy-chained).
      keyedBySteer: true,
      value: { closing: 'u8', end_seq: 'u32' },
      capacity: (p) => p.capacity,
      timeout: (p) => p.timeout,
    }),
    delivered: state.counter('inner packets delivered to the local server'),
    learned: state.counter('connections learned from a SYN'),
    forwarded: state.counter('packets daisy-chained to the previous backend'),
    unknown: state.counter('mid-connection packets (and ICMP errors) of unknown connections delivered anyway (no recent previous backend, already forwarded, or daisy chaining off)'),
    table_full: state.counter('SYNs whose connection the full table could not take (delivered untracked)'),
    other: state.counter('packets that are not IP-in-IP to this backend (output 2)'),
    malformed: state.counter('IP-in-IP packets to this backend that are fragments, have a bad outer header or whose inner packet is cut short (dropped)'),
  },
  steer: 'IP-in-IP packets by their inner TCP connection (the key of its table), other packets by their own flow',
  example: 'bb: { type: BeamerBackend, address: 198.18.1.11, daisy_window: 10m }\n'
    + '# connections: from_fabric -> bb -> to_server; bb[1] -> to_fabric',
});
