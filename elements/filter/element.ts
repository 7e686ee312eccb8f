import { defineElement, param, state, ParamTypeError, type ParamType } from '../../engine/api.ts';
import { MAX_SHARDS } from '../../engine/config.ts';
import { parseRule, programState, programText, reachabilityWarnings, compileErrors, rulesAsCode, type Rule } from '../classifier/rules.ts';

interface FilterRule extends Rule {
  /** 'allow' (output 0), 'deny' (dropped), or an output number. */
  action: 'allow' | 'deny' | number;
}

/** Outputs a Filter may have (0 and the numbered ones), as many as a Tee. */
const MOST_OUTPUTS = 64;

const ACTION = /^\s*(allow|deny|drop|\d+)(\s+|$)/i;

const ruleType: ParamType<FilterRule> = {
  description: 'a rule: allow, deny or an output number, then a filter expression',
  parse: (raw) => {
    const m = typeof raw === 'string' ? ACTION.exec(raw) : null;
    if (!m) throw new ParamTypeError(`${JSON.stringify(raw)} does not start with allow, deny or an output number`, "write e.g. 'allow tcp dst port 80' or '2 udp'", { offset: 0 });
    const word = m[1].toLowerCase();
    const action = word === 'allow' ? 'allow' : word === 'deny' || word === 'drop' ? 'deny' : Number(word);
    if (action === 0) throw new ParamTypeError('output 0 is what allow sends to', "write 'allow ...'", { offset: m.index });
    if (typeof action === 'number' && action >= MOST_OUTPUTS) {
      throw new ParamTypeError(`output ${m[1]} is more than a Filter has`, `number outputs from 1 to ${MOST_OUTPUTS - 1}`, { offset: m.index });
    }
    return { ...parseRule((raw as string).slice(m[0].length), m[0].length), action };
  },
  format: (r) => `${r.action} ${r.text}`,
};

/** Encoded actions in config data: an output number, or DENY. */
const DENY = 0xffffffff;
/** Per-rule hit counters: one row per shard index (no two running shards write one counter). */
const hitRows = new WeakMap<object, { view: DataView; rules: number }>();
/** rule_table: [rule count u32][unused u32][action u32 per rule], then from 8-byte alignment the hit rows. */
const ACTIONS = 8;
const rowsOffset = (rules: number) => Math.ceil((ACTIONS + 4 * rules) / 8) * 8;

