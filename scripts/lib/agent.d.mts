import type { ChildProcess } from 'node:child_process';

export declare const AGENT_BIN: string;
export declare const MESHCTL_BIN: string;
export declare function agentSocket(pinRoot?: string): string;

export interface AgentRoots {
  config: string;
  listen: string;
  /** Default: agentSocket(pinRoot). */
  apiSocket?: string;
  pinRoot: string;
  cgroupRoot: string;
  stateDir?: string;
}
export declare function agentArgs(roots: AgentRoots, extra?: string[]): string[];

export interface HttpResult {
  status: number;
  body: string;
}
export declare function agentGet(to: { socketPath: string } | { host: string; port: number }, path: string, timeoutMs?: number): Promise<HttpResult>;
export declare function agentApi<T = unknown>(socketPath: string, path: string, timeoutMs?: number): Promise<T>;

export interface WaitReadyOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** Why the agent is gone, or undefined while it runs (exitReason(child)). */
  exited?: () => string | undefined;
  /** The agent's log so far, for the error. */
  describe?: () => string;
  signal?: AbortSignal;
}
export declare function waitReady(socketPath: string, opts?: WaitReadyOptions): Promise<void>;
export declare function exitReason(child: ChildProcess): string | undefined;
