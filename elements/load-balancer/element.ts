import { defineElement, param, state, ParamTypeError, type ElementView, type ParamType, type ParamWarning } from '../../engine/api.ts';
import { MAX_SHARDS } from '../../engine/config.ts';
import { hostPrefix, nonHostKind, parseIPv4, formatIPv4, intType, listType, types, type Cidr } from '../../engine/params.ts';
import { isPrime, maglevTable, withoutBuckets } from './maglev.ts';
import { LiveTable, initTable, tableBytes, formatVip, starvedMessage, STARVED_HINT, NONE, type Backend, type TableParams, type Vip } from './table.ts';
import { checkHealth, endHealthChecks, healthReport, type HealthParams, type HealthState, type SetWeight } from './health.ts';

/** Each running element's counts of health checks, by where its table lies in the pipeline's memory (its parameters object changes on a write). */
const healthStates = new WeakMap<ArrayBufferLike, Map<number, HealthState>>();

function healthOf(view: ElementView): HealthState {
  const table = view.data('table');
  let states = healthStates.get(table.buffer);
  if (!states) healthStates.set(table.buffer, states = new Map());
  let health = states.get(table.byteOffset);
  if (!health) states.set(table.byteOffset, health = { backends: new Map() });
  return health;
}

const VIP = /^\s*(\S+)\s+(tcp|udp)\s+(\d+|any)\s*$/i;
const BACKEND = /^\s*([A-Za-z0-9_.-]{1,31})\s+(\S+)(?:\s+(\d+))?\s*$/;
const MAX_WEIGHT = 1_000_000;

const vipType: ParamType<Vip> = {
  description: 'a virtual service: ADDRESS tcp|udp PORT|any',
  parse: (raw) => {
    const m = typeof raw === 'string' ? VIP.exec(raw) : null;
    if (!m) throw new ParamTypeError(`${JSON.stringify(raw)} is not ADDRESS PROTOCOL PORT`, "write e.g. '198.18.100.1 tcp 80' or '198.18.100.1 udp any'");
    const port = m[3].toLowerCase() === 'any' ? undefined : types.port.parse(Number(m[3]));
    if (port === 0) throw new ParamTypeError(`VIP ${m[1]}: port 0 is no service's`, "give the service's port, or any for all of them");
    const address = parseIPv4(m[1]);
    const notHost = nonHostKind(hostPrefix(address));
    if (notHost) throw new ParamTypeError(`VIP ${m[1]} is a ${notHost} address, which no client sends to`, 'give the unicast address clients reach the service at');
    return { address, protocol: m[2].toLowerCase() as Vip['protocol'], port };
  },
  format: formatVip,
};

function parseBackend(raw: unknown): Backend {
  const m = typeof raw === 'string' ? BACKEND.exec(raw) : null;
  if (!m) throw new ParamTypeError(`${JSON.stringify(raw)} is not NAME ADDRESS [WEIGHT]`, "write e.g. 'web1 198.18.1.11 2' (a name of up to 31 letters, digits, '_', '.', '-'; weight 1 by default)");
  const weight = m[3] === undefined ? 1 : Number(m[3]);
  if (weight > MAX_WEIGHT) throw new ParamTypeError(`weight ${weight} is too large`, `use a weight from 0 to ${MAX_WEIGHT}`);
  const address = parseIPv4(m[2]);
  // 0.0.0.0 and 224.0.0.0 up (multicast, reserved, broadcast) name no one host: packets would go nowhere, or everywhere.
  if (address === 0 || address >= 0xe0000000) {
    throw new ParamTypeError(`backend ${m[1]}: ${m[2]} is not the address of a host`, 'give the backend\'s unicast address (not 0.0.0.0, multicast 224.0.0.0/4 or reserved 240.0.0.0/4, broadcast included)');
  }
  return { name: m[1], address, weight };
}

const isVipAddress = (vips: Vip[], address: number) => vips.some((v) => v.address === address);

/** A backend at a VIP's address would be sent, by the mux, the VIP's packets and its own encapsulated ones. */
const onVip = (b: Backend) => ({
  message: `backend ${b.name} has the address of a VIP, ${formatIPv4(b.address)}`,
  hint: 'give the backend host\'s own address: the VIP is the address the backends share with the mux',
});

const formatBackend = (b: Backend) => `${b.name} ${formatIPv4(b.address)} ${b.weight}`;

