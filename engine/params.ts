// Typed element parameters: one declaration validates the config value, documents it, and says
// how it reaches the fast path (the fields of the element's generated layout class).

import { didYouMean } from './errors.ts';

/** Types a value can have in an element's layout class in linear memory. */
export const FAST_TYPES = ['u8', 'u16', 'u32', 'u64', 'i32', 'bool'] as const;
export type FastType = typeof FAST_TYPES[number];

export interface FastField {
  name: string;
  type: FastType;
}

/** Where inside a parameter's value an error or a warning is: an item of a list, a character of a string. */
export interface ValueLocation {
  /** Index of the item in a list value. */
  item?: number;
  /** Index of the character in a string value (or in the string item). */
  offset?: number;
}

export class ParamTypeError extends Error {
  /** The mistakes in the other items of a list, reported with this one (the first). */
  more: ParamTypeError[] = [];

  constructor(message: string, readonly hint?: string, public at: ValueLocation = {}) {
    super(message);
    this.name = 'ParamTypeError';
  }

  /**
   * By name, not instanceof: element.ts files are imported by URL, so their parameter types may come
   * from another instance of this module (tsx's CommonJS and ESM loaders, or another copy of wirepath).
   */
  static is(e: unknown): e is ParamTypeError {
    return e instanceof Error && e.name === 'ParamTypeError';
  }
}

export interface ParamType<T> {
  /** What the value is, for errors and docs: "an IPv4 address". */
  description: string;
  parse(raw: unknown): T;
  format(value: T): string;
  /** The layout fields that carry the value to the fast path; absent for values the fast path never reads. */
  fast?(name: string): FastField[];
  /** The values of those fields, in the same order. */
  encode?(value: T): (number | bigint)[];
  /** Throws ParamTypeError for a value (in its parsed form: a declaration's default) the type does not hold. */
  check?(value: T): void;
}

/** How an element uses a file (param.file): reads it, writes it anew, or appends to it. */
export type FileUse = 'reads' | 'writes' | 'appends';

export interface ParamSpec<T = unknown> {
  type: ParamType<T>;
  doc: string;
  default?: T;
  required: boolean;
  fixed: boolean;
  /** Where the declared default is and why it is no value of the type (' (line 5): default ...'): the declaration check reports it after the parameter's name. */
  badDefault?: string;
  /** A file's path (param.file): how the element uses it, for the config check that no two elements clash on one file. */
  file?: FileUse;
}

interface ParamOptions<T> {
  /** The value, or its text as a config would write it ('30s', '10.0.0.1'), parsed as the config's would be. */
  default?: T | string;
  /** A config must give it. */
  required?: boolean;
  /**
   * Read once, when the element is set up (it builds data from it): a running pipeline refuses to change it
   * (a reload does). Parameters that size state or ports are found to be so without saying.
   */
  fixed?: boolean;
}

function documented(doc: unknown): void {
  if (typeof doc !== 'string' || !doc) throw new Error(`a parameter's first argument is the line that documents it, not ${describe(doc)}`);
}

function spec<T>(type: ParamType<T>, doc: string, options: ParamOptions<T> = {}, written = typeof options.default === 'string'): ParamSpec<T> {
  documented(doc);
  let value = options.default;
  let badDefault: string | undefined;
  try {
    if (written) value = type.parse(value);
    else if (value !== undefined) type.check?.(value as T);
  } catch (e) {
    const hint = (e as Partial<ParamTypeError>).hint;
    // Where the declaration wrote it: the first frame in an element.ts.
    const at = /element\.ts[^:]*:(\d+):(\d+)\)?$/m.exec(new Error().stack ?? '');
    badDefault = `${at ? ` (line ${at[1]})` : ''}: default ${(e as Error).message}${hint ? ` (${hint})` : ''}`;
    value = undefined;
  }
  return { type, doc, default: value as T | undefined, required: options.required ?? false, fixed: options.fixed ?? false, ...(badDefault ? { badDefault } : {}) };
}

const fail = (message: string, hint?: string): never => {
  throw new ParamTypeError(message, hint);
};

