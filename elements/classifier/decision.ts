// Compiles an ordered list of rules (first match wins) into one decision DAG of masked compares,
// shared between rules, and writes it into linear memory for the fast path (program.ts).
//
// The DAG is built like a BDD over the rule list: test the next atom of the first rule still
// undecided, and in each branch simplify every rule with what that branch knows (the value of the
// field, that the capture is long enough or not), so an atom known on a path is never tested again.
// When many rules test one field for equality (1000 prefixes, 1000 ports) the node is a hash lookup
// on that field instead of a chain of tests. States reached twice are built once (memoised).

import { Formulas, lower, type Atom, type Field, type Formula } from './lower.ts';
import { parseExpression, type Expr } from './expression.ts';
import { planBitVector, vectorSize, writeVector, type BitVectorPlan } from './vector.ts';

export const NO_MATCH = 0x7ffffffe;
const TERMINAL = 0x80000000;
const EMPTY_SLOT = 0xffffffff;
/** A field that rules need to equal at least this many different values becomes one hash lookup (fewer: a chain of tests is cheaper). */
const MIN_LOOKUP_VALUES = 4;
/**
 * A field that rules only compare with this many values, without needing one of them (each value of 'host a or host b
 * or ...' is the source's or the destination's), becomes a lookup too: fewer are tests, as the EtherTypes of IPv4, IPv6,
 * ARP and RARP that most rules compare with (IPv4, the most common, is then one test).
 */
const MIN_COMPARED_VALUES = 16;
/**
 * Past this many nodes and lookup entries the rules stop sharing knowledge across rule boundaries (linear size):
 * a thousand rules 'host X' alone would make half a million entries (a lookup of the destination for each source).
 */
const MAX_SIZE = 50_000;

export const NODE_SIZE = 32;
export const HEADER_SIZE = 32;
const BASE_CODE = { frame: 0, transport: 1, wire: 2 } as const;
const OP_CODE = { eq: 0, gt: 1, ge: 2, lookup: 3 } as const;

type Target = number;
const terminal = (rule: number): Target => (TERMINAL | rule) >>> 0;
export const isTerminal = (t: Target) => t >= TERMINAL;

interface TestNode { kind: 'test'; atom: Atom; yes: Target; no: Target; fault: Target }
interface LookupNode { kind: 'lookup'; field: Field; fieldKey: string; mask: number; entries: Map<number, Target>; otherwise: Target; fault: Target }
type DecisionNode = TestNode | LookupNode;

/** What a path through the DAG knows about the packet. Immutable: each branch makes its own. */
class Facts {
  constructor(
    /** The capture has at least `longer` bytes, and fewer than `shorter`. */
    readonly longer = 0,
    readonly shorter = Infinity,
    /** The same for reads behind an IPv4 header at l3: transport offset + size known to fit / not to fit. */
    readonly transportFits = new Map<number, number>(),
    readonly transportFails = new Map<number, number>(),
    readonly atoms = new Map<number, boolean>(),
    /** Known values of masked fields: fieldKey -> [mask, value] pairs. */
    readonly equal = new Map<string, [number, number][]>(),
    /** Values a masked field is known not to have (the default branch of a lookup): `fieldKey/mask`. */
    readonly excluded = new Map<string, Set<number>>(),
  ) {}

  static readonly NONE = new Facts();
  private cachedKey?: string;

  private copy(changes: Partial<Facts>): Facts {
    const c = { ...this, ...changes };
    return new Facts(c.longer, c.shorter, c.transportFits, c.transportFails, c.atoms, c.equal, c.excluded);
  }

  /** 'fault', 'ok' or undefined (unknown) for reading this field. */
  readable(field: Field): 'ok' | 'fault' | undefined {
    if (field.base === 'wire') return 'ok';
    const end = field.offset + field.size;
    if (field.base === 'frame') return end <= this.longer ? 'ok' : end >= this.shorter ? 'fault' : undefined;
    if (end <= (this.transportFits.get(field.l3) ?? 0)) return 'ok';
    return end >= (this.transportFails.get(field.l3) ?? Infinity) ? 'fault' : undefined;
  }