/** Names and addresses are unique: a name is how the control plane and the table sort backends. */
function checkUnique(list: Backend[], at?: (i: number) => { item: number }): void {
  list.forEach((b, i) => {
    const j = list.findIndex((o) => o.name === b.name || o.address === b.address);
    if (j !== i) {
      throw new ParamTypeError(`backend ${b.name} (${formatIPv4(b.address)}) repeats the ${list[j].name === b.name ? 'name' : 'address'} of ${list[j].name}`,
        'give each backend a name and an address of its own', at?.(i));
    }
  });
}

/** Every item's mistakes at once, each at its item. */
const backendList = listType({ description: 'a backend: NAME ADDRESS [WEIGHT]', parse: parseBackend, format: formatBackend });

const backendsType: ParamType<Backend[]> = {
  ...backendList,
  parse: (raw) => {
    const list = backendList.parse(raw);
    checkUnique(list, (item) => ({ item }));
    return list;
  },
};

/** max_backends sizes the table: not a fast-path parameter, so no handler can change it under the table. */
const slotCountType: ParamType<number> = { ...intType(1, NONE), fast: undefined, encode: undefined };

const primeType: ParamType<number> = {
  description: 'a prime from 7 to 4194301',
  parse: (raw) => {
    if (typeof raw !== 'number' || raw < 7 || raw > 4194301 || !isPrime(raw)) throw new ParamTypeError(`${JSON.stringify(raw)} is not a prime from 7 to 4194301`, 'Maglev needs a prime table size, well above 100 x the backends: 65537 or 655373');
    return raw;
  },
  format: String,
};

/** counters data: [unused u64], then one row per shard index of [packets u64][bytes u64] per VIP, then per backend slot. */
const ROWS = 8;
const rowBytes = (p: any) => (p.vips.length + p.max_backends) * 16;

function rowSums(view: ElementView, first: number, count: number): { packets: number; bytes: number }[] {
  const counters = view.data('counters');
  const row = rowBytes(view.params);
  return Array.from({ length: count }, (_, i) => {
    let packets = 0n, bytes = 0n;
    for (let r = 0; r < MAX_SHARDS; r++) {
      const at = ROWS + r * row + (first + i) * 16;
      packets += counters.getBigUint64(at, true);
      bytes += counters.getBigUint64(at + 8, true);
    }
    return { packets: Number(packets), bytes: Number(bytes) };
  });
}

/** Zeroes the packets and bytes of one VIP or backend slot (`entry`) in every shard's row. */
function zeroCounts(view: ElementView, entry: number): void {
  const counters = view.data('counters');
  const row = rowBytes(view.params);
  for (let r = 0; r < MAX_SHARDS; r++) new Uint8Array(counters.buffer, counters.byteOffset + ROWS + r * row + entry * 16, 16).fill(0);
}

/** Applies a change of the backend list; an error leaves the table as it was. */
function change(view: ElementView, edit: (list: Backend[]) => Backend[]): void {
  const table = liveTable(view);
  const next = edit([...table.backends().values()]);
  checkUnique(next);
  const clash = next.find((b) => isVipAddress(view.params.vips as Vip[], b.address));
  if (clash) {
    const { message, hint } = onVip(clash);
    throw new Error(`${message} (${hint})`);
  }
  // A backend in a free slot starts at 0, not at the counts of the slot's removed backend.
  for (const slot of table.update(next, view.now())) zeroCounts(view, (view.params.vips as Vip[]).length + slot);
}

/** Tables of a reload or snapshot laid out anew whose running backends went into the new one (each once). */
const carried = new WeakSet<DataView>();

/**
 * The backend table, with the running backends carried into it first when a reload or snapshot laid it out anew: by
 * whatever reads or changes it first (the periodic call before the first packet, or a handler before that).
 */
function liveTable(view: ElementView): LiveTable {
  const old = view.unrestored('table');
  if (old && !carried.has(old)) {
    carried.add(old);
    carryBackends(view, old);
  }
  return new LiveTable(view.data('table'));
}

/**
 * The table of a reload or snapshot whose VIPs, table size or max_backends changed starts from the config's backends
 * (the engine could not take its data as it was laid out): the backends running before (`old`, that table's data) go
 * into it instead, as they would have stayed in a table laid out alike, its buckets remembering no previous backend
 * (the new table maps them anew); the config's stay when the running ones do not fit.
 */
