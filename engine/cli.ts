// The wirepath command line: run, check, elements, graph, build, docs.

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { loadConfig, readConfigFile, MAX_SHARDS, THREAD_MODES, type LoadOptions, type PipelineConfig } from './config.ts';
import { ConfigError, ConfigErrors, ElementCodeError, EnvironmentError, StallError, didYouMean } from './errors.ts';
import { CompileError } from './compile.ts';
import { buildGraph, steeringErrors } from './graph.ts';
import { generateGraph } from './codegen.ts';
import { compileGraph } from './compile.ts';
import { Pipeline, type FailedRun, type PipelineOptions, type RunResult, type Snapshot } from './pipeline.ts';
import { Supervisor } from './supervisor.ts';
import { loadRegistry, dataInitProblems, ElementFolderError, DECLARATION_HINT, PROJECT_ROOT } from './registry.ts';
import { elementLayout, layoutSource } from './layout.ts';
import { renderGraph } from './render-graph.ts';
import { elementDoc, elementReference, updateReadme } from './docs.ts';
import { declarationReference, runtimeReference } from './runtime-doc.ts';
import { statsTable, liveLine, toJson, amount } from './report.ts';
import { filterCapture } from './filter.ts';
import { verify } from './verify.ts';
import { startControl, type ControlServer } from './control.ts';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { makeFolders, unwritable } from './files.ts';

/** Exit codes scripts can rely on. */
export const EXIT = { ok: 0, failure: 1, usage: 2, environment: 3, interrupted: 130 } as const;

const USAGE = `usage: wirepath <command> [options]

commands:
  run CONFIG        run a pipeline until its sources end (Ctrl-C stops it cleanly)
  check CONFIG      validate a config and compile its fast path, without running it (- reads it from stdin)
  elements [TYPE]   list the element types, or show one type's documentation
  graph CONFIG      print the graph (--format dot|mermaid)
  ctl COMMAND       talk to a running pipeline's control API:
                    stats | graph | metrics | scale N | read ELEMENT.HANDLER [ARG] |
                    write ELEMENT.HANDLER VALUE | snapshot [FILE] | reload CONFIG
  verify CONFIG     check output equivalence: one shard vs. several with scale events
                    (--trace FILE --shards 1,2,4 --scale-every K)
  build CONFIG      compile the config's fast path into the cache
  filter EXPR FILE  count the packets of a capture that a filter expression matches (-v: list them:
                    number in the file from 1, timestamp, length), through FromPcap -> Classifier
  docs              print the element reference (--write README.md updates it in place)
  --version         print wirepath's version and node's

options for run, check, graph, build, verify:
  --set NAME.PARAM=VALUE   override a parameter (repeatable)
options for run, check, graph, build, verify, elements, docs:
  --elements DIR           also load the element folders in DIR (repeatable)
options for elements:
  --layout                 elements TYPE: print the classes its process.ts imports from "./layout"
options for run, check (check refuses what run would):
  --shards N               shard workers to start with (default: the config's shards, or cores - 1)
  --clock trace|wall       the elements' clock: packet timestamps (default) or real time
  --threads auto|worker|inline  where shards run: worker threads, or run to completion on the I/O thread
                           (default: the config's threads; auto is inline only for a device source on <= 2 cores)
  --inline                 the same as --threads inline
options for run:
  --json                   print one JSON object of results at exit
  --quiet                  no live line and no table
  --control PORT           serve the control API on 127.0.0.1:PORT (0 picks a free port)
  --token TOKEN            the control API's token (default: a random one, printed at start)
  --restore FILE           start from a snapshot (wirepath ctl snapshot FILE), into any number of shards
  --save FILE              write a snapshot of all state when the run ends (Ctrl-C too), to go on with --restore FILE
options for verify:
  --trace FILE             the capture every FromPcap of the config reads instead of its own file
  --shards 1,2,4           shard counts the scaled run goes through in turn (default 1,2)
  --scale-every K          packets between scale events (default 10000, fewer on a shorter trace)
options for graph:
  --format dot|mermaid     the output's format
options for filter:
  -v, --verbose            list the matching packets
options for docs:
  --write FILE             update FILE's element reference in place
options for ctl:
  --control PORT|URL       where the pipeline's control API is (default $WIREPATH_CONTROL)
  --token TOKEN            the token, for calls that change something (default $WIREPATH_TOKEN)

exit codes: 0 done, 1 runtime failure (a shard that crashed too), 2 bad usage, invalid config or an element that does not compile, 3 missing file, device or permission,
130 stopped by a signal (outputs were still written completely)`;