  /** The atom's value when this path decides it: true, false, or 'fault'. */
  decide(atom: Atom): boolean | 'fault' | undefined {
    const readable = this.readable(atom.field);
    if (readable !== 'ok') return readable;
    const known = this.atoms.get(atom.id);
    if (known !== undefined) return known;
    for (const [mask, value] of this.equal.get(atom.fieldKey) ?? []) {
      if ((atom.mask & mask) >>> 0 === atom.mask) return compare(atom, (value & atom.mask) >>> 0);
      const common = (atom.mask & mask) >>> 0;
      if (atom.compare === 'eq' && ((atom.value & common) >>> 0) !== ((value & common) >>> 0)) return false;
    }
    if (atom.compare === 'eq' && this.excluded.get(`${atom.fieldKey}/${atom.mask}`)?.has(atom.value)) return false;
    return undefined;
  }

  read(field: Field): Facts {
    if (field.base === 'wire' || this.readable(field) === 'ok') return this;
    const end = field.offset + field.size;
    if (field.base === 'frame') return this.copy({ longer: end });
    return this.copy({ transportFits: new Map(this.transportFits).set(field.l3, end) });
  }

  failed(field: Field): Facts {
    const end = field.offset + field.size;
    if (field.base === 'frame') return this.copy({ shorter: Math.min(this.shorter, end) });
    return this.copy({ transportFails: new Map(this.transportFails).set(field.l3, Math.min(end, this.transportFails.get(field.l3) ?? Infinity)) });
  }

  withAtom(atom: Atom, value: boolean): Facts {
    const next = this.read(atom.field).copy({ atoms: new Map(this.atoms).set(atom.id, value) });
    if (!value || atom.compare !== 'eq') return next;
    return next.withValue(atom.fieldKey, atom.mask, atom.value);
  }

  withValue(fieldKey: string, mask: number, value: number): Facts {
    const equal = new Map(this.equal).set(fieldKey, [...(this.equal.get(fieldKey) ?? []), [mask, value]]);
    return this.copy({ equal });
  }

  withExcluded(fieldKey: string, mask: number, values: Set<number>): Facts {
    return this.copy({ excluded: new Map(this.excluded).set(`${fieldKey}/${mask}`, values) });
  }

  get key(): string {
    if (this.cachedKey === undefined) this.cachedKey = this.keyFor();
    return this.cachedKey;
  }

  /**
   * The facts that can decide the atoms `mentioned` (all when undefined), as a string: what else this path knew
   * (a value of a field the rules no longer test) does not make another state.
   */
  keyFor(mentioned?: Mentioned[]): string {
    const atom = (id: number) => !mentioned || mentioned.some((m) => m.atoms.has(id));
    const field = (key: string) => !mentioned || mentioned.some((m) => m.fields.has(key));
    const atoms = [...this.atoms].filter(([id]) => atom(id));
    const equal = [...this.equal].filter(([k]) => field(k));
    const excluded = [...this.excluded].filter(([k]) => field(k.slice(0, k.lastIndexOf('/'))));
    return JSON.stringify([this.longer, this.shorter, [...this.transportFits], [...this.transportFails],
      atoms.sort((a, b) => a[0] - b[0]).map(([id, v]) => `${id}${v ? '+' : '-'}`).join(','),
      equal.sort().map(([k, v]) => `${k}=${v.join(';')}`).join(','),
      excluded.sort().map(([k, v]) => `${k}!${setId(v)}`).join(',')]);
  }
}

/** The atoms (by id) and fields (by fieldKey) that a formula tests. */
interface Mentioned { atoms: Set<number>; fields: Set<string> }

function mentionedBy(formula: Formula): Mentioned {
  const out: Mentioned = { atoms: new Set(), fields: new Set() };
  const seen = new Set<number>();
  const visit = (f: Formula): void => {
    if (seen.has(f.id)) return;
    seen.add(f.id);
    if (f.kind === 'atom') { out.atoms.add(f.atom.id); out.fields.add(f.atom.fieldKey); }
    else if (f.kind === 'not') visit(f.arg);
    else if (f.kind === 'and' || f.kind === 'or') { visit(f.left); visit(f.right); }
  };
  visit(formula);
  return out;
}

let nextSetId = 0;
const setIds = new WeakMap<Set<number>, number>();
/** Excluded-value sets are keyed by identity: one lookup node makes one set, shared by its default branch. */
function setId(s: Set<number>): number {
  let id = setIds.get(s);
  if (id === undefined) { id = nextSetId++; setIds.set(s, id); }
  return id;
}