function describe(raw: unknown): string {
  // JSON would show Infinity and NaN (YAML's .inf and .nan) as null.
  return typeof raw === 'string' ? `'${raw}'` : typeof raw === 'number' ? String(raw) : JSON.stringify(raw);
}

export function parseIPv4(raw: unknown): number {
  const text = String(raw);
  const parts = text.split('.');
  if (typeof raw !== 'string' || parts.length !== 4 || !parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255)) {
    const zeros = parts.length === 4 && parts.some((p) => /^0\d/.test(p));
    fail(`${describe(raw)} is not an IPv4 address`, zeros ? 'write each number without leading zeros (they are read as octal elsewhere), e.g. 10.0.0.1'
      : 'write four decimal numbers 0-255 separated by dots, e.g. 203.0.113.7');
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function formatIPv4(value: number): string {
  return [24, 16, 8, 0].map((s) => (value >>> s) & 255).join('.');
}

export interface Cidr {
  address: number;
  prefix: number;
  mask: number;
}

/** Addresses that are no host's on the Internet (RFC 6890): never a packet's source, and nothing to send to. */
const NOT_HOSTS = [
  { net: '0.0.0.0/8', what: '"this network"' },
  { net: '127.0.0.0/8', what: 'loopback' },
  { net: '169.254.0.0/16', what: 'link-local' },
  { net: '224.0.0.0/4', what: 'multicast' },
  { net: '240.0.0.0/4', what: 'reserved or broadcast' },
];

/** What kind of addresses that are no host's the prefix `c` holds ('loopback', 'multicast', ...), or undefined when it holds none. */
export function nonHostKind(c: Cidr): string | undefined {
  return NOT_HOSTS.find(({ net }) => {
    const range = parseCidr(net);
    const shorter = c.prefix <= range.prefix ? c : range, longer = shorter === c ? range : c;
    return ((longer.address & shorter.mask) >>> 0) === shorter.address;
  })?.what;
}

/** The prefix of one address. */
export const hostPrefix = (address: number): Cidr => ({ address, prefix: 32, mask: 0xffffffff });

export function parseCidr(raw: unknown): Cidr {
  const text = String(raw);
  const m = /^([^/]+)\/(\d{1,2})$/.exec(text);
  if (typeof raw !== 'string' || !m || Number(m[2]) > 32) {
    fail(`${describe(raw)} is not a CIDR prefix`, 'write ADDRESS/LENGTH with a length 0-32, e.g. 100.64.0.0/10');
  }
  const address = parseIPv4(m![1]);
  const prefix = Number(m![2]);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  if ((address & mask) >>> 0 !== address) {
    fail(`${describe(raw)} has bits set past its /${prefix}`, `did you mean ${formatIPv4((address & mask) >>> 0)}/${prefix}?`);
  }
  return { address, prefix, mask };
}

const DURATION_UNITS: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9, d: 86400e9 };

/** A duration in nanoseconds: '300s', '5m', '1.5h', '250ms'; a bare number means seconds. */
export function parseDuration(raw: unknown): number {
  let ns: number;
  if (typeof raw === 'number' && Number.isFinite(raw) && raw >= 0) ns = Math.round(raw * 1e9);
  else {
    const m = typeof raw === 'string' ? /^(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)$/.exec(raw.trim()) : null;
    if (!m) fail(`${describe(raw)} is not a duration`, "write a number with a unit: ns, us, ms, s, m, h or d, e.g. '300s' or '2h'");
    ns = Math.round(Number(m![1]) * DURATION_UNITS[m![2]]);
  }
  // Deadlines are the clock plus a duration, in 64-bit nanoseconds and (NAT blocks) 32-bit seconds: both must hold them.
  if (ns > LONGEST_DURATION_NS) fail(`${describe(raw)} is longer than ${LONGEST_DURATION_NS / DURATION_UNITS.d}d`, 'deadlines that far ahead do not fit the clock\'s counters; ten years is the most');
  return ns;
}

const LONGEST_DURATION_NS = 3650 * 86_400e9;

export function formatDuration(ns: number): string {
  for (const [unit, scale] of [['h', 3600e9], ['m', 60e9], ['s', 1e9], ['ms', 1e6], ['us', 1e3]] as const) {
    if (ns >= scale && ns % scale === 0) return `${ns / scale}${unit}`;
  }
  return `${ns}ns`;
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1e3, kb: 1e3, kib: 1024, m: 1e6, mb: 1e6, mib: 1 << 20, g: 1e9, gb: 1e9, gib: 1 << 30 };

