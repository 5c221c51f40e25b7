/** A TCP relay that records both directions of the h2c connections it carries, and an HTTP/2 client to drive it. */
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';

import { FrameReader, type FrameHeader } from '../src/h2/frames.js';

export interface Frame {
  header: FrameHeader;
  payload: Buffer;
}

/** Frames of one recorded direction (payload copies; DATA with an empty payload). */
export function frames(bytes: Buffer[], preface: boolean): Frame[] {
  const out: Frame[] = [];
  const reader = new FrameReader((header, payload) => out.push({ header, payload: Buffer.from(payload) }), { preface });
  for (const b of bytes) reader.push(b);
  return out;
}

export interface Relay {
  port: number;
  /** Server → client bytes, as read. */
  down: Buffer[];
  /** Client → server bytes, as read. */
  up: Buffer[];
  close(): Promise<void>;
}

/** Listens on 127.0.0.1 and relays every connection to 127.0.0.1:targetPort, recording both directions. */
export async function startRelay(targetPort: number): Promise<Relay> {
  const down: Buffer[] = [];
  const up: Buffer[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.push(client, upstream);
    client.on('data', (d: Buffer) => {
      up.push(d);
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      down.push(d);
      client.write(d);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.on('error', () => {});
    upstream.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    down,
    up,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Runs `calls` calls on one h2c connection to 127.0.0.1:port, `batch` streams at a time. */
export async function runCalls(
  port: number,
  call: (session: http2.ClientHttp2Session, i: number) => Promise<void>,
  calls: number,
  batch = 100,
  setup?: (session: http2.ClientHttp2Session) => void,
): Promise<void> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  setup?.(session);
  try {
    for (let i = 0; i < calls; i += batch) {
      await Promise.all(Array.from({ length: Math.min(batch, calls - i) }, (_, k) => call(session, i + k)));
    }
  } finally {
    await new Promise<void>((resolve) => session.close(() => resolve()));
  }
}

/** A GET whose response status (and body drained) resolves it. */
export function get(session: http2.ClientHttp2Session, path: string): Promise<{ streamId: number; status: number }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path });
    let status = 0;
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('error', reject);
    req.resume();
    req.on('end', () => resolve({ streamId: req.id!, status }));
    req.end();
  });
}
