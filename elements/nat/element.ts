import { openSync, writeSync, closeSync, statSync, fstatSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { defineElement, makeFolders, param, state, unwritable, ParamTypeError, type ParamType, type ElementView, type TableEntry } from '../../engine/api.ts';
import { hostPrefix, nonHostKind, parseIPv4, formatIPv4, intType, types, type Cidr } from '../../engine/params.ts';
import { EnvironmentError } from '../../engine/errors.ts';
import { poolLayout, writePool, blocksInUse, heldCounts, drainLog, heldBlockRecords, keptBlocks, undatedBlocks, quarantineBlocks, dateQuarantine, type KeptBlock, recordTime, deterministicRange, deterministicShare, poolAddresses, blockCount, PROTOCOLS, MOST_BLOCKS, DETERMINISTIC_PORTS, type NatParams, type BlockRecord } from './pool.ts';

const MAPPINGS = ['endpoint-independent', 'address-dependent', 'address-and-port-dependent'] as const;
type Behaviour = typeof MAPPINGS[number];

/** A timeout the RFCs give a floor: shorter ones are refused with the RFC's requirement. */
const timeoutOfAtLeast = (least: string, requirement: string, usual: string): ParamType<number> => ({
  ...types.duration,
  parse: (raw) => {
    const ns = types.duration.parse(raw);
    if (ns < types.duration.parse(least)) {
      throw new ParamTypeError(`${types.duration.format(ns)} is shorter than the ${least} ${requirement} requires`, `use at least ${least} (${usual} is the default)`);
    }
    return ns;
  },
});

/** Ports per block: a power of two, so that a port's block is a shift away. */
const blockSizeType: ParamType<number> = {
  ...intType(8, 1024),
  description: 'a power of two from 8 to 1024',
  parse: (raw) => {
    const n = intType(8, 1024).parse(raw);
    if (n & (n - 1)) throw new ParamTypeError(`${n} is not a power of two`, `use ${2 ** Math.floor(Math.log2(n))} or ${2 ** Math.ceil(Math.log2(n))}`);
    return n;
  },
};

/**
 * Log files are opened once per element and pipeline; the final periodic run closes them. `pending`: the blocks held
 * from the start that this log has yet to record as allocated.
 */
const logs = new WeakMap<object, BlockLog & { pending: BlockRecord[] }>();
/** The parameters of NATs that a reload took over before they logged the blocks they started with (no packet came). */
const unlogged = new WeakSet<object>();

export default defineElement({
  type: 'NAT',
  summary: 'carrier-grade NAT44: port-block allocation, RFC 4787/5382/5508/6888/7857 behaviour, state that moves with its subscriber',
  description: 'Translates packets from subscribers (input 0, inside addresses) to the external pool (output 0) and back '
    + '(input 1 to output 1). Each subscriber gets one external address for all its sessions (paired pooling) and blocks of '
    + 'ports_per_block ports on it, per protocol (TCP, UDP, ICMP identifiers), up to blocks_per_subscriber of each; one log '
    + 'record per block allocated or released, none per session. Mappings are endpoint-independent by default (one external '
    + 'port per inside address and port whatever the destination); filtering of inbound packets is endpoint-independent, '
    + 'address-dependent or address-and-port-dependent (by default as strict as the mapping). Packets from inside to addresses no '
    + 'Internet host has (multicast, broadcast, loopback, link-local) are dropped and counted unless their prefix is exempt, and so are packets '
    + 'from outside with such a source. No external port is shared by two mappings; TCP and UDP inside ports below 1024 '
    + 'map below 1024 while the address\'s low blocks have room, else above (not in deterministic mode, whose ranges lie above 1023; ICMP identifiers have no low range); a released block is not given to anyone for quarantine. Outbound packets refresh mappings (a mapping lives its timeout after the last one, and up to an eighth more: '
    + 'it is refreshed in steps, not per packet); TCP '
    + 'sessions follow SYN, established, FIN and RST with their own timeouts (RFC 5382, RFC 7857); an unsolicited inbound SYN is '
    + 'dropped, and with syn_icmp answered with ICMP port unreachable after 6 s unless an outbound SYN of its connection came '
    + '(RFC 5382 REQ-4); ICMP echo identifiers are '
    + 'translated like ports, and ICMP errors about a translated flow are translated with the header they quote (checksums '
    + 'included). Fragments are translated in any order: an inbound later fragment that comes before its datagram\'s first waits (at most 2 s) and follows it. '
    + 'A datagram from inside that may be fragmented leaves with a new IP ID, unique per external address and destination, the same for all its fragments (rewrite_ip_id). '
    + 'With shards, the later fragments of an inbound datagram go to the shard its first fragment went to, when that one came first. '
    + 'Packets from inside to a pool address are hairpinned back inside with the sender\'s external address and port. When '
    + 'no mapping can be made the packet is dropped and counted (and with icmp_errors an ICMP host unreachable goes back); '
    + 'a live mapping is never evicted. sessions_per_subscriber caps the sessions (5-tuples) one subscriber has at once, '
    + 'across its mappings: a session past it is refused like a mapping that cannot be made. With deterministic: true each inside address has a fixed external address and port '
    + 'range (RFC 7422, VPP\'s arithmetic), so no block log is needed. With shards, give the sources steer: NAME (this element\'s '
    + 'name): each subscriber and every mapping of it lives on one shard and moves with it when the pipeline scales; a '
    + 'hairpinned packet for a subscriber on another shard is handed to that shard. With pcp_server, subscribers open '
    + 'their mappings to inbound traffic with PCP MAP requests and make sessions with PEER (RFC 6887; NAT-PMP too), answered by the NAT itself. '
    + 'A reload keeps its subscribers, blocks and mappings unless pool, ports_per_block, inside, exempt, exempt_ports, deterministic, '
    + 'icmp_source, mapping or filtering changes, sessions_per_subscriber is turned on or off, or log is added or removed: its pool data is laid out by them, so it starts afresh, with every mapping '
    + 'gone, and keeps the blocks the one before held or had in quarantine from other subscribers for the quarantine (the reload report '
    + 'lists it as restarted). So does one restored from a snapshot file (run --restore) whose pool data it cannot take; on a trace\'s '
    + 'clock the quarantine of those blocks counts from the first periodic task after the clock moved.',
  inputs: 2,
  // Room in the outputs for the answers to unsolicited SYNs, made besides the packets that come in, and for the
  // fragments of 1500-byte packets when mtu is smaller (larger packets are split while the room lasts).
  expands: (p: { mtu: number }) => (fragmentsOf1500(p.mtu) > 1 ? 2 + fragmentsOf1500(p.mtu) : 2),
  clones: (p: { mtu: number }) => fragmentsOf1500(p.mtu) - 1,
  // An inbound later fragment is placed by the mapping its first fragment found.
  firstFragmentFirst: true,
  outputs: [
    { name: 'outside', doc: 'translated packets going out, and exempt packets untranslated' },
    { name: 'inside', doc: 'translated packets coming in, hairpinned packets, and ICMP errors the NAT sends back' },
  ],
  params: {
    pool: param.strings('external addresses and prefixes (need not be contiguous)', { required: true, item: types.prefix }),
    inside: param.strings('subscriber prefixes: packets from other sources are dropped', { default: ['100.64.0.0/10'], item: types.prefix }),
    ports_per_block: param.custom('ports in each block a subscriber is given', blockSizeType, { default: 512 }),
    blocks_per_subscriber: param.int('most blocks of each protocol one subscriber holds', 1, 4, { default: 4 }),
    mapping: param.enum('mapping behaviour (RFC 4787 §4.1); set when the NAT starts (its mappings are keyed by it)', MAPPINGS, { default: 'endpoint-independent', fixed: true }),
    filtering: param.enum('which inbound packets a mapping accepts (RFC 4787 §5); when not given, as strict as mapping (so endpoint-independent '
      + 'with the default mapping), and never less strict: a mapping made for one remote host takes packets from that host alone; set when the NAT starts '
      + '(the filter entries of live mappings follow it)', MAPPINGS, { fixed: true }),
    port_preservation: param.bool('keep the inside port when it is free: a new block is the one that holds it when that one is free (off: ports are random within blocks, RFC 6888 REQ-15)', { default: false }),
    parity: param.bool('keep the parity of the inside port (RFC 4787 REQ-3)', { default: false }),
    udp_timeout: param.custom('UDP mapping idle timeout (at least 120 s, RFC 4787 REQ-5)', timeoutOfAtLeast('120 s', 'RFC 4787 REQ-5', '300 s'), { default: 300e9 }),
    tcp_established: param.custom('idle timeout of an established TCP session (at least 2 h 4 min, RFC 5382 REQ-5)', timeoutOfAtLeast('7440 s', 'RFC 5382 REQ-5 (2 h 4 min)', '7440 s'), { default: 7440e9 }),
    tcp_transitory: param.custom('idle timeout of a TCP session opening or closing (at least 4 min, RFC 5382 REQ-5)', timeoutOfAtLeast('240 s', 'RFC 5382 REQ-5 (4 min)', '240 s'), { default: 240e9 }),
    tcp_rst: param.duration('how long a session lives after a RST (RFC 7857 §2.2)', { default: 240e9 }),
    icmp_timeout: param.custom('ICMP query mapping idle timeout (at least 60 s, RFC 5508 REQ-1)', timeoutOfAtLeast('60 s', 'RFC 5508 REQ-1', '60 s'), { default: 60e9 }),
    quarantine: param.duration('how long a released block is not given to another subscriber (RFC 6888 REQ-8)', { default: 120e9 }),
    exempt: param.strings('destinations not translated (packets pass unchanged, and so do their replies and ICMP errors about them)', { default: [] as never, item: types.prefix }),
    exempt_ports: param.strings('destination ports not translated, and their replies (from those ports) and ICMP errors about them pass unchanged (packets to addresses no Internet host has are dropped all the same: exempt their prefix to pass them)', { default: [] as never, item: types.port }),
    deterministic: param.bool('map each inside address to a fixed external address and port range (RFC 7422), above port 1023: low inside ports map into it too', { default: false }),
    icmp_errors: param.bool('send ICMP host unreachable back when no mapping can be made (RFC 6888 REQ-11 says it SHOULD; at most 1000 ICMP errors a second '
      + 'per shard, in bursts of 50, as for fragmentation needed)', { default: true }),
    mtu: param.int('largest IPv4 packet (total length in bytes) the outside link takes: a larger one from inside with DF set is '
      + 'dropped and answered with ICMP fragmentation needed, naming this MTU; one without DF leaves in fragments, in order (RFC 4787 '
      + 'REQ-13; later fragments carry the options marked to be copied); 0: no limit', 0, 65535, { default: 0 }),
    rewrite_ip_id: param.bool('give every datagram from inside that may be fragmented (DF clear, or a fragment) a new IP ID, unique among those '
      + 'sent from its external address to its destination, the same for all fragments of a datagram (RFC 7857 §10, RFC 6864 §5.3.1): '
      + 'subscribers sharing an address would otherwise collide in the receiver\'s reassembly', { default: true }),
    syn_icmp: param.bool('answer an unsolicited inbound SYN with ICMP port unreachable after 6 s unless an outbound SYN of its connection came (RFC 5382 REQ-4; off: dropped silently, as REQ-4a allows)', { default: false }),
    icmp_source: param.ipv4('source address of the ICMP errors the NAT sends (default: the first pool address)', {}),
    pcp_server: param.ipv4('address on the inside at which the NAT answers PCP (RFC 6887) and NAT-PMP (RFC 6886) on UDP port 5351: '
      + 'subscribers map ports for inbound traffic (a suggested external port is taken when free; PREFER_FAILURE honoured); unset: no PCP (packets to it are translated like any others)', {}),
    pcp_max_lifetime: param.custom('longest lifetime a PCP mapping is granted (a request for more gets this; for less than 2 minutes, 2 minutes)',
      timeoutOfAtLeast('120 s', 'each PCP lifetime', '86400 s'), { default: 86400e9 }),
    log: param.file('where block records go: a file (JSON lines, appended; relative to the config file) or - for standard output (standard error with run --json, whose result takes standard output); none when absent. '
      + 'The blocks still held when the run ends (or a reload starts the NAT afresh) are logged released then, and those a snapshot file restores, allocated; '
      + 'a reload that moves the log to another file logs the blocks held then released in the old file and allocated in the new one '
      + '(adding or removing the log starts the NAT afresh: its pool holds the log\'s queue); a file renamed or removed (logrotate) '
      + 'is followed by a new one at the path within 200 ms, so no signal or copytruncate is needed. No block goes unlogged: the shards queue '
      + 'the records (16384 at most) and the log is written every 200 ms; while the queue is full, as a burst of new subscribers or a '
      + 'log that cannot be written fills it, no block is claimed (the packet is dropped, counted in drop_log_full) nor released', 'appends'),
    max_subscribers: param.int('most subscribers at once on each shard', 1, 1 << 22, { default: 65536 }),
    max_sessions: param.int('most sessions (and mappings) at once on each shard', 1, 1 << 24, { default: 262144 }),
    sessions_per_subscriber: param.int('most sessions one subscriber has at once (RFC 6888 REQ-5); 0: no limit but max_sessions; set when the NAT starts '
      + '(sessions are counted only while there is a limit)', 0, 1 << 24, { default: 0, fixed: true }),
  },
  state: {
    pool: state.data({
      doc: 'the external pool and who holds each port block (shared by the shards, saved in snapshots), and the block log queue',
      shared: true,
      // With the pool, what the tables' entries follow (their keys, filter entries, session counts): the NAT starts afresh when they change.
      layout: (p: NatParams) => [p.pool, p.inside, p.exempt, p.exempt_ports, p.ports_per_block, p.deterministic, p.icmp_source, p.log !== undefined,
        p.mapping, p.filtering ?? null, Number(p.sessions_per_subscriber) > 0],
      size: (p: NatParams) => poolLayout(p).size,
      init: (p: NatParams, bytes) => writePool(p, bytes),
    }),
    fragment_owners: state.data({
      doc: 'memory of inbound fragmented datagrams: the subscriber (or whose shard) their first fragment went to, so that the later '
        + 'fragments (no ports) follow it; written by steer and by the shard that translates a first fragment',
      shared: true,
      layout: () => FRAGMENT_OWNERS,
      size: () => FRAGMENT_OWNERS * 8,
      init: () => undefined,
    }),
    subscribers: state.sourceTable({
      owned: true,
      doc: 'per subscriber (inside address): its external address, its blocks, until when each is in use and how many live mappings each holds, mappings made, sessions live (with sessions_per_subscriber), when its last mapping expires',
      value: {
        external: 'u32',
        b0: 'u32', b1: 'u32', b2: 'u32', b3: 'u32', b4: 'u32', b5: 'u32', b6: 'u32', b7: 'u32', b8: 'u32', b9: 'u32', b10: 'u32', b11: 'u32',
        u0: 'u32', u1: 'u32', u2: 'u32', u3: 'u32', u4: 'u32', u5: 'u32', u6: 'u32', u7: 'u32', u8: 'u32', u9: 'u32', u10: 'u32', u11: 'u32',
        last_s: 'u32', mappings: 'u32', sessions: 'u32', mappings_until_s: 'u32',
        c0: 'u16', c1: 'u16', c2: 'u16', c3: 'u16', c4: 'u16', c5: 'u16', c6: 'u16', c7: 'u16', c8: 'u16', c9: 'u16', c10: 'u16', c11: 'u16',
        sessions_since_ns: 'u64',
      },
      capacity: (p) => p.max_subscribers,
      timeout: (p) => p.udp_timeout,
    }),
    mappings: state.flowTable({
      owner: 'address',
      doc: 'mappings both ways (inside port to external port, and back) and address-dependent filter entries, keyed by subscriber',
      value: { port: 'u16', remote_port: 'u16', remote: 'u32' },
      capacity: (p) => p.max_sessions * 2,
      timeout: (p) => p.udp_timeout,
    }),
    sessions: state.flowTable({
      owner: 'address',
      doc: 'sessions by inside 5-tuple: external port, TCP state, the mapping deadline they last set',
      value: { external: 'u32', external_port: 'u16', tcp: 'u8', mapping_until: 'u64' },
      capacity: (p) => p.max_sessions,
      timeout: (p) => p.udp_timeout,
    }),
    fragment_ids: state.flowTable({
      owner: 'address',
      doc: 'the new IP ID of each outbound fragmented datagram (rewrite_ip_id), and those that leave untranslated (to an exempt port, which '
        + 'their later fragments do not carry), kept 2 s after its last fragment; a table of its own, so that '
        + 'fragments cannot crowd mappings out',
      value: { id: 'u16' },
      capacity: () => 4096,
      timeout: () => 2e9,
    }),
    unsolicited: state.flowTable({
      owner: 'address',
      doc: 'unsolicited inbound SYNs waiting 6 s for an outbound SYN of their connection (syn_icmp): their Ethernet header (VLAN tags too) and what the answer quotes (IP header and 8 bytes)',
      // process.ts: [Ethernet header length][quoted length][at most 22 bytes of Ethernet header][at most 68 quoted, from byte 24]
      value: Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`frame${i}`, 'u64'])) as Record<string, 'u64'>,
      capacity: () => 4096,
      timeout: () => 6e9,
    }),
    translated_out: state.counter('packets translated inside to outside'),
    translated_in: state.counter('packets translated outside to inside'),
    hairpinned: state.counter('packets from inside to a pool address sent back inside'),
    hairpin_handovers: state.counter('hairpinned packets handed to the shard of their target subscriber'),
    exempted: state.counter('packets passed untranslated (exempt destinations or ports)'),
    fragmented: state.counter('packets larger than mtu sent out in fragments'),
    fragment_ids_full: state.counter('fragments from inside given an ID hashed from their datagram because fragment_ids was full (rewrite_ip_id)'),
    pcp_requests: state.counter('PCP requests answered (pcp_server)'),
    pcp_mappings: state.counter('PCP MAP and PEER (and NAT-PMP) requests granted: mappings made, renewed or deleted'),
    pcp_errors: state.counter('PCP requests answered with an error result code'),
    mappings_created: state.counter('mappings made'),
    blocks_allocated: state.counter('port blocks given to subscribers'),
    blocks_released: state.counter('port blocks given back'),
    icmp_sent: state.counter('ICMP errors sent back inside'),
    icmp_limited: state.counter('ICMP errors not sent back inside: more than 1000 a second (bursts of 50) on a shard'),
    syn_icmp_sent: state.counter('ICMP port unreachable sent out for unsolicited SYNs (syn_icmp)'),
    drop_not_inside: state.counter('dropped: source outside the inside prefixes'),
    drop_bad_destination: state.counter('dropped: from inside to an address no Internet host has (multicast, broadcast, reserved, loopback, link-local, 0.0.0.0/8)'),
    drop_bad_source: state.counter('dropped: from outside with a source no Internet host has (the same addresses)'),
    drop_no_mapping: state.counter('dropped: inbound packet for no mapping (or not to the pool)'),
    drop_filtered: state.counter('dropped: inbound packet the filtering behaviour refuses'),
    drop_unsolicited_syn: state.counter('dropped silently: inbound TCP SYN without a mapping (RFC 5382 REQ-4)'),
    drop_invalid_tcp: state.counter('dropped: inbound TCP segment other than a SYN for a mapping without its session'),
    drop_ports_exhausted: state.counter('dropped: the subscriber holds all its blocks and every port of them'),
    drop_pool_exhausted: state.counter('dropped: no free block (or address) in the pool'),
    drop_session_limit: state.counter('dropped: a new session would pass the subscriber\'s sessions_per_subscriber'),
    drop_table_full: state.counter('dropped: the subscriber, mapping or session table is full'),
    drop_log_full: state.counter('dropped: a block was needed while the block log\'s queue was full (log)'),
    drop_malformed: state.counter('dropped: not IPv4 TCP/UDP/ICMP, truncated, or an ICMP error quoting too little'),
    drop_fragment: state.counter('dropped: inbound later fragment with no first fragment seen'),
    drop_too_big: state.counter('dropped: from inside, larger than mtu with DF set (answered with ICMP fragmentation needed)'),
    drop_no_buffer: state.counter('dropped: larger than mtu, and no free slots or output room for all its fragments'),
    drop_unsupported: state.counter('dropped: other protocols and ICMP types the NAT does not translate, and packets to pcp_server other than PCP requests'),
    log_lost: state.counter('block records lost: another shard took the last room in the log\'s queue between a shard\'s look for room and its record'),
    scan_cursor: state.internal('where the search for idle blocks goes on (per shard)'),
    idle_search_ns: state.internal('the clock at the last batch\'s search for idle blocks (per shard): how many subscribers the next one looks at'),
    sessions_swept_s: state.internal('the second (plus one) of the last look at every session for expired ones when a subscriber was at its session limit (per shard)'),
    reclaimed_s: state.internal('the second (plus one) of the last look at every subscriber for idle blocks when the pool had none (per shard)'),
    sweep_ns: state.internal('the clock at the last sweep of the tables (per shard): how many slots the next one looks at'),
    // By the shard that swept least: restored onto other shards, a later time would claim sweeps they never made.
    mappings_round_ns: state.internal('when the sweep of the mappings table began its current round (per shard)', 'min'),
    mappings_swept_ns: state.internal('every mapping that expired before this has been swept (per shard): a block released only after its last mapping ended before it has no stale mapping left to count off it', 'min'),
    icmp_due_ns: state.internal('when the shard may send its next ICMP error back inside (the rate limit)'),
    syn_sweep_ns: state.internal('when the unsolicited-SYN table is next looked through whole (per shard)'),
  },
  handlers: {
    mappings: {
      doc: 'live mappings, one per inside endpoint mapped to an external port (the table holds each one\'s way back, filter entries and '
        + 'fragments besides)',
      read: (view) => view.count('mappings', (key) => key[3] >>> 8 === KIND_OUT),
      counter: true,
    },
    blocks_held: {
      doc: 'port blocks subscribers hold now, of every address and protocol (a gauge of the pool\'s use; blocks: by address)',
      read: (view) => heldCounts(view.data('pool')).reduce((a, b) => a + b, 0),
      counter: true,
    },
    blocks: {
      doc: 'blocks in use per external address and protocol',
      read: (view) => blocksInUse(view.data('pool')),
      counter: false,
    },
    drops: {
      doc: 'packets dropped, by reason',
      read: (view) => Object.fromEntries(DROPS.map((d) => [d.slice(5), Number(view.read(d))])),
      counter: false,
    },
    subscriber: {
      doc: 'one subscriber (ctl read NAT.subscriber ADDRESS): its external address, blocks, mappings and sessions (5-tuples, with their TCP state)',
      read: (view, arg) => subscriberView(view, arg),
      counter: false,
      private: true,
    },
  },
  periodic: {
    everyMs: 200,
    run: (view, call) => {
      keepQuarantine(view, call);
      writeLog(view, call);
    },
  },
  // A reload whose log cannot be written changes nothing (opened at the first periodic call, it ended the new pipeline).
  check: ({ name, params, configFile }) => {
    const path = logPath(params, configFile);
    const why = path && path !== '-' ? unwritable(path) : undefined;
    if (why) throw cannotWriteLog(name, path!, why);
  },
  steer: 'each packet goes to the shard of its subscriber: the inside source that sent it, or the one that holds its destination '
    + 'port block (for an ICMP error, the block of the packet it quotes); for sources on the outside, or carrying both directions',
  tick: 'on real time (--clock wall, or devices as the only sources) a quiet shard still gives back the port blocks whose mappings '
    + 'have all ended (within about 20 s: the sweep of the tables goes round every 5 s, the search for idle blocks every 10 s) and answers '
    + 'unsolicited SYNs once their 6 s are over (syn_icmp); so does one whose shard has packets for other elements',
  invalid: (p: NatParams & { mtu: number; pcp_server?: number; mapping: Behaviour; filtering?: Behaviour }) => [
    ...(p.filtering !== undefined && MAPPINGS.indexOf(p.filtering) < MAPPINGS.indexOf(p.mapping) ? [{
      param: 'filtering',
      message: `filtering: ${p.filtering} is less strict than mapping: ${p.mapping}, whose mappings are each made for one remote `
        + `${p.mapping === 'address-dependent' ? 'host' : 'host and port'} and take packets from it alone`,
      hint: `use filtering: ${p.mapping} or stricter, or leave filtering out (it follows mapping)`,
    }] : []),
    ...(blockCount(p) > MOST_BLOCKS ? [{
      param: 'pool',
      message: `${blockCount(p)} port blocks (${p.ports_per_block} ports each, three protocols), more than the ${MOST_BLOCKS} a NAT holds`,
      hint: 'use larger blocks (ports_per_block) or a smaller pool',
    }] : []),
    ...(p.pcp_server !== undefined && p.mapping !== 'endpoint-independent' ? [{
      param: 'pcp_server', message: `PCP maps a port for every remote host, which ${p.mapping} mapping cannot do`,
      hint: 'use mapping: endpoint-independent (the default) with pcp_server',
    }] : []),
    ...(p.deterministic && deterministicShare(p).ports === 0 ? [{
      param: 'deterministic',
      message: `deterministic mode would give each of the ${deterministicShare(p).inside} inside addresses less than one of the `
        + `${poolAddresses(p).length * DETERMINISTIC_PORTS} ports of the pool`,
      hint: `smaller inside prefixes, or a pool of at least ${Math.ceil(deterministicShare(p).inside / DETERMINISTIC_PORTS)} addresses`,
    }] : []),
    ...(p.pcp_server !== undefined && nonHostKind(hostPrefix(p.pcp_server)) ? [{
      param: 'pcp_server', message: `${formatIPv4(p.pcp_server)} is no host's address: subscribers could not reach it`,
      hint: 'an unused unicast address on the inside, e.g. 100.64.255.254',
    }] : []),
    ...(p.mtu > 0 && p.mtu < 68 ? [{ param: 'mtu', message: `mtu ${p.mtu} is below IPv4's least MTU, 68`, hint: 'the outside link\'s MTU, e.g. 1500; 0 for no limit' }] : []),
    ...p.pool.flatMap((c) => {
      const overlap = p.inside.find((i) => overlaps(c, i));
      const special = nonHostKind(c);
      return [
        ...(overlap ? [{ param: 'pool', message: `pool prefix ${types.cidr.format(c)} overlaps the inside prefix ${types.cidr.format(overlap)}: its addresses would be both subscribers and external addresses`, hint: 'take the pool from outside the inside prefixes, e.g. 203.0.113.0/24' }] : []),
        ...(special ? [{ param: 'pool', message: `pool prefix ${types.cidr.format(c)} holds ${special} addresses, which cannot be a source on the Internet`, hint: 'use unicast addresses the outside routes to you' }] : []),
      ];
    }),
  ],
  varies: (p: { deterministic: boolean }) => (p.deterministic ? undefined : {
    why: 'it picks external addresses and ports from a random start (RFC 6888 REQ-15), and with several shards in the order subscribers come',
    hint: 'verify it with deterministic: true (RFC 7422), which maps each subscriber the same way in every run',
  }),
  example: [
    'nat: { type: NAT, pool: [203.0.113.0/28], inside: [100.64.0.0/10], ports_per_block: 512, log: nat-blocks.jsonl }',
    '# connections: inside_in -> [0]nat, outside_in -> [1]nat, nat[0] -> outside_out, nat[1] -> inside_out',
  ].join('\n'),
});

