// Health checks of the load balancer's backends, run by the control plane (the element's periodic
// task): a TCP connect or an HTTP GET to each backend's address every `health_interval`. After
// `health_failures` failures in a row a backend is drained (weight 0: its connections go on, new ones go
// elsewhere); after as many successes in a row it gets its weight back. The checks never drain the last
// backend with a weight (failing open: a check that cannot reach any backend must not end every new
// connection), a weight set by hand is the one the checks give back (they drain the backend again while it
// fails), and turning the checks off gives back the weights they took. Probes leave from the host's network stack in wirepath's own network
// namespace.

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
  /** The weight it had when the checks drained it; undefined while the checks have not drained it. */
  drainedFrom?: number;
}

export interface HealthState {
  backends: Map<string, BackendHealth>;
}

/** One probe: resolves true when the backend answered in time (an HTTP status below 500 counts as healthy). */
function probe(p: HealthParams, address: number): Promise<boolean> {
  const host = formatIPv4(address);
  if (p.health_check === 'http') {
    return fetch(`http://${host}:${p.health_port}${p.health_path}`, { signal: AbortSignal.timeout(p.health_timeout / 1e6) })
      .then(async (r) => { await r.body?.cancel(); return r.status < 500; }, () => false);
  }
  return new Promise((resolve) => {
    const socket = connect({ host, port: p.health_port, timeout: p.health_timeout / 1e6 });
    const done = (ok: boolean) => { socket.destroy(); resolve(ok); };
    socket.once('connect', () => done(true));
    socket.once('timeout', () => done(false));
    socket.once('error', () => done(false));
  });
}

/**
 * Starts the probes that are due and applies what finished probes found: `backends` reads the table's list
 * as it is now, `setWeight` changes one backend's weight in the table.
 */
export function checkHealth(view: ElementView, health: HealthState, backends: () => Backend[], setWeight: (name: string, weight: number) => void): void {
  const p = view.params as unknown as HealthParams;
  const now = performance.now();
  for (const backend of backends()) {
    let h = health.backends.get(backend.name);
    if (!h) health.backends.set(backend.name, h = { streak: 0, probing: false, lastProbe: -Infinity });
    if (h.drainedFrom !== undefined && backend.weight > 0) h.drainedFrom = undefined; // weighted again by hand
    if (h.probing || now - h.lastProbe < p.health_interval / 1e6) continue;
    h.probing = true;
    h.lastProbe = now;
    const state = h;
    probe(p, backend.address).then((ok) => {
      state.probing = false;
      if (health.backends.get(backend.name) !== state) return; // the checks ended (or the backend went) meanwhile
      state.streak = ok ? Math.max(0, state.streak) + 1 : Math.min(0, state.streak) - 1;
      try {
        const weighted = backends().filter((b) => b.weight > 0);
        // At or past the failures that drain: a backend kept as the last with a weight, or weighted again by hand
        // while it still fails, is drained as soon as it may be.
        const current = weighted.find((b) => b.name === backend.name);
        if (!ok && -state.streak >= p.health_failures && state.drainedFrom === undefined && current) {
          if (weighted.length === 1) {
            if (-state.streak > p.health_failures) return; // said once
            view.log(`backend ${backend.name} (${formatIPv4(backend.address)}) failed ${p.health_failures} ${p.health_check} checks in a row, `
              + 'but it is the last with a weight: kept (draining it would turn every new connection away)');
            return;
          }
          state.drainedFrom = current.weight;
          setWeight(backend.name, 0);
          view.log(`backend ${backend.name} (${formatIPv4(backend.address)}) failed ${p.health_failures} ${p.health_check} checks in a row: drained`);
        } else if (ok && state.streak === p.health_failures && state.drainedFrom !== undefined) {
          setWeight(backend.name, state.drainedFrom);
          view.log(`backend ${backend.name} (${formatIPv4(backend.address)}) passed ${p.health_failures} checks in a row: weight ${state.drainedFrom} again`);
          state.drainedFrom = undefined;
        }
      } catch (e) {
        // The backend was removed (or renamed) through the handlers meanwhile: nothing to change.
        view.log(`health check of ${backend.name}: ${(e as Error).message}`);
      }
    });
  }
  const names = new Set(backends().map((b) => b.name));
  for (const name of health.backends.keys()) if (!names.has(name)) health.backends.delete(name);
}

/** The checks are turned off: every backend they drained gets its weight back. */
export function endHealthChecks(view: ElementView, health: HealthState, setWeight: (name: string, weight: number) => void): void {
  for (const [name, h] of health.backends) {
    if (h.drainedFrom === undefined) continue;
    try {
      setWeight(name, h.drainedFrom);
      view.log(`health checks off: backend ${name} has its weight ${h.drainedFrom} again`);
    } catch (e) {
      view.log(`health checks off: ${name}: ${(e as Error).message}`);
    }
  }
  health.backends.clear();
}

/** What the checks think of each backend, for the `health` handler. */
export function healthReport(health: HealthState | undefined): Record<string, { streak: number; drained_by_checks: boolean }> {
  return Object.fromEntries([...(health?.backends ?? [])].map(([name, h]) => [name, { streak: h.streak, drained_by_checks: h.drainedFrom !== undefined }]));
}
