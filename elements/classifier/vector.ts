// Small rule sets as a bit vector (Lakshman and Stiliadis, SIGCOMM 1998), for the code made for the
// rules (specialize.ts). A decision DAG takes a branch per node, and on mixed traffic the processor
// guesses a third of them wrong (~15 ns each); here the packet takes no branch at all. Each rule is
// written as an OR of terms, ANDs of constraints: a masked field equal to one of a set of values or
// to none of them, or a comparison true or false. Term i is bit i of a 64-bit word, ordered by rule.
// Each field the rules test for equality clears the terms its value contradicts, with a chain of
// selects or, for many values (ports), one lookup in a collision-free hash table; each comparison
// clears its terms with one select. The first bit left is the first rule that matches.
//
// This is the DAG's answer only when every field the rules read lies inside the capture (no read
// falls short, so libpcap's order of evaluation cannot matter); a packet too short for that takes the
// DAG.

import type { Atom, Field, Formula } from './lower.ts';

/** Terms fit one 64-bit word. */
const MAX_TERMS = 64;
/** Past this many selects the DAG's few compares per packet cost less than evaluating them all. */
const MAX_SELECTS = 40;
/** An equality-tested field with this many values is one hash lookup instead of a select per value. */
const MIN_HASHED_VALUES = 4;
/** Hash tables up to 2^12 slots of 16 bytes. */
const MAX_SLOT_BITS = 12;

/** A comparison's effect: the terms left when it holds, and when it does not. */
export interface AtomTest { atom: Atom; whenTrue: bigint; whenFalse: bigint }

/**
 * A masked field tested for equality: the terms left for each value named, `otherwise` for any other value.
 * Mask and values are in wire order (as a little-endian load of the field's bytes reads them), so the
 * code compares and hashes the loaded bytes without swapping them.
 */
export interface EqualityField {
  field: Field;
  mask: number;
  entries: Map<number, bigint>;
  otherwise: bigint;
  /** For many values, a hash table: slot = (value * multiplier) >>> shift, different for every value in entries. */
  hash?: { multiplier: number; shift: number };
}

export interface BitVectorPlan {
  /** Every term's bit. */
  all: bigint;
  tests: AtomTest[];
  fields: EqualityField[];
  /** The rule of each term, in bit order. */
  termRules: number[];
  /** Bytes of frame every read needs. */
  frameEnd: number;
  /** For each IPv4 header position (l3): bytes every read behind that header needs past its end. */
  transportEnds: Map<number, number>;
}

/** What a term needs of one masked field: equal to a value `in` the set, or to none of those `out`. */
type Values = { in: Set<number> } | { out: Set<number> };
/** ... or of one comparison: true or false. */
type Constraint = Values | boolean;
const named = (v: Values) => ('in' in v ? v.in : v.out);
const allows = (v: Values, value: number) => ('in' in v ? v.in.has(value) : !v.out.has(value));
/** Constraint keys: `=fieldKey/mask` for equality, `<atom id` for comparisons. */
type Term = Map<string, Constraint>;

class TooLarge extends Error {}