function compare(atom: Atom, value: number): boolean {
  return atom.compare === 'eq' ? value === atom.value : atom.compare === 'gt' ? value > atom.value : value >= atom.value;
}

interface RuleState { rule: number; formula: Formula }

export interface CompiledRules {
  nodes: DecisionNode[];
  root: Target;
  /** Rules that some packet can reach (false for a rule that never matches or is shadowed). */
  reachable: boolean[];
  /** 'shared' when knowledge is shared across rules; 'chained' for rule sets too large for that. */
  mode: 'shared' | 'chained';
  /** The rules as a bit vector (vector.ts), when they fit one; its tables follow the DAG's in the program. */
  vector?: BitVectorPlan;
}

class BudgetExceeded extends Error {}

/** Builds the decision DAG of formulas (made by one Formulas) evaluated in order, first match wins. */
export function buildDecisions(f: Formulas, formulas: Formula[], lists: boolean[] = []): CompiledRules {
  try {
    return new Builder(f, formulas, lists, 'shared').result();
  } catch (e) {
    if (!(e instanceof BudgetExceeded)) throw e;
    return new Builder(f, formulas, lists, 'chained').result();
  }
}

class Builder {
  readonly nodes: DecisionNode[] = [];
  private readonly nodeIds = new Map<string, Target>();
  private readonly memo = new Map<string, Target>();
  private readonly root: Target;
  /** Nodes and lookup entries made so far. */
  private size = 0;
  private readonly mentioned = new Map<number, Mentioned>();
  private readonly ordered = new Map<number, Formula>();

  /** `lists`: per rule, whether it is a list of addresses or of ports (isList), whose tests libpcap's optimizer regroups. */
  constructor(private readonly f: Formulas, private readonly formulas: Formula[], private readonly lists: boolean[], private readonly mode: 'shared' | 'chained') {
    this.root = mode === 'shared'
      ? this.build(formulas.map((formula, rule) => ({ rule, formula })), Facts.NONE)
      : this.chainFromLast();
  }

  result(): CompiledRules {
    const reachable = this.formulas.map(() => false);
    const seen = new Set<Target>([this.root]);
    // A stack, not recursion: a chain of thousands of rules is as deep.
    const pending = [this.root];
    for (let t = pending.pop(); t !== undefined; t = pending.pop()) {
      if (isTerminal(t)) {
        const rule = t - TERMINAL;
        if (rule !== NO_MATCH) reachable[rule] = true;
        continue;
      }
      const n = this.nodes[t];
      const next = n.kind === 'test' ? [n.yes, n.no, n.fault] : [...n.entries.values(), n.otherwise, n.fault];
      for (const target of next) if (!seen.has(target)) { seen.add(target); pending.push(target); }
    }
    return { nodes: this.nodes, root: this.root, reachable, mode: this.mode };
  }

  private node(n: DecisionNode): Target {
    if (n.kind === 'test' && n.yes === n.no && n.no === n.fault) return n.yes;
    const key = n.kind === 'test' ? `t${n.atom.id}:${n.yes}:${n.no}:${n.fault}`
      : `l${n.fieldKey}/${n.mask}:${[...n.entries].join(';')}:${n.otherwise}:${n.fault}`;
    let id = this.nodeIds.get(key);
    if (id === undefined) {
      this.size += 1 + (n.kind === 'lookup' ? n.entries.size : 0);
      if (this.size > MAX_SIZE && this.mode === 'shared') throw new BudgetExceeded();
      id = this.nodes.length;
      this.nodes.push(n);
      this.nodeIds.set(key, id);
    }
    return id;
  }

  /** A formula with every atom the facts decide replaced by its value. */
  private simplify(formula: Formula, facts: Facts, memo: Map<number, Formula>): Formula {
    const cached = memo.get(formula.id);
    if (cached) return cached;
    let out: Formula;
    switch (formula.kind) {
      case 'atom': {
        const v = facts.decide(formula.atom);
        out = v === undefined ? formula : v === 'fault' ? this.f.FAULT : v ? this.f.TRUE : this.f.FALSE;
        break;
      }
      case 'not': out = this.f.not(this.simplify(formula.arg, facts, memo)); break;
      case 'and': {
        const left = this.simplify(formula.left, facts, memo);
        out = left.kind === 'false' || left.kind === 'fault' ? left : this.f.and(left, this.simplify(formula.right, facts, memo));
        break;
      }
      case 'or': {
        const left = this.simplify(formula.left, facts, memo);
        out = left.kind === 'true' || left.kind === 'fault' ? left : this.f.or(left, this.simplify(formula.right, facts, memo));
        break;
      }
      default: out = formula;
    }
    memo.set(formula.id, out);
    return out;
  }

