# Ctrl-C (SIGINT) ends gsq-finetune after the current step with a checkpoint and exit
# status 0; --resume continues from that step (and Ctrl-C again stops it cleanly).
#   -DFINETUNE= -DDATA_DIR= -DWORK=
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
gsq_require_data(models/stories260K/stories260K.bin)
find_program(SH sh)
if(NOT SH)
  message("SKIPPED: no sh to send the interrupt")
  return()
endif()
# Runs the command and sends it SIGINT once log.jsonl has one more step record than
# before it started: a fixed delay would race with a slow or busy machine.
# (No semicolons in it: CMake would split the argument there.)
set(interrupt_after_a_step [=[
log=$1
shift
steps() {
  c=$(grep -c '"event":"step"' "$log" 2>/dev/null)
  echo "${c:-0}"
}
before=$(steps)
"$@" &
pid=$!
while [ "$(steps)" -le "$before" ] && kill -0 "$pid" 2>/dev/null
do
  sleep 0.2
done
kill -INT "$pid" 2>/dev/null
wait "$pid"
]=])
file(REMOVE_RECURSE "${WORK}")
set(args ${FINETUNE} --model ${DATA_DIR}/models/stories260K/stories260K.bin
    --data ${DATA_DIR}/alpaca/alpaca_train.json --max-items 300 --steps 5000 --batch 2 --seq-len 128
    --precision w8a8g8 --out ${WORK}/run)
gsq_run(RUN ${SH} -c "${interrupt_after_a_step}" sh ${WORK}/run/log.jsonl ${args})
if(NOT RUN_RC EQUAL 0)
  gsq_fail("an interrupted run should exit 0, got ${RUN_RC}")
endif()
gsq_json_lines(lines "${WORK}/run/log.jsonl")
set(seen_checkpoint OFF)
set(seen_interrupted OFF)
set(last_step 0)
foreach(line IN LISTS lines)
  string(JSON event GET "${line}" event)
  if(event STREQUAL "checkpoint")
    set(seen_checkpoint ON)
    string(JSON written GET "${line}" written)
  elseif(event STREQUAL "interrupted")
    set(seen_interrupted ON)
    string(JSON last_step GET "${line}" step)
  endif()
endforeach()
if(NOT seen_checkpoint OR NOT seen_interrupted OR last_step LESS 1)
  gsq_fail("log.jsonl lacks the checkpoint/interrupted records (step ${last_step})")
endif()
gsq_read_json(summary "${WORK}/run/summary.json")
string(JSON interrupted GET "${summary}" interrupted)
if(NOT interrupted)
  gsq_fail("summary.json does not say interrupted")
endif()
message(STATUS "interrupted cleanly after step ${last_step}")
if(NOT written)
  gsq_fail("the checkpoint record says nothing was written")
endif()
gsq_run(RUN ${SH} -c "${interrupt_after_a_step}" sh ${WORK}/run/log.jsonl ${args} --resume)
if(NOT RUN_RC EQUAL 0)
  gsq_fail("the resumed run failed")
endif()
gsq_json_lines(lines "${WORK}/run/log.jsonl")
set(resumed_at -1)
set(next_step -1)
foreach(line IN LISTS lines)
  string(JSON event GET "${line}" event)
  if(event STREQUAL "resume")
    string(JSON resumed_at GET "${line}" step)
  elseif(event STREQUAL "step" AND resumed_at GREATER -1 AND next_step EQUAL -1)
    string(JSON next_step GET "${line}" step)
  endif()
endforeach()
math(EXPR expected "${last_step} + 1")
if(NOT resumed_at EQUAL last_step OR NOT next_step EQUAL expected)
  gsq_fail("resumed at ${resumed_at} with next step ${next_step}; expected ${last_step} and ${expected}")
endif()
message(STATUS "resumed at step ${resumed_at}")
