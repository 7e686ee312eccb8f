// Every element's handlers: the ones it declares, plus one read handler per state field, a
// read/write handler per parameter (writes only for parameters the fast path reads) and `reset`.

import type { ElementType, HandlerSpec } from './element.ts';

export type Handler = HandlerSpec;

export function handlersOf(type: ElementType): Record<string, Handler> {
  // No prototype: a handler name from a user (ctl read x.constructor) finds only handlers.
  const handlers: Record<string, Handler> = Object.create(null);
  for (const [name, spec] of Object.entries(type.params)) {
    handlers[name] = {
      doc: `the ${name} parameter (${spec.type.description})`,
      read: (view) => (view.params[name] === undefined ? '' : spec.type.format(view.params[name])),
      write: spec.type.fast ? (view, value) => view.setParam(name, parseHandlerValue(value)) : undefined,
    };
  }
  const state = Object.entries(type.state ?? {}).filter(([, s]) => (s.kind !== 'scalar' || !s.internal) && s.kind !== 'data');
  for (const [name, s] of state) {
    handlers[name] = {
      doc: s.kind === 'flow-table' ? `live entries of ${name}: ${s.doc}` : s.doc,
      read: (view) => exactNumber(view.read(name)),
      counter: true,
      monotonic: s.kind === 'scalar' && s.monotonic,
    };
  }
  if (state.length) {
    handlers.reset = {
      doc: 'zeroes the counters (its state fields, and its packets in and out)',
      write: (view, value) => {
        // A value would be taken for an argument (a counter to zero alone, say), and is none.
        if (value.trim()) throw new Error(`reset takes no value (given '${value}'): it zeroes every counter of the element`);
        view.reset();
      },
    };
  }
  // A read that takes an argument (a subscriber to show) has nothing to show without one.
  for (const [name, h] of Object.entries(type.handlers ?? {})) handlers[name] = { ...h, counter: h.counter ?? (h.read !== undefined && !takesArgument(h) && !h.write) };
  return handlers;
}

/** Whether a read handler takes an argument: as it declares (HandlerSpec.takesArgument), else by its parameters. */
export function takesArgument(h: Handler): boolean {
  return h.takesArgument ?? (h.read !== undefined && h.read.length >= 2);
}

/**
 * A state value as a number, or as the bigint it is past 2^53, where a number would round it (a gauge's timestamp in ns:
 * JSON shows it as a string of its digits, report.ts toJson).
 */
function exactNumber(value: bigint): number | bigint {
  return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

/** Handler values come as text; numbers and booleans are written as they are in YAML. */
function parseHandlerValue(text: string): unknown {
  const t = text.trim();
  if (t === 'true' || t === 'false') return t === 'true';
  if (/^-?\d+$/.test(t)) return Number(t);
  return t;
}