/** A size in bytes: 1500, '64B', '2KiB', '16MiB'. */
export function parseSize(raw: unknown): number {
  if (typeof raw === 'number' && Number.isInteger(raw) && raw >= 0) return raw;
  const m = typeof raw === 'string' ? /^(\d+)\s*([a-zA-Z]*)$/.exec(raw.trim()) : null;
  const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) fail(`${describe(raw)} is not a size`, "write a whole number of bytes, optionally with a unit: B, KiB, MiB, GiB (or k, M, G), e.g. '64B'");
  return Number(m![1]) * unit!;
}

export function parseMac(raw: unknown): number[] {
  const m = typeof raw === 'string' ? /^([0-9a-fA-F]{2})([:-])([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})$/.exec(raw) : null;
  if (!m) fail(`${describe(raw)} is not an Ethernet address`, 'write six hex bytes separated by colons, e.g. 02:00:00:00:00:01');
  return [m![1], m![3], m![4], m![5], m![6], m![7]].map((h) => parseInt(h, 16));
}

function intRange(raw: unknown, min: number, max: number, what: string): number {
  if (typeof raw !== 'number' || !Number.isInteger(raw)) {
    // '100' in quotes is text to YAML: the number it means is there, without them.
    const quoted = typeof raw === 'string' && /^-?\d+$/.test(raw.trim());
    fail(`${describe(raw)} is not ${what}`, quoted ? `write it without quotes: ${raw.trim()}` : `write a whole number from ${min} to ${max}`);
  }
  if ((raw as number) < min || (raw as number) > max) fail(`${raw} is out of range for ${what}`, `use a value from ${min} to ${max}`);
  return raw as number;
}

export const types = {
  ipv4: {
    description: 'an IPv4 address',
    parse: parseIPv4,
    format: formatIPv4,
    fast: (name) => [{ name, type: 'u32' }],
    encode: (value) => [value],
  } satisfies ParamType<number>,
  cidr: {
    description: 'a CIDR prefix',
    parse: parseCidr,
    format: (c) => `${formatIPv4(c.address)}/${c.prefix}`,
    fast: (name) => [{ name: `${name}_address`, type: 'u32' }, { name: `${name}_mask`, type: 'u32' }],
    encode: (c) => [c.address, c.mask],
  } satisfies ParamType<Cidr>,
  /** A list item such as a NAT's pool: `203.0.113.0/28`, or an address alone (a /32). */
  prefix: {
    description: 'an IPv4 prefix (an address alone is a /32)',
    parse: (raw) => (typeof raw === 'string' && !raw.includes('/') ? { address: parseIPv4(raw), prefix: 32, mask: 0xffffffff } : parseCidr(raw)),
    format: (c) => `${formatIPv4(c.address)}/${c.prefix}`,
  } satisfies ParamType<Cidr>,
  port: {
    description: 'a port number',
    parse: (raw) => intRange(raw, 0, 65535, 'a port number'),
    check: (value) => void intRange(value, 0, 65535, 'a port number'),
    format: String,
    fast: (name) => [{ name, type: 'u16' }],
    encode: (value) => [value],
  } satisfies ParamType<number>,
  duration: {
    description: 'a duration',
    parse: parseDuration,
    format: formatDuration,
    fast: (name) => [{ name, type: 'u64' }],
    encode: (value) => [BigInt(value)],
  } satisfies ParamType<number>,
  size: sizeType(),
  mac: {
    description: 'an Ethernet address',
    parse: parseMac,
    format: (b) => b.map((x) => x.toString(16).padStart(2, '0')).join(':'),
    // The six bytes in wire order in the low bytes of a little-endian u64, as Ethernet.setAddress takes them.
    fast: (name) => [{ name, type: 'u64' }],
    encode: (b) => [b.reduceRight((acc, x) => (acc << 8n) | BigInt(x), 0n)],
  } satisfies ParamType<number[]>,
  bool: {
    description: 'true or false',
    parse: (raw) => (typeof raw === 'boolean' ? raw : fail(`${describe(raw)} is not true or false`, 'write true or false')),
    check: (value) => void (typeof value === 'boolean' || fail(`${describe(value)} is not true or false`)),
    format: String,
    fast: (name) => [{ name, type: 'bool' }],
    encode: (value) => [value ? 1 : 0],
  } satisfies ParamType<boolean>,
  string: {
    description: 'a string',
    parse: (raw) => (typeof raw === 'string' && raw.length > 0 ? raw
      : fail(`${describe(raw)} is not a non-empty string`, raw === '' ? 'give it a value' : "quote a value YAML would read as a number or a boolean, e.g. '2024'")),
    format: String,
  } satisfies ParamType<string>,
};

