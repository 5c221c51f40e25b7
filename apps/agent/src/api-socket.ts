/** Where meshctl finds the agent's control socket. Apart from paths.ts, which reads the cgroup2 mount through
 *  @mesh/bpf: meshctl's commands that only talk to the agent must not load the native addon. */
import { basename, join } from 'node:path';

export const DEFAULT_PIN_ROOT = '/sys/fs/bpf/mesh';
/** Root's runtime directory of the mesh: the control sockets (and the agents' locks). */
export const RUN_DIR = '/run/mesh';

/** The control socket of the agent that owns `pinRoot`: /run/mesh/<pin root's name>.sock. */
export const defaultApiSocket = (pinRoot: string = DEFAULT_PIN_ROOT) => join(RUN_DIR, `${basename(pinRoot)}.sock`);
export const DEFAULT_API_SOCKET = defaultApiSocket();
