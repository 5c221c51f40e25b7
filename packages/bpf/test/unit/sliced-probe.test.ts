// runSliced serves the event loop between slices of a long computation (the agent's apply of a big config): a
// probe that connects during a slice is answered before the next slice, not after it. Counted in slices run
// between the connection's accept and its request, not milliseconds, so a loaded machine cannot change it.
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';

import { describe, expect, it } from 'vitest';

import { runSliced } from '../../src/index.js';

// Connects, sends a request, then raises the flag: the request is in the server's socket before the server's
// event loop turns again.
const client = `
const { connect } = require('node:net');
const { workerData } = require('node:worker_threads');
const flag = new Int32Array(workerData.flag);
const s = connect(workerData.port, '127.0.0.1', () => {
  s.write('GET /healthz HTTP/1.1\\r\\nHost: agent\\r\\nConnection: close\\r\\n\\r\\n', () => {
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
  });
});
s.resume();
s.on('error', () => {});
`;

describe('runSliced', () => {
  it('answers a request that arrived during a slice before the next slice runs', async () => {
    let slices = 0;
    let atConnection = -1;
    let atRequest = -1;
    const server = createServer((_req, res) => {
      atRequest = slices;
      res.end('ok\n');
    });
    server.on('connection', () => (atConnection = slices));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const flag = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(client, { eval: true, workerData: { port: (server.address() as AddressInfo).port, flag: flag.buffer } });
    try {
      await runSliced(
        (function* () {
          // Two slices of nothing: the third is resumed by the loop's check phase, as every slice after the first
          // is (the first may be run from an I/O callback, after that turn's poll).
          for (let i = 0; i < 2; i++) {
            slices++;
            yield;
          }
          // The third slice holds the thread until the client has connected and sent its request (bounded).
          slices++;
          Atomics.wait(flag, 0, 0, 20_000);
          expect(Atomics.load(flag, 0), 'the client connected and sent its request within 20 s').toBe(1);
          yield;
          // Then slices of nothing, until the request was answered (at most 1,000).
          for (let i = 0; i < 1000 && atRequest < 0; i++) {
            slices++;
            yield;
          }
        })(),
        0,
      );
      expect(atConnection, 'slices run when the connection was accepted').toBe(3);
      expect(atRequest - atConnection, 'slices run between the accept and the request').toBe(0);
    } finally {
      await worker.terminate();
      server.closeAllConnections();
      server.close();
    }
  });
});