/** Slots of fragment_owners (process.ts FRAGMENT_OWNERS): fragmented datagrams in flight at once. */
const FRAGMENT_OWNERS = 65536;

const DROPS = ['drop_not_inside', 'drop_bad_destination', 'drop_bad_source', 'drop_no_mapping', 'drop_filtered', 'drop_unsolicited_syn', 'drop_invalid_tcp', 'drop_ports_exhausted',
  'drop_pool_exhausted', 'drop_session_limit', 'drop_table_full', 'drop_log_full', 'drop_malformed', 'drop_fragment', 'drop_too_big', 'drop_no_buffer', 'drop_unsupported'];

/** Whether two prefixes share an address: the shorter one holds the other's start. */
function overlaps(a: Cidr, b: Cidr): boolean {
  const shorter = a.prefix <= b.prefix ? a : b, longer = shorter === a ? b : a;
  return ((longer.address & shorter.mask) >>> 0) === shorter.address;
}

/** Fragments a 1500-byte packet (a 20-byte header) leaves in at `mtu` (0: no limit, 1); process.ts has the same for its room checks. */
function fragmentsOf1500(mtu: number): number {
  return mtu > 0 && mtu < 1500 ? Math.ceil(1480 / ((mtu - 20) & ~7)) : 1;
}

