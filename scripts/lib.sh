# Shared by the set-up, build and CI scripts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PNPM_VERSION=10.34.8
pnpm() { npx -y "pnpm@${PNPM_VERSION}" "$@"; }
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
