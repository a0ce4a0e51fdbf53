#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] — fuzz every gsq parser for SECONDS each (default 60).
#
# Builds the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined) in
# $GSQ_FUZZ_BUILD_DIR (default <repo>/build-fuzz), generates the seed corpora from
# $GSQ_DATA_DIR (default <repo>/../shared/data; hand-made seeds only without it), runs the
# targets one after another and prints executions and executions per second for each.
# Exits non-zero if any target crashed, leaked, timed out, ran out of memory or failed
# to build. Crash inputs are kept in <build>/fuzz-artifacts/<target>/; the corpus grows in
# <build>/fuzz-corpus/<target>/ across runs. Total time ≈ build + 6 × SECONDS.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [SECONDS per target, default 60]" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${GSQ_FUZZ_BUILD_DIR:-$root/build-fuzz}"
data="${GSQ_DATA_DIR:-$root/../shared/data}"
targets=(safetensors llama2c hf_config llama2c_tokenizer hf_tokenizer gguf)

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
  corpus="$build/fuzz-corpus/$t"
  artifacts="$build/fuzz-artifacts/$t"
  log="$build/fuzz-$t.log"
  mkdir -p "$corpus" "$artifacts"
  echo "== fuzz: $t for ${seconds}s =="
  set +e
  "$build/fuzz/fuzz_$t" "$corpus" "$seeds/$t" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -max_len=8192 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  summary+=("$(printf '%-18s rc=%-3s executions=%-10s exec/s=%-8s coverage=%s' "$t" "$rc" "${runs:-?}" "${rate:-?}" "${cov:-?}")")
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    echo "!! fuzz target $t failed (exit $rc); log: $log" >&2
    grep -E 'ERROR|SUMMARY|Test unit written|==[0-9]+==' "$log" | head -20 >&2 || true
  fi
done

echo "== fuzz summary (${seconds}s per target) =="
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran clean"
