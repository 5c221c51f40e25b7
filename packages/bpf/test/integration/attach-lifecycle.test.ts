// The life of an attachment, as the kernel reports it (BPF_PROG_QUERY, link info): every cgroup attach type
// the mesh uses, as a bpf_link and through BPF_PROG_ATTACH; pinning, adoption, in-place update; sockmap links.
import { createCgroup, describePrivileged, uniqueName, type Cgroup } from '@mesh/testkit';
import { once } from 'node:events';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { release } from 'node:os';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';

import {
  BPFFS, BpfError, BpfMap, cgroupId, codec as c, features, Link, liveHandles, PerCpuMap, Program, queryCgroup, socketFd,
  type AttachType,
} from '../../src/index.js';
import { Counter, sockKey, testprog, testprogs } from '../programs.js';
import { ip16 } from './support.js';

/** BPF_F_ALLOW_OVERRIDE, BPF_F_ALLOW_MULTI */
const ALLOW_OVERRIDE = 1;
const ALLOW_MULTI = 2;

const rows: { object: keyof typeof testprogs; program: string; attachType: AttachType }[] = [
  { object: testprogs.sock_track.name, program: testprogs.sock_track.programs.sockops_track, attachType: 'cgroup_sock_ops' },
  { object: testprogs.skb_guard.name, program: testprogs.skb_guard.programs.skb_ingress, attachType: 'cgroup_inet_ingress' },
  { object: testprogs.skb_guard.name, program: testprogs.skb_guard.programs.skb_egress, attachType: 'cgroup_inet_egress' },
  ...(
    [
      ['redirect_connect4', 'cgroup_inet4_connect'],
      ['redirect_connect6', 'cgroup_inet6_connect'],
      ['redirect_sendmsg4', 'cgroup_udp4_sendmsg'],
      ['redirect_sendmsg6', 'cgroup_udp6_sendmsg'],
      ['redirect_recvmsg4', 'cgroup_udp4_recvmsg'],
      ['redirect_recvmsg6', 'cgroup_udp6_recvmsg'],
      ['redirect_getpeername4', 'cgroup_inet4_getpeername'],
      ['redirect_getpeername6', 'cgroup_inet6_getpeername'],
    ] as const
  ).map(([program, attachType]) => ({ object: testprogs.sock_redirect.name, program: testprogs.sock_redirect.programs[program], attachType })),
];
const allTypes = rows.map((r) => r.attachType);

let cg: Cgroup;
const pinDirs: string[] = [];
const handlesAtStart = liveHandles();

beforeAll(async () => {
  cg = await createCgroup('bpflife');
});
afterAll(async () => {
  for (const dir of pinDirs) rmSync(dir, { recursive: true, force: true });
  await cg?.close();
  expect(existsSync(cg.path)).toBe(false);
  expect(liveHandles()).toBe(handlesAtStart);
});

/** What is attached to the scratch cgroup, for every attach type that has something. */
function attachedNow(): Partial<Record<AttachType, number[]>> {
  return Object.fromEntries(allTypes.map((t) => [t, queryCgroup(cg.path, t)]).filter(([, ids]) => ids!.length > 0));
}

function pinDir(): string {
  const dir = join(BPFFS, uniqueName('bpflife', 64));
  mkdirSync(dir);
  pinDirs.push(dir);
  return dir;
}