  private simplifyAll(rules: RuleState[], facts: Facts): RuleState[] {
    const memo = new Map<number, Formula>();
    return rules.map((r) => ({ rule: r.rule, formula: this.simplify(r.formula, facts, memo) }));
  }

  private build(input: RuleState[], facts: Facts): Target {
    // A rule that is false or read past the capture does not match; the next one is tried.
    const live = input.filter((r) => r.formula.kind !== 'false' && r.formula.kind !== 'fault');
    // Rules after one that matches here are never reached.
    const decided = live.findIndex((r) => r.formula.kind === 'true');
    const rules = decided < 0 ? live : live.slice(0, decided + 1);
    if (rules.length === 0) return terminal(NO_MATCH);
    if (rules[0].formula.kind === 'true') return terminal(rules[0].rule);
    if (this.lists[rules[0].rule]) rules[0] = { rule: rules[0].rule, formula: this.inLoadOrder(rules[0].formula) };
    const key = rules.map((r) => `${r.rule}:${r.formula.id}`).join(',') + facts.keyFor(rules.map((r) => this.mentions(r.formula)));
    const known = this.memo.get(key);
    if (known !== undefined) return known;
    const atom = firstAtom(rules[0].formula);
    const branch = (knows: Facts) => this.build(this.simplifyAll(rules, knows), knows);
    const target = this.lookup(atom, rules, facts) ?? this.test(atom, facts, branch);
    this.memo.set(key, target);
    return target;
  }

  /**
   * A hash lookup on the atom's masked field when the rules compare that field with enough different values
   * (each branch knows the field's value, so every such comparison is decided at once: 'host a or host b or
   * ...' becomes a lookup of the source and one of the destination). A rule that needs the field to have one
   * of some values is left out of the other values' branches.
   */
  private lookup(atom: Atom, rules: RuleState[], facts: Facts): Target | undefined {
    if (atom.compare !== 'eq' || atom.field.base === 'wire') return undefined;
    const key = `${atom.fieldKey}/${atom.mask}`;
    const needs = rules.map((r) => this.necessaryValues(r.formula).get(key));
    const needed = new Set(needs.flatMap((v) => (v ? [...v] : [])));
    const comparisons = rules.map((r) => comparisonsOf(r.formula, atom));
    const values = needed.size >= MIN_LOOKUP_VALUES ? needed : new Set(comparisons.flatMap((c) => [...c.values]));
    if (values.size < (values === needed ? MIN_LOOKUP_VALUES : MIN_COMPARED_VALUES)) return undefined;
    const read = facts.read(atom.field);
    const entries = new Map<number, Target>();
    // A list holding the value matches: libpcap's optimizer, too, moves the tests of a loaded field in a list before
    // its other items (or_pullup), whatever they would read. And a list of a thousand hosts is not simplified a
    // thousand times.
    const lists = rules.map((r) => this.listValues(r, atom));
    const rest = read.withExcluded(atom.fieldKey, atom.mask, values);
    // A rule that compares the field only for equality with other values is simplified as in the default branch (once).
    const asOtherwise = new Map<number, Formula>();
    const otherwise = (r: RuleState) => {
      if (!asOtherwise.has(r.rule)) asOtherwise.set(r.rule, this.simplify(r.formula, rest, new Map()));
      return asOtherwise.get(r.rule)!;
    };
    for (const value of values) {
      const branch = read.withValue(atom.fieldKey, atom.mask, value);
      const memo = new Map<number, Formula>();
      // A rule that needs other values cannot match here; only the others are simplified.
      const candidates = rules.flatMap((r, i) => (needs[i] !== undefined && !needs[i]!.has(value) ? [] : [{
        rule: r.rule,
        formula: lists[i]?.values.has(value) ? (lists[i]!.negated ? this.f.FALSE : this.f.TRUE) : comparisons[i].onlyEquality && !comparisons[i].values.has(value) ? otherwise(r) : this.simplify(r.formula, branch, memo),
      }]));
      entries.set(value, candidates[0]?.formula.kind === 'true' ? terminal(candidates[0].rule) : this.build(candidates, branch));
    }
    return this.node({
      kind: 'lookup', field: atom.field, fieldKey: atom.fieldKey, mask: atom.mask, entries,
      otherwise: this.build(rules.filter((_, i) => needs[i] === undefined).map((r) => ({ rule: r.rule, formula: otherwise(r) })), rest),
      fault: facts.readable(atom.field) === 'ok' ? terminal(NO_MATCH) : this.build(this.simplifyAll(rules, facts.failed(atom.field)), facts.failed(atom.field)),
    });
  }

