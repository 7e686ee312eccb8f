// The filter expression language: libpcap's (tcpdump) spellings and Click IPClassifier's, parsed into
// one syntax tree. Every node keeps the column of its first character so that errors and warnings
// point into the expression (and, through the config, at FILE:LINE:COL).

export type Direction = 'src' | 'dst' | 'src or dst' | 'src and dst';
export type Protocol = 'ip' | 'ip6' | 'tcp' | 'udp' | 'icmp' | 'icmp6' | 'sctp' | 'arp' | 'rarp' | 'ether';
export type Relation = '=' | '!=' | '<' | '<=' | '>' | '>=';

/** A slice of the packet a relation reads: `tcp[13]`, `ip[2:2]`, or the frame's length on the wire. */
export interface FieldRef {
  protocol: Protocol | 'len';
  offset: number;
  size: 1 | 2 | 4;
}

/** Every primitive records how many `vlan` keywords came before it: libpcap shifts what follows by 4 bytes each. */
interface At { col: number; vlans: number }

export type Expr =
  | { kind: 'and' | 'or'; left: Expr; right: Expr; col: number }
  | { kind: 'not'; arg: Expr; col: number }
  | { kind: 'const'; value: boolean; col: number }
  | ({ kind: 'protocol'; protocol: Protocol } & At)
  | ({ kind: 'ip-proto'; family: 'ip' | 'ip6' | 'any'; number: number } & At)
  | ({ kind: 'ethertype'; number: number } & At)
  | ({ kind: 'address'; family: 'ip' | 'arp' | 'rarp' | 'any'; dir: Direction; address: number; mask: number } & At)
  /** An IPv6 host or net: the address and its mask as four 32-bit words each. */
  | ({ kind: 'address6'; dir: Direction; words: number[]; masks: number[] } & At)
  | ({ kind: 'port'; protocol: 'tcp' | 'udp' | 'sctp' | 'any'; dir: Direction; low: number; high: number; negated: boolean } & At)
  | ({ kind: 'vlan'; id?: number } & At)
  | ({ kind: 'relation'; field: FieldRef; mask: number; op: Relation; value: number } & At);

export class ExpressionError extends Error {
  constructor(message: string, readonly col: number, readonly hint?: string) {
    super(message);
    this.name = 'ExpressionError';
  }
}

interface Token { kind: 'word' | 'number' | 'mac' | 'ip6' | 'op' | 'end'; text: string; col: number }

const OPERATORS = ['&&', '||', '==', '!=', '<=', '>=', '<<', '>>', '&', '|', '!', '=', '<', '>', '(', ')', '[', ']', ':', '-', '+', '*', '/'];
/** A word; libpcap writes a keyword used as a name with a backslash (`ip proto \tcp`, `ether proto \arp`). */
const WORD = /\\?[A-Za-z_][A-Za-z0-9_-]*/y;
/** An Ethernet address as libpcap writes it: six hex bytes separated by colons or hyphens, or three dotted groups of four. */
const MAC = /(?:[0-9A-Fa-f]{1,2}(?::[0-9A-Fa-f]{1,2}){5}|[0-9A-Fa-f]{1,2}(?:-[0-9A-Fa-f]{1,2}){5}|[0-9A-Fa-f]{4}(?:\.[0-9A-Fa-f]{4}){2})(?![\w:.-])/y;
/** An IPv6 address (with `::`, or eight groups), with or without a prefix length; parseIPv6 checks the rest. */
const IP6 = /(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:\/\d+)?(?![\w:.])/y;
const NUMBER = /0[xX][0-9a-fA-F]+|\d+(?:\.\d+)*(?:\/\d+)?(?:-\d+)?/y;

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let at = 0;
  while (at < text.length) {
    if (/\s/.test(text[at])) { at++; continue; }
    let m: RegExpExecArray | null;
    WORD.lastIndex = at;
    NUMBER.lastIndex = at;
    MAC.lastIndex = at;
    IP6.lastIndex = at;
    if ((m = MAC.exec(text))) tokens.push({ kind: 'mac', text: m[0], col: at });
    else if ((m = IP6.exec(text)) && (m[0].includes('::') || m[0].split(':').length === 8)) tokens.push({ kind: 'ip6', text: m[0], col: at });
    else if ((m = WORD.exec(text))) tokens.push({ kind: 'word', text: m[0], col: at });
    else if ((m = NUMBER.exec(text))) tokens.push({ kind: 'number', text: m[0], col: at });
    else {
      const op = OPERATORS.find((o) => text.startsWith(o, at));
      if (!op) throw new ExpressionError(`unexpected character '${text[at]}'`, at, 'expressions use words, numbers, addresses and the operators ( ) [ ] : & | ! = < >');
      tokens.push({ kind: 'op', text: op, col: at });
      at += op.length;
      continue;
    }
    at += m[0].length;
  }
  tokens.push({ kind: 'end', text: '', col: text.length });
  return tokens;
}

