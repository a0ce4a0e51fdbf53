# Sizes and resources (issue 12): a model config with max_position_embeddings =
# 2147483647 is refused with the memory estimate (no std::bad_alloc); an allocation that
# fails anyway (ulimit -v) is a gsq error naming what was being allocated; a merged export
# that hits a full disk (ulimit -f) fails the run with a gsq error and leaves no merged/.
#   -DFINETUNE= -DDATA_DIR= -DWORK=
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
gsq_require_data(models/tinystories-656K/config.json)
gsq_require_data(models/stories260K/stories260K.bin)
find_program(SH sh)
if(NOT SH)
  message("SKIPPED: no sh to set ulimit")
  return()
endif()
file(REMOVE_RECURSE "${WORK}")
set(src ${DATA_DIR}/models/tinystories-656K)
file(MAKE_DIRECTORY "${WORK}/hostile")
file(READ "${src}/config.json" config)
string(JSON config SET "${config}" max_position_embeddings 2147483647)
file(WRITE "${WORK}/hostile/config.json" "${config}")
file(COPY "${src}/model.safetensors" "${src}/tokenizer.json" DESTINATION "${WORK}/hostile")
set(train ${DATA_DIR}/alpaca/alpaca_train.json)
gsq_run(RUN ${FINETUNE} --model ${WORK}/hostile --data ${train} --steps 1 --batch 1 --seq-len 128 --out ${WORK}/h)
if(RUN_RC EQUAL 0 OR NOT RUN_ERR MATCHES "\\[gsq\\.config\\.403\\].*RoPE tables.*max_position_embeddings 2147483647"
   OR RUN_ERR MATCHES "bad_alloc")
  gsq_fail("the hostile max_position_embeddings was not refused with the estimate")
endif()

set(run ${FINETUNE} --model ${DATA_DIR}/models/stories260K/stories260K.bin --data ${train}
    --steps 1 --no-fp32-eval --threads 1)
# 250 MB of address space: the model loads, the first step's activations do not fit.
gsq_run(RUN ${SH} -c "ulimit -v 250000 && exec \"$@\"" sh ${run} --batch 64 --seq-len 256 --max-items 200 --out ${WORK}/oom)
if(RUN_RC EQUAL 0 OR NOT RUN_ERR MATCHES "\\[gsq\\.config\\.403\\] out of memory while training \\(estimated peak .*--batch 64 x --seq-len 256"
   OR RUN_ERR MATCHES "bad_alloc")
  gsq_fail("an allocation failure was not reported with what was being allocated")
endif()

# 600 KiB per file: the log and the adapter (190 KiB) fit, the merged model (1 MiB) does not.
gsq_run(RUN ${SH} -c "ulimit -f 600 && exec \"$@\"" sh ${run} --batch 1 --seq-len 128 --max-items 20 --out ${WORK}/full)
if(RUN_RC EQUAL 0 OR NOT RUN_ERR MATCHES "merged export failed.*\\[gsq\\.io\\.301\\]")
  gsq_fail("a failed merged export was not an error")
endif()
if(EXISTS "${WORK}/full/merged" OR NOT EXISTS "${WORK}/full/adapter/adapter_model.safetensors")
  gsq_fail("merged/ was left behind or adapter/ is missing")
endif()
file(GLOB leftovers "${WORK}/full/*.tmp.*")
if(leftovers)
  gsq_fail("temporary export directories were left: ${leftovers}")
endif()
message(STATUS "hostile config refused, allocation failure named, failed export left nothing half-written")