  /**
   * A list rule's formula, on this path an or of single comparisons, with its items grouped by the field they read,
   * the fields in the order of their first item: libpcap's optimizer moves the tests of a loaded field in such a chain
   * before the next load (or_pullup), so that 'host a or host b' compares the source with both before it reads the
   * destination. Other formulas as they are.
   */
  private inLoadOrder(formula: Formula): Formula {
    if (formula.kind === 'not') return this.f.not(this.inLoadOrder(formula.arg));
    let ordered = this.ordered.get(formula.id);
    if (ordered) return ordered;
    const items: Formula[] = [];
    const collect = (f: Formula): boolean => (f.kind === 'or' ? collect(f.left) && collect(f.right) : f.kind === 'atom' && items.push(f) > 0);
    ordered = formula;
    if (collect(formula)) {
      const fields = [...new Set(items.map((i) => (i as Formula & { kind: 'atom' }).atom.fieldKey))];
      const rank = new Map(fields.map((k, i) => [k, i]));
      const sorted = [...items].sort((a, b) => rank.get((a as Formula & { kind: 'atom' }).atom.fieldKey)! - rank.get((b as Formula & { kind: 'atom' }).atom.fieldKey)!);
      if (sorted.some((item, i) => item !== items[i])) {
        const balanced = (from: number, to: number): Formula =>
          to - from === 1 ? sorted[from] : this.f.or(balanced(from, (from + to) >> 1), balanced((from + to) >> 1, to));
        ordered = balanced(0, sorted.length);
      }
    }
    this.ordered.set(formula.id, ordered);
    return ordered;
  }

  /**
   * For a list rule whose first tests (inLoadOrder) are of the atom's masked field, the values it compares that field
   * with: any of them makes it true once the field is read. Undefined for any other rule.
   */
  private listValues(r: RuleState, like: Atom): { values: Set<number>; negated: boolean } | undefined {
    if (!this.lists[r.rule]) return undefined;
    // 'not (list)' is decided by the list: false where the list is true.
    const negated = r.formula.kind === 'not';
    const list = r.formula.kind === 'not' ? r.formula.arg : r.formula;
    const values = listValues(list, like);
    return values && firstAtom(this.inLoadOrder(list)).fieldKey === like.fieldKey ? { values, negated } : undefined;
  }

  /** What a formula tests, once per formula (rules come back as the same formulas in many branches). */
  private mentions(formula: Formula): Mentioned {
    let m = this.mentioned.get(formula.id);
    if (!m) this.mentioned.set(formula.id, (m = mentionedBy(formula)));
    return m;
  }

  /** A test of the atom; its short-capture branch only when this path does not know the field is there. */
  private test(atom: Atom, facts: Facts, branch: (knows: Facts) => Target): Target {
    const no = branch(facts.withAtom(atom, false));
    const fault = facts.readable(atom.field) === 'ok' ? no : branch(facts.failed(atom.field));
    return this.node({ kind: 'test', atom, yes: branch(facts.withAtom(atom, true)), no, fault });
  }