/**
 * Block records from the shards' queue, written as JSON lines. A NAT restored from a snapshot file first logs the
 * blocks it holds as allocated (its last run logged them released); so does one that a reload carried on with its
 * log elsewhere (another file, or standard output), whose predecessor logged them released at the handover: each
 * file tells the whole story of its time. Blocks a NAT started with are logged once its clock has moved; one taken
 * over before that leaves them to its successor. One whose state ends with the run (not carried on by a reload) logs
 * its blocks released, so that no block stays open in the log once its holder is gone.
 */
function writeLog(view: ElementView, call: 'due' | 'end' | 'handover'): void {
  const p = view.params as NatParams;
  const path = logPath(p, view.configFile);
  if (!path) return;
  const pool = view.data('pool');
  let log = logs.get(view.params);
  if (!log) {
    // The first call comes before the first packet: the blocks held now are those a snapshot file restored or a
    // reload carried, if any. (A reload that adds or removes the log starts the NAT afresh: the pool holds its queue.)
    const previous = view.previous;
    const moved = previous !== undefined && logPath(previous.params as NatParams, previous.configFile) !== path;
    const startsUnlogged = view.restored || moved || (previous !== undefined && unlogged.has(previous.params));
    log = { ...openLog(view, path), pending: startsUnlogged ? heldBlockRecords(pool, 'allocate', 0n) : [] };
    logs.set(view.params, log);
    // The queue as the snapshot saw it: the run that took it logs those records itself.
    if (view.restored) drainLog(pool);
  }
  log.followRotation();
  const queued = drainLog(pool);
  // The blocks held from the start are logged once the clock has moved (a trace's starts at its first packet), dated
  // no later than the records that follow them.
  const times = [...(view.now() > 0n ? [Number(view.now() / 1_000_000n)] : []), ...queued.map((r) => Date.parse(r.time))];
  if (log.pending.length && times.length) {
    const time = recordTime(BigInt(Math.min(...times)) * 1_000_000n);
    writeRecords(log, log.pending.map((record) => ({ ...record, time })));
    log.pending = [];
  }
  writeRecords(log, queued);
  if (call === 'due') return;
  if (call === 'handover') {
    // Not logged yet: the NAT that takes over logs them. Logged, and the log moves: released here, allocated there.
    if (log.pending.length) unlogged.add(view.params);
    else if (view.next && logPath(view.next.params as NatParams, view.next.configFile) !== path) writeRecords(log, heldBlockRecords(pool, 'release', view.now()));
  }
  // A run whose clock never moved (no packet) logged nothing of the blocks it started with, nor releases them.
  if (call === 'end' && !log.pending.length) writeRecords(log, heldBlockRecords(pool, 'release', view.now()));
  log.close();
  logs.delete(view.params);
}