export const PORT_NAMES: Record<string, number> = {
  'ftp-data': 20, ftp: 21, ssh: 22, telnet: 23, smtp: 25, domain: 53, dns: 53, bootps: 67, bootpc: 68, tftp: 69,
  http: 80, www: 80, pop3: 110, ntp: 123, imap: 143, snmp: 161, ldap: 389, https: 443, syslog: 514,
};
const PROTOCOL_NUMBERS: Record<string, number> = { icmp: 1, igmp: 2, tcp: 6, udp: 17, icmp6: 58, sctp: 132 };
const ETHERTYPE_NUMBERS: Record<string, number> = { ip: 0x0800, ip6: 0x86dd, arp: 0x0806, rarp: 0x8035 };
/** libpcap's named offsets and values for byte expressions. */
const NAMED_CONSTANTS: Record<string, number> = {
  tcpflags: 13, 'tcp-fin': 0x01, 'tcp-syn': 0x02, 'tcp-rst': 0x04, 'tcp-push': 0x08, 'tcp-ack': 0x10, 'tcp-urg': 0x20,
  'tcp-ece': 0x40, 'tcp-cwr': 0x80, icmptype: 0, icmpcode: 1, 'icmp-echoreply': 0, 'icmp-unreach': 3, 'icmp-sourcequench': 4,
  'icmp-redirect': 5, 'icmp-echo': 8, 'icmp-routeradvert': 9, 'icmp-routersolicit': 10, 'icmp-timxceed': 11, 'icmp-paramprob': 12,
  'icmp-tstamp': 13, 'icmp-tstampreply': 14, 'icmp-ireq': 15, 'icmp-ireqreply': 16, 'icmp-maskreq': 17, 'icmp-maskreply': 18,
  icmp6type: 0, icmp6code: 1, 'icmp6-destinationunreach': 1, 'icmp6-packettoobig': 2, 'icmp6-timeexceeded': 3, 'icmp6-parameterproblem': 4,
  'icmp6-echo': 128, 'icmp6-echoreply': 129, 'icmp6-multicastlistenerquery': 130, 'icmp6-multicastlistenerreportv1': 131,
  'icmp6-multicastlistenerdone': 132, 'icmp6-routersolicit': 133, 'icmp6-routeradvert': 134, 'icmp6-neighborsolicit': 135,
  'icmp6-neighboradvert': 136, 'icmp6-redirect': 137,
};
/** Click's TCP flag words (`syn`, `tcp opt ack`). */
const TCP_FLAGS: Record<string, number> = { fin: 0x01, syn: 0x02, rst: 0x04, psh: 0x08, ack: 0x10, urg: 0x20 };
/** Click's IP header fields (`ip ttl < 10`): offset and size in the IPv4 header. */
const IP_FIELDS: Record<string, { offset: number; size: 1 | 2 | 4 }> = { tos: { offset: 1, size: 1 }, id: { offset: 4, size: 2 }, ttl: { offset: 8, size: 1 } };
const PROTOCOLS = new Set<string>(['ip', 'ip6', 'tcp', 'udp', 'icmp', 'icmp6', 'sctp', 'arp', 'rarp', 'ether']);
const RELATIONS = new Set<string>(['=', '==', '!=', '<', '<=', '>', '>=']);
const KEYWORDS = new Set([...PROTOCOLS, 'src', 'dst', 'host', 'net', 'port', 'portrange', 'and', 'or', 'not', 'vlan', 'proto', 'len',
  'less', 'greater', 'mask', 'true', 'false', 'any', 'all', 'opt', 'broadcast', 'multicast', ...Object.keys(TCP_FLAGS)]);

type AddressKind = 'host' | 'net' | 'port' | 'portrange' | 'proto';
interface Qualifiers { protocol?: Protocol; dir?: Direction; type?: AddressKind }

/** Arithmetic inside a relation, before it is reduced to FIELD & MASK OP VALUE. */
type Arith = { kind: 'const'; value: number; col: number } | { kind: 'field'; field: FieldRef; mask: number; col: number };

/** Parses `text`; columns named in messages count from `base` (where the expression starts in its rule). */
export function parseExpression(text: string, base = 0): Expr {
  return new Parser(text, base).parse();
}

class Parser {
  private tokens: Token[];
  private at = 0;
  private vlans = 0;
  /** The qualifiers of the last primitive with a value, for libpcap's and Click's elision: `port 80 or 81`. */
  private last?: Qualifiers;

  constructor(private readonly text: string, private readonly base: number) {
    this.tokens = tokenize(text);
  }

  parse(): Expr {
    if (this.peek().kind === 'end') throw new ExpressionError('the expression is empty', 0, "write a filter such as 'tcp dst port 80', or - to match everything");
    const expr = this.expression();
    const rest = this.peek();
    if (rest.kind !== 'end') {
      throw new ExpressionError(rest.text === ')' ? "unmatched ')'" : `unexpected '${rest.text}'`, rest.col,
        rest.text === ')' ? 'remove it or add the ( it closes' : "join primitives with 'and' or 'or'");
    }
    return expr;
  }

