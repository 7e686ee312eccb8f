// Lowers the syntax tree to what libpcap would test: boolean formulas over atoms, each atom one
// masked compare of 1, 2 or 4 bytes at an offset of the frame (or of the IPv4 transport header, or
// the wire length). The order of the formula is libpcap's order of evaluation, which matters because,
// as in BPF, a read past the captured bytes ends the evaluation with "no match".

import { ExpressionError, type Direction, type Expr, type FieldRef } from './expression.ts';

/** Where a field is read: at a fixed frame offset, behind the IPv4 header (whose length varies), or the wire length. */
export type Base = 'frame' | 'transport' | 'wire';

export interface Field {
  base: Base;
  /** Bytes from the frame start ('frame'), or from the transport header start ('transport'). */
  offset: number;
  size: 1 | 2 | 4;
  /** For 'transport': where the IPv4 header starts (its first byte gives the header length). */
  l3: number;
}

export type Compare = 'eq' | 'gt' | 'ge';

export interface Atom {
  id: number;
  field: Field;
  /** The field's identity, for facts about it: same key, same bytes. */
  fieldKey: string;
  mask: number;
  compare: Compare;
  value: number;
}

/** A formula; `fault` is the result of a read past the captured bytes, which propagates (as BPF's "return 0"). */
export type Formula =
  | { id: number; kind: 'true' | 'false' | 'fault' }
  | { id: number; kind: 'atom'; atom: Atom }
  | { id: number; kind: 'not'; arg: Formula }
  | { id: number; kind: 'and' | 'or'; left: Formula; right: Formula };

/** Hash-consed formulas: structurally equal formulas are the same object, so their ids can key memo tables. */
export class Formulas {
  private readonly table = new Map<string, Formula>();
  private readonly atoms = new Map<string, Atom>();
  readonly TRUE = this.intern('true', () => ({ kind: 'true' }));
  readonly FALSE = this.intern('false', () => ({ kind: 'false' }));
  readonly FAULT = this.intern('fault', () => ({ kind: 'fault' }));

  private intern(key: string, make: () => Omit<Formula, 'id'>): Formula {
    let f = this.table.get(key);
    if (!f) {
      f = { ...make(), id: this.table.size } as Formula;
      this.table.set(key, f);
    }
    return f;
  }

  atom(field: Field, mask: number, compare: Compare, value: number): Formula {
    const sizeMask = field.size === 4 ? 0xffffffff : (1 << (8 * field.size)) - 1;
    mask = (mask & sizeMask) >>> 0;
    // Nothing of the field is compared: libpcap's optimizer drops the read too, so it cannot fall short.
    if (mask === 0) return (compare === 'eq' ? value === 0 : compare === 'ge' ? value === 0 : false) ? this.TRUE : this.FALSE;
    // No frame reaches past 64 KiB (nor does a node's u16 offset): such a read falls short in every packet.
    if (field.base !== 'wire' && field.offset + field.size > 0x10000) return this.FAULT;
    const fieldKey = `${field.base}:${field.offset}:${field.size}:${field.l3}`;
    const key = `${fieldKey}/${mask}/${compare}/${value >>> 0}`;
    let atom = this.atoms.get(key);
    if (!atom) {
      atom = { id: this.atoms.size, field, fieldKey, mask, compare, value: value >>> 0 };
      this.atoms.set(key, atom);
    }
    const a = atom;
    return this.intern(`a${a.id}`, () => ({ kind: 'atom', atom: a }));
  }

  not(arg: Formula): Formula {
    if (arg.kind === 'true') return this.FALSE;
    if (arg.kind === 'false') return this.TRUE;
    if (arg.kind === 'fault') return arg;
    if (arg.kind === 'not') return arg.arg;
    return this.intern(`!${arg.id}`, () => ({ kind: 'not', arg }));
  }

  /** Short-circuit and: the right side is evaluated only when the left is true. */
  and(left: Formula, right: Formula): Formula {
    if (left.kind === 'false' || left.kind === 'fault') return left;
    if (left.kind === 'true') return right;
    if (right.kind === 'true') return left;
    return this.intern(`&${left.id},${right.id}`, () => ({ kind: 'and', left, right }));
  }

  or(left: Formula, right: Formula): Formula {
    if (left.kind === 'true' || left.kind === 'fault') return left;
    if (left.kind === 'false') return right;
    if (right.kind === 'false') return left;
    return this.intern(`|${left.id},${right.id}`, () => ({ kind: 'or', left, right }));
  }