describePrivileged('attachment lifecycle', () => {
  it.each(rows)('$attachType ($program): a link is listed by the kernel while open, gone once closed', ({ object, program, attachType }) => {
    using obj = testprog(object).load();
    const prog = obj.program(program);
    expect(prog.attachType).toBe(attachType);
    const id = prog.info().id;

    const link = prog.attachCgroup(cg.path);
    expect(link.kind).toBe('link');
    expect(attachedNow()).toEqual({ [attachType]: [id] });
    expect(link.info()).toMatchObject({ linkType: 'cgroup', programId: id, attachType, cgroupId: cgroupId(cg.path) });

    link.close();
    expect(attachedNow()).toEqual({});
    expect(() => link.info()).toThrow(TypeError);
  });

  it.each(rows)('$attachType with legacyFlags (BPF_PROG_ATTACH, ALLOW_MULTI): the same, as kind "attach"', ({ object, program, attachType }) => {
    using obj = testprog(object).load();
    const prog = obj.program(program);
    const id = prog.info().id;

    const link = prog.attachCgroup(cg.path, { legacyFlags: ALLOW_MULTI });
    expect(link.kind).toBe('attach');
    expect(attachedNow()).toEqual({ [attachType]: [id] });
    expect(link.info()).toMatchObject({ programId: id, attachType });

    link.close();
    expect(attachedNow()).toEqual({});
  });

  it('closing the object detaches every link it made', () => {
    const obj = testprog(testprogs.sock_redirect.name).load();
    try {
      for (const p of Object.values(testprogs.sock_redirect.programs)) obj.program(p).attachCgroup(cg.path);
      expect(Object.keys(attachedNow())).toHaveLength(8);
    } finally {
      obj.close();
    }
    expect(attachedNow()).toEqual({});
  });

  it('a pinned cgroup link survives its object; openPinned() adopts it and detach() removes it', () => {
    const pin = join(pinDir(), 'sockops');
    try {
      let id: number;
      {
        using obj = testprog(testprogs.sock_track.name).load();
        const prog = obj.program(testprogs.sock_track.programs.sockops_track);
        id = prog.info().id;
        prog.attachCgroup(cg.path).pin(pin);
      }
      expect(attachedNow()).toEqual({ cgroup_sock_ops: [id] });

      const adopted = Link.openPinned(pin);
      expect(adopted.kind).toBe('link');
      expect(adopted.info()).toMatchObject({ linkType: 'cgroup', programId: id, attachType: 'cgroup_sock_ops' });
      // Closing an adopted pinned link keeps the attachment: the pin still holds it.
      adopted.close();
      expect(attachedNow()).toEqual({ cgroup_sock_ops: [id] });

      const again = Link.openPinned(pin);
      again.detach();
      expect(again.isClosed).toBe(true);
      expect(attachedNow()).toEqual({});
    } finally {
      // The pin is the last holder of a link no handle refers to: removing it detaches whatever is left.
      rmSync(pin, { force: true });
    }
  });

  it('attachCgroupPinned adopts a pinned link only while its program uses the pinned maps; after a map is replaced it switches programs in place', () => {
    const { name, maps, programs } = testprogs.skb_guard;
    const dir = pinDir();
    const mapDir = join(dir, 'maps');
    const linkDir = join(dir, 'links');
    mkdirSync(mapDir);
    const load = () => testprog(name).pinMaps(mapDir).load();
    const pinnedIds = () =>
      new Set([
        BpfMap.openPinned(join(mapDir, maps.blocked_ports), { key: c.u16, value: c.u64 }),
        PerCpuMap.openPinned(join(mapDir, maps.skb_stats), { key: c.u32, value: c.struct({ p: c.u64, b: c.u64 }) }),
      ].map((m) => {
        using _ = m;
        return m.info().id;
      }));
    /** The maps each pinned link's program uses, read from the kernel. */
    const runningMaps = () =>
      Object.values(programs).map((p) => {
        using link = Link.openPinned(join(linkDir, p));
        using prog = Program.openById(link.info().programId);
        return prog.info().mapIds;
      });
    try {
      {
        using obj = load();
        expect(obj.attachCgroupPinned(cg.path, linkDir).map((a) => a.outcome)).toEqual(['attached', 'attached']);
      }
      const first = runningMaps();
      {
        using obj = load();
        expect(obj.attachCgroupPinned(cg.path, linkDir).map((a) => a.outcome)).toEqual(['adopted', 'adopted']);
      }
      expect(runningMaps()).toEqual(first);

      // A restart with another size of one map replaces its pin: the same programs (same tag) on another map.
      rmSync(join(mapDir, maps.blocked_ports));
      {
        using obj = load();
        expect(obj.attachCgroupPinned(cg.path, linkDir).map((a) => a.outcome)).toEqual(['replaced', 'replaced']);
      }
      const pinned = pinnedIds();
      for (const ids of runningMaps()) expect(new Set(ids)).toEqual(pinned);
      expect(Object.keys(attachedNow()).sort()).toEqual(['cgroup_inet_egress', 'cgroup_inet_ingress']);
    } finally {
      for (const p of Object.values(programs)) if (existsSync(join(linkDir, p))) Link.openPinned(join(linkDir, p)).detach();
    }
    expect(attachedNow()).toEqual({});
  });

  it.each([
    { kind: 'link', opts: {} },
    { kind: 'attach', opts: { legacyFlags: ALLOW_MULTI } },
  ] as const)('update() of a cgroup $kind swaps the program id in place', ({ kind, opts }) => {
    const { name, programs } = testprogs.sock_redirect;
    using first = testprog(name).load();
    using second = testprog(name).load();
    const p1 = first.program(programs.redirect_connect4);
    const p2 = second.program(programs.redirect_connect4);
    const link = p1.attachCgroup(cg.path, opts);
    expect(link.kind).toBe(kind);
    expect(attachedNow()).toEqual({ cgroup_inet4_connect: [p1.info().id] });

    link.update(p2);
    // One program throughout: the new id replaced the old one in its slot.
    expect(attachedNow()).toEqual({ cgroup_inet4_connect: [p2.info().id] });
    expect(link.info().programId).toBe(p2.info().id);

    if (kind === 'link') {
      // With `expected`, the swap happens only if that program is the one attached.
      expect(() => link.update(p1, p1)).toThrow(expect.objectContaining({ op: 'link_update', code: 'EPERM' }));
      expect(() => link.update(p1, p1)).toThrow(BpfError);
      link.update(p1, p2);
      expect(attachedNow()).toEqual({ cgroup_inet4_connect: [p1.info().id] });
    }
    link.close();
    expect(attachedNow()).toEqual({});
  });

  // Fails today: LinkHandle::Update (native/src/link.cc) always re-attaches with ALLOW_MULTI | REPLACE, and the
  // kernel refuses flags that differ from those of the attachment (EPERM). Without ALLOW_MULTI, attaching
  // again with the same flags is the in-place replacement.
  it.each([
    { flags: 0, name: 'no flags' },
    { flags: ALLOW_OVERRIDE, name: 'ALLOW_OVERRIDE' },
  ])('update() of a legacy attachment made with $name swaps the program id in place', ({ flags }) => {
    const { name, programs } = testprogs.sock_redirect;
    using first = testprog(name).load();
    using second = testprog(name).load();
    const p1 = first.program(programs.redirect_connect4);
    const p2 = second.program(programs.redirect_connect4);
    const link = p1.attachCgroup(cg.path, { legacyFlags: flags });
    try {
      expect(attachedNow()).toEqual({ cgroup_inet4_connect: [p1.info().id] });
      link.update(p2);
      expect(attachedNow()).toEqual({ cgroup_inet4_connect: [p2.info().id] });
    } finally {
      link.close();
    }
    expect(attachedNow()).toEqual({});
  });
});