  private peek(ahead = 0): Token { return this.tokens[Math.min(this.at + ahead, this.tokens.length - 1)]; }
  private next(): Token { return this.tokens[Math.min(this.at++, this.tokens.length - 1)]; }
  private isWord(t: Token, ...words: string[]): boolean { return t.kind === 'word' && words.includes(t.text.toLowerCase()); }
  private isOp(t: Token, ...ops: string[]): boolean { return t.kind === 'op' && ops.includes(t.text); }

  private expect(op: string, what: string): Token {
    const t = this.next();
    if (!this.isOp(t, op)) throw new ExpressionError(`expected '${op}' ${what}, found ${describe(t)}`, t.col);
    return t;
  }

  /** libpcap: `and` and `or` have the same precedence and group from the left; `not` binds tightest. */
  private expression(): Expr {
    let left = this.unary();
    for (;;) {
      const t = this.peek();
      const op = this.isWord(t, 'and') || this.isOp(t, '&&') ? 'and' : this.isWord(t, 'or') || this.isOp(t, '||') ? 'or' : undefined;
      if (!op) return left;
      this.next();
      if (this.peek().kind === 'end') throw new ExpressionError(`'${t.text}' needs something after it`, t.col);
      left = { kind: op, left, right: this.unary(true), col: left.col };
    }
  }

  private unary(afterOperator = false): Expr {
    const t = this.peek();
    if (this.isWord(t, 'not') || this.isOp(t, '!')) {
      this.next();
      return { kind: 'not', arg: this.unary(afterOperator), col: t.col };
    }
    const relation = this.tryRelation();
    if (relation) return relation;
    if (this.isOp(t, '(')) {
      this.next();
      const inner = this.expression();
      this.expect(')', `to close the '(' at column ${this.base + t.col + 1}`);
      return inner;
    }
    return this.primitive(afterOperator);
  }

  // --- primitives -------------------------------------------------------------------------------

  private here(col: number): At { return { col, vlans: this.vlans }; }

  private primitive(afterOperator: boolean): Expr {
    const t = this.peek();
    if (t.kind === 'end') throw new ExpressionError('the expression ends too early', t.col);
    if (this.isOp(t, '-') || this.isWord(t, 'true', 'any', 'all')) { this.next(); return { kind: 'const', value: true, col: t.col }; }
    if (this.isWord(t, 'false')) { this.next(); return { kind: 'const', value: false, col: t.col }; }
    if (this.isWord(t, 'vlan')) return this.vlan();
    if (this.isWord(t, 'less', 'greater')) {
      this.next();
      const n = this.number('a length');
      return this.relation({ protocol: 'len', offset: 0, size: 4 }, 0xffffffff, t.text.toLowerCase() === 'less' ? '<=' : '>=', n, t.col);
    }
    if (t.kind === 'word' && TCP_FLAGS[t.text.toLowerCase()] !== undefined) {
      this.next();
      return this.tcpFlag(t);
    }
    if (this.isWord(t, 'proto')) {
      this.next();
      return this.proto({}, t.col);
    }
    if (t.kind === 'op' || (t.kind === 'word' && !KEYWORDS.has(t.text.toLowerCase()) && !PORT_NAMES[t.text.toLowerCase()])) {
      throw new ExpressionError(`unexpected ${describe(t)}`, t.col, t.kind === 'word' ? 'primitives start with ip, ip6, tcp, udp, icmp, src, dst, host, net, port, vlan, ...' : undefined);
    }
    if (t.kind === 'mac') {
      if (afterOperator && this.last?.protocol === 'ether') return this.value(this.last, t.col);
      throw new ExpressionError(`an Ethernet address needs 'ether host', 'ether src' or 'ether dst' before it`, t.col);
    }
    if (t.kind === 'number' || t.kind === 'ip6' || (t.kind === 'word' && PORT_NAMES[t.text.toLowerCase()] !== undefined && !KEYWORDS.has(t.text.toLowerCase()))) {
      // A bare value: the previous primitive's qualifiers (elision), else Click's shorthand.
      const q: Qualifiers = afterOperator && this.last ? this.last : {};
      return this.value(q, t.col);
    }
    return this.qualified(t.col);
  }

  private vlan(): Expr {
    const t = this.next();
    const node: Expr = { kind: 'vlan', ...this.here(t.col) };
    if (this.peek().kind === 'number') node.id = this.number('a VLAN ID', 4095);
    this.vlans++;
    return node;
  }

  private tcpFlag(word: Token): Expr {
    return this.relation({ protocol: 'tcp', offset: 13, size: 1 }, TCP_FLAGS[word.text.toLowerCase()], '!=', 0, word.col);
  }

  private relation(field: FieldRef, mask: number, op: Relation, value: number, col: number): Expr {
    return { kind: 'relation', field, mask: mask >>> 0, op, value: value >>> 0, ...this.here(col) };
  }

