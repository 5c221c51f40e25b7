/** The agent's own metrics: config reloads and the generation in force, its build and roots, readiness, and
 *  the process's (prom-client's default metrics). Each datapath family registers its own. */
import { collectDefaultMetrics, Counter, Gauge, type Registry } from 'prom-client';

import { VERSION } from './version.js';

export class AgentMetrics {
  private readonly reloads: Counter;
  private readonly generation: Gauge;
  private readonly lastOk: Gauge;

  constructor(registry: Registry, roots: { pinRoot: string; cgroupRoot: string }, ready: () => boolean) {
    this.reloads = new Counter({ name: 'mesh_agent_config_reloads_total', help: 'Config snapshots the agent tried to apply, by result.', labelNames: ['result'], registers: [registry] });
    this.reloads.inc({ result: 'success' }, 0);
    this.reloads.inc({ result: 'failure' }, 0);
    this.generation = new Gauge({ name: 'mesh_agent_config_generation', help: 'Config generation in force (1 for the first applied since start).', registers: [registry] });
    this.lastOk = new Gauge({ name: 'mesh_agent_config_last_reload_successful', help: '1 if the last config snapshot was applied, 0 if it was rejected.', registers: [registry] });
    new Gauge({ name: 'mesh_agent_info', help: 'The agent build and where it keeps the datapath.', labelNames: ['version', 'pin_root', 'cgroup_root'], registers: [registry] })
      .set({ version: VERSION, pin_root: roots.pinRoot, cgroup_root: roots.cgroupRoot }, 1);
    new Gauge({
      name: 'mesh_agent_ready',
      help: '1 once programs are attached and the first config is applied.',
      registers: [registry],
      collect() {
        this.set(ready() ? 1 : 0);
      },
    });
    // Event-loop lag sampled every 500 ms, not prom-client's default 10 ms: an idle agent should be idle.
    collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 500 });
  }

  /** A config was applied: it is generation `generation`. */
  applied(generation: number): void {
    this.generation.set(generation);
    this.lastOk.set(1);
    this.reloads.inc({ result: 'success' });
  }

  /** A config was rejected; the previous generation stays in force. */
  rejected(): void {
    this.reloads.inc({ result: 'failure' });
    this.lastOk.set(0);
  }
}
