/** meshctl ca: the built-in CA's root rotation (docs/mtls.md), step by step, on the state directory's files.
 *  The agent holds its CA in memory, so the steps run while it is stopped; it reads the result at its next start
 *  (a restart does not interrupt the datapath, and every SVID is issued afresh then). */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { BuiltinCa, CaError, trustDomainProblem } from '@mesh/mtls';

import { DEFAULT_STATE_DIR, DEFAULT_TRUST_DOMAIN } from '../identity-defaults.js';
import type { CertsAnswer, Wire } from '../views.js';
import { EXIT, UsageError } from './exit.js';

export const CA_STEPS = ['status', 'add-root', 'switch-root', 'remove-old-root'] as const;

/** What a running agent says of its CA (from /v1/certs), or undefined when none answers. */
export type AgentCa = Wire<CertsAnswer> | undefined;

export async function caCommand(argv: string[], runningAgent: () => Promise<AgentCa>): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { 'state-dir': { type: 'string', default: DEFAULT_STATE_DIR }, 'trust-domain': { type: 'string', default: DEFAULT_TRUST_DOMAIN }, force: { type: 'boolean', default: false } },
    strict: true,
    allowPositionals: true,
  });
  const step = positionals[0];
  if (positionals.length !== 1 || !CA_STEPS.includes(step as (typeof CA_STEPS)[number])) throw new UsageError(`give one step: ${CA_STEPS.join(', ')}`);
  const td = values['trust-domain']!;
  const problem = trustDomainProblem(td);
  if (problem) throw new UsageError(`--trust-domain: ${problem}`);
  const stateDir = values['state-dir']!;
  const dir = join(stateDir, 'ca');
  // Never create a CA here: status of a directory without one is an error, not a new root.
  if (!existsSync(join(dir, 'root.crt'))) {
    process.stderr.write(`meshctl ca: no built-in CA in ${dir} (the agent creates it at its first start)\n`);
    return EXIT.NOT_FOUND;
  }
  if (step !== 'status' && !values.force) {
    const a = await runningAgent();
    if (a && 'ca' in a && a.ca.mode === 'builtin' && a.ca.dir === dir) {
      process.stderr.write(`meshctl ca: the agent answering on --api-socket uses ${dir} and holds its CA in memory: stop it first (the datapath keeps running), or pass --force\n`);
      return EXIT.FAILURE;
    }
  }
  try {
    const ca = await BuiltinCa.open({ stateDir, trustDomain: td });
    if (step === 'add-root') {
      const r = await ca.addNewRoot();
      process.stdout.write(`added root ${r.subject} (serial ${r.serialNumber}) to the bundle; the old root still signs.\nnext: start the agent, let every peer get the two-root bundle, then: meshctl ca switch-root\n`);
    } else if (step === 'switch-root') {
      await ca.switchToNewRoot();
      process.stdout.write(`the new root signs from the agent's next start; the old root stays in the bundle until ${new Date(ca.retiredRootRemovableAt ?? 0).toISOString()}.\nnext: after that time, meshctl ca remove-old-root\n`);
    } else if (step === 'remove-old-root') {
      const r = ca.removeOldRoot();
      process.stdout.write(`removed the old root ${r.subject} (serial ${r.serialNumber}) from the bundle.\n`);
    }
    const bundle = await ca.bundle();
    const removable = ca.retiredRootRemovableAt;
    process.stdout.write(
      [
        `state         ${dir}`,
        `trust domain  ${td}`,
        `signing root  ${ca.root.subject} (serial ${ca.root.serialNumber}, until ${ca.root.notAfter.toISOString()})`,
        `bundle        ${bundle.roots.map((r) => `${r.subject} (serial ${r.serialNumber})`).join('\n              ')}`,
        `rotation      ${ca.rotationPhase}${removable !== undefined ? ` (old root removable after ${new Date(removable).toISOString()})` : ''}`,
      ].join('\n') + '\n',
    );
    return EXIT.OK;
  } catch (err) {
    if (!(err instanceof CaError)) throw err;
    process.stderr.write(`meshctl ca ${step}: ${err.message}\n`);
    return EXIT.FAILURE;
  }
}