  /** Qualifiers in libpcap's order (`tcp dst port 80`) or Click's (`dst tcp port 80`), then what they qualify. */
  private qualified(col: number): Expr {
    const q: Qualifiers = {};
    for (;;) {
      const t = this.peek();
      const word = t.kind === 'word' ? t.text.toLowerCase() : '';
      if (PROTOCOLS.has(word) && !q.protocol && !q.type) {
        // `ip[...]` and friends are relations, tried before primitives; here a protocol is a qualifier.
        this.next();
        q.protocol = word as Protocol;
      } else if ((word === 'src' || word === 'dst') && !q.dir && !q.type) {
        this.next();
        q.dir = word;
        const joiner = this.peek(), other = this.peek(1);
        if (this.isWord(joiner, 'or', 'and') && this.isWord(other, word === 'src' ? 'dst' : 'src')) {
          this.next(); this.next();
          q.dir = `src ${joiner.text.toLowerCase()} dst` as Direction;
        }
      } else if (['host', 'net', 'port', 'portrange'].includes(word) && !q.type) {
        this.next();
        q.type = word as AddressKind;
      } else break;
    }
    const t = this.peek();
    if (this.isWord(t, 'broadcast', 'multicast') && !q.dir && !q.type) return this.castPrimitive(q.protocol ?? 'ether', col);
    if (q.type) return this.value(q, col);
    if (q.protocol && this.isWord(t, 'proto')) {
      if (q.protocol !== 'ip' && q.protocol !== 'ip6' && (q.protocol !== 'ether' || q.dir)) throw new ExpressionError(`'proto' follows ip or ip6, not ${q.protocol}`, t.col);
      this.next();
      return this.proto(q, col);
    }
    if (q.protocol === 'ip' && !q.dir && t.kind === 'word' && ['frag', 'unfrag', ...Object.keys(IP_FIELDS)].includes(t.text.toLowerCase())) {
      this.next();
      const word = t.text.toLowerCase();
      if (word === 'frag' || word === 'unfrag') return this.relation({ protocol: 'ip', offset: 6, size: 2 }, 0x3fff, word === 'frag' ? '!=' : '=', 0, col);
      return this.clickRelation(IP_FIELDS[word], 'ip', col);
    }
    if (q.protocol === 'tcp' && !q.dir && this.isWord(t, 'opt')) {
      this.next();
      const flag = this.next();
      if (flag.kind !== 'word' || TCP_FLAGS[flag.text.toLowerCase()] === undefined) {
        throw new ExpressionError(`'tcp opt' takes a flag, found ${describe(flag)}`, flag.col, `one of ${Object.keys(TCP_FLAGS).join(', ')}`);
      }
      return this.tcpFlag(flag);
    }
    if (q.protocol === 'icmp' && !q.dir && this.isWord(t, 'type')) {
      this.next();
      return this.clickRelation({ offset: 0, size: 1 }, 'icmp', col);
    }
    if (q.dir && (t.kind === 'number' || t.kind === 'mac' || t.kind === 'ip6' || (t.kind === 'word' && !KEYWORDS.has(t.text.toLowerCase())))) return this.value(q, col);
    // As libpcap ('link layer applied in wrong context'): ether qualifies a host, proto, broadcast or multicast.
    if (q.protocol === 'ether' && !q.dir) throw new ExpressionError(`'ether' alone is not a filter`, col, 'qualify something with it, e.g. ether proto 0x0800 or ether host 02:00:00:00:00:01');
    if (q.protocol && !q.dir) return { kind: 'protocol', protocol: q.protocol, ...this.here(col) };
    throw new ExpressionError(`${describe(t)} cannot follow ${q.dir ?? q.protocol}`, t.col, q.dir ? 'write e.g. src host 100.64.0.1, dst net 198.18.0.0/15 or src port 53' : undefined);
  }

  /**
   * `broadcast`, `multicast` (Ethernet's, as libpcap's bare words), `ether broadcast`, `ip broadcast`, `ip multicast`,
   * `ip6 multicast`.
   */
  private castPrimitive(protocol: Protocol, col: number): Expr {
    const word = this.next().text.toLowerCase();
    const here = this.here(col);
    if (protocol === 'ether') {
      if (word === 'multicast') return this.relation({ protocol: 'ether', offset: 0, size: 1 }, 1, '!=', 0, col);
      return this.etherMatch('dst', [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], col);
    }
    // With no netmask (a capture has none), libpcap's `ip broadcast` is the all-zeros or all-ones address.
    if (protocol === 'ip' && word === 'broadcast') {
      const dst = (value: number) => this.relation({ protocol: 'ip', offset: 16, size: 4 }, 0xffffffff, '=', value, col);
      return { kind: 'and', left: { kind: 'protocol', protocol: 'ip', ...here }, right: { kind: 'or', left: dst(0), right: dst(0xffffffff), col }, col };
    }
    if (protocol === 'ip' && word === 'multicast') return { kind: 'and', left: { kind: 'protocol', protocol: 'ip', ...here }, right: this.relation({ protocol: 'ip', offset: 16, size: 1 }, 0xffffffff, '>=', 224, col), col };
    if (protocol === 'ip6' && word === 'multicast') return { kind: 'and', left: { kind: 'protocol', protocol: 'ip6', ...here }, right: this.relation({ protocol: 'ip6', offset: 24, size: 1 }, 0xffffffff, '=', 0xff, col), col };
    throw new ExpressionError(`'${protocol} ${word}' is not supported`, col, 'write ether broadcast, ether multicast, ip broadcast, ip multicast or ip6 multicast');
  }