  /**
   * Masked fields whose value the formula confines whenever it is true: `fieldKey/mask` -> the values it allows.
   * Not kept per subformula (in a list of a thousand hosts, each level would hold a copy of the values below it).
   */
  private necessaryValues(formula: Formula): Map<string, Set<number>> {
    const out = new Map<string, Set<number>>();
    if (formula.kind === 'atom' && formula.atom.compare === 'eq') out.set(`${formula.atom.fieldKey}/${formula.atom.mask}`, new Set([formula.atom.value]));
    else if (formula.kind === 'and') {
      const right = this.necessaryValues(formula.right);
      for (const [k, v] of this.necessaryValues(formula.left)) {
        const both = right.get(k);
        right.set(k, both ? new Set([...v].filter((x) => both.has(x))) : v);
      }
      return right;
    } else if (formula.kind === 'or') {
      const right = this.necessaryValues(formula.right);
      for (const [k, v] of this.necessaryValues(formula.left)) {
        const either = right.get(k);
        if (!either) continue;
        const [small, large] = v.size < either.size ? [v, either] : [either, v];
        small.forEach((x) => large.add(x));
        out.set(k, large);
      }
    }
    return out;
  }

  // Chained mode: each rule is decided with what its own tests taught; a failing rule goes to the next rule's start.
  private readonly starts = new Map<number, Target>();

  /** Each rule's start, the last rule's first: a rule's failing branches find the next one's made (no recursion through all rules). */
  private chainFromLast(): Target {
    for (let rule = this.formulas.length - 1; rule > 0; rule--) this.chainStart(rule);
    return this.chainStart(0);
  }

  private chainStart(rule: number): Target {
    let t = this.starts.get(rule);
    if (t === undefined) {
      t = rule === this.formulas.length ? terminal(NO_MATCH) : this.chain(rule, this.formulas[rule], Facts.NONE);
      this.starts.set(rule, t);
    }
    return t;
  }

  private chain(rule: number, formula: Formula, facts: Facts): Target {
    const simplified = this.simplify(formula, facts, new Map());
    const f = this.lists[rule] ? this.inLoadOrder(simplified) : simplified;
    if (f.kind === 'true') return terminal(rule);
    if (f.kind === 'false' || f.kind === 'fault') return this.chainStart(rule + 1);
    const key = `${rule}:${f.id}${facts.key}`;
    const known = this.memo.get(key);
    if (known !== undefined) return known;
    const target = this.test(firstAtom(f), facts, (knows) => this.chain(rule, f, knows));
    this.memo.set(key, target);
    return target;
  }
}

/**
 * For a rule that is an or of single comparisons (a list, as the path has simplified it), the values it compares the
 * atom's masked field with; undefined for any other rule.
 */
function listValues(formula: Formula, like: Atom): Set<number> | undefined {
  const values = new Set<number>();
  const collect = (f: Formula): boolean => {
    if (f.kind === 'or') return collect(f.left) && collect(f.right);
    if (f.kind !== 'atom') return false;
    if (f.atom.compare === 'eq' && f.atom.fieldKey === like.fieldKey && f.atom.mask === like.mask) values.add(f.atom.value);
    return true;
  };
  return collect(formula) ? values : undefined;
}

/**
 * The values a formula compares the atom's masked field with for equality, and whether it tests that field only so
 * (no other mask or comparison).
 */
function comparisonsOf(formula: Formula, like: Atom): { values: Set<number>; onlyEquality: boolean } {
  const out = { values: new Set<number>(), onlyEquality: true };
  const seen = new Set<number>();
  const visit = (f: Formula): void => {
    if (seen.has(f.id)) return;
    seen.add(f.id);
    if (f.kind === 'atom') {
      if (f.atom.fieldKey !== like.fieldKey) return;
      if (f.atom.compare === 'eq' && f.atom.mask === like.mask) out.values.add(f.atom.value);
      else out.onlyEquality = false;
    } else if (f.kind === 'not') visit(f.arg);
    else if (f.kind === 'and' || f.kind === 'or') { visit(f.left); visit(f.right); }
  };
  visit(formula);
  return out;
}

/** The atom a formula evaluates first (constants are folded away, so the leftmost leaf is one). */
function firstAtom(formula: Formula): Atom {
  switch (formula.kind) {
    case 'atom': return formula.atom;
    case 'not': return firstAtom(formula.arg);
    case 'and': case 'or': return firstAtom(formula.left);
    default: throw new Error(`no atom in a constant formula (${formula.kind})`);
  }
}

// --- rule sets: parse, compile, check ------------------------------------------------------------

export interface RuleSet {
  expressions: Expr[];
  compiled: CompiledRules;
}