function carryBackends(view: ElementView, old: DataView): void {
  const p = view.params as unknown as TableParams;
  const running = [...new LiveTable(old).backends().values()];
  const listed = running.map(formatBackend).join(', ');
  const onVipAddress = running.find((b) => isVipAddress(p.vips, b.address));
  const starved = withoutBuckets(running, maglevTable(running, p.table_size));
  const why = running.length > p.max_backends ? `${running.length} backends, max_backends ${p.max_backends}`
    : onVipAddress ? onVip(onVipAddress).message
    : starved.length ? starvedMessage(starved, p.table_size) : undefined;
  if (why) {
    view.log(`the running backends (${listed}) do not fit the new table (${why}): it has the config's`);
    return;
  }
  const data = view.data('table');
  initTable({ ...p, backends: running }, data);
  const table = new LiveTable(data);
  for (let slot = running.length; slot < p.max_backends; slot++) table.writeBackend(slot, undefined);
  view.log(`the running backends (${listed}) go on in the new table, its buckets remembering no previous backend`);
}

/** A reload keeps the running table: says so when the reloaded config lists other backends (weights the checks took count as given back). */
function sayBackendsKept(view: ElementView, configured: Backend[]): void {
  const listed = (list: Backend[]) => list.map((b) => formatBackend({ ...b, weight: b.drainedFrom ?? b.weight })).sort().join(', ');
  const running = listed([...liveTable(view).backends().values()]);
  if (listed(configured) === running) return;
  view.log(`the reloaded config lists other backends (${listed(configured)}) than the running table, whose backends are kept (${running}); `
    + `change them with wirepath ctl write ${view.name}.add_backend, ${view.name}.remove_backend or ${view.name}.set_weight`);
}

/** A handler's value split into words, exactly as many as `usage` names (a word too many is a mistake, not ignored). */
function words(value: string, usage: string): string[] {
  const found = value.trim().split(/\s+/).filter(Boolean);
  const wanted = usage.split(' ').length;
  if (found.length !== wanted) throw new Error(`${JSON.stringify(value)} is not '${usage}' (${wanted === 1 ? 'one word' : `${wanted} words`})`);
  return found;
}

function named(list: Backend[], name: string): Backend {
  const found = list.find((b) => b.name === name);
  if (!found) throw new Error(`no backend '${name}'; the backends are ${list.map((b) => b.name).sort().join(', ') || 'none'}`);
  return found;
}

function parseWeight(text: string): number {
  const weight = Number(text);
  if (!Number.isInteger(weight) || weight < 0 || weight > MAX_WEIGHT) throw new Error(`${JSON.stringify(text)} is not a weight from 0 to ${MAX_WEIGHT}`);
  return weight;
}

/** Mistakes that only the parameters together show: config errors, and refused writes at run time. */
function mistakes(p: TableParams & HealthParams & { source: Cidr }): ParamWarning[] {
  const found: ParamWarning[] = [];
  // The outer sources go out on the network: routers drop those no host has, and those of the VIPs and backends (lb-mux.yaml).
  const notHost = nonHostKind(p.source);
  if (notHost) found.push({ param: 'source', message: `${types.cidr.format(p.source)} holds ${notHost} addresses, which no packet may come from`, hint: 'a unicast prefix of the mux\'s own, e.g. 198.18.0.0/24' });
  const inSource = (address: number) => ((address & p.source.mask) >>> 0) === p.source.address;
  const taken = [...p.vips.filter((v) => inSource(v.address)).map((v) => `VIP ${formatIPv4(v.address)}`), ...p.backends.filter((b) => inSource(b.address)).map((b) => `backend ${b.name}`)];
  if (taken.length) found.push({ param: 'source', message: `${types.cidr.format(p.source)} holds the address of ${taken[0]}: outer packets would come from it`, hint: 'a prefix apart from the VIPs and the backends' });
  // Each backend takes a slot of max_backends; past them, initTable would write backends over the buckets.
  if (p.backends.length > p.max_backends) {
    found.push({
      param: 'backends', at: { item: p.max_backends },
      message: `${p.backends.length} backends do not fit max_backends: ${p.max_backends} (${p.backends[p.max_backends].name} is the first without a slot)`,
      hint: `raise max_backends to ${p.backends.length} or more (room for backends added at run time, and for removed ones that buckets still remember), or list fewer backends`,
    });
  }
  p.vips.forEach((v, item) => {
    // VIPs are matched in order: one that an earlier VIP matches gets no packet.
    const earlier = p.vips.slice(0, item).find((o) => o.address === v.address && o.protocol === v.protocol && (o.port === undefined || o.port === v.port));
    if (earlier) {
      found.push({
        param: 'vips', at: { item },
        message: `VIP ${formatVip(v)} ${earlier.port === v.port ? 'repeats' : 'is covered by'} the earlier ${formatVip(earlier)}: it would get no packet`,
        hint: "list each service once (an address and protocol with port 'any' covers all of its ports)",
      });
    }
  });
  p.backends.forEach((b, item) => { if (isVipAddress(p.vips, b.address)) found.push({ param: 'backends', at: { item }, ...onVip(b) }); });
  const starved = withoutBuckets(p.backends, maglevTable(p.backends, p.table_size));
  if (starved.length) found.push({ param: 'backends', at: { item: p.backends.indexOf(starved[0]) }, message: starvedMessage(starved, p.table_size), hint: STARVED_HINT });
  if (p.health_port === 0) found.push({ param: 'health_port', message: 'the checks cannot connect to port 0', hint: "the port the backends' servers answer on, e.g. 80" });
  if (p.health_interval === 0) found.push({ param: 'health_interval', message: 'health_interval 0 would probe every backend as often as the control plane can', hint: 'a time between two checks of a backend, e.g. 2s' });
  if (p.health_timeout === 0) found.push({ param: 'health_timeout', message: 'health_timeout 0 would fail every check', hint: 'a time a healthy backend answers within, e.g. 1s' });
  if (!p.health_path.startsWith('/')) {
    found.push({
      param: 'health_path', message: `'${p.health_path}' does not start with '/': the HTTP check would ask for http://ADDRESS:${p.health_port}${p.health_path}`,
      hint: `write the path from the root, e.g. '/${p.health_path}'`,
    });
  }
  return found;
}