/** The plan for rules given as formulas (first match wins); undefined when they do not fit one word. */
export function planBitVector(formulas: Formula[]): BitVectorPlan | undefined {
  const atoms = new Map<string, Atom>();
  const termRules: number[] = [];
  const terms: Term[] = [];
  try {
    formulas.forEach((formula, rule) => {
      for (const term of dnf(formula, true, atoms)) {
        terms.push(term);
        termRules.push(rule);
      }
      if (terms.length > MAX_TERMS) throw new TooLarge();
    });
  } catch (e) {
    if (e instanceof TooLarge) return undefined;
    throw e;
  }
  const all = (1n << BigInt(terms.length)) - 1n;
  /** The terms left when what `key` constrains is `satisfies`-fied: those without a constraint on it, and those it satisfies. */
  const left = (key: string, satisfies: (c: Constraint) => boolean) =>
    terms.reduce((m, t, i) => (t.has(key) && !satisfies(t.get(key)!) ? m & ~(1n << BigInt(i)) : m), all);

  // Keys met on the way only in terms that no packet satisfies are left out.
  const keys = [...new Set(terms.flatMap((t) => [...t.keys()]))];
  const tests: AtomTest[] = [];
  const fields: EqualityField[] = [];
  for (const key of keys) {
    const atom = atoms.get(key)!;
    if (key.startsWith('<')) {
      tests.push({ atom, whenTrue: left(key, (c) => c === true), whenFalse: left(key, (c) => c === false) });
      continue;
    }
    // Equality keys hold Values: the terms left for each value named, and for any other (only `out` ones allow it).
    const values = [...new Set(terms.flatMap((t) => (t.has(key) ? [...named(t.get(key) as Values)] : [])))];
    const wire = (v: number) => wireOrder(atom.field.size, v);
    const entries = new Map(values.map((v) => [wire(v), left(key, (c) => allows(c as Values, v))] as const));
    const otherwise = left(key, (c) => 'out' in (c as Values));
    const hash = values.length >= MIN_HASHED_VALUES ? perfectHash([...entries.keys()]) : undefined;
    fields.push({ field: atom.field, mask: wire(atom.mask), entries, otherwise, hash });
  }
  if (tests.length + fields.reduce((s, f) => s + selects(f), 0) > MAX_SELECTS) return undefined;

  let frameEnd = 0;
  const transportEnds = new Map<number, number>();
  for (const { field } of keys.map((k) => atoms.get(k)!)) {
    if (field.base === 'frame') frameEnd = Math.max(frameEnd, field.offset + field.size);
    if (field.base === 'transport') {
      frameEnd = Math.max(frameEnd, field.l3 + 1);
      transportEnds.set(field.l3, Math.max(transportEnds.get(field.l3) ?? 0, field.offset + field.size));
    }
  }
  return { all, tests, fields, termRules, frameEnd, transportEnds };
}

/**
 * `value` of a `size`-byte field in wire order: as a little-endian load of its bytes in network order
 * reads it. Bits above the field's size stay, so a value no field can hold still matches nothing.
 */
export function wireOrder(size: 1 | 2 | 4, value: number): number {
  if (size === 1) return value >>> 0;
  if (size === 2) return ((value & ~0xffff) | ((value & 0xff) << 8) | ((value >>> 8) & 0xff)) >>> 0;
  return (((value & 0xff) << 24) | ((value & 0xff00) << 8) | ((value >>> 8) & 0xff00) | (value >>> 24)) >>> 0;
}

/** A plan split on one field's value. */
export interface SplitPlan {
  /** Index in plan.fields of the field split on. */
  field: number;
  /** A branch per value named, then one for any other value (value undefined). */
  branches: { value?: number; terms: bigint; tests: AtomTest[]; fields: number[] }[];
}

/**
 * The plan split on the ethertype, when that leaves each branch less to evaluate: each value the rules
 * name (and any other) starts from the terms it leaves and keeps only the tests and fields that can
 * still clear one of them (an IPv4 packet skips every IPv6 read). Only the ethertype: in real traffic
 * its value hardly changes from packet to packet, so its branch is predicted, where one on a protocol
 * or a port would be missed on mixed traffic.
 */