export function compileRules(expressions: Expr[]): RuleSet {
  const f = new Formulas();
  const formulas = expressions.map((e) => lower(e, f));
  return { expressions, compiled: { ...buildDecisions(f, formulas, expressions.map(isList)), vector: planBitVector(formulas) } };
}

/**
 * Whether an expression is a list: IPv4 hosts and nets ('host a or src net b or ...') or ports of one protocol, joined
 * by or, or the negation of one. libpcap's optimizer makes such a chain of single tests once it knows the protocol, and
 * regroups its tests by the field they load (or_pullup); an item of several tests of its own (tcp[100] = 1, a protocol)
 * stops that.
 */
function isList(expr: Expr): boolean {
  if (expr.kind === 'not') return isList(expr.arg);
  const items: Expr[] = [];
  // Down the left, as parsed, without recursion: a list of thousands is as deep.
  const collect = (e: Expr): void => {
    let at = e;
    for (; at.kind === 'or'; at = at.left) collect(at.right);
    items.push(at);
  };
  collect(expr);
  const [first] = items;
  return items.every((e) => (e.kind === 'address' && first.kind === 'address' && e.family === first.family && e.vlans === first.vlans)
    || (e.kind === 'port' && first.kind === 'port' && e.protocol === first.protocol && e.vlans === first.vlans && !e.negated && e.low === e.high));
}

export interface RuleWarning { rule: number; message: string; hint?: string }

/**
 * Rules no packet can reach: those that can never match, and those shadowed by earlier rules (naming one when one alone does).
 * Rules are numbered from `first`: a Classifier's from 0, as the outputs they send to.
 */
export function unreachableRules(set: RuleSet, texts: string[], noun: string, first: number): RuleWarning[] {
  const warnings: RuleWarning[] = [];
  set.compiled.reachable.forEach((reachable, rule) => {
    if (reachable) return;
    if (!compileRules([set.expressions[rule]]).compiled.reachable[0]) {
      warnings.push({ rule, message: `${noun} ${rule + first} ('${texts[rule]}') can never match`, hint: 'it asks for things no packet has at once; check its protocols and fields' });
      return;
    }
    const by = set.expressions.findIndex((e, j) => j < rule && !compileRules([e, set.expressions[rule]]).compiled.reachable[1]);
    warnings.push(by >= 0
      ? { rule, message: `${noun} ${rule + first} ('${texts[rule]}') is shadowed by ${noun} ${by + first} ('${texts[by]}'): it never sees a packet`, hint: 'move it before that rule or remove it' }
      : { rule, message: `${noun} ${rule + first} ('${texts[rule]}') is shadowed by the ${noun}s before it: it never sees a packet`, hint: 'move it earlier or remove it' });
  });
  return warnings;
}

export function parseRules(texts: string[]): Expr[] {
  return texts.map(parseExpression);
}

// --- the program in linear memory ----------------------------------------------------------------

/**
 * Layout: a 32-byte header [root u32][node count u32], then the nodes, 32 bytes each:
 *   [op u8: == > >= lookup][base u8: frame, transport, wire][size u8][pad u8][offset u16][l3 u16][mask u32]
 *   [value u32][yes u32][no u32][short u32][pad u32]
 * and after them the hash tables of lookup nodes, [key u32][target u32] per slot (target ~0: empty).
 * A lookup node holds its table's byte offset from the program start in `yes`, and 32 - log2(slots) in `value`.
 * Targets are node indices, or TERMINAL | rule (TERMINAL | NO_MATCH when no rule matches).
 */
export function programSize(compiled: CompiledRules): number {
  return dagSize(compiled) + (compiled.vector ? vectorSize(compiled.vector) : 0);
}

/** Where the DAG's part of the program ends (a multiple of 8): the bit vector's tables start there. */
export function dagSize(compiled: CompiledRules): number {
  return HEADER_SIZE + compiled.nodes.length * NODE_SIZE + compiled.nodes.reduce((s, n) => s + (n.kind === 'lookup' ? 8 * tableSlots(n.entries.size) : 0), 0);
}

const tableSlots = (entries: number) => 2 ** Math.max(1, Math.ceil(Math.log2(entries * 2)));
const hashSlot = (value: number, shift: number) => Math.imul(value, 0x9e3779b1) >>> shift;
/** A lookup node's table: its byte offset from the program start and 32 - log2(slots). */
export interface LookupTable { offset: number; shift: number }