/** The blocks a NAT kept from others when its state ended with its run, by its parameters. */
const keptAtEnd = new WeakMap<object, KeptBlock[]>();

/**
 * A NAT whose state ends with its run notes the blocks it held or had in quarantine; one that a reload starts afresh
 * in its place (a changed pool, say) keeps them in quarantine (its own pool knows nothing of them), the held ones as
 * if released then. So does one restored from a snapshot whose pool it could not take; on a trace's clock, which
 * starts at the first packet, those are kept from everyone until a periodic call sees the clock moved, and dated then.
 */
function keepQuarantine(view: ElementView, call: 'due' | 'end' | 'handover'): void {
  const p = view.params as NatParams;
  const pool = view.data('pool');
  const second = Number(view.now() / 1_000_000_000n);
  if (call !== 'end') {
    const previous = view.previous?.params;
    const ended = previous && keptAtEnd.get(previous);
    const snapshotPool = view.unrestored('pool');
    if (ended) {
      keptAtEnd.delete(previous);
      quarantineBlocks(pool, p, ended);
    } else if (snapshotPool) {
      quarantineBlocks(pool, p, undatedBlocks(snapshotPool, p));
    }
  }
  // Blocks kept from everyone (a snapshot's, carried on by reloads and snapshots) are dated once the clock has moved.
  if (second > 0) dateQuarantine(pool, second);
  if (call === 'end') keptAtEnd.set(view.params, keptBlocks(pool, p, second));
}