export default defineElement({
  type: 'LoadBalancer',
  summary: 'stateless layer-4 load balancer mux (Beamer): Maglev buckets, IP-in-IP to backends, daisy-chaining hints',
  description: 'Sends packets addressed to a virtual service (VIP: address, tcp or udp, a port or any port) to a '
    + 'backend, encapsulated IP-in-IP: an outer IPv4 header (protocol 4) is put between the Ethernet header and '
    + 'the packet, in the slot\'s headroom, addressed to the backend, from an address of `source` whose host part '
    + 'is the flow hash (so receivers can spread flows over queues), with the inner packet\'s DF flag (and, '
    + 'without it, the inner identification mixed with the flow hash, RFC 6864). The mux keeps no per-connection '
    + 'state: a packet\'s bucket is a hash of its source address and source port (as Beamer does; the destination '
    + 'is the VIP anyway), mapped onto the table\'s buckets, and the bucket names the backend, so any mux with '
    + 'the same table sends any packet to the same place. Fragments carry no ports: every fragment (the first '
    + 'too, so that a datagram stays together) matches a VIP by address and protocol and is hashed by its source '
    + 'address alone. An ICMP error sent to a VIP (fragmentation needed, unreachable, time exceeded, ...) is '
    + 'hashed by the connection it quotes (the quoted destination address and port), so it reaches the backend of '
    + 'that connection. The table is Maglev\'s (prime size, backends sorted by name first, weights respected); '
    + 'each bucket also remembers its previous backend and the generation and time of its last change (on trace '
    + 'time, a change made before the first packet is timed at the first packet), and the '
    + 'outer header carries them in an IPv4 option (type 158, RFC 4727 experimental, 16 bytes: '
    + '[158][16][flags][0][previous backend address][generation][milliseconds since the change, as the mux sees '
    + 'it]) for BeamerBackend\'s daisy chaining. The option carries the age of the change rather than its time so '
    + 'that muxes and backends need no shared clock. Backends are added, drained (weight 0: no new bucket, its '
    + 'connections go on through daisy chaining), removed and re-weighted at run time through the write handlers; '
    + 'the table is rebuilt and only the buckets whose backend changed get a new previous backend, generation and '
    + 'time. A change naming an unknown backend fails with an error and changes nothing. The table lives in '
    + 'shared data, so snapshots and reloads keep it as it is, run-time changes included, as long as the VIPs, '
    + 'table size and max_backends stay the same: a reloaded config that lists other backends keeps the running '
    + 'table\'s (it is logged; change the backends of a running pipeline through the handlers). When one of them '
    + 'changes, the new table is built from the running backends, run-time changes and drains included (its buckets '
    + 'remember no previous backend); if they do not fit it (fewer max_backends, a backend at a new VIP\'s address), it '
    + 'keeps the config\'s and says why. Packets that are '
    + 'not for a VIP (or not IPv4), and frames a capture cut short (snaplen: no tunnel carries them), leave on '
    + 'output 1, or are dropped if it is not connected; a packet to a VIP '
    + 'whose headers are truncated or whose IPv4 header is bad (its lengths do not fit the frame) is counted in '
    + 'malformed and dropped. With health_check (tcp: a connect; http: a GET, healthy below status 500) the '
    + 'control plane checks every backend each health_interval from wirepath\'s own network namespace; '
    + 'health_failures failures in a row drain it, as many successes give its weight back (handler health). The '
    + 'checks never drain the last backend with a weight (they fail open: it is logged), a weight set by hand is '
    + 'the one they give back (they drain the backend again while it fails; one drained by hand stays drained), '
    + 'and turning them off (write health_check none) gives back the weights they took. Which backends they '
    + 'drained, and from which weight, is kept in the table, so a reload that keeps it and a restored snapshot '
    + 'keep it too (the counts of checks in a row start again). A failed check is logged with its reason '
    + '(connection refused, no answer in time, an HTTP status), once until the backend passes or fails for '
    + 'another reason. They probe each backend\'s address directly (plain TCP or HTTP, not through the tunnel): '
    + 'something at that address must answer on health_port; a BeamerBackend does not (it passes what is not '
    + 'IP-in-IP to its output 2, toward the host if connected so).',
  inputs: 1,
  outputs: [
    { name: 'encapsulated', doc: 'packets to a VIP, encapsulated to their backend' },
    { name: 'other', doc: 'packets not for a VIP, unchanged', optional: true },
  ],
  params: {
    vips: param.strings('the virtual services: ADDRESS tcp|udp PORT|any', { required: true, item: vipType }),
    backends: param.custom('the backends: NAME ADDRESS [WEIGHT] (weight 1 by default, 0 = drained)', backendsType, { required: true }),
    table_size: param.custom('Maglev table size M (buckets), a prime', primeType, { default: 65537 }),
    max_backends: param.custom('most backends at once, removed ones still remembered by buckets included', slotCountType, { default: 256 }),
    // Not written while shards run: its address and mask are two fields, and a batch between them would send from outside it.
    source: param.cidr('outer source addresses: the flow hash chooses the host part (not the network or broadcast address of a prefix up to /30)', { required: true, fixed: true }),
    health_check: param.enum('how backends are checked: none, a TCP connect, or an HTTP GET (a status below 500 is healthy)', ['none', 'tcp', 'http'], { default: 'none' }),
    health_port: param.port('port the checks connect to', { default: 80 }),
    health_path: param.string('path of the HTTP check', { default: '/' }),
    health_interval: param.duration('time between two checks of a backend', { default: 2e9 }),
    health_timeout: param.duration('how long a check waits for an answer', { default: 1e9 }),
    health_failures: param.int('checks in a row that drain a backend (failed) or give its weight back (passed)', 1, 100, { default: 3 }),
  },
  invalid: mistakes,
  state: {
    table: state.data({
      doc: 'VIPs, backends and per bucket the current and previous backend, generation and time of the last change',
      shared: true,
      layout: (p) => [p.vips, p.max_backends, p.table_size],
      size: tableBytes,
      init: (p, view) => initTable(p, view),
    }),
    counters: state.data({
      doc: 'per shard, packets and bytes per VIP and per backend',
      size: (p) => ROWS + MAX_SHARDS * rowBytes(p),
      init: (_, view) => new Uint8Array(view.buffer, view.byteOffset, view.byteLength).fill(0),
    }),
    counter_row: state.address("address of this shard's row of counters"),
    encapsulated: state.counter('packets encapsulated to a backend'),
    other: state.counter('packets not for a VIP (output 1)'),
    fragments: state.counter('fragments for a VIP (hashed by source address)'),
    icmp_errors: state.counter('ICMP errors about a VIP connection (sent to its backend)'),
    malformed: state.counter('packets to a VIP with truncated headers or a bad IPv4 header (dropped)'),
    no_backend: state.counter('packets to a VIP whose bucket has no backend: every weight is 0 (dropped)'),
    no_headroom: state.counter('packets without the 36 bytes of headroom the outer header needs (dropped)'),
  },
  handlers: {
    backends: {
      doc: 'the backends now: name, address, weight, buckets, packets and bytes sent to each (bytes as sent: the 36-byte outer header included; since this pipeline started: a reload or a restored snapshot starts them at 0)',
      read: (view) => {
        const table = liveTable(view);
        const live = table.backends();
        const buckets = new Map<number, number>();
        for (let i = 0; i < table.size; i++) {
          const current = table.bucket(i).current;
          buckets.set(current, (buckets.get(current) ?? 0) + 1);
        }
        const vips = (view.params.vips as Vip[]).length;
        return [...live].map(([slot, b]) => ({ name: b.name, address: formatIPv4(b.address), weight: b.weight, buckets: buckets.get(slot) ?? 0, ...rowSums(view, vips + slot, 1)[0] }));
      },
    },
    vips: {
      doc: 'packets and bytes sent to each VIP (bytes as sent: the 36-byte outer header included; since this pipeline started: a reload or a restored snapshot starts them at 0)',
      read: (view) => {
        const vips = view.params.vips as Vip[];
        return rowSums(view, 0, vips.length).map((c, i) => ({ vip: formatVip(vips[i]), ...c }));
      },
    },
    buckets: {
      doc: 'the table: size, generation and buckets moved by the last change; with an argument N, bucket N (current and previous backend, generation, time of change)',
      counter: false,
      read: (view, arg) => {
        const table = liveTable(view);
        if (arg === undefined) return { size: table.size, generation: table.generation, moved_last_change: table.lastMoved };
        // Digits only: Number reads ' ' as 0 and 1e1 as 10.
        const index = /^\d+$/.test(arg) ? Number(arg) : NaN;
        if (!Number.isInteger(index) || index < 0 || index >= table.size) throw new Error(`bucket ${JSON.stringify(arg)} is not a number from 0 to ${table.size - 1}`);
        const b = table.describe(index);
        return { bucket: index, ...b, changed_ns: String(b.changed_ns) };
      },
    },
    add_backend: {
      doc: "adds a backend: 'NAME ADDRESS [WEIGHT]'",
      write: (view, value) => change(view, (list) => [...list, parseBackend(value)]),
    },
    remove_backend: {
      doc: "removes a backend: 'NAME' (its buckets remember it as their previous backend)",
      write: (view, value) => change(view, (list) => {
        const target = named(list, words(value, 'NAME')[0]);
        return list.filter((b) => b !== target);
      }),
    },
    set_weight: {
      doc: "changes a backend's weight: 'NAME WEIGHT'",
      write: (view, value) => change(view, (list) => {
        const [name, weight] = words(value, 'NAME WEIGHT');
        const target = named(list, name);
        const w = parseWeight(weight);
        return list.map((b) => (b === target ? { ...b, weight: w, drainedFrom: undefined } : b));
      }),
    },
    drain: {
      doc: "drains a backend (weight 0): 'NAME'",
      write: (view, value) => change(view, (list) => {
        const target = named(list, words(value, 'NAME')[0]);
        return list.map((b) => (b === target ? { ...b, weight: 0, drainedFrom: undefined } : b));
      }),
    },
    health: {
      doc: 'per backend, the checks passed (positive) or failed (negative) in a row (since this pipeline started), whether the checks drained it, and why its last check failed',
      counter: false,
      read: (view) => healthReport(healthOf(view), [...liveTable(view).backends().values()]),
    },
    reset: {
      doc: 'zeroes the counters, per VIP and per backend too',
      write: (view) => {
        view.reset();
        const counters = view.data('counters');
        new Uint8Array(counters.buffer, counters.byteOffset + ROWS, counters.byteLength - ROWS).fill(0);
      },
    },
  },
  periodic: {
    everyMs: 100,
    run: (view, call) => {
      // The pipeline ends, or a reload carries the table on: probes still out then change nothing here.
      if (call !== 'due') {
        healthOf(view).backends.clear();
        if (view.next) sayBackendsKept(view, view.next.params.backends);
        return;
      }
      liveTable(view); // the running backends go into a table laid out anew before the first packet
      const setWeight: SetWeight = (name, weight, drainedFrom) => change(view, (list) => list.map((b) => (b.name === name ? { ...b, weight, drainedFrom } : b)));
      const backends = () => [...liveTable(view).backends().values()];
      if (view.params.health_check === 'none') endHealthChecks(view, healthOf(view), backends(), setWeight);
      else checkHealth(view, healthOf(view), backends, setWeight);
    },
  },
  example: "lb: { type: LoadBalancer, vips: ['198.18.100.1 tcp 80'], source: 198.18.0.0/24,\n"
    + "      backends: ['web1 198.18.1.11', 'web2 198.18.1.12', 'web3 198.18.1.13 2'] }\n"
    + '# connections: src -> lb -> out; lb[1] -> local   # control: wirepath ctl write lb.drain web2',
});