export function splitOnEthertype(plan: BitVectorPlan): SplitPlan | undefined {
  const field = plan.fields.findIndex((f) => f.field.base === 'frame' && f.field.offset === 12 && f.field.size === 2 && f.entries.size <= MAX_SPLIT_VALUES);
  if (field < 0) return undefined;
  const { entries, otherwise } = plan.fields[field];
  const others = plan.fields.map((_, i) => i).filter((i) => i !== field);
  /** Whether clearing `clears` can change any of the terms `alive`. */
  const matters = (alive: bigint, ...clears: bigint[]) => clears.some((kept) => (kept & alive) !== alive);
  const branch = (terms: bigint, value?: number) => ({
    value, terms,
    tests: plan.tests.filter((t) => matters(terms, t.whenTrue, t.whenFalse)),
    fields: others.filter((i) => matters(terms, plan.fields[i].otherwise, ...plan.fields[i].entries.values())),
  });
  // IPv4 first, then IPv6: the branches are tried in order.
  const order = (value: number) => [IPV4, IPV6].indexOf(value) >>> 0;
  const values = [...entries.keys()].sort((a, b) => order(a) - order(b));
  const branches = [...values.map((value) => branch(plan.all & entries.get(value)!, value)), branch(plan.all & otherwise)];
  const cost = (tests: AtomTest[], fields: number[]) => tests.length + fields.reduce((s, i) => s + selects(plan.fields[i]), 0);
  const worst = Math.max(...branches.map((b) => cost(b.tests, b.fields)));
  return worst + 1 < cost(plan.tests, plan.fields.map((_, i) => i)) ? { field, branches } : undefined;
}

/** Past this many ethertypes the chain of compares costs more than it saves. */
const MAX_SPLIT_VALUES = 8;
/** IPv4's and IPv6's ethertypes in wire order. */
const IPV4 = 0x0008;
const IPV6 = 0xdd86;

/** The selects a field costs: one per value, or one lookup. */
const selects = (f: EqualityField) => (f.hash ? 1 : f.entries.size);

/** The formula (or its negation) as an OR of terms; contradictory terms are left out. */
function dnf(formula: Formula, positive: boolean, atoms: Map<string, Atom>): Term[] {
  switch (formula.kind) {
    case 'true': return positive ? [new Map()] : [];
    case 'false': return positive ? [] : [new Map()];
    // Lowered rules read nothing yet, so they hold no fault; one would not be a plain boolean.
    case 'fault': throw new TooLarge();
    case 'atom': {
      const { atom } = formula;
      const equality = atom.compare === 'eq' && atom.field.base !== 'wire';
      const key = equality ? `=${atom.fieldKey}/${atom.mask}` : `<${atom.id}`;
      if (!atoms.has(key)) atoms.set(key, atom);
      const constraint: Constraint = !equality ? positive : positive ? { in: new Set([atom.value]) } : { out: new Set([atom.value]) };
      return [new Map([[key, constraint]])];
    }
    case 'not': return dnf(formula.arg, !positive, atoms);
    default: {
      const l = dnf(formula.left, positive, atoms);
      const r = dnf(formula.right, positive, atoms);
      if ((formula.kind === 'or') === positive) return union(l, r);
      const product: Term[] = [];
      for (const a of l) {
        for (const b of r) {
          const both = conjoin(a, b);
          if (both) product.push(both);
        }
      }
      return union(product, []);
    }
  }
}

/** a AND b, or undefined when no packet has both. */
function conjoin(a: Term, b: Term): Term | undefined {
  const out = new Map(a);
  for (const [key, c] of b) {
    const d = out.get(key);
    let both: Constraint = c;
    if (d !== undefined) {
      if (typeof c === 'boolean' || typeof d === 'boolean') {
        if (c !== d) return undefined;
      } else if ('in' in c || 'in' in d) {
        const [inside, other] = 'in' in c ? [c, d] : [d as { in: Set<number> }, c];
        const keep = [...inside.in].filter((v) => allows(other, v));
        if (keep.length === 0) return undefined;
        both = { in: new Set(keep) };
      } else {
        both = { out: new Set([...c.out, ...d.out]) };
      }
    }
    out.set(key, both);
  }
  return out;
}

/**
 * The terms of both, with terms that differ only in the values one field may equal made one
 * (`tcp port 80 or tcp port 443` is one term, port in {80, 443}); throws past MAX_TERMS.
 */
function union(a: Term[], b: Term[]): Term[] {
  const out: Term[] = [];
  for (const term of [...a, ...b]) {
    const merged = out.findIndex((t) => mergeable(t, term));
    if (merged < 0) out.push(term);
    else out[merged] = merge(out[merged], term);
  }
  if (out.length > MAX_TERMS) throw new TooLarge();
  return out;
}

