import { Packet } from "wirepath";

// Runs a decision program (written by decision.ts into config data) on one packet: a walk down a
// DAG of masked compares, each reading 1, 2 or 4 bytes of the frame. As in BPF, a read past the
// captured bytes takes the node's "short" branch (the rule being evaluated does not match).
// Node: [op u8][base u8][size u8][pad u8][offset u16][l3 u16][mask u32][value u32][yes u32][no u32][short u32][pad u32].

/** The rule number returned when no rule matches. */
export const NO_MATCH: u32 = 0x7ffffffe;

const TERMINAL: u32 = 0x80000000;
const HEADER: usize = 32;
const OP_EQ: u8 = 0;
const OP_GT: u8 = 1;
const OP_GE: u8 = 2;
const BASE_TRANSPORT: u8 = 1;
const BASE_WIRE: u8 = 2;
const EMPTY_SLOT: u32 = 0xffffffff;

/**
 * A decider walks the decision program: a class with `decide(program, p): u32`, given to an element's
 * batch loop as a type parameter so that the call is direct. specialize.ts makes deciders that run the
 * rules as code; this one interprets the program.
 */
@unmanaged export class Interpreter {
  @inline decide(program: usize, p: Packet): u32 { return classify(program, p); }
}

/** The number of the first rule the packet matches, or NO_MATCH. */
export function classify(program: usize, p: Packet): u32 {
  const data = p.data;
  const length = p.length;
  let at = load<u32>(program);
  while (at < TERMINAL) {
    const node = program + HEADER + (<usize>at << 5);
    const base = load<u8>(node, 1);
    let value: u32;
    if (base == BASE_WIRE) {
      value = p.wireLength;
    } else {
      let offset = <u32>load<u16>(node, 4);
      if (base == BASE_TRANSPORT) {
        // Behind the IPv4 header, whose length is in its first byte.
        const l3 = <u32>load<u16>(node, 6);
        if (l3 >= length) { at = load<u32>(node, 24); continue; }
        offset += l3 + ((<u32>load<u8>(data + l3) & 15) << 2);
      }
      const size = <u32>load<u8>(node, 2);
      if (offset + size > length) { at = load<u32>(node, 24); continue; }
      const addr = data + offset;
      value = size == 1 ? <u32>load<u8>(addr) : size == 2 ? <u32>bswap<u16>(load<u16>(addr)) : bswap<u32>(load<u32>(addr));
    }
    value &= load<u32>(node, 8);
    const op = load<u8>(node);
    const operand = load<u32>(node, 12);
    if (op == OP_EQ) at = value == operand ? load<u32>(node, 16) : load<u32>(node, 20);
    else if (op == OP_GT) at = value > operand ? load<u32>(node, 16) : load<u32>(node, 20);
    else if (op == OP_GE) at = value >= operand ? load<u32>(node, 16) : load<u32>(node, 20);
    else at = lookupTarget(program + <usize>load<u32>(node, 16), value, operand, load<u32>(node, 20));
  }
  return at & ~TERMINAL;
}

/** The target a lookup node's hash table (at `table`, 2^(32 - shift) slots) holds for `value`, else `otherwise`. */
export function lookupTarget(table: usize, value: u32, shift: u32, otherwise: u32): u32 {
  const mask: u32 = (<u32>0xffffffff) >>> shift;
  let slot = (value * 0x9e3779b1) >>> shift;
  let entry = table + (<usize>slot << 3);
  // Tables are at most half full, so the probe ends at an empty slot.
  while (load<u32>(entry, 4) != EMPTY_SLOT && load<u32>(entry) != value) {
    slot = (slot + 1) & mask;
    entry = table + (<usize>slot << 3);
  }
  const target = load<u32>(entry, 4);
  return target == EMPTY_SLOT ? otherwise : target;
}