const OPTIONS = {
  set: { type: 'string', multiple: true },
  elements: { type: 'string', multiple: true },
  json: { type: 'boolean' },
  quiet: { type: 'boolean' },
  clock: { type: 'string' },
  inline: { type: 'boolean' },
  threads: { type: 'string' },
  shards: { type: 'string' },
  control: { type: 'string' },
  token: { type: 'string' },
  trace: { type: 'string' },
  'scale-every': { type: 'string' },
  restore: { type: 'string' },
  save: { type: 'string' },
  format: { type: 'string' },
  write: { type: 'string' },
  verbose: { type: 'boolean', short: 'v' },
  layout: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} satisfies ParseArgsConfig['options'];

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
  } catch (e) {
    // Node's own wording ("... To specify a positional argument starting with a '-' ...") is for its API's users.
    const unknown = /^Unknown option '([^']+)'/.exec((e as Error).message)?.[1];
    // A value such as -1 (ctl read lb.buckets -1) reads as an option unless -- comes before it.
    const hint = unknown && /^-\d/.test(unknown) ? `a value that starts with -, put -- before it: wirepath ${argv.filter((a) => a !== unknown).join(' ')} -- ${unknown}`
      : 'wirepath --help lists the commands and their options';
    process.stderr.write(`wirepath: ${unknown ? `unknown option '${unknown}'` : (e as Error).message}\n  hint: ${hint}\n`);
    return EXIT.usage;
  }
  const { values, positionals } = parsed;
  const [command, target, ...extra] = positionals;
  if (values.version) {
    process.stdout.write(`wirepath ${JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8')).version} (node ${process.versions.node})\n`);
    return EXIT.ok;
  }
  if (values.help) {
    if (!command) {
      process.stdout.write(USAGE + '\n');
      return EXIT.ok;
    }
    const help = commandHelp(command);
    if (!help) return report(new UsageError(`unknown command '${command}'`));
    process.stdout.write(help);
    return EXIT.ok;
  }
  if (!command) return report(new UsageError('no command given'));
  const load = () => {
    if (!target) throw new UsageError(`${command} needs a CONFIG file`);
    const options = { overrides: values.set, elementDirs: values.elements };
    const config = target === '-' ? loadConfig('<stdin>', { ...options, text: readFileSync(0, 'utf8') }) : loadConfig(target, options);
    return config.then((c) => { printWarnings(c); return c; });
  };
  // A missing or broken --elements folder is a usage mistake, not a crash.
  const loadTypes = () => loadRegistry(values.elements ?? []).catch((e: Error) => {
    throw new ConfigErrors([new ConfigError(e.message, undefined, e instanceof ElementFolderError ? e.hint : 'each --elements folder holds element folders, each with element.ts and process.ts')]);
  });
  try {
    if (commandHelp(command)) refuseOtherCommandsOptions(command, values);
    if (command === 'filter') return await filter(target, extra, values.verbose ?? false);
    if (command === 'ctl') return await ctl(positionals.slice(1), values);
    if (extra.length) throw new UsageError(`unexpected argument '${extra[0]}'`);
    switch (command) {
      case 'run': {
        // Until the pipeline runs (loading the config, compiling its fast path: seconds), a signal ends the command at once.
        process.once('SIGINT', stoppedBeforeStart);
        process.once('SIGTERM', stoppedBeforeStart);
        try {
          return await run(await load(), { overrides: values.set, elementDirs: values.elements }, values);
        } finally {
          process.off('SIGINT', stoppedBeforeStart);
          process.off('SIGTERM', stoppedBeforeStart);
        }
      }
      case 'check': {
        // The fast path too (from the cache when it was compiled before): an element's code may not compile.
        const { shards } = shardOptions(values);
        const config = await load();
        const graph = buildGraph(config);
        // What only a run found: an element's data that its init cannot write for these parameters.
        const errors = graph.nodes.flatMap((node) => dataInitProblems(node.type, node.instance.params)
          .map((problem) => new ConfigError(`${node.name} (${node.type.type}): ${problem}`, node.instance.position, DECLARATION_HINT)));
        // What only more than one shard refuses (run refused it while check said ok).
        if ((shards ?? config.shards) > 1) errors.push(...steeringErrors(graph));
        if (errors.length) throw new ConfigErrors(errors);
        await compile(graph);
        process.stdout.write(`${config.file}: ok (${amount(config.elements.size, 'element')}, ${amount(config.connections.length, 'connection')})\n`);
        return EXIT.ok;
      }
      case 'build': {
        const config = await load();
        const compiled = await compile(buildGraph(config));
        process.stdout.write(`${config.file}: fast path ${compiled.hash} ${compiled.cached ? 'already cached' : 'compiled'}\n`);
        return EXIT.ok;
      }
      case 'verify': {
        const shards = (values.shards ?? '1,2').split(',').map(Number);
        const scaleEvery = values['scale-every'] === undefined ? undefined : Number(values['scale-every']);
        if (shards.some((n) => !Number.isInteger(n) || n < 1 || n > MAX_SHARDS) || (scaleEvery !== undefined && (!Number.isInteger(scaleEvery) || scaleEvery < 1))) {
          throw new UsageError(`--shards takes counts from 1 to ${MAX_SHARDS} like 1,2,4 and --scale-every a number of packets`);
        }
        if (shards.every((n) => n === 1)) throw new UsageError('--shards needs a count above 1: one shard is what the runs are compared with');
        // One count (or one named twice: 2,2) is a run on that many shards with no scale event, and --scale-every would be ignored.
        if (new Set(shards).size < 2) {
          throw new UsageError(`--shards ${values.shards} names one shard count, so the scaled run would make no scale event: name the counts it goes through, e.g. 1,${shards[0]}`);
        }
        if (!target) throw new UsageError('verify needs a CONFIG file');
        const trace = values.trace && resolvePath(values.trace);
        if (trace && !existsSync(trace)) throw new EnvironmentError(`--trace ${trace}: no such file`, 'the --trace path is taken from where the command runs');
        const result = await verify(target, { overrides: values.set, elementDirs: values.elements, trace, shards, scaleEvery }).catch((e) => {
          // More shards than the memory holds: a count to lower, as run --shards says.
          throw e instanceof RangeError && /more than the 4 GiB/.test(e.message) ? new UsageError(`--shards ${values.shards}: ${e.message}`) : e;
        });
        for (const r of result.scaleEvents) {
          process.stdout.write(`scale ${r.from} -> ${r.to}: ${r.buckets_moved} buckets, ${r.flows_moved} flows moved${r.flows_not_moved ? ` (${r.flows_not_moved} not: tables full)` : ''} in ${r.milliseconds.toFixed(1)} ms, ${r.packets_held} held, ${r.packets_lost} lost, ${r.packets_reordered} of ${r.packets_checked} checked reordered\n`);
        }
        process.stdout.write(result.equivalent
          ? `equivalent: ${result.packets} packets in ${result.flows} flows, same packets in the same order per flow with ${result.scaleEvents.length} scale events\n`
          : `NOT equivalent: ${result.difference}\n`);
        const idle = result.scaleEvents.filter((r) => r.packets_checked === 0).length;
        if (idle) process.stdout.write(`note: ${idle} of the scale events saw no packet of a moving bucket (the trace went by before they moved): a longer trace, or a paced source (timing: original), gives them packets to hold\n`);
        return result.equivalent ? EXIT.ok : EXIT.failure;
      }
      case 'graph': {
        const format = values.format ?? 'dot';
        if (format !== 'dot' && format !== 'mermaid') throw new UsageError(`--format must be dot or mermaid, not '${format}'`);
        process.stdout.write(renderGraph(buildGraph(await load()), format));
        return EXIT.ok;
      }
      case 'elements': {
        const registry = await loadTypes();
        if (!target) {
          if (values.layout) throw new UsageError('--layout prints the layout of one element type: give its TYPE, e.g. wirepath elements Counter --layout');
          const width = Math.max(...[...registry.keys()].map((k) => k.length));
          for (const type of [...registry.values()].sort((a, b) => a.type.localeCompare(b.type))) {
            process.stdout.write(`${type.type.padEnd(width)}  ${type.summary}\n`);
          }
          return EXIT.ok;
        }
        const type = registry.get(target);
        if (!type) {
          const close = didYouMean(target, registry.keys());
          throw new UsageError(`no element type '${target}'${close ? ` (did you mean ${close}?)` : ''}; 'wirepath elements' lists them (with --elements DIR, also yours)`);
        }
        process.stdout.write(values.layout ? layoutSource(type, elementLayout(type)) : elementDoc(type));
        return EXIT.ok;
      }
      case 'docs': {
        if (target) throw new UsageError(`unexpected argument '${target}'`);
        const registry = await loadTypes();
        if (values.write) {
          await updateReadme(values.write, elementReference(registry), [
            { marker: 'runtime-reference', edit: 'assembly/', make: runtimeReference },
            { marker: 'declaration-reference', edit: 'engine/element.ts and engine/params.ts', make: declarationReference },
          ]);
          process.stdout.write(`updated the references in ${values.write}\n`);
        } else process.stdout.write(elementReference(registry));
        return EXIT.ok;
      }
      default:
        throw new UsageError(`unknown command '${command}'`);
    }
  } catch (e) {
    return report(e, command);
  }
}

