#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] [TARGET=SECONDS ...] — fuzz every gsq parser for SECONDS each
# (default 60); TARGET=SECONDS gives one parser its own time (0 skips it), e.g.
#   fuzz/run.sh 60                      CI's short run
#   fuzz/run.sh 300 hf_tokenizer=900    a soak: 5 min per parser, 15 for the slowest
#
# Builds the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined) in
# $GSQ_FUZZ_BUILD_DIR (default <repo>/build-fuzz), generates the seed corpora from
# $GSQ_DATA_DIR (default <repo>/../shared/data; hand-made seeds only without it), adds the
# corpus kept in the repo (fuzz/corpus/<target>/, small files found by earlier soaks),
# runs the targets one after another and prints executions, executions per second and
# the time a soak needs for 1,000,000 executions of each.
# Exits non-zero if any target crashed, leaked, timed out, ran out of memory or failed
# to build. Crash inputs are kept in <build>/fuzz-artifacts/<target>/; the corpus grows in
# <build>/fuzz-corpus/<target>/ across runs. GSQ_FUZZ_SAVE_CORPUS=1 merges the inputs
# that add coverage (at most 4 KiB each) back into fuzz/corpus/<target>/ to commit.
# Total time ≈ build + the sum of the targets' times.
set -euo pipefail

seconds=60
declare -A per_target=()
for arg in "$@"; do
  if [[ "$arg" =~ ^[0-9]+$ ]]; then
    seconds="$arg"
  elif [[ "$arg" =~ ^([a-z0-9_]+)=([0-9]+)$ ]]; then
    per_target["${BASH_REMATCH[1]}"]="${BASH_REMATCH[2]}"
  else
    echo "usage: $0 [SECONDS per target, default 60] [TARGET=SECONDS ...]" >&2
    exit 2
  fi
done
if [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [SECONDS per target, default 60] [TARGET=SECONDS ...]" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${GSQ_FUZZ_BUILD_DIR:-$root/build-fuzz}"
data="${GSQ_DATA_DIR:-$root/../shared/data}"
targets=(safetensors llama2c hf_config llama2c_tokenizer hf_tokenizer gguf peft_adapter checkpoint)
for name in "${!per_target[@]}"; do
  if [[ ! " ${targets[*]} " =~ " $name " ]]; then
    echo "$0: unknown target '$name' (targets: ${targets[*]})" >&2
    exit 2
  fi
done

echo "== fuzz: building in $build =="
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_COMPILER=clang++ -DGSQ_BUILD_FUZZERS=ON -DGSQ_WERROR=ON \
      -DGSQ_BUILD_TESTS=OFF -DGSQ_BUILD_BENCH=OFF -DGSQ_BUILD_EXAMPLES=OFF -DGSQ_INSTALL=OFF >/dev/null
cmake --build "$build" --parallel "$(nproc)" --target gsq-fuzz-seeds "${targets[@]/#/fuzz_}"

seeds="$build/fuzz-seeds"
rm -rf "$seeds"
"$build/fuzz/gsq-fuzz-seeds" "$seeds" "$data"

failed=()
summary=()
for t in "${targets[@]}"; do
  t_seconds="${per_target[$t]:-$seconds}"
  [ "$t_seconds" -eq 0 ] && continue
  corpus="$build/fuzz-corpus/$t"
  kept="$root/fuzz/corpus/$t"
  artifacts="$build/fuzz-artifacts/$t"
  log="$build/fuzz-$t.log"
  mkdir -p "$corpus" "$artifacts"
  inputs=("$corpus" "$seeds/$t")
  [ -d "$kept" ] && inputs+=("$kept")
  echo "== fuzz: $t for ${t_seconds}s =="
  set +e
  "$build/fuzz/fuzz_$t" "${inputs[@]}" \
      -max_total_time="$t_seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -max_len=8192 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  need="?"
  if [[ "${rate:-}" =~ ^[0-9]+$ ]] && [ "$rate" -gt 0 ]; then need="$(( (1000000 + rate - 1) / rate ))s"; fi
  summary+=("$(printf '%-18s rc=%-3s %6ss executions=%-10s exec/s=%-7s 1M in %-7s coverage=%s' "$t" "$rc" "$t_seconds" "${runs:-?}" "${rate:-?}" "$need" "${cov:-?}")")
  if [ "$rc" -eq 0 ] && [ "${GSQ_FUZZ_SAVE_CORPUS:-0}" = 1 ]; then
    mkdir -p "$kept"
    "$build/fuzz/fuzz_$t" -merge=1 -max_len=4096 -timeout=10 "$kept" "$corpus" >"$log.merge" 2>&1 || true
    echo "   corpus kept in the repo: $(ls "$kept" | wc -l) files, $(du -sh "$kept" | cut -f1)"
  fi
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    echo "!! fuzz target $t failed (exit $rc); log: $log" >&2
    grep -E 'ERROR|SUMMARY|Test unit written|==[0-9]+==' "$log" | head -20 >&2 || true
  fi
done

echo "== fuzz summary =="
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran clean"
