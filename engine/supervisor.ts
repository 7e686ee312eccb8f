// Runs a pipeline and replaces it on reload: the new config is validated and compiled while the old
// pipeline keeps running, so a config that fails changes nothing; then the old one is drained, and
// the elements that keep their name and type carry their state (scalars and tables) into the new one.

import { ConflictError } from './errors.ts';
import { loadConfig, type LoadOptions } from './config.ts';
import { Pipeline, withResult, type FailedRun, type PipelineOptions, type RunResult, type Snapshot } from './pipeline.ts';

/** What the errors of a config posted without its file name (POST /reload without "file"). */
export const POSTED = '<posted config>';

/** What a reload did with each element of the two configs. */
export interface ReloadReport {
  /** Elements of the same name and type: their state and counters go on. */
  kept: string[];
  /** Kept by name and type, but their state starts afresh: the parameters its shared data is laid out by changed (a NAT's pool). */
  restarted: string[];
  /** Sources and sinks of the same name and type: opened anew, their own counters from 0 (a FromDevice takes over the socket). */
  reopened: string[];
  /** New names, or names whose type changed. */
  added: string[];
  /** Names gone, or whose type changed. */
  removed: string[];
}

export class Supervisor {
  private next: { pipeline: Pipeline; done: (r: ReloadReport) => void; fail: (e: Error) => void } | undefined;
  private stopped = false;
  /** A reload is loading and compiling its config (before it takes over: `next`). */
  private preparing = false;
  /** No scale event while a reload makes its config: the new pipeline runs on its own shard count, and would undo it unsaid. */
  private readonly refusesScale = () => (this.preparing ? 'a reload is putting a new config in place, which runs on its own shard count: scale once it has taken over' : undefined);
  private ended = false;

  /** The types of the run's elements, which its --set overrides were given for. */
  private readonly overridesFor: Record<string, string>;

  constructor(private current: Pipeline, private readonly file: string, private readonly load: LoadOptions, private readonly options: PipelineOptions) {
    this.overridesFor = Object.fromEntries(current.graph.nodes.map((node) => [node.name, node.type.type]));
    current.refusesScale = this.refusesScale;
  }

  pipeline(): Pipeline {
    return this.current;
  }

  stop(): void {
    this.stopped = true;
    this.current.stop();
  }

  /** Runs the pipeline and those that reloads put in its place; the packets and times are those of them all. */
  async run(onTick?: (p: Pipeline) => void): Promise<RunResult> {
    let before: RunResult | undefined;
    for (;;) {
      let result: RunResult;
      try {
        result = combined(before, await this.current.run(onTick));
      } catch (e) {
        // Stopped by a reload, whose handover then failed (an element's final call threw): not interrupted either.
        const handingOver = this.next !== undefined && !this.stopped;
        // A reload waiting for this run's end gets its answer too.
        this.end(e as Error);
        // The counters reached, also when the run failed before its first round (a device of a reloaded config).
        const failed = (e as FailedRun).result;
        const reached = failed ? combined(before, handingOver ? { ...failed, interrupted: false } : failed) : before;
        throw reached ? withResult(e, reached) : e;
      }
      before = result;
      const next = this.next;
      if (!next || this.stopped) {
        this.end(new Error('the pipeline stopped before the new config could take its place'));
        return result;
      }
      this.next = undefined;
      // Stopped to hand over to the new config, not interrupted: a run that then fails says so by its error alone.
      before = { ...result, interrupted: false };
      try {
        next.pipeline.replaces(this.current);
        const report = carryOver(await this.current.snapshot(), this.current, next.pipeline);
        next.pipeline.countOn(result.elements, report.restarted);
        next.pipeline.scaleReports.unshift(...this.current.scaleReports);
        this.current = next.pipeline;
        const overridden = next.pipeline.config.overridden;
        if (overridden.length) this.options.log?.(`reload: the run command's --set overrides apply to the new config too: ${overridden.join(', ')}`);
        next.done(report);
      } catch (e) {
        this.abandon(next, e as Error);
        return result;
      }
    }
  }