/** Where a NAT's parameters put its block log: a file's path, '-' for standard output, undefined for none. */
function logPath(p: NatParams, configFile: string): string | undefined {
  return !p.log ? undefined : p.log === '-' ? '-' : resolve(dirname(configFile), p.log);
}

function writeRecords(log: BlockLog, records: BlockRecord[]): void {
  log.write(records.map((record) => JSON.stringify(record) + '\n'));
}

/** Lines a block log keeps while it cannot write them (about 200 MB of strings); older ones are lost beyond, and counted. */
const MOST_WAITING = 1_000_000;

/**
 * An open block log. Lines that cannot be written (a full disk, say) wait, in order, and are written with the next
 * ones; the NAT goes on translating meanwhile, and the log says when writing fails and when it works again.
 * `followRotation`: when the file at its path is no longer the one open (renamed or removed, as logrotate does), the
 * lines from now on go to a new file there.
 */
interface BlockLog { write(lines: string[]): void; close(): void; followRotation(): void }

const cannotWriteLog = (name: string, path: string, why: string | undefined) =>
  new EnvironmentError(`${name}: cannot write the block log ${path}: ${why}`, 'check that the folder can be created and written');

function openLog(view: ElementView, path: string): BlockLog {
  if (path === '-') {
    // Standard output, unless the results take it (run --json).
    const out = view.printFd === 2 ? process.stderr : process.stdout;
    return { write: (lines) => { for (const line of lines) out.write(line); }, close: () => undefined, followRotation: () => undefined };
  }
  const open = () => {
    try {
      makeFolders(dirname(path));
      return openSync(path, 'a');
    } catch (e) {
      throw cannotWriteLog(view.name, path, (e as NodeJS.ErrnoException).code);
    }
  };
  let fd = open();
  let waiting: string[] = [];
  let failing: string | undefined;
  let lost = 0;
  /** Why the path could not be opened anew after a rotation, while that lasts. */
  let stuck: string | undefined;
  const flush = () => {
    let written = 0;
    try {
      while (written < waiting.length) {
        const line = waiting[written];
        const n = writeSync(fd, line);
        // A file system that fills up may take part of a line (records are ASCII: bytes are characters).
        if (n < line.length) {
          waiting[written] = line.slice(n);
          throw new Error(`only ${n} of ${line.length} bytes written`);
        }
        written++;
      }
    } catch (e) {
      const why = (e as NodeJS.ErrnoException).code ?? String(e);
      if (failing !== why) view.log(`cannot write the block log ${path} (${why}): its records wait, and are written with the next ones`);
      failing = why;
    }
    waiting = waiting.slice(written);
    if (!waiting.length && failing) {
      view.log(`the block log ${path} is written again${lost ? `; ${lost} records were lost meanwhile` : ''}`);
      failing = undefined;
      lost = 0;
    }
    if (waiting.length > MOST_WAITING) {
      lost += waiting.length - MOST_WAITING;
      waiting = waiting.slice(-MOST_WAITING);
    }
  };
  return {
    write: (lines) => {
      for (const line of lines) waiting.push(line);
      flush();
    },
    close: () => {
      flush();
      if (waiting.length || lost) view.log(`${waiting.length + lost} block records could not be written to ${path} (${failing})`);
      closeSync(fd);
    },
    followRotation: () => {
      const there = statSync(path, { throwIfNoEntry: false });
      const held = fstatSync(fd);
      if (there?.ino === held.ino && there.dev === held.dev) return;
      try {
        const next = open();
        closeSync(fd);
        fd = next;
        stuck = undefined;
      } catch (e) {
        if (stuck !== (e as Error).message) view.log(`no new block log after a rotation (${(e as Error).message}): writing on in the old file`);
        stuck = (e as Error).message;
      }
    },
  };
}