class UsageError extends Error {}

const compile = (graph: ReturnType<typeof buildGraph>) => compileGraph(generateGraph(graph), [...new Set(graph.nodes.map((n) => n.type.dir))]);

/** `wirepath CMD --help`: the command's own lines of USAGE and the options that apply to it, or undefined. */
function commandHelp(command: string): string | undefined {
  const [, commands, options, exitCodes] = USAGE.split('\n\n');
  const lines = commands.split('\n').slice(1);
  const start = lines.findIndex((l) => l.startsWith(`  ${command} `));
  if (start < 0) return undefined;
  const end = lines.findIndex((l, i) => i > start && !l.startsWith('    '));
  const own = lines.slice(start, end < 0 ? undefined : end);
  return `usage: wirepath ${own[0].trim().split(/\s{2,}/)[0]} [options]\n\n${own.join('\n')}\n${optionGroups(command).map((g) => `\n${g}\n`).join('')}\n${exitCodes}\n`;
}

/** USAGE's option groups for `command`: each "options for A, B:" heading starts a group that applies to the commands it names. */
function optionGroups(command: string): string[] {
  const options = USAGE.split('\n\n')[2];
  return options.split(/\n(?=options for )/).filter((g) => /^options for ([^:(]*)/.exec(g)![1].trim().split(', ').includes(command));
}

/** Refuses an option that `command` does not take (check --json printed text, graph --shards 2 was ignored). */
function refuseOtherCommandsOptions(command: string, values: Record<string, unknown>): void {
  const own = new Set(optionGroups(command).flatMap((g) => [...g.matchAll(/^ {2}(?:-\w, )?--([\w-]+)/gm)].map((m) => m[1])));
  const other = Object.keys(values).find((name) => values[name] !== undefined && !own.has(name));
  if (other) throw new UsageError(`--${other} is not an option of ${command}`);
}

async function filter(expression: string | undefined, [file, ...rest]: string[], verbose: boolean): Promise<number> {
  if (expression === undefined || file === undefined) throw new UsageError("filter needs an expression and a capture file: wirepath filter 'tcp port 80' trace.pcap");
  if (rest.length) throw new UsageError(`unexpected argument '${rest[0]}' (quote the expression as one argument)`);
  const { matched, packets } = await filterCapture(expression, file, verbose, (m) => process.stderr.write(`wirepath: ${m}\n`));
  process.stdout.write(`${matched} of ${packets} packets match\n`);
  return EXIT.ok;
}

/** Warnings go to stderr and never change the exit code. */
function printWarnings(config: PipelineConfig): void {
  for (const w of config.warnings) process.stderr.write(w.format() + '\n');
}

/** Prints what went wrong, in the form its kind calls for (a usage mistake with the help of `command`); returns the exit code. */
function report(e: unknown, command?: string): number {
  // The reader of the output went away (wirepath filter -v ... | head): nothing more to say.
  if ((e as NodeJS.ErrnoException)?.code === 'EPIPE') return EXIT.ok;
  if (e instanceof ConfigErrors) {
    process.stderr.write(e.errors.map((x) => x.format()).join('\n') + `\n${e.errors.length} error${e.errors.length > 1 ? 's' : ''}\n`);
    return EXIT.usage;
  }
  if (e instanceof UsageError) {
    process.stderr.write(`wirepath: ${e.message}\n\n${(command && commandHelp(command)) || `${USAGE}\n`}`);
    return EXIT.usage;
  }
  if (e instanceof EnvironmentError) {
    // Placed in the config like its errors when an element opened what is missing.
    process.stderr.write(`${e.position ? '' : 'wirepath: '}${e.format()}\n`);
    return EXIT.environment;
  }
  // A user's element that does not compile is a mistake in the input, as a config's is; wirepath's own code, a failure.
  if (e instanceof CompileError) {
    process.stderr.write(`wirepath: ${e.message}\n`);
    return inUsersCode(e) ? EXIT.usage : EXIT.failure;
  }
  if (e instanceof StallError || e instanceof ElementCodeError) {
    process.stderr.write(`wirepath: ${e.message}\n`);
    return EXIT.failure;
  }
  process.stderr.write(`wirepath: ${(e as Error)?.stack ?? e}\n`);
  return EXIT.failure;
}

/** Whether a compile error points into an element folder outside wirepath's own (elements/ and assembly/, and the code it generates). */
function inUsersCode(e: CompileError): boolean {
  const own = [join(PROJECT_ROOT, 'elements'), join(PROJECT_ROOT, 'assembly'), join(PROJECT_ROOT, '.wirepath-graph')];
  const files = [...e.files, ...[...e.diagnostics.matchAll(/└─ in (.+?)\(\d+,\d+\)/g)].map((m) => m[1])];
  return files.some((file) => !own.some((dir) => file.startsWith(dir)));
}

/** The state the run ended with, for a later run --restore FILE (its missing folders made, as the check before the run expects). */
async function saveSnapshot(pipeline: Pipeline, file: string): Promise<void> {
  try {
    makeFolders(dirname(file));
    writeFileSync(file, JSON.stringify(await pipeline.snapshot()));
  } catch (e) {
    throw new EnvironmentError(`--save ${file}: cannot write the snapshot: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'give a path whose folder can be written');
  }
  process.stderr.write(`wirepath: state saved to ${file} (go on from it with --restore ${file})\n`);
}

/** Loads a snapshot file into a pipeline that has not started. */
function restoreSnapshot(pipeline: Pipeline, file: string): void {
  let snapshot: Snapshot;
  try {
    snapshot = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new EnvironmentError(code === 'ENOENT' ? `snapshot ${file} does not exist` : `snapshot ${file} cannot be read: ${(e as Error).message}`,
      'give a file written by wirepath ctl snapshot FILE');
  }
  try {
    pipeline.restore(snapshot);
  } catch (e) {
    throw new EnvironmentError(`snapshot ${file}: ${(e as Error).message}`, 'restore a snapshot into the config it was taken from (elements may be added, not renamed)');
  }
}

async function ctl(args: string[], values: { control?: string; token?: string }): Promise<number> {
  const where = values.control ?? process.env.WIREPATH_CONTROL;
  if (!where) throw new UsageError('ctl needs --control PORT (or WIREPATH_CONTROL): the port `wirepath run --control` printed');
  const base = /^\d+$/.test(where) ? `http://127.0.0.1:${where}` : where.replace(/\/$/, '');
  if (!URL.canParse(base)) throw new UsageError(`--control ${where} is neither a port nor a URL (e.g. 7400 or http://127.0.0.1:7400)`);
  const token = values.token ?? process.env.WIREPATH_TOKEN;
  const [command, ...rest] = args;
  const element = (spec: string | undefined) => {
    const m = /^([^.]+)\.(.+)$/.exec(spec ?? '');
    if (!m) throw new UsageError(`name the handler as ELEMENT.HANDLER, e.g. count.packets (got '${spec ?? ''}')`);
    return `/elements/${encodeURIComponent(m[1])}/${encodeURIComponent(m[2])}`;
  };
  const calls: Record<string, () => [string, string, unknown?]> = {
    stats: () => ['GET', '/stats'],
    graph: () => ['GET', '/graph'],
    metrics: () => ['GET', '/metrics'],
    scale: () => {
      // Said in the command's words here; the API's answer speaks of its JSON body.
      const shards = Number(rest[0]);
      if (!Number.isInteger(shards) || shards < 1 || shards > MAX_SHARDS) throw new UsageError(`ctl scale N: N is a whole number of shards from 1 to ${MAX_SHARDS}, not '${rest[0] ?? ''}'`);
      return ['POST', '/scale', { shards }];
    },
    // The words after the handler are one value, quoted or not: `write lb.add_backend web1 198.18.1.11`.
    read: () => ['GET', element(rest[0]) + (rest.length > 1 ? `?arg=${encodeURIComponent(rest.slice(1).join(' '))}` : '')],
    write: () => {
      const path = element(rest[0]);
      if (rest.length < 2) throw new UsageError(`ctl write ${rest[0]} needs the VALUE to write (an empty one as '')`);
      return ['PUT', path, { value: rest.slice(1).join(' ') }];
    },
    snapshot: () => ['POST', '/snapshot', rest[0] ? { file: resolvePath(rest[0]) } : {}],
    reload: () => {
      if (!rest[0]) throw new UsageError('ctl reload needs the new CONFIG file');
      const file = resolvePath(rest[0]);
      // A missing or unreadable config is exit 2, as run says it.
      return ['POST', '/reload', { config: readConfigFile(file), file }];
    },
  };
  const call = calls[command ?? ''];
  if (!call) throw new UsageError(`ctl commands: ${Object.keys(calls).join(', ')}`);
  // Words a command would ignore are a mistake (`ctl scale 1 2`): read and write take the rest as one value.
  const most: Record<string, number> = { stats: 0, graph: 0, metrics: 0, scale: 1, snapshot: 1, reload: 1 };
  if (command in most && rest.length > most[command]) throw new UsageError(`ctl ${command} takes ${most[command] ? `one word (${command === 'scale' ? 'N' : command === 'reload' ? 'CONFIG' : 'FILE'})` : 'no words'}, not '${rest.join(' ')}'`);
  const [method, path, body] = call();
  let response: Response;
  try {
    response = await fetch(base + path, {
      method,
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new EnvironmentError(`no control API answers at ${base}`, 'start the pipeline with `wirepath run CONFIG --control PORT` and use the port it prints');
  }
  const text = await response.text();
  if (!response.ok) {
    let error: unknown;
    try { error = JSON.parse(text).error; } catch { /* not the control API's answer */ }
    if (typeof error !== 'string') {
      throw new EnvironmentError(`the server at ${base} is no wirepath control API: it answered ${response.status} ${response.statusText} to ${method} ${path}`,
        'give the port that `wirepath run CONFIG --control PORT` printed');
    }
    process.stderr.write(`wirepath ctl: ${response.status} ${error}\n`);
    return EXIT.failure;
  }
  process.stdout.write(response.headers.get('content-type')?.startsWith('application/json') ? JSON.stringify(JSON.parse(text), null, 2) + '\n' : text);
  return EXIT.ok;
}

/** A signal before the pipeline runs: nothing to stop cleanly yet, so the command ends at once, and says so. */
function stoppedBeforeStart(signal: NodeJS.Signals): void {
  process.stderr.write(`wirepath: stopped (${signal}) before the pipeline started: no packet was read and no output written\n`);
  process.exit(EXIT.interrupted);
}

/** The options run and check share, checked alike (check said ok to a --shards 0 that run refused). */
function shardOptions(values: { clock?: string; inline?: boolean; threads?: string; shards?: string }) {
  const shards = values.shards === undefined ? undefined : Number(values.shards);
  if (shards !== undefined && (!Number.isInteger(shards) || shards < 1 || shards > MAX_SHARDS)) throw new UsageError(`--shards must be a whole number from 1 to ${MAX_SHARDS}`);
  const clock = values.clock ?? 'trace';
  if (clock !== 'trace' && clock !== 'wall') throw new UsageError(`--clock must be trace or wall, not '${clock}'`);
  if (values.inline && values.threads !== undefined && values.threads !== 'inline') throw new UsageError(`--inline runs the shards on the I/O thread: leave out --threads ${values.threads}`);
  const threads = THREAD_MODES.find((mode) => mode === (values.inline ? 'inline' : values.threads));
  if (values.threads !== undefined && !threads) throw new UsageError(`--threads must be one of ${THREAD_MODES.join(', ')}, not '${values.threads}'`);
  return { shards, clock, threads } as const;
}

async function run(config: PipelineConfig, load: LoadOptions, values: { json?: boolean; quiet?: boolean; clock?: string; inline?: boolean; threads?: string; shards?: string; control?: string; token?: string; restore?: string; save?: string }): Promise<number> {
  const { shards, clock, threads } = shardOptions(values);
  const live = !values.json && !values.quiet && process.stderr.isTTY;
  // An empty token would let every call through (a --token "$WIREPATH_TOKEN" with the variable unset).
  if (values.token !== undefined && !values.token.trim()) throw new UsageError('--token is empty: give a token, or leave --token out for a random one');
  // With --json, stdout carries one JSON object: lines that elements print go to stderr.
  const options: PipelineOptions = { clock, shards, threads, log: (m) => process.stderr.write(`wirepath: ${m}\n`), printFd: values.json ? 2 : 1 };
  const pipeline = await Pipeline.create(config, options);
  if (values.restore) restoreSnapshot(pipeline, values.restore);
  // Found before the run rather than after it: its state would be lost.
  const cannotSave = values.save !== undefined && unwritable(resolvePath(values.save));
  if (cannotSave) throw new EnvironmentError(`--save ${values.save}: cannot write it (${cannotSave})`, 'give a path whose folder can be written');
  const supervisor = new Supervisor(pipeline, config.file, load, options);
  let control: ControlServer | undefined;
  if (values.control !== undefined) {
    const port = Number(values.control);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--control takes a port number, not '${values.control}'`);
    try {
      control = await startControl({ pipeline: () => supervisor.pipeline(), reload: (text, file) => supervisor.reload(text, file) }, { port, token: values.token });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EADDRINUSE' && code !== 'EACCES') throw e;
      throw new EnvironmentError(`--control ${port}: ${code === 'EADDRINUSE' ? 'the port is in use (another wirepath run?)' : 'no permission to listen on that port'}`,
        'give another port, or --control 0 for a free one (the control API\'s address is printed at start)');
    }
    process.stderr.write(`wirepath: control API on ${control.url}, token ${control.token}\n`);
  }
  process.off('SIGINT', stoppedBeforeStart);
  process.off('SIGTERM', stoppedBeforeStart);
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(EXIT.interrupted);
    interrupted = true;
    supervisor.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let result: RunResult;
  const started = performance.now();
  let lastLine = 0;
  const show = (r: RunResult) => {
    if (values.json) process.stdout.write(toJson(r) + '\n');
    else if (!values.quiet) process.stdout.write(statsTable(r));
  };
  try {
    result = await supervisor.run((p) => {
      const now = performance.now();
      if (!live || now - lastLine < 250) return;
      lastLine = now;
      process.stderr.write('\r' + liveLine(p.packetsIn(), (now - started) / 1000, p.progress()) + '\x1b[K');
    });
  } catch (e) {
    // A run that failed on its way (a device gone) still shows the counters it reached; the error follows.
    const reached = (e as FailedRun).result;
    if (live) process.stderr.write('\r\x1b[K');
    if (reached) show(reached);
    throw e;
  } finally {
    await control?.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (live) process.stderr.write('\r\x1b[K');
  // The counters first: a snapshot that cannot be written loses no more than itself.
  show(result);
  if (values.save) await saveSnapshot(supervisor.pipeline(), values.save);
  // A shard that crashed was restarted and the run went on, but the packets it held are lost.
  // Lost packets outrank the stop: a crash is what the exit status must not hide.
  return result.crashes.length ? EXIT.failure : result.interrupted ? EXIT.interrupted : EXIT.ok;
}
