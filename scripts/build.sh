#!/usr/bin/env bash
# Builds everything in order: BPF objects and skeletons → the native addon that embeds them → generated
# TS names → TypeScript. Each step is incremental.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

log "bpf: objects and skeletons"
make -C bpf -s OUT="$ROOT/build/bpf"

log "native: addon (cmake-js)"
(cd native && npx --no-install cmake-js compile --directory . --out build --CDMESH_BPF_OUT="$ROOT/build/bpf" >build.log 2>&1) || {
  cat native/build.log >&2
  exit 1
}

# @mesh/bpf ships the addon and the mesh's compiled objects in prebuilds/ (the test programs stay in build/bpf/testprogs).
PREBUILDS=packages/bpf/prebuilds
mkdir -p "$PREBUILDS/linux-x64" "$PREBUILDS/bpf"
rm -f "$PREBUILDS"/bpf/*.bpf.o
# Copy, then rename over: rewriting the file in place crashes every process that has the addon loaded (SIGSEGV).
cp native/build/Release/mesh_bpf.node "$PREBUILDS/linux-x64/mesh_bpf.node.tmp"
mv -f "$PREBUILDS/linux-x64/mesh_bpf.node.tmp" "$PREBUILDS/linux-x64/mesh_bpf.node"
cp $(make -C bpf -s OUT="$ROOT/build/bpf" shipped) "$PREBUILDS/bpf/"

log "native: mesh-dataplane (cmake)"
(cmake -S native/dataplane -B native/dataplane/build -DCMAKE_BUILD_TYPE=Release >native/dataplane/build.log 2>&1 &&
  cmake --build native/dataplane/build -j2 >>native/dataplane/build.log 2>&1) || { cat native/dataplane/build.log >&2; exit 1; }

log "generated names"
node scripts/gen-objects.mjs
node scripts/gen-shared.mjs ts

log "typescript"
npx --no-install tsc -b packages/bpf packages/split packages/metrics packages/mtls apps/agent