describePrivileged('sockmap attachments', () => {
  it('sk_msg on a sockhash is a bpf_link on kernels that have them, and applies to sockets inserted while attached', async () => {
    const [major = 0, minor = 0] = release().split('.').map(Number);
    expect(features().attach.sockmapLink).toBe(major > 6 || (major === 6 && minor >= 10));

    const server = createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    const sockets: Socket[] = [];
    server.on('connection', (s) => sockets.push(s));
    const dial = async () => {
      const s = connect((server.address() as AddressInfo).port, '127.0.0.1');
      sockets.push(s);
      await once(s, 'connect');
      return s;
    };
    const send = (s: Socket, n: number) => new Promise<void>((resolve, reject) => s.write(Buffer.alloc(n), (e) => (e ? reject(e) : resolve())));
    const keyFor = (s: Socket) => ({ family: 2, localIp: ip16('127.0.0.1'), remoteIp: ip16('127.0.0.1'), localPort: s.localPort!, remotePort: s.remotePort! });

    try {
      using obj = testprog(testprogs.sock_track.name).load();
      const sockHash = obj.map(testprogs.sock_track.maps.sock_hash, { key: sockKey, value: c.u64 });
      const counters = obj.map(testprogs.sock_track.maps.counters, { key: c.u32, value: c.u64n });
      const prog = obj.program(testprogs.sock_track.programs.msg_count);

      const link = prog.attachSockMap(sockHash);
      expect(link.kind).toBe(features().attach.sockmapLink ? 'link' : 'attach');
      expect(link.info()).toMatchObject({ programId: prog.info().id, attachType: 'sk_msg_verdict' });
      if (link.kind === 'link') expect(link.info()).toMatchObject({ linkType: 'sockmap', mapId: sockHash.info().id });

      const before = await dial();
      sockHash.set(keyFor(before), BigInt(socketFd(before)));
      await send(before, 1000);
      expect(counters.get(Counter.MSG_BYTES)).toBe(1000);

      link.close();
      // A socket inserted now gets no sk_msg program; one inserted before keeps the one it got.
      const after = await dial();
      sockHash.set(keyFor(after), BigInt(socketFd(after)));
      await send(after, 500);
      expect(counters.get(Counter.MSG_BYTES)).toBe(1000);
      await send(before, 10);
      expect(counters.get(Counter.MSG_BYTES)).toBe(1010);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  it('sk_skb stream_verdict on a sockmap is a link too; a second link on the same map and type is refused', () => {
    using obj = testprog(testprogs.sock_track.name).load();
    using other = testprog(testprogs.sock_track.name).load();
    const sockMap = obj.map(testprogs.sock_track.maps.sock_map, { key: c.u32, value: c.u64 });
    const prog = obj.program(testprogs.sock_track.programs.skb_verdict);
    expect(prog.attachType).toBe('sk_skb_stream_verdict');

    const link = prog.attachSockMap(sockMap);
    expect(link.kind).toBe(features().attach.sockmapLink ? 'link' : 'attach');
    expect(link.info()).toMatchObject({ programId: prog.info().id, attachType: 'sk_skb_stream_verdict' });
    if (link.kind === 'link') {
      expect(() => other.program(testprogs.sock_track.programs.skb_verdict).attachSockMap(sockMap)).toThrow(
        expect.objectContaining({ op: 'link_attach_sockmap', code: 'EBUSY' }),
      );
    }
    link.close();
    // Detached: the slot is free for another program.
    other.program(testprogs.sock_track.programs.skb_verdict).attachSockMap(sockMap).close();
  });
});