  /** An Ethernet address primitive: `ether host MAC`, `ether src MAC`, `ether dst MAC`, or a bare MAC. */
  private etherAddress(q: Qualifiers, dir: Direction, col: number): Expr {
    if (q.type !== 'host') throw new ExpressionError(`'ether' cannot qualify a ${q.type}`, col, 'an Ethernet address is a host: ether host 02:00:00:00:00:01');
    const t = this.next();
    if (t.kind !== 'mac') throw new ExpressionError(`expected an Ethernet address, found ${describe(t)}`, t.col, 'six hex bytes separated by colons, e.g. 02:00:00:00:00:01');
    const bytes = t.text.includes('.') ? t.text.replace(/\./g, '').match(/../g)!.map((b) => parseInt(b, 16)) : t.text.split(/[:-]/).map((b) => parseInt(b, 16));
    if (dir === 'src' || dir === 'dst') return this.etherMatch(dir, bytes, col);
    return { kind: dir === 'src or dst' ? 'or' : 'and', left: this.etherMatch('src', bytes, col), right: this.etherMatch('dst', bytes, col), col };
  }

  /** The frame's source or destination Ethernet address equals `bytes`: two relations, its first 4 and last 2 bytes. */
  private etherMatch(dir: 'src' | 'dst', bytes: number[], col: number): Expr {
    const offset = dir === 'dst' ? 0 : 6;
    const high = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
    return {
      kind: 'and', col,
      left: this.relation({ protocol: 'ether', offset, size: 4 }, 0xffffffff, '=', high, col),
      right: this.relation({ protocol: 'ether', offset: offset + 4, size: 2 }, 0xffffffff, '=', (bytes[4] << 8) | bytes[5], col),
    };
  }

  /** Click's `ip ttl < 10`, `icmp type 8`: an optional relation (default =) and a number. */
  private clickRelation(field: { offset: number; size: 1 | 2 | 4 }, protocol: Protocol, col: number): Expr {
    const op = this.relationOperator() ?? '=';
    const limit = field.size === 4 ? 0xffffffff : (1 << (8 * field.size)) - 1;
    return this.relation({ protocol, ...field }, 0xffffffff, op, this.number('a value', limit), col);
  }

  private relationOperator(): Relation | undefined {
    const t = this.peek();
    if (t.kind !== 'op' || !RELATIONS.has(t.text)) return undefined;
    this.next();
    return (t.text === '==' ? '=' : t.text) as Relation;
  }

  /** The value of a host, net, port or portrange primitive, with the type inferred when it was left out. */
  private value(q: Qualifiers, col: number): Expr {
    if (q.type === 'proto') return this.proto(q, col);
    const t = this.peek();
    if (t.kind === 'mac' && q.protocol !== 'ether') {
      throw new ExpressionError(`'${t.text}' is an Ethernet address`, t.col, `write ether ${q.dir ?? 'host'} ${t.text}`);
    }
    const dir = q.dir ?? 'src or dst';
    let type = q.type;
    if (!type) {
      if (t.kind === 'mac' || q.protocol === 'ether') type = 'host';
      else if (t.kind === 'ip6') type = t.text.includes('/') ? 'net' : 'host';
      else if (t.kind === 'number' && t.text.includes('/')) type = 'net';
      else if (t.kind === 'number' && /^\d+(\.\d+){3}$/.test(t.text)) type = 'host';
      else if (t.kind === 'number' && /^\d+-\d+$/.test(t.text)) type = 'portrange';
      else type = 'port';
    }
    const qualifiers = { ...q, type };
    let node: Expr;
    if (q.protocol === 'ether') node = this.etherAddress(qualifiers, dir, col);
    else if (t.kind === 'ip6' || (q.protocol === 'ip6' && (type === 'host' || type === 'net'))) node = this.address6(qualifiers, dir, col);
    else if (type === 'port' || type === 'portrange') node = this.port(qualifiers, dir, col);
    else node = this.address(qualifiers, dir, col);
    this.last = qualifiers;
    return node;
  }