/** Sizes in bytes from `min` to `max` (1500, '64B', '2KiB'); the fast path holds them in a u32. */
export function sizeType(min = 0, max = 0xffffffff): ParamType<number> {
  const inRange = (raw: unknown) => {
    const bytes = parseSize(raw);
    if (bytes > 0xffffffff) fail(`${describe(raw)} is too large`, 'a size is at most 4294967295 bytes (4 GiB - 1)');
    if (bytes < min || bytes > max) fail(`${describe(raw)} is out of range`, `use a size from ${min} to ${max} bytes`);
    return bytes;
  };
  return {
    description: min === 0 && max === 0xffffffff ? 'a size in bytes' : `a size from ${min} to ${max} bytes`,
    parse: inRange,
    check: (value) => void inRange(value),
    format: String,
    fast: (name) => [{ name, type: 'u32' }],
    encode: (value) => [value],
  };
}

export function intType(min: number, max: number): ParamType<number> {
  if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || min > max) {
    throw new Error(`param.int takes (doc, min, max, options), min and max whole numbers within ±(2^53 - 1), min not above max: not min ${describe(min)}, max ${describe(max)}`);
  }
  // A negative minimum makes the field an i32: a wider range would be cut to 32 bits in the fast path.
  if (min < 0 && (min < -0x80000000 || max > 0x7fffffff)) {
    throw new Error(`param.int with a negative min is an i32 in the fast path: min and max from -2147483648 to 2147483647, not min ${min}, max ${max}`);
  }
  return {
    description: `a whole number from ${min} to ${max}`,
    parse: (raw) => intRange(raw, min, max, 'a whole number'),
    check: (value) => void intRange(value, min, max, 'a whole number'),
    format: String,
    fast: (name) => [{ name, type: min < 0 ? 'i32' : max > 0xffffffff ? 'u64' : 'u32' }],
    encode: (value) => [max > 0xffffffff ? BigInt(value) : value],
  };
}

/** A YAML list whose items are each parsed by `item`; an item's error says which item it is. */
export function listType<T>(item: ParamType<T>): ParamType<T[]> {
  return {
    description: `a list (or one value), each ${item.description}`,
    parse: (raw) => {
      // One value is a list of one: pool: 203.0.113.0/24, or --set nat.pool=203.0.113.0/24 (where no list can be written).
      if (typeof raw === 'string' || typeof raw === 'number') return [item.parse(raw)];
      if (!Array.isArray(raw) || raw.length === 0) fail(`${describe(raw)} is not a non-empty list`, "write a YAML list: [a, b] or one '- item' per line");
      // Every item is parsed, so that all their mistakes are reported at once.
      const mistakes: ParamTypeError[] = [];
      const values = (raw as unknown[]).map((value, index) => {
        try {
          return item.parse(value);
        } catch (e) {
          if (!ParamTypeError.is(e)) throw e;
          e.at = { ...e.at, item: index };
          mistakes.push(e);
          return undefined as T;
        }
      });
      if (mistakes.length) {
        mistakes[0].more = mistakes.slice(1);
        throw mistakes[0];
      }
      return values;
    },
    format: (values) => values.map((v) => item.format(v)).join(', '),
  };
}