  all(...fs: Formula[]): Formula { return fs.reduceRight((acc, f) => this.and(f, acc), this.TRUE); }
  any(...fs: Formula[]): Formula { return fs.reduceRight((acc, f) => this.or(f, acc)); }
}

const ETHERTYPE = { ip: 0x0800, ip6: 0x86dd, arp: 0x0806, rarp: 0x8035 } as const;
const VLAN_TPIDS = [0x8100, 0x88a8, 0x9100];
const IPPROTO = { tcp: 6, udp: 17, sctp: 132, icmp: 1, icmp6: 58, fragment: 44 } as const;

/** Lowers one expression into `f`'s formulas. */
export function lower(expr: Expr, f: Formulas): Formula {
  const frame = (offset: number, size: 1 | 2 | 4): Field => ({ base: 'frame', offset, size, l3: 0 });
  const eq = (field: Field, value: number, mask = 0xffffffff) => f.atom(field, mask, 'eq', value);

  // Offsets after `vlans` VLAN tags: libpcap moves everything after a `vlan` keyword by 4 bytes.
  const at = (vlans: number) => {
    const l3 = 14 + 4 * vlans;
    const etherType = (type: number) => eq(frame(l3 - 2, 2), type);
    const ipv4 = etherType(ETHERTYPE.ip);
    const ipv6 = etherType(ETHERTYPE.ip6);
    const ipProto = (n: number) => f.and(ipv4, eq(frame(l3 + 9, 1), n));
    // libpcap also looks behind one IPv6 fragment header.
    const ip6Proto = (n: number) => f.and(ipv6, f.or(eq(frame(l3 + 6, 1), n), f.and(eq(frame(l3 + 6, 1), IPPROTO.fragment), eq(frame(l3 + 40, 1), n))));
    const firstFragment = eq(frame(l3 + 6, 2), 0, 0x1fff);
    const transport = (offset: number, size: 1 | 2 | 4): Field => ({ base: 'transport', offset, size, l3 });
    const protocol = (name: string, col: number): Formula => {
      switch (name) {
        case 'ip': return ipv4;
        case 'ip6': return ipv6;
        case 'arp': case 'rarp': return etherType(ETHERTYPE[name]);
        case 'tcp': case 'udp': case 'sctp': return f.or(ipProto(IPPROTO[name]), ip6Proto(IPPROTO[name]));
        case 'icmp': return ipProto(IPPROTO.icmp);
        case 'icmp6': return ip6Proto(IPPROTO.icmp6);
        default: throw new ExpressionError(`'${name}' alone is not a filter`, col, `qualify something with it, e.g. ${name}[0] & 1 != 0`);
      }
    };
    return { l3, etherType, ipv4, ipv6, ipProto, ip6Proto, firstFragment, transport, protocol };
  };

  const directed = (dir: Direction, src: () => Formula, dst: () => Formula): Formula =>
    dir === 'src' ? src() : dir === 'dst' ? dst() : dir === 'src or dst' ? f.or(src(), dst()) : f.and(src(), dst());

  const range = (field: Field, low: number, high: number): Formula =>
    low === high ? eq(field, low) : f.and(f.atom(field, 0xffffffff, 'ge', low), f.not(f.atom(field, 0xffffffff, 'gt', high)));

  const relation = (ref: FieldRef, mask: number, op: string, value: number, vlans: number, col: number): Formula => {
    const c = at(vlans);
    let guard: Formula = f.TRUE;
    let field: Field;
    switch (ref.protocol) {
      case 'len': field = { base: 'wire', offset: 0, size: 4, l3: 0 }; break;
      case 'ether': field = frame(ref.offset, ref.size); break;
      case 'ip': case 'ip6': case 'arp': case 'rarp': guard = c.protocol(ref.protocol, col); field = frame(c.l3 + ref.offset, ref.size); break;
      case 'tcp': case 'udp': case 'sctp': case 'icmp':
        // libpcap's gen_load: IPv4, the protocol, a first fragment, then the byte behind the IPv4 header.
        guard = f.and(c.ipv4, f.and(c.protocol(ref.protocol, col), c.firstFragment));
        field = c.transport(ref.offset, ref.size);
        break;
      case 'icmp6':
        // libpcap: IPv6 whose next header is ICMPv6, the byte behind the fixed header (no extension headers walked).
        guard = f.and(c.ipv6, eq(frame(c.l3 + 6, 1), IPPROTO.icmp6));
        field = frame(c.l3 + 40 + ref.offset, ref.size);
        break;
      default: throw new ExpressionError(`${ref.protocol}[...] is not supported`, col, 'byte expressions read ether, ip, ip6, arp, tcp, udp, sctp or icmp');
    }
    const test = op === '=' ? eq(field, value, mask) : op === '!=' ? f.not(eq(field, value, mask))
      : op === '>' ? f.atom(field, mask, 'gt', value) : op === '>=' ? f.atom(field, mask, 'ge', value)
      : op === '<' ? f.not(f.atom(field, mask, 'ge', value)) : f.not(f.atom(field, mask, 'gt', value));
    return f.and(guard, test);
  };

  // A run of one operator ('host a or host b or ...', left-nested as parsed) becomes a balanced tree of the same
  // order of evaluation, so that the formula is as deep as the log of its length, not the length.
  const chain = (e: Expr & { kind: 'and' | 'or' }): Formula => {
    const operands: Expr[] = [];
    let at: Expr = e;
    for (; at.kind === e.kind; at = at.left) operands.push(at.right);
    operands.push(at);
    const lowered = operands.reverse().map(walk);
    const join = e.kind === 'and' ? f.and.bind(f) : f.or.bind(f);
    const balanced = (from: number, to: number): Formula =>
      to - from === 1 ? lowered[from] : join(balanced(from, (from + to) >> 1), balanced((from + to) >> 1, to));
    return balanced(0, lowered.length);
  };

  const walk = (e: Expr): Formula => {
    switch (e.kind) {
      case 'and': case 'or': return chain(e);
      case 'not': return f.not(walk(e.arg));
      case 'const': return e.value ? f.TRUE : f.FALSE;
      case 'protocol': return at(e.vlans).protocol(e.protocol, e.col);
      case 'ethertype': return at(e.vlans).etherType(e.number);
      case 'ip-proto': {
        const c = at(e.vlans);
        return e.family === 'ip' ? c.ipProto(e.number) : e.family === 'ip6' ? c.ip6Proto(e.number) : f.or(c.ipProto(e.number), c.ip6Proto(e.number));
      }
      case 'vlan': {
        const tpid = frame(12 + 4 * e.vlans, 2);
        const tagged = f.any(...VLAN_TPIDS.map((t) => eq(tpid, t)));
        return e.id === undefined ? tagged : f.and(tagged, eq(frame(14 + 4 * e.vlans, 2), e.id, 0x0fff));
      }
      case 'address': {
        const c = at(e.vlans);
        const test = (src: number, dst: number) => directed(e.dir, () => eq(frame(src, 4), e.address, e.mask), () => eq(frame(dst, 4), e.address, e.mask));
        const ip = () => f.and(c.ipv4, test(c.l3 + 12, c.l3 + 16));
        // ARP and RARP carry the sender's and the target's address at 14 and 24.
        const arp = (type: 'arp' | 'rarp') => f.and(c.etherType(ETHERTYPE[type]), test(c.l3 + 14, c.l3 + 24));
        return e.family === 'ip' ? ip() : e.family === 'any' ? f.any(ip(), arp('arp'), arp('rarp')) : arp(e.family);
      }
      case 'address6': {
        const c = at(e.vlans);
        // Each 32-bit word of the address that the prefix covers, at its offset in the IPv6 header.
        const test = (offset: number) => f.all(...e.words.flatMap((w, i) => (e.masks[i] ? [eq(frame(offset + 4 * i, 4), w, e.masks[i])] : [])));
        return f.and(c.ipv6, directed(e.dir, () => test(c.l3 + 8), () => test(c.l3 + 24)));
      }
      case 'port': {
        const c = at(e.vlans);
        const protocols = e.protocol === 'any' ? [IPPROTO.sctp, IPPROTO.tcp, IPPROTO.udp] : [IPPROTO[e.protocol]];
        const ports = (src: Field, dst: Field) => directed(e.dir, () => range(src, e.low, e.high), () => range(dst, e.low, e.high));
        const v4 = f.all(c.ipv4, f.any(...protocols.map((p) => eq(frame(c.l3 + 9, 1), p))), c.firstFragment,
          ports(c.transport(0, 2), c.transport(2, 2)));
        const v6 = f.all(c.ipv6, f.any(...protocols.map((p) => eq(frame(c.l3 + 6, 1), p))), ports(frame(c.l3 + 40, 2), frame(c.l3 + 42, 2)));
        const matches = f.or(v4, v6);
        if (!e.negated) return matches;
        // Click: `tcp port != 22` is `tcp and not tcp port 22`; it does not match other protocols.
        const carried = f.any(...protocols.map((p) => f.or(c.ipProto(p), c.ip6Proto(p))));
        return f.and(carried, f.not(matches));
      }
      case 'relation': return relation(e.field, e.mask, e.op, e.value, e.vlans, e.col);
    }
  };
  return walk(expr);
}