  private port(q: Qualifiers, dir: Direction, col: number): Expr {
    const protocol = q.protocol ?? 'any';
    if (protocol !== 'tcp' && protocol !== 'udp' && protocol !== 'sctp' && protocol !== 'any') {
      throw new ExpressionError(`'${protocol}' cannot qualify a port`, col, 'ports belong to tcp, udp or sctp');
    }
    const at = this.here(col);
    if (q.type === 'portrange') {
      const t = this.next();
      const m = /^(\d+)-(\d+)$/.exec(t.text);
      if (t.kind !== 'number' || !m) throw new ExpressionError(`expected a port range such as 1024-65535, found ${describe(t)}`, t.col);
      const [low, high] = [Number(m[1]), Number(m[2])];
      if (high > 65535) throw new ExpressionError(`port ${high} is out of range`, t.col + m[1].length + 1, 'ports are 0-65535');
      return { kind: 'port', protocol, dir, low: Math.min(low, high), high: Math.max(low, high), negated: false, ...at };
    }
    // Click: `dst port > 1023`, `port != 22`.
    const op = this.relationOperator() ?? '=';
    const t = this.peek();
    const port = t.kind === 'word' ? PORT_NAMES[t.text.toLowerCase()] : undefined;
    if (port !== undefined) this.next();
    const n = port ?? this.number('a port', 65535);
    const range: Record<Relation, [number, number]> = { '=': [n, n], '!=': [n, n], '<': [0, n - 1], '<=': [0, n], '>': [n + 1, 65535], '>=': [n, 65535] };
    const [low, high] = range[op];
    if (low > high) return { kind: 'const', value: false, col };
    return { kind: 'port', protocol, dir, low, high, negated: op === '!=', ...at };
  }

  /** `host 2001:db8::1`, `ip6 src net 2001:db8::/32`: IPv6 addresses, as libpcap reads them. */
  private address6(q: Qualifiers, dir: Direction, col: number): Expr {
    if (q.protocol !== undefined && q.protocol !== 'ip6') throw new ExpressionError(`'${q.protocol}' cannot qualify an IPv6 ${q.type}`, col, 'write ip6 or leave the protocol out');
    const t = this.next();
    if (t.kind !== 'ip6') throw new ExpressionError(`expected an IPv6 address after ${q.type}, found ${describe(t)}`, t.col, 'write e.g. 2001:db8::1 or 2001:db8::/32');
    const [text, length] = t.text.split('/');
    const groups = parseIPv6(text);
    if (!groups) throw new ExpressionError(`'${text}' is not an IPv6 address`, t.col, 'eight groups of up to four hex digits, or fewer with ::');
    if (q.type === 'host' && length !== undefined) throw new ExpressionError(`a host is a full IPv6 address, not '${t.text}'`, t.col, `write net ${t.text} for a network`);
    const prefix = length === undefined ? 128 : Number(length);
    if (prefix > 128) throw new ExpressionError(`/${prefix} is not a prefix length`, t.col + text.length, 'lengths are 0-128');
    const words = [0, 1, 2, 3].map((i) => ((groups[2 * i] << 16) | groups[2 * i + 1]) >>> 0);
    const masks = [0, 1, 2, 3].map((i) => { const bits = Math.max(0, Math.min(32, prefix - 32 * i)); return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0; });
    if (words.some((w, i) => (w & ~masks[i]) >>> 0 !== 0)) throw new ExpressionError(`'${t.text}' has bits set outside its mask`, t.col, 'clear the host part, e.g. 2001:db8::/32');
    return { kind: 'address6', dir, words, masks, ...this.here(col) };
  }

  private address(q: Qualifiers, dir: Direction, col: number): Expr {
    const family = q.protocol === undefined ? 'any' : q.protocol;
    if (family !== 'ip' && family !== 'arp' && family !== 'rarp' && family !== 'any') {
      throw new ExpressionError(`'${family}' cannot qualify a ${q.type}`, col, `a ${q.type} belongs to ip, ip6, arp or rarp`);
    }
    const t = this.next();
    if (t.kind !== 'number' || !/^\d/.test(t.text)) throw new ExpressionError(`expected an IPv4 address after ${q.type}, found ${describe(t)}`, t.col, 'write e.g. 198.18.0.1 or 198.18.0.0/15');
    const [text, length] = t.text.split('/');
    const parts = text.split('.');
    if (parts.length > 4 || parts.some((p) => Number(p) > 255)) throw new ExpressionError(`'${text}' is not an IPv4 address`, t.col, 'four numbers 0-255 separated by dots');
    const address = parts.reduce((acc, p) => acc * 256 + Number(p), 0) * 256 ** (4 - parts.length) >>> 0;
    let prefix: number;
    if (q.type === 'host') {
      if (parts.length !== 4 || length !== undefined) throw new ExpressionError(`a host is a full IPv4 address, not '${t.text}'`, t.col, `write net ${t.text} for a network`);
      return { kind: 'address', family, dir, address, mask: 0xffffffff, ...this.here(col) };
    }
    let mask: number;
    if (length !== undefined) {
      prefix = Number(length);
      if (prefix > 32) throw new ExpressionError(`/${prefix} is not a prefix length`, t.col + text.length, 'lengths are 0-32');
      mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    } else if (this.isWord(this.peek(), 'mask')) {
      this.next();
      const m = this.next();
      if (m.kind !== 'number' || !/^\d+(\.\d+){3}$/.test(m.text)) throw new ExpressionError(`expected a netmask such as 255.255.0.0, found ${describe(m)}`, m.col);
      mask = m.text.split('.').reduce((acc, p) => acc * 256 + Number(p), 0) >>> 0;
    } else {
      // libpcap: `net 216.58` is 216.58.0.0/16.
      mask = (0xffffffff << (32 - 8 * parts.length)) >>> 0;
    }
    if ((address & ~mask) >>> 0 !== 0) throw new ExpressionError(`'${t.text}' has bits set outside its mask`, t.col, 'clear the host part, e.g. 10.1.0.0/16');
    return { kind: 'address', family, dir, address, mask, ...this.here(col) };
  }