/** Kinds of entries in the mappings table, the key's last word >> 8 (process.ts KIND_*). */
const KIND_OUT = 1, KIND_FILTER = 3;

function subscriberView(view: ElementView, arg: string | undefined): unknown {
  if (!arg) throw new Error('name the subscriber: ctl read NAT.subscriber 100.64.0.5');
  const inside = parseIPv4(arg);
  const p = view.params as NatParams;
  const ofSubscriber = (key: TableEntry['key']) => key[0] === inside;
  const [sub] = view.entries('subscribers', ofSubscriber);
  const external = sub ? Number(sub.value.external) : p.deterministic ? deterministicRange(p, inside)?.address : undefined;
  const blocks = sub ? Object.entries(sub.value).filter(([k, v]) => /^b\d+$/.test(k) && v !== 0n)
    .map(([k, v]) => ({
      protocol: PROTOCOLS[Math.floor(Number(k.slice(1)) / 4)], ...blockPorts(p, Number(v) - 1),
      live_mappings: Number(sub.value[`c${k.slice(1)}`]) & 0x7fff, // without the flag of a block in use only until a mapping's end (process.ts BLOCK_LOWERED)
    })) : [];
  const entries = view.entries('mappings', ofSubscriber);
  // A PCP MAP's permission for any host: a filter entry with no remote, on the external port.
  const pcp = (protocol: number, port: number) => entries.find((e) => e.key[3] === (protocol | (KIND_FILTER << 8)) && e.key[1] === 0 && e.key[2] >>> 16 === port);
  const mappings = entries.filter((e) => e.key[3] >>> 8 === KIND_OUT).map((e) => {
    const permit = pcp(e.key[3] & 0xff, Number(e.value.port));
    return {
      protocol: protocolName(e.key[3] & 0xff), inside_port: e.key[2] >>> 16, external: `${formatIPv4(external ?? 0)}:${Number(e.value.port)}`,
      ...(e.key[1] ? { remote: formatIPv4(e.key[1]) } : {}), expires_ns: String(e.expires), ...(permit ? { pcp_expires_ns: String(permit.expires) } : {}), shard: e.shard,
    };
  });
  const sessions = view.entries('sessions', ofSubscriber).map((e) => ({
    protocol: protocolName(e.key[3]), inside_port: e.key[2] >>> 16, remote: `${formatIPv4(e.key[1])}${e.key[3] === 1 ? '' : `:${e.key[2] & 0xffff}`}`,
    external: `${formatIPv4(Number(e.value.external))}:${Number(e.value.external_port)}`,
    ...(e.key[3] === 6 ? { tcp: tcpState(Number(e.value.tcp)) } : {}), expires_ns: String(e.expires), shard: e.shard,
  }));
  if (!sub && !mappings.length) return { subscriber: arg, mappings: [], sessions: [], note: 'no state for this subscriber' };
  return { subscriber: arg, external: external === undefined ? null : formatIPv4(external), mappings_made: sub ? Number(sub.value.mappings) : 0,
    ...(p.sessions_per_subscriber ? { session_count: sub ? Number(sub.value.sessions) : 0 } : {}), blocks, mappings, sessions };
}

function blockPorts(p: NatParams, block: number): { first_port: number; last_port: number } {
  const size = 1 << Math.floor(Math.log2(p.ports_per_block));
  const first = (block % (65536 / size)) * size;
  return { first_port: first, last_port: first + size - 1 };
}

/** A session's TCP state as process.ts keeps it (TCP_OUT 1, TCP_IN 2, TCP_FIN 4, TCP_RST 8), in words. */
function tcpState(bits: number): string {
  if (bits & 8) return 'reset';
  if (bits & 4) return 'closing';
  return (bits & 3) === 3 ? 'established' : 'opening';
}

function protocolName(proto: number): string {
  return proto === 6 ? 'tcp' : proto === 17 ? 'udp' : proto === 1 ? 'icmp' : String(proto);
}