export function enumType<const V extends string>(values: readonly V[]): ParamType<V> {
  return {
    description: `one of ${values.join(', ')}`,
    parse: (raw) => {
      if (typeof raw === 'string' && (values as readonly string[]).includes(raw)) return raw as V;
      const close = typeof raw === 'string' ? didYouMean(raw, values) : undefined;
      return fail(`${describe(raw)} is not one of ${values.join(', ')}`, close ? `did you mean ${close}?` : `write one of ${values.join(', ')}`);
    },
    check(value) {
      this.parse(value);
    },
    format: String,
    fast: (name) => [{ name, type: 'u8' }],
    encode: (value) => [values.indexOf(value)],
  };
}

/**
 * Parameter declarations for element authors: `param.ipv4('the new source address')`. Each says what a config
 * writes and the field(s) it becomes in process.ts's layout class; an optional parameter without a default
 * adds a `has_NAME: bool`. Strings and lists stay on the control side (they never reach the fast path).
 */
export const param = {
  /** An IPv4 address ('10.0.0.1'): `NAME: u32`, in host order. */
  ipv4: (doc: string, o?: ParamOptions<number>) => spec(types.ipv4, doc, o),
  /** A prefix ('10.0.0.0/8'): `NAME_address: u32` and `NAME_mask: u32`. */
  cidr: (doc: string, o?: ParamOptions<Cidr>) => spec(types.cidr, doc, o),
  /** A port number (0-65535): `NAME: u16`. */
  port: (doc: string, o?: ParamOptions<number>) => spec(types.port, doc, o),
  /** A duration ('30s', '100ms', '2m'; a bare number is seconds): `NAME: u64` in ns. */
  duration: (doc: string, o?: ParamOptions<number>) => spec(types.duration, doc, o),
  /** A size in bytes (1500, '64KiB', '1MB'), with `min` and `max` (bytes) when given: `NAME: u32`. */
  size: (doc: string, o: ParamOptions<number> & { min?: number; max?: number } = {}) => spec(sizeType(o.min, o.max), doc, o),
  /** An Ethernet address ('02:00:00:00:00:01'): `NAME: u64`, its six bytes in wire order from the lowest (as Ethernet.setAddress takes them). */
  mac: (doc: string, o?: ParamOptions<number[]>) => spec(types.mac, doc, o),
  /** true or false: `NAME: bool`. */
  bool: (doc: string, o?: ParamOptions<boolean>) => spec(types.bool, doc, o),
  /** Any text (a device, a URL path): control side only. */
  string: (doc: string, o?: ParamOptions<string>) => spec(types.string, doc, o),
  /**
   * A file's path, relative to the config file: control side only. `use` says what the element does with it: a config in
   * which elements share a file that one of them writes (readers may share, and so may writers that append), or in which
   * one writes the config itself, is refused with both named (-, standard output for some, FIFOs and devices are let be).
   */
  file: (doc: string, use: 'reads' | 'writes' | 'appends', o?: ParamOptions<string>) => ({ ...spec(types.string, doc, o), file: use }),
  /** A list of strings; with `item` (one of `types`, or your own), each is parsed by that type and errors point at the item. Control side only. */
  strings: <T = string>(doc: string, o?: Omit<ParamOptions<T[]>, 'default'> & { default?: T[] | string[] | string; item?: ParamType<T> }) =>
    // A default list of texts (['10.0.0.0/8']) is written as a config writes it: its items are parsed by `item`.
    spec(listType(o?.item ?? (types.string as unknown as ParamType<T>)), doc, o as ParamOptions<T[]>,
      Array.isArray(o?.default) && o.default.length > 0 && o.default.every((v) => typeof v === 'string')),
  /** A whole number from min to max: `NAME: u32` (i32 when min < 0, so min and max within ±2^31; u64 when max does not fit 32 bits). */
  int: (doc: string, min: number, max: number, o?: ParamOptions<number>) => {
    // Before the range: a forgotten doc shifts the arguments, and that is what to say.
    documented(doc);
    return spec(intType(min, max), doc, o);
  },
  /** One of `values`: `NAME: u8`, the value's index in the list. */
  enum: <const V extends string>(doc: string, values: readonly V[], o?: ParamOptions<V>) => spec(enumType(values), doc, o),
  /** A type of the element's own (parse throws ParamTypeError for a bad value; `fast` lays out its fields, if any). */
  custom: <T>(doc: string, type: ParamType<T>, o?: ParamOptions<T>) => spec(type, doc, o),
};