  /**
   * What follows `proto`: an EtherType after ether, else an IP protocol of ip, ip6 or either. As in libpcap, a bare
   * number after it is another of the same (`ip proto 6 or 17`, not Click's port 17).
   */
  private proto(q: Qualifiers, col: number): Expr {
    this.last = { protocol: q.protocol, type: 'proto' };
    if (q.protocol === 'ether') {
      const name = this.peek().kind === 'word' ? this.peek().text.toLowerCase().replace(/^\\/, '') : '';
      if (ETHERTYPE_NUMBERS[name] !== undefined) { this.next(); return { kind: 'ethertype', number: ETHERTYPE_NUMBERS[name], ...this.here(col) }; }
      return { kind: 'ethertype', number: this.number('an EtherType', 0xffff), ...this.here(col) };
    }
    return { kind: 'ip-proto', family: q.protocol === 'ip' || q.protocol === 'ip6' ? q.protocol : 'any', number: this.protocolNumber(), ...this.here(col) };
  }

  private protocolNumber(): number {
    const t = this.peek();
    const name = t.kind === 'word' ? t.text.toLowerCase().replace(/^\\/, '') : '';
    if (PROTOCOL_NUMBERS[name] !== undefined) { this.next(); return PROTOCOL_NUMBERS[name]; }
    return this.number('a protocol number', 255);
  }

  private number(what: string, max = 0xffffffff): number {
    const t = this.next();
    const value = numberValue(t);
    if (Number.isNaN(value)) throw new ExpressionError(`expected ${what}, found ${describe(t)}`, t.col);
    if (value > max) throw new ExpressionError(`${t.text} is too large for ${what}`, t.col, `the largest is ${max}`);
    return value;
  }

  // --- relations: FIELD [& MASK] OP VALUE ---------------------------------------------------------

  /** A relation when one starts here (`tcp[13] & 2 != 0`, `len > 100`, `(ip[6:2] & 0x1fff) = 0`), else nothing consumed. */
  private tryRelation(): Expr | undefined {
    const start = this.at;
    const vlans = this.vlans;
    let left: Arith;
    try {
      left = this.arith(0);
    } catch (e) {
      if (e instanceof NotArithmetic) { this.at = start; return undefined; }
      throw e;
    }
    const opToken = this.peek();
    const op = this.relationOperator();
    if (!op) {
      if (left.kind === 'field' || this.at - start > 1) throw new ExpressionError(`expected a comparison (= != < <= > >=) after the byte expression, found ${describe(opToken)}`, opToken.col);
      this.at = start;
      return undefined;
    }
    const valueToken = this.peek();
    let right: Arith;
    try {
      right = this.arith(0);
    } catch (e) {
      if (e instanceof NotArithmetic) throw new ExpressionError(`expected a value to compare with, found ${describe(valueToken)}`, valueToken.col);
      throw e;
    }
    const col = this.tokens[start].col;
    if (left.kind === 'const' && right.kind === 'const') return { kind: 'const', value: compare(left.value, op, right.value), col };
    if (left.kind === 'field' && right.kind === 'field') throw new ExpressionError('comparing two packet fields is not supported', right.col, 'compare a field with a constant');
    const flipped: Record<Relation, Relation> = { '=': '=', '!=': '!=', '<': '>', '<=': '>=', '>': '<', '>=': '<=' };
    const [field, value, relation] = left.kind === 'field' ? [left, right as Extract<Arith, { kind: 'const' }>, op] : [right as Extract<Arith, { kind: 'field' }>, left, flipped[op]];
    return { kind: 'relation', field: field.field, mask: field.mask, op: relation, value: value.value >>> 0, col, vlans };
  }

  private static readonly LEVELS = [['|'], ['&'], ['<<', '>>'], ['+', '-'], ['*', '/']];

  private arith(level: number): Arith {
    if (level === Parser.LEVELS.length) return this.arithAtom();
    let left = this.arith(level + 1);
    while (this.isOp(this.peek(), ...Parser.LEVELS[level])) {
      const op = this.next();
      left = combine(left, op, this.operand(() => this.arith(level + 1), `after '${op.text}'`));
    }
    return left;
  }

  /**
   * What must be arithmetic once an operator or a field's '[' has begun it: what is not is said there (read as no byte
   * expression at all, 'tcp[tcpflags] & tcp-bogus != 0' was 'tcp' followed by an unexpected '[').
   */
  private operand(read: () => Arith, where: string): Arith {
    const t = this.peek();
    try {
      return read();
    } catch (e) {
      if (e instanceof NotArithmetic) {
        throw new ExpressionError(`expected a number, a named constant (tcp-syn, icmp-echo, ...) or a packet field ${where}, found ${describe(t)}`, t.col);
      }
      throw e;
    }
  }