/** Where the program keeps each lookup node's hash table (undefined for test nodes). */
export function lookupTables(compiled: CompiledRules): (LookupTable | undefined)[] {
  let offset = HEADER_SIZE + compiled.nodes.length * NODE_SIZE;
  return compiled.nodes.map((n) => {
    if (n.kind !== 'lookup') return undefined;
    const slots = tableSlots(n.entries.size);
    const table = { offset, shift: 32 - Math.log2(slots) };
    offset += 8 * slots;
    return table;
  });
}

export function writeProgram(compiled: CompiledRules, view: DataView): void {
  view.setUint32(0, compiled.root, true);
  view.setUint32(4, compiled.nodes.length, true);
  const tables = lookupTables(compiled);
  compiled.nodes.forEach((n, i) => {
    const at = HEADER_SIZE + i * NODE_SIZE;
    const field = n.kind === 'test' ? n.atom.field : n.field;
    view.setUint8(at, n.kind === 'test' ? OP_CODE[n.atom.compare] : OP_CODE.lookup);
    view.setUint8(at + 1, BASE_CODE[field.base]);
    view.setUint8(at + 2, field.size);
    view.setUint16(at + 4, field.offset, true);
    view.setUint16(at + 6, field.l3, true);
    view.setUint32(at + 8, n.kind === 'test' ? n.atom.mask : n.mask, true);
    view.setUint32(at + 24, n.fault, true);
    if (n.kind === 'test') {
      view.setUint32(at + 12, n.atom.value, true);
      view.setUint32(at + 16, n.yes, true);
      view.setUint32(at + 20, n.no, true);
      return;
    }
    const { offset, shift } = tables[i]!;
    const slots = 2 ** (32 - shift);
    view.setUint32(at + 12, shift, true);
    view.setUint32(at + 16, offset, true);
    view.setUint32(at + 20, n.otherwise, true);
    for (let s = 0; s < slots; s++) view.setUint32(offset + 8 * s + 4, EMPTY_SLOT, true);
    for (const [value, target] of n.entries) {
      let s = hashSlot(value, shift);
      while (view.getUint32(offset + 8 * s + 4, true) !== EMPTY_SLOT) s = (s + 1) & (slots - 1);
      view.setUint32(offset + 8 * s, value, true);
      view.setUint32(offset + 8 * s + 4, target, true);
    }
  });
  if (compiled.vector) writeVector(compiled.vector, view, dagSize(compiled), NO_MATCH);
}

/** The program as text, one node per line (like Click's `program` handler). */
export function describeProgram(compiled: CompiledRules, outcome: (rule: number) => string): string {
  const target = (t: Target) => (isTerminal(t) ? `[${t - TERMINAL === NO_MATCH ? 'no match' : outcome(t - TERMINAL)}]` : `${t}`);
  const fieldText = (field: Field) => field.base === 'wire' ? 'len' : field.base === 'frame'
    ? `frame[${field.offset}:${field.size}]` : `transport(ip@${field.l3})[${field.offset}:${field.size}]`;
  const hex = (v: number) => `0x${v.toString(16)}`;
  const lines = compiled.nodes.map((n, i) => {
    if (n.kind === 'test') {
      const op = { eq: '==', gt: '>', ge: '>=' }[n.atom.compare];
      return `${i}: ${fieldText(n.atom.field)} & ${hex(n.atom.mask)} ${op} ${hex(n.atom.value)}  yes -> ${target(n.yes)}  no -> ${target(n.no)}  short -> ${target(n.fault)}`;
    }
    const cases = [...n.entries].map(([v, t]) => `${hex(v)} -> ${target(t)}`).join(', ');
    return `${i}: ${fieldText(n.field)} & ${hex(n.mask)} in {${cases}}  else -> ${target(n.otherwise)}  short -> ${target(n.fault)}`;
  });
  const vector = compiled.vector ? `; as code, a bit vector of ${compiled.vector.termRules.length} terms for packets holding every field read` : '';
  return [`root -> ${target(compiled.root)} (${compiled.nodes.length} nodes, ${compiled.mode}${vector})`, ...lines].join('\n');
}
