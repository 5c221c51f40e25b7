import { createServer, type Server } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CommandError,
  ProcessTracker,
  capturedOutput,
  fdCount,
  openFds,
  pidAlive,
  waitForExit,
  waitForLine,
  waitForPort,
} from '../../src/index.js';

const tracker = new ProcessTracker('proc.test');
afterAll(() => tracker.close());

describe('run', () => {
  it('returns output and exit status without throwing on failure', async () => {
    const r = await tracker.run('sh', ['-c', 'echo out; echo err >&2; exit 3']);
    expect(r).toEqual({ stdout: 'out\n', stderr: 'err\n', code: 3, signal: null });
  });

  it('passes arguments as argv, never through a shell', async () => {
    const r = await tracker.run('printf', ['%s|', '$(id)', 'a b', '"q"']);
    expect(r.stdout).toBe('$(id)|a b|"q"|');
  });

  it('feeds input on stdin', async () => {
    expect((await tracker.run('cat', [], { input: 'fed\n' })).stdout).toBe('fed\n');
    expect((await tracker.run('cat', [])).stdout).toBe(''); // /dev/null by default, so it cannot hang
  });

  it('runChecked throws a CommandError naming the command and its stderr', async () => {
    const err = await tracker.runChecked('sh', ['-c', 'echo boom >&2; exit 2']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect((err as CommandError).reason).toBe('exit');
    expect((err as Error).message).toMatch(/^sh -c .*exited with status 2\nboom$/);
  });

  it('rejects when the command cannot start', async () => {
    const err = await tracker.run('/nonexistent/testkit-cmd').catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: 'spawn' });
  });

  it('kills the whole process group at the timeout', async () => {
    const started = Date.now();
    // The shell forks a sleep and waits: both must die, not just the shell.
    const err = await tracker.run('sh', ['-c', 'sleep 30 & echo $!; wait'], { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(err).toMatchObject({ reason: 'timeout' });
    const grandchild = Number((err as CommandError).result.stdout.trim());
    expect(grandchild).toBeGreaterThan(0);
    await sleep(50);
    expect(pidAlive(grandchild)).toBe(false);
  });
});

describe('ProcessTracker', () => {
  it('stops its children on close, with SIGKILL for one that ignores SIGTERM', async () => {
    const own = new ProcessTracker('own');
    const polite = own.spawn('sleep', ['30']);
    const stubborn = own.spawn('sh', ['-c', 'trap "" TERM; echo ready; while :; do sleep 0.05; done']);
    await waitForLine(stubborn, /ready/, 5000);
    expect(own.children).toHaveLength(2);
    const started = Date.now();
    await own.close(200);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(polite.signalCode).toBe('SIGTERM');
    expect(stubborn.signalCode).toBe('SIGKILL');
    expect(own.children).toHaveLength(0);
    await own.close(); // idempotent
    expect(() => own.spawn('true')).toThrow(TypeError);
  });
});

describe('waitForLine', () => {
  it('matches lines printed before the call and returns the match', async () => {
    const child = tracker.spawn('sh', ['-c', 'echo "port=4242"; sleep 30']);
    await waitForExit(child, 200).catch(() => {}); // let the line arrive first
    const m = await waitForLine(child, /port=(\d+)/, 2000);
    expect(m[1]).toBe('4242');
    expect(capturedOutput(child).stdout).toBe('port=4242\n');
  });

  it('reassembles a line written in two chunks', async () => {
    const child = tracker.spawn('sh', ['-c', 'printf "hal"; sleep 0.1; printf "f line\\n"; sleep 30']);
    await expect(waitForLine(child, /^half line$/, 2000)).resolves.toBeTruthy();
  });

  it('looks only at the stream asked for', async () => {
    const child = tracker.spawn('sh', ['-c', 'echo ready >&2; sleep 30']);
    await expect(waitForLine(child, /ready/, 2000, { stream: 'stderr' })).resolves.toBeTruthy();
    await expect(waitForLine(child, /ready/, 100, { stream: 'stdout' })).rejects.toThrow(/within 100 ms/);
  });

  it('rejects with the output tail when the child exits first or time runs out', async () => {
    const quitter = tracker.spawn('sh', ['-c', 'echo starting; exit 1']);
    await expect(waitForLine(quitter, /listening/, 5000)).rejects.toThrow(/ended before.*\n.*stdout: starting/);
    const silent = tracker.spawn('sleep', ['30']);
    await expect(waitForLine(silent, /x/, 100)).rejects.toThrow(/within 100 ms \(no output\)/);
  });
});

describe('waitForPort', () => {
  it('waits for a loopback listener that starts late', async () => {
    const server: Server = createServer((s) => s.end());
    const port = await new Promise<number>((resolve) => {
      // Find a free port, release it, and listen again a little later.
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const p = (probe.address() as { port: number }).port;
        probe.close(() => resolve(p));
      });
    });
    setTimeout(() => server.listen(port, '127.0.0.1'), 200);
    try {
      await waitForPort('127.0.0.1', port, 5000);
    } finally {
      server.close();
    }
  });

  it('gives up after its timeout', async () => {
    const started = Date.now();
    await expect(waitForPort('127.0.0.1', 1, 300)).rejects.toThrow(/nothing accepted on 127.0.0.1:1 within 300 ms/);
    expect(Date.now() - started).toBeLessThan(2000);
  });
});

describe('fds', () => {
  it('counts open descriptors and names them', async () => {
    const before = fdCount();
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    expect(fdCount()).toBe(before + 1);
    expect(openFds().some((f) => f.target.startsWith('socket:['))).toBe(true);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    expect(fdCount()).toBe(before);
  });
});