  /** No run follows: a reload that waits is told why. */
  private end(why: Error): void {
    this.ended = true;
    this.abandon(this.next, why);
    this.next = undefined;
  }

  /** A reload that will not take over: its answer, and its pipeline's open files closed. */
  private abandon(next: Supervisor['next'], why: Error): void {
    next?.pipeline.closeSources();
    next?.fail(why);
  }

  /**
   * Replaces the running pipeline with one built from `text` (YAML, read from `file` when given: its relative paths
   * and error positions are that file's; without it, its relative paths are the running config's, and its errors are
   * placed in POSTED); throws ConfigErrors, or the error of a source that cannot be opened or of a
   * device that could not be (no such interface, down, frames larger than a slot), and changes nothing when it is invalid.
   */
  async reload(text: string, file?: string): Promise<ReloadReport> {
    if (this.next || this.preparing) throw new ConflictError('a reload is already in progress');
    this.preparing = true;
    let pipeline: Pipeline | undefined;
    try {
      // The run command's --set overrides apply to the new config too (the command line wins over the file), to the
      // elements it still has with the same type. Without a file, the text's errors are not the running file's.
      const config = await loadConfig(file ?? this.file, { ...this.load, text, overridesFor: this.overridesFor, label: file ? undefined : POSTED });
      pipeline = await Pipeline.create(config, { ...this.options, prefault: false });
      pipeline.refusesScale = this.refusesScale;
      pipeline.openFileSources();
      pipeline.checkOpenable();
      // A stop asked for meanwhile stands: the running pipeline's state ends with it (a NAT logs its blocks released).
      const refused = this.ended ? 'the pipeline has ended: there is nothing to reload' : this.stopped ? 'the pipeline is stopping: there is nothing to reload' : undefined;
      if (refused) throw new ConflictError(refused);
    } catch (e) {
      pipeline?.closeSources();
      throw e;
    } finally {
      this.preparing = false;
    }
    const next = pipeline;
    return new Promise((done, fail) => {
      this.next = { pipeline: next, done, fail };
      this.current.stop(this.current.carriedInto(next));
    });
  }
}

/** The result of a run that went on from `before` (a reload): its element counters are the last config's. */
function combined(before: RunResult | undefined, after: RunResult): RunResult {
  if (!before) return after;
  const wall = before.wall_seconds + after.wall_seconds;
  const packetsIn = before.packets_in + after.packets_in;
  return {
    ...after,
    packets_in: packetsIn,
    packets_out: before.packets_out + after.packets_out,
    wall_seconds: wall,
    packets_per_second: wall > 0 ? packetsIn / wall : 0,
    first_packet_ms: before.first_packet_ms,
    busy_seconds: before.busy_seconds + after.busy_seconds,
    crashes: [...before.crashes, ...after.crashes],
  };
}

/**
 * Restores into `next` the state of the elements whose name and type it shares with the snapshot of `before`, and
 * says what became of each element of either config.
 */
function carryOver(snapshot: Snapshot, before: Pipeline, next: Pipeline): ReloadReport {
  const report: ReloadReport = { kept: [], restarted: [], reopened: [], added: [], removed: [] };
  const typeBefore = new Map(before.graph.nodes.map((node) => [node.name, node.type.type]));
  for (const node of next.graph.nodes) {
    if (typeBefore.get(node.name) !== node.type.type) report.added.push(node.name);
    else (node.type.kind === 'element' ? report.kept : report.reopened).push(node.name);
  }
  for (const [name, type] of typeBefore) if (next.graph.byName.get(name)?.type.type !== type) report.removed.push(name);
  const kept = Object.fromEntries(Object.entries(snapshot.elements).filter(([name]) => report.kept.includes(name)));
  const afresh = next.restore({ ...snapshot, elements: kept }, true);
  report.restarted = report.kept.filter((name) => afresh.has(name));
  report.kept = report.kept.filter((name) => !afresh.has(name));
  return report;
}
