// What Classifier and Filter share: the expression parameter type, the compiled rule set (made once
// per parameter value), its program in config data and as code, and the warnings about unreachable rules.

import { ParamTypeError, state, type ParamType, type ParamWarning } from '../../engine/api.ts';
import { ExpressionError, parseExpression, type Expr } from './expression.ts';
import { compileRules, describeProgram, programSize, unreachableRules, writeProgram, type RuleSet } from './decision.ts';
import { decisionModule, type DecisionModule } from './specialize.ts';

export interface Rule {
  /** The expression as written. */
  text: string;
  expr: Expr;
}

const SYNTAX_HINT = "write it as tcpdump would take it (pcap-filter(7)), such as 'tcp dst port 80'; wirepath filter 'EXPR' FILE tries one on a capture";

/** Parses `text` as an expression; an error points at its column (plus `offset`, where the expression starts in the value). */
export function parseRule(text: string, offset = 0): Rule {
  try {
    return { text, expr: parseExpression(text, offset) };
  } catch (e) {
    // The parser recurses per nesting level: thousands of them exhaust the stack.
    if (e instanceof RangeError) throw new ParamTypeError('the expression nests too deeply to parse', 'write it with fewer levels of parentheses and not', { offset });
    if (!(e instanceof ExpressionError)) throw e;
    throw new ParamTypeError(`${e.message} (column ${offset + e.col + 1})`, e.hint ?? SYNTAX_HINT, { offset: offset + e.col });
  }
}

export const expressionType: ParamType<Rule> = {
  description: 'a filter expression',
  parse: (raw) => {
    if (typeof raw !== 'string') throw new ParamTypeError(`${JSON.stringify(raw)} is not an expression`, "quote it: 'tcp dst port 80'");
    return parseRule(raw);
  },
  format: (rule) => rule.text,
};

const compiledSets = new WeakMap<object, RuleSet>();

/** The rule set of a parameter value, compiled once however often it is asked for. */
export function compiled(rules: Rule[]): RuleSet {
  let set = compiledSets.get(rules);
  if (!set) {
    set = compileRules(rules.map((r) => r.expr));
    compiledSets.set(rules, set);
  }
  return set;
}

/**
 * The compiler recurses along each path of the decision program: a path through thousands of rules (1500 of
 * `deny host ...`, say) exhausts the stack. Then the rules are the parameter's error (element `invalid`).
 */
function compilesTooDeep(rules: Rule[]): boolean {
  if (tooDeep.has(rules)) return true;
  try {
    compiled(rules);
    return false;
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    tooDeep.add(rules);
    return true;
  }
}

/** Rule sets found too deep, so that their warnings do not try again (it takes seconds to find out). */
const tooDeep = new WeakSet<Rule[]>();

export function compileErrors(param: string, rules: Rule[], noun: string): ParamWarning[] {
  if (!compilesTooDeep(rules)) return [];
  return [{ param, message: `${rules.length} ${noun}s make a decision program deeper than wirepath can build`,
    hint: `split them over elements in a row (each passing on what its ${noun}s do not decide), or join ${noun}s with one outcome into one listing the values: 'host a or host b or ...'` }];
}

/** The config-data state holding the decision program of the rules `rulesOf(params)`. */
export function programState(rulesOf: (params: any) => Rule[]) {
  return state.data({
    doc: 'the decision program all rules compile into (shared by the shards)',
    size: (params) => programSize(compiled(rulesOf(params)).compiled),
    init: (params, view) => writeProgram(compiled(rulesOf(params)).compiled, view),
  });
}

/** An element's `specialize`: the decision program of the rules `rulesOf(params)` as code. */
export function rulesAsCode(rulesOf: (params: any) => Rule[], module: DecisionModule): (params: any) => string | undefined {
  return (params) => decisionModule(compiled(rulesOf(params)).compiled, module);
}

/** Warnings for rules that no packet reaches, pointing at each rule's item in `param`; rules numbered from `first`. */
export function reachabilityWarnings(param: string, rules: Rule[], noun: string, first: number): ParamWarning[] {
  if (compilesTooDeep(rules)) return [];
  return unreachableRules(compiled(rules), rules.map((r) => r.text), noun, first).map((w) => ({ param, at: { item: w.rule }, message: w.message, hint: w.hint }));
}

export function programText(rules: Rule[], outcome: (rule: number) => string): string {
  return describeProgram(compiled(rules).compiled, outcome);
}
