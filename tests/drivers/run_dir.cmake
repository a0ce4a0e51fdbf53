# gsq-finetune never loses a run (issue 12): an --out holding a run is refused without
# --overwrite or --resume and left untouched; --overwrite replaces it; the adapter and
# checkpoint directories it wrote are recognised by gsq-inspect; --resume without a
# complete checkpoint says so, suggests starting afresh, and removes the stale
# temporaries a killed checkpoint write left.
#   -DFINETUNE= -DINSPECT= -DDATA_DIR= -DWORK=
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
gsq_require_data(models/stories260K/stories260K.bin)
file(REMOVE_RECURSE "${WORK}")
set(args ${FINETUNE} --model ${DATA_DIR}/models/stories260K/stories260K.bin
    --data ${DATA_DIR}/alpaca/alpaca_train.json --max-items 20 --steps 2 --save-every 1 --batch 1
    --seq-len 128 --no-fp32-eval --out ${WORK}/run)
gsq_run(RUN ${args})
if(NOT RUN_RC EQUAL 0)
  gsq_fail("the first run failed")
endif()
file(SHA256 "${WORK}/run/log.jsonl" log_before)
file(SHA256 "${WORK}/run/adapter/adapter_model.safetensors" adapter_before)

# The same command again: refused, nothing touched.
gsq_run(RUN ${args})
if(RUN_RC EQUAL 0 OR NOT RUN_ERR MATCHES "\\[gsq\\.config\\.401\\].*already holds a run.*--overwrite")
  gsq_fail("a second run into the same --out was not refused")
endif()
file(SHA256 "${WORK}/run/log.jsonl" log_after)
file(SHA256 "${WORK}/run/adapter/adapter_model.safetensors" adapter_after)
if(NOT log_before STREQUAL log_after OR NOT adapter_before STREQUAL adapter_after)
  gsq_fail("the refused run changed the previous run's files")
endif()

# gsq-inspect knows the adapter and checkpoint directories.
gsq_run(RUN ${INSPECT} ${WORK}/run/adapter)
if(NOT RUN_RC EQUAL 0 OR NOT RUN_OUT MATCHES "PEFT adapter directory.*rank 8")
  gsq_fail("gsq-inspect did not recognise the adapter directory")
endif()
gsq_run(RUN ${INSPECT} ${WORK}/run/checkpoint)
if(NOT RUN_RC EQUAL 0 OR NOT RUN_OUT MATCHES "gsq checkpoint directory.*step-000001  complete.*step:       1")
  gsq_fail("gsq-inspect did not recognise the checkpoint directory")
endif()

# --overwrite replaces it (a fresh log: one start record).
gsq_run(RUN ${args} --overwrite)
if(NOT RUN_RC EQUAL 0)
  gsq_fail("--overwrite failed")
endif()
gsq_json_lines(lines "${WORK}/run/log.jsonl")
set(starts 0)
foreach(line IN LISTS lines)
  string(JSON event GET "${line}" event)
  if(event STREQUAL "start" OR event STREQUAL "resume")
    math(EXPR starts "${starts} + 1")
  endif()
endforeach()
if(NOT starts EQUAL 1)
  gsq_fail("--overwrite left ${starts} start records in log.jsonl (expected a fresh log)")
endif()

# --resume with only an unfinished checkpoint and a killed LATEST write.
file(MAKE_DIRECTORY "${WORK}/crashed/checkpoint/step-000001")
file(WRITE "${WORK}/crashed/checkpoint/.LATEST.tmp.12345.0" "step-0000")
file(WRITE "${WORK}/crashed/checkpoint/step-000001/parameters.safetensors" "partial")
string(REPLACE "${WORK}/run" "${WORK}/crashed" crashed_args "${args}")
gsq_run(RUN ${crashed_args} --resume)
if(RUN_RC EQUAL 0 OR NOT RUN_ERR MATCHES "\\[gsq\\.config\\.401\\] --resume: no complete checkpoint.*start afresh.*--overwrite")
  gsq_fail("--resume without a complete checkpoint did not say so")
endif()
if(EXISTS "${WORK}/crashed/checkpoint/.LATEST.tmp.12345.0")
  gsq_fail("the stale .LATEST.tmp file was not removed")
endif()
message(STATUS "refused, overwritten, inspected, and resume without a checkpoint explained")
