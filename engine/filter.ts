// `wirepath filter 'EXPR' FILE`: runs a one-pattern Classifier over a capture on the fast path and
// reports which packets match, to compare with tcpdump. The decision program is interpreted rather
// than compiled as code for the expression: each new expression then starts at once (the tests check
// that both ways agree with tcpdump).

import { resolve } from 'node:path';
import { loadConfig } from './config.ts';
import { ConfigError, ConfigErrors, EnvironmentError } from './errors.ts';
import { ParamTypeError } from './params.ts';
import { Pipeline, type FailedRun, type RunResult } from './pipeline.ts';
import { parseRule } from '../elements/classifier/rules.ts';

export interface FilterResult {
  matched: number;
  packets: number;
}

/** Counts the packets of `file` that `expression` matches; with `verbose`, Print writes one line per match first. */
export async function filterCapture(expression: string, file: string, verbose: boolean, warn: (message: string) => void): Promise<FilterResult> {
  try {
    parseRule(expression);
  } catch (e) {
    if (!ParamTypeError.is(e)) throw e;
    const col = e.at.offset ?? 0;
    throw new ConfigErrors([new ConfigError(`filter expression, ${e.message}\n  ${expression}\n  ${' '.repeat(col)}^`, undefined, e.hint)]);
  }
  const text = [
    'elements:',
    `  src: { type: FromPcap, file: ${JSON.stringify(resolve(file))} }`,
    `  match: { type: Classifier, patterns: [${JSON.stringify(expression)}] }`,
    `  out: { type: ${verbose ? 'Print' : 'Discard'} }`,
    'connections:',
    '  - src -> match -> out',
  ].join('\n');
  const config = await loadConfig('<filter>', { text });
  for (const w of config.warnings) warn(`warning: ${w.message.replace(/^match\.patterns: pattern 1 /, 'the expression ')}`);
  const counted = (r: RunResult) => ({ matched: r.elements.match.out[0], packets: r.packets_in });
  try {
    return counted(await (await Pipeline.create(config, { threads: 'inline', specialize: false, log: (m) => warn(m.replace(/^src: /, '')) })).run());
  } catch (e) {
    // A file corrupt part way: the count of the packets before the corruption, then the error.
    const reached = (e as FailedRun).result;
    if (reached && (e as NodeJS.ErrnoException).code !== 'EPIPE') warn(`${counted(reached).matched} of ${counted(reached).packets} packets before the error match`);
    // The config is this command's own: a position in it would mean nothing to the user.
    if (e instanceof EnvironmentError) e.position = undefined;
    throw e;
  }
}
