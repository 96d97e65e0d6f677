#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/ for a bounded time (CI runs it from
# scripts/test.sh, after the cargo tests).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 20; the targets default to all of `cargo +nightly fuzz list`.
# It installs cargo-fuzz if missing, builds every target once, then runs each on a temporary
# copy of its committed seed corpus (fuzz/corpus/<target>/) and regression inputs
# (fuzz/regressions/<target>/), so what libFuzzer adds to the corpus is thrown away. A crash,
# timeout (an input slower than FUZZ_INPUT_TIMEOUT s) or out-of-memory (over FUZZ_RSS_MB MiB)
# fails the script: it names the target and the artifact, minimizes a crash with
# `cargo fuzz tmin`, and copies the input to fuzz/regressions/<target>/, where the stable test
# `cli::fuzz_smoke::tests::fuzz_corpora_and_regressions_replay` replays it from then on.
# Without a nightly toolchain it says why it skips and exits 0 (the stable smoke tests of the
# same bodies still run in `cargo test`).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-20}
[ $# -gt 0 ] && shift
case $secs in '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;; esac
input_timeout=${FUZZ_INPUT_TIMEOUT:-10}
rss_mb=${FUZZ_RSS_MB:-2048}
# The fuzzed code has no unsafe (proto, plan, server and cli are `deny(unsafe_code)`), so
# AddressSanitizer would only slow the build and the runs down.
flags=(--sanitizer none)

if ! nightly=$(cargo +nightly --version 2>&1); then
  echo "== fuzz: SKIPPED: no nightly toolchain (\`cargo +nightly --version\` said: ${nightly%%$'\n'*})."
  echo "   cargo-fuzz needs nightly (rustup toolchain install nightly); the same target bodies ran"
  echo "   on stable as smoke tests in \`cargo test\` (cli/plan/proto/server::fuzz_smoke)."
  exit 0
fi
if ! cargo +nightly fuzz --version > /dev/null 2>&1; then
  echo "== fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

start=$(date +%s)
echo "== fuzz: building every target ($nightly, $(cargo +nightly fuzz --version))"
cargo +nightly fuzz build "${flags[@]}"
built=$(date +%s)

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  corpus="$work/$t/corpus"
  artifacts="$work/$t/artifacts"
  mkdir -p "$corpus" "$artifacts"
  for d in "fuzz/corpus/$t" "fuzz/regressions/$t"; do
    [ -d "$d" ] && cp -r "$d/." "$corpus/"
  done
  dict=()
  for d in "fuzz/dicts/$t.dict"; do
    [ -f "$d" ] && dict=("-dict=$d")
  done
  echo "== fuzz: $t for ${secs}s ($(find "$corpus" -type f | wc -l) seeds${dict:+, ${dict[0]#-dict=}})"
  rc=0
  timeout --kill-after=10 $((secs + 120)) \
    cargo +nightly fuzz run "${flags[@]}" "$t" "$corpus" -- \
    -max_total_time="$secs" -timeout="$input_timeout" -rss_limit_mb="$rss_mb" \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "${dict[@]}" \
    > "$work/$t.log" 2>&1 || rc=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^Done ' "$work/$t.log" | tr '\n' ' ' || true
  echo
  if [ "$rc" -eq 0 ]; then
    continue
  fi
  grep -m1 -A4 -E 'panicked at|ERROR: libFuzzer' "$work/$t.log" || tail -n 40 "$work/$t.log"
  artifact=$(find "$artifacts" -type f | head -n 1)
  if [ -z "$artifact" ]; then
    echo "== fuzz: FAILED: $t exited $rc without an artifact (killed by \`timeout\` after $((secs + 120))s?)"
    failed+=("$t")
    continue
  fi
  kind=$(basename "$artifact" | cut -d- -f1)
  keep="$artifact"
  if [ "$kind" = crash ]; then
    # tmin writes each smaller crashing input as fuzz/artifacts/<target>/minimized-from-<hash>;
    # the last one it names is the smallest.
    cargo +nightly fuzz tmin "${flags[@]}" "$t" "$artifact" -r 2000 > "$work/$t.tmin.log" 2>&1 || true
    min=$(grep -oE "[^ ']*minimized-from-[0-9a-f]+" "$work/$t.tmin.log" | tail -n 1)
    [ -n "$min" ] && [ -s "$min" ] && keep="$min"
  fi
  mkdir -p "fuzz/regressions/$t"
  dest="fuzz/regressions/$t/$kind-$(sha1sum "$keep" | cut -c1-16)"
  cp "$keep" "$dest"
  echo "== fuzz: FAILED: $t: $kind, artifact $(basename "$artifact"), input kept as $dest"
  echo "   replay: cargo +nightly fuzz run ${flags[*]} $t $dest"
  echo "   commit it with the fix: the stable tests replay every file in fuzz/regressions/."
  failed+=("$t")
done

end=$(date +%s)
echo "== fuzz: ${#targets[@]} targets, ${secs}s each: build $((built - start))s, total $((end - start))s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "== fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "== fuzz: no crash, timeout or out-of-memory"