export default defineElement({
  type: 'Filter',
  summary: 'lets packets through, drops them or sends them to an output by ordered allow/deny rules; optionally stateful',
  description: 'Each rule is `allow EXPR`, `deny EXPR` (or `drop EXPR`) or `N EXPR`; the first rule whose expression matches '
    + 'decides: allow sends the packet to output 0, deny drops it, N sends it to output N, which must be connected (an output no rule names may stay open). A packet no rule matches gets the '
    + 'default policy. Expressions are those of Classifier (tcpdump and Click IPClassifier spellings, tcpdump semantics), '
    + 'all rules compiled into one decision program; hits counts the packets each rule decided. With stateful: true the '
    + 'filter keeps a connection table: a packet that an allow rule lets through and that opens a connection (a TCP SYN, '
    + 'a UDP datagram, an ICMP echo request) creates an entry, and later packets of that connection pass in both '
    + 'directions without consulting the rules, so replies pass while a reply-looking packet without a connection meets '
    + 'the rules like any other; an ICMP error about a tracked connection (fragmentation needed, unreachable) passes too, and opens none. TCP entries follow the handshake (SYN, SYN-ACK, ACK), the established state and closing '
    + '(after a FIN), each with its own timeout; a RST ends the entry, and so does a SYN on a closing connection, which then '
    + 'meets the rules as a new connection on the same ports; a packet that does not fit the state (data from the '
    + 'responder before its SYN-ACK, a SYN after the handshake) is dropped and counted in invalid. UDP and ICMP entries live until idle for their '
    + 'timeout. Each shard\'s table holds at most capacity connections and never evicts a live one: when it is full, a new connection '
    + 'is dropped (when_full: deny) or passed untracked (when_full: allow), and counted in table_full. Timeouts run on the '
    + 'pipeline clock (trace time on files). Only IPv4 connections are tracked; a later fragment, which has no ports, meets the rules.',
  inputs: 1,
  outputs: (params) => {
    const numbered = ((params.rules as FilterRule[] | undefined) ?? []).map((r) => (typeof r.action === 'number' ? r.action : 0));
    return Array.from({ length: Math.max(0, ...numbered) + 1 }, (_, n) => n === 0
      ? { name: 'allowed', doc: 'packets an allow rule (or the allow default) lets through, and packets of tracked connections' }
      // An output a rule names must be connected, as a Classifier's (its packets would be dropped unseen); one between them need not.
      : { name: `${n}`, doc: `packets of the rules that name output ${n}`, optional: !numbered.includes(n) });
  },
  params: {
    rules: param.strings('the rules, in order: allow EXPR, deny EXPR or N EXPR', { required: true, item: ruleType }),
    default: param.enum('what happens to a packet no rule matches', ['deny', 'allow'], { default: 'deny' }),
    stateful: param.bool('track the connections allowed packets open, and let their packets through both ways', { default: false }),
    capacity: param.int('most connections tracked at once by each shard (with stateful)', 1, 1 << 24, { default: 65536 }),
    when_full: param.enum('what happens to a new connection the full table cannot take', ['deny', 'allow'], { default: 'deny' }),
    tcp_handshake: param.duration('timeout of a TCP connection during its handshake', { default: 30e9 }),
    tcp_established: param.duration('idle timeout of an established TCP connection', { default: 3600e9 }),
    tcp_closing: param.duration('timeout of a TCP connection after a FIN', { default: 30e9 }),
    udp_timeout: param.duration('idle timeout of a UDP flow', { default: 60e9 }),
    icmp_timeout: param.duration('idle timeout of an ICMP echo exchange', { default: 30e9 }),
  },
  state: {
    program: programState((p) => p.rules),
    rule_table: state.data({
      doc: "each rule's action, then per shard a row of per-rule hit counters",
      size: (p) => rowsOffset(p.rules.length) + MAX_SHARDS * 8 * p.rules.length,
      init: (p, view) => {
        view.setUint32(0, p.rules.length, true);
        (p.rules as FilterRule[]).forEach((r, i) => view.setUint32(ACTIONS + 4 * i, r.action === 'allow' ? 0 : r.action === 'deny' ? DENY : r.action, true));
        hitRows.set(p, { view, rules: p.rules.length });
      },
    }),
    hit_row: state.address("address of this shard's row of hit counters"),
    connections: state.flowTable({
      doc: 'tracked connections (with stateful)',
      value: { orig_src: 'u32', orig_port: 'u16', state: 'u8' },
      capacity: (p) => (p.stateful ? p.capacity : 1),
      timeout: (p) => p.udp_timeout,
      used: (p) => p.stateful,
    }),
    allowed: state.counter('packets allowed by a rule or the default (output 0)'),
    denied: state.counter('packets dropped by a deny rule or the default'),
    tracked: state.counter('packets passed as part of a tracked connection'),
    invalid: state.counter('packets of a tracked TCP connection that did not fit its state (dropped)'),
    table_full: state.counter('new connections the full table could not take'),
  },
  handlers: {
    hits: {
      doc: 'packets each rule decided, in rule order, since this pipeline started (a reload or a restored snapshot starts them at 0)',
      read: (view) => {
        const table = hitRows.get(view.params);
        if (!table) return [];
        const base = rowsOffset(table.rules);
        return Array.from({ length: table.rules }, (_, rule) => {
          let sum = 0n;
          for (let row = 0; row < MAX_SHARDS; row++) sum += table.view.getBigUint64(base + 8 * (row * table.rules + rule), true);
          return Number(sum);
        });
      },
    },
    reset: {
      doc: 'zeroes the counters and the hits',
      write: (view) => {
        view.reset();
        const table = hitRows.get(view.params);
        if (table) for (let at = rowsOffset(table.rules); at < table.view.byteLength; at += 8) table.view.setBigUint64(at, 0n, true);
      },
    },
    program: {
      doc: 'the compiled decision program, one node per line',
      counter: false,
      read: (view) => programText(view.params.rules as FilterRule[], (n) => `rule ${n + 1}`),
    },
  },
  specialize: rulesAsCode((p) => p.rules, { stateClass: 'FilterState', programModule: '../classifier/program' }),
  invalid: (params) => compileErrors('rules', params.rules, 'rule'),
  warnings: (params) => reachabilityWarnings('rules', params.rules, 'rule', 1),
  example: "fw: { type: Filter, stateful: true, rules: ['allow tcp dst port 80 or 443', 'allow udp dst port 53', 'deny -'] }\n"
    + '# connections: src -> fw -> out',
});