const sameConstraint = (c: Constraint, d: Constraint) => typeof c === 'boolean' || typeof d === 'boolean' ? c === d
  : 'in' in c && 'in' in d ? sameSet(c.in, d.in) : 'out' in c && 'out' in d ? sameSet(c.out, d.out) : false;
const sameSet = (x: Set<number>, y: Set<number>) => x.size === y.size && [...x].every((v) => y.has(v));

/** Equal keys, equal constraints but at most one, and that one an `in` in both. */
function mergeable(t: Term, u: Term): boolean {
  if (t.size !== u.size) return false;
  let differences = 0;
  for (const [key, c] of t) {
    const d = u.get(key);
    if (d === undefined) return false;
    if (sameConstraint(c, d)) continue;
    if (typeof c === 'boolean' || typeof d === 'boolean' || !('in' in c) || !('in' in d) || ++differences > 1) return false;
  }
  return true;
}

function merge(t: Term, u: Term): Term {
  const out = new Map(t);
  for (const [key, c] of u) {
    const d = t.get(key)!;
    if (!sameConstraint(c, d)) out.set(key, { in: new Set([...named(d as Values), ...named(c as Values)]) });
  }
  return out;
}

/** A multiplier and table size that put every value in a slot of its own, if one is found soon. */
function perfectHash(values: number[]): { multiplier: number; shift: number } | undefined {
  let seed = 0x2545f491;
  const minBits = Math.ceil(Math.log2(values.length * 2));
  for (let bits = minBits; bits <= Math.min(minBits + 4, MAX_SLOT_BITS); bits++) {
    for (let attempt = 0; attempt < 64; attempt++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      const multiplier = attempt === 0 ? 0x9e3779b1 : (seed | 1) >>> 0;
      const shift = 32 - bits;
      if (new Set(values.map((v) => Math.imul(v, multiplier) >>> shift)).size === values.length) return { multiplier, shift };
    }
  }
  return undefined;
}

/** Bytes the plan's tables take in config data, behind the DAG program. */
export function vectorSize(plan: BitVectorPlan): number {
  return plan.fields.reduce((s, f) => s + tableBytes(f), 0) + 4 * (MAX_TERMS + 1);
}

const tableBytes = (f: EqualityField) => (f.hash ? 16 * 2 ** (32 - f.hash.shift) : 0);

/** Where each hashed field's table starts (fields in plan order), and the term -> rule table, from `base`. */
export function vectorLayout(plan: BitVectorPlan, base: number): { tables: number[]; rules: number } {
  let offset = base;
  const tables = plan.fields.map((f) => {
    const at = offset;
    offset += tableBytes(f);
    return at;
  });
  return { tables, rules: offset };
}

/**
 * Writes the tables at `base` (8-byte aligned): per field with a hash, slots of [value u32][pad u32][terms u64],
 * an empty slot holding value 0 with `otherwise` (a 0 in the table sits in its own slot, so a lookup that
 * lands on an empty slot has another value); then the rule of each term, and NO_MATCH for no bit (ctz = 64).
 */
export function writeVector(plan: BitVectorPlan, view: DataView, base: number, noMatch: number): void {
  const { tables, rules } = vectorLayout(plan, base);
  plan.fields.forEach((f, i) => {
    if (!f.hash) return;
    for (let s = 0; s < 2 ** (32 - f.hash.shift); s++) view.setBigUint64(tables[i] + 16 * s + 8, f.otherwise, true);
    for (const [value, terms] of f.entries) {
      const at = tables[i] + 16 * (Math.imul(value, f.hash.multiplier) >>> f.hash.shift);
      view.setUint32(at, value, true);
      view.setBigUint64(at + 8, terms, true);
    }
  });
  for (let t = 0; t <= MAX_TERMS; t++) view.setUint32(rules + 4 * t, plan.termRules[t] ?? noMatch, true);
}