  private arithAtom(): Arith {
    const t = this.peek();
    const value = numberValue(t);
    if (!Number.isNaN(value)) { this.next(); return { kind: 'const', value, col: t.col }; }
    if (t.kind === 'word' && NAMED_CONSTANTS[t.text.toLowerCase()] !== undefined) { this.next(); return { kind: 'const', value: NAMED_CONSTANTS[t.text.toLowerCase()], col: t.col }; }
    if (this.isWord(t, 'len')) { this.next(); return { kind: 'field', field: { protocol: 'len', offset: 0, size: 4 }, mask: 0xffffffff, col: t.col }; }
    if (t.kind === 'word' && PROTOCOLS.has(t.text.toLowerCase()) && this.isOp(this.peek(1), '[')) {
      this.next(); this.next();
      const offset = this.operand(() => this.arith(0), 'as the offset in [ ]');
      if (offset.kind !== 'const') throw new ExpressionError('the offset in [ ] must be a constant', offset.col);
      let size = 1;
      if (this.isOp(this.peek(), ':')) {
        this.next();
        const s = this.peek();
        size = this.number('a size');
        if (size !== 1 && size !== 2 && size !== 4) throw new ExpressionError(`a field is 1, 2 or 4 bytes, not ${size}`, s.col);
      }
      this.expect(']', 'after the offset');
      if (offset.value > 0xffff) throw new ExpressionError(`offset ${offset.value} is too large`, offset.col);
      return { kind: 'field', field: { protocol: t.text.toLowerCase() as Protocol, offset: offset.value, size: size as 1 | 2 | 4 }, mask: 0xffffffff, col: t.col };
    }
    if (this.isOp(t, '(')) {
      const start = this.at;
      this.next();
      const inner = this.arith(0);
      if (!this.isOp(this.peek(), ')')) { this.at = start; throw new NotArithmetic(); }
      this.next();
      return inner;
    }
    throw new NotArithmetic();
  }
}

class NotArithmetic extends Error {}

/** The eight 16-bit groups of an IPv6 address (`::` fills zeros), or undefined when it is not one. */
function parseIPv6(text: string): number[] | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const groups = halves.map((h) => (h === '' ? [] : h.split(':')));
  const given = groups.flat();
  if (given.some((g) => !/^[0-9a-f]{1,4}$/i.test(g))) return undefined;
  if (halves.length === 1 ? given.length !== 8 : given.length > 7) return undefined;
  const zeros = Array<string>(8 - given.length).fill('0');
  return (halves.length === 1 ? given : [...groups[0], ...zeros, ...groups[1]]).map((g) => parseInt(g, 16));
}

/** A number as libpcap reads one: 0x (or 0X) hexadecimal, a leading 0 octal (`port 053` is 43), else decimal; NaN if `t` is none. */
function numberValue(t: Token): number {
  if (t.kind !== 'number' || !/^(0x[0-9a-f]+|\d+)$/i.test(t.text)) return NaN;
  const octal = /^0\d+$/.test(t.text);
  if (octal && !/^0[0-7]+$/.test(t.text)) throw new ExpressionError(`'${t.text}' is not an octal number`, t.col, 'a number with a leading 0 is octal, as in tcpdump: leave the 0 out for a decimal one');
  const value = octal ? parseInt(t.text, 8) : Number(t.text);
  if (value > 0xffffffff) throw new ExpressionError(`${t.text} does not fit in 32 bits`, t.col);
  return value;
}

function combine(left: Arith, op: Token, right: Arith): Arith {
  if (left.kind === 'const' && right.kind === 'const') {
    const a = left.value, b = right.value;
    const value = { '|': a | b, '&': a & b, '<<': a << b, '>>': a >>> b, '+': a + b, '-': a - b, '*': Math.imul(a, b), '/': b ? Math.floor(a / b) : NaN }[op.text]!;
    if (Number.isNaN(value)) throw new ExpressionError('division by zero', op.col);
    return { kind: 'const', value: value >>> 0, col: left.col };
  }
  if (op.text === '&' && (left.kind === 'const' || right.kind === 'const')) {
    const [field, mask] = left.kind === 'field' ? [left, right as Extract<Arith, { kind: 'const' }>] : [right as Extract<Arith, { kind: 'field' }>, left];
    return { ...field, mask: (field.mask & mask.value) >>> 0 };
  }
  throw new ExpressionError(`'${op.text}' on a packet field is not supported`, op.col, 'a byte expression is FIELD, or FIELD & MASK, compared with a constant');
}

function compare(a: number, op: Relation, b: number): boolean {
  return op === '=' ? a === b : op === '!=' ? a !== b : op === '<' ? a < b : op === '<=' ? a <= b : op === '>' ? a > b : a >= b;
}

function describe(t: Token): string {
  return t.kind === 'end' ? 'the end of the expression' : `'${t.text}'`;
}
