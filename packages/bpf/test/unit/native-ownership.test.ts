// The handle classes of native/src own their fds through one type, OwnedFd (fd.h), and share one idempotent
// Close() (Closable in addon.h): no class closes a raw fd or repeats the close-once-and-untrack logic.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const native = fileURLToPath(new URL('../../../../native/src/', import.meta.url));
const read = (f: string) => readFileSync(native + f, 'utf8');
const handles = ['map', 'program', 'link', 'object', 'ringbuf'];

describe('native handle ownership', () => {
  it.each(handles)('%s: no raw close() of an fd, no close logic of its own', (h) => {
    const cc = read(`${h}.cc`);
    const header = read(`${h}.h`);
    expect(cc.match(/(?<![\w:.])close\((?!\))/g) ?? []).toEqual([]);
    expect(header).not.toMatch(/\bint (fd_|fd|prog_fd|target_fd) = -1;/);
    expect(cc).not.toMatch(/\bUntrack\(/);
    expect(header).not.toMatch(/void Close\(\) override/);
  });

  it('OwnedFd is the one owner', () => {
    expect(read('fd.h')).toMatch(/class OwnedFd/);
  });
});
