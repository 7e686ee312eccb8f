// Health checks of the load balancer's backends, run by the control plane (the element's periodic
// task): a TCP connect or an HTTP GET to each backend's address every `health_interval`. After
// `health_failures` failures in a row a backend is drained (weight 0: its connections go on, new ones go
// elsewhere); after as many successes in a row it gets its weight back. The checks never drain the last
// backend with a weight (failing open: a check that cannot reach any backend must not end every new
// connection), a weight set by hand is the one the checks give back (they drain the backend again while it
// fails; one drained by hand stays so), and turning the checks off gives back the weights they took. Which
// backends the checks drained, and from which weight, is kept in the table, so a reload or a snapshot keeps
// it; the counts of checks in a row start again with each pipeline. Probes leave from the host's network
// stack in wirepath's own network namespace.

import { connect } from 'node:net';
import { formatIPv4 } from '../../engine/params.ts';
import type { ElementView } from '../../engine/api.ts';
import type { Backend } from './table.ts';

export interface HealthParams {
  health_check: 'none' | 'tcp' | 'http';
  health_port: number;
  health_path: string;
  health_interval: number;
  health_timeout: number;
  health_failures: number;
}

interface BackendHealth {
  /** Failures (negative) or successes (positive) in a row. */
  streak: number;
  probing: boolean;
  lastProbe: number;
  /** Why its last check failed (logged when it changes); undefined once a check passes. */
  failure?: string;
}

/** What the checks know beyond the table: counts in a row, which start again with each pipeline. */
export interface HealthState {
  backends: Map<string, BackendHealth>;
}

/** Sets a backend's weight in the table, with the weight the checks drained it from (undefined: they did not). */
export type SetWeight = (name: string, weight: number, drainedFrom: number | undefined) => void;

const SOCKET_ERRORS: Record<string, string> = {
  ECONNREFUSED: 'connection refused', ECONNRESET: 'connection reset', EHOSTUNREACH: 'host unreachable', ENETUNREACH: 'network unreachable',
};

/** A failed probe's error in an operator's words (fetch puts the socket's error in its cause). */
function whyFailed(e: unknown, timeoutMs: number): string {
  const error = e as Error & { code?: string; cause?: Error & { code?: string } };
  if (error.name === 'TimeoutError') return `no answer within ${timeoutMs} ms`;
  const code = error.code ?? error.cause?.code;
  if (code) return SOCKET_ERRORS[code] ? `${SOCKET_ERRORS[code]} (${code})` : code;
  return error.cause?.message ?? error.message;
}

/** One probe: resolves to why it failed, or undefined when the backend answered in time (an HTTP status below 500 counts as healthy). */
function probe(p: HealthParams, address: number): Promise<string | undefined> {
  const host = formatIPv4(address);
  const timeoutMs = p.health_timeout / 1e6;
  if (p.health_check === 'http') {
    const url = `http://${host}:${p.health_port}${p.health_path}`;
    return fetch(url, { signal: AbortSignal.timeout(timeoutMs) }).then(
      async (r) => { await r.body?.cancel(); return r.status < 500 ? undefined : `${url}: HTTP status ${r.status}`; },
      (e) => `${url}: ${whyFailed(e, timeoutMs)}`,
    );
  }
  return new Promise((resolve) => {
    const socket = connect({ host, port: p.health_port, timeout: timeoutMs });
    const done = (failure: string | undefined) => { socket.destroy(); resolve(failure && `${host}:${p.health_port}: ${failure}`); };
    socket.once('connect', () => done(undefined));
    socket.once('timeout', () => done(`no connection within ${timeoutMs} ms`));
    socket.once('error', (e) => done(whyFailed(e, timeoutMs)));
  });
}

/**
 * Starts the probes that are due and applies what finished probes found: `backends` reads the table's list
 * as it is now, `setWeight` changes one backend's weight in the table.
 */
export function checkHealth(view: ElementView, health: HealthState, backends: () => Backend[], setWeight: SetWeight): void {
  const p = view.params as unknown as HealthParams;
  const now = performance.now();
  for (const backend of backends()) {
    let h = health.backends.get(backend.name);
    if (!h) health.backends.set(backend.name, h = { streak: 0, probing: false, lastProbe: -Infinity });
    if (h.probing || now - h.lastProbe < p.health_interval / 1e6) continue;
    h.probing = true;
    h.lastProbe = now;
    const state = h;
    probe(p, backend.address).then((failure) => {
      state.probing = false;
      if (health.backends.get(backend.name) !== state) return; // the checks ended (or the backend went) meanwhile
      const ok = failure === undefined;
      state.streak = ok ? Math.max(0, state.streak) + 1 : Math.min(0, state.streak) - 1;
      // Once per reason: a backend that keeps failing the same way would fill the log.
      if (failure !== undefined && failure !== state.failure) view.log(`backend ${backend.name}: ${p.health_check} check failed: ${failure}`);
      state.failure = failure;
      try {
        const list = backends();
        const current = list.find((b) => b.name === backend.name);
        if (!current) return; // removed through the handlers meanwhile
        // At or past the failures that drain: a backend kept as the last with a weight, or weighted again by hand
        // while it still fails, is drained as soon as it may be.
        if (!ok && -state.streak >= p.health_failures && current.weight > 0) {
          if (!list.some((b) => b !== current && b.weight > 0)) {
            if (-state.streak > p.health_failures) return; // said once
            view.log(`backend ${backend.name} (${formatIPv4(backend.address)}) failed ${p.health_failures} ${p.health_check} checks in a row, `
              + 'but it is the last with a weight: kept (draining it would turn every new connection away)');
            return;
          }
          setWeight(backend.name, 0, current.weight);
          view.log(`backend ${backend.name} (${formatIPv4(backend.address)}) failed ${p.health_failures} ${p.health_check} checks in a row: drained`);
        } else if (ok && state.streak >= p.health_failures && current.drainedFrom !== undefined) {
          setWeight(backend.name, current.drainedFrom, undefined);
          view.log(`backend ${backend.name} (${formatIPv4(backend.address)}) passed ${p.health_failures} checks in a row: weight ${current.drainedFrom} again`);
        }
      } catch (e) {
        view.log(`health check of ${backend.name}: ${(e as Error).message}`);
      }
    });
  }
  const names = new Set(backends().map((b) => b.name));
  for (const name of health.backends.keys()) if (!names.has(name)) health.backends.delete(name);
}

/** The checks are off: every backend they drained gets its weight back. */
export function endHealthChecks(view: ElementView, health: HealthState, backends: Backend[], setWeight: SetWeight): void {
  health.backends.clear();
  for (const b of backends) {
    if (b.drainedFrom === undefined) continue;
    try {
      setWeight(b.name, b.drainedFrom, undefined);
      view.log(`health checks off: backend ${b.name} has its weight ${b.drainedFrom} again`);
    } catch (e) {
      view.log(`health checks off: ${b.name}: ${(e as Error).message}`);
    }
  }
}

/** What the checks think of each backend, for the `health` handler. */
export function healthReport(health: HealthState, backends: Backend[]): Record<string, { streak: number; drained_by_checks: boolean; failure?: string }> {
  return Object.fromEntries(backends.map((b) => {
    const h = health.backends.get(b.name);
    return [b.name, { streak: h?.streak ?? 0, drained_by_checks: b.drainedFrom !== undefined, failure: h?.failure }];
  }));
}
