# Data parallel over MPI (issue 16): with the same --micro-batches, `mpirun -np 2`,
# `mpirun -np 1` and a run without MPI write byte-identical adapters — LoRA and L4Q,
# nearest and stochastic gradient rounding — and rank 0's log states the rank count; a
# checkpoint written at -np 2 resumes at -np 1 and without MPI to the same bytes; a rank
# that fails (rank 0 refusing --out, rank 1 unable to read its data) stops the job with
# that rank's message.
#   -DFINETUNE= -DMPIEXEC= -DDATA_DIR= -DWORK=
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
gsq_require_data(models/stories260K/stories260K.bin)
file(REMOVE_RECURSE "${WORK}")
set(mpirun ${MPIEXEC} --allow-run-as-root --oversubscribe)
set(train ${DATA_DIR}/alpaca/alpaca_train.json)
set(common ${FINETUNE} --model ${DATA_DIR}/models/stories260K/stories260K.bin --max-items 40 --batch 4
    --seq-len 128 --precision w8a8g8 --micro-batches 2 --threads 1 --no-fp32-eval)
foreach(config "lora|nearest" "lora|stochastic" "l4q|nearest" "l4q|stochastic")
  string(REPLACE "|" ";" config "${config}")
  list(GET config 0 method)
  list(GET config 1 rounding)
  set(name ${method}_${rounding})
  set(args ${common} --data ${train} --steps 2 --method ${method} --grad-rounding ${rounding})
  set(hashes "")
  foreach(how none np1 np2)
    if(how STREQUAL "none")
      gsq_run(RUN ${args} --out ${WORK}/${name}_${how})
    elseif(how STREQUAL "np1")
      gsq_run(RUN ${mpirun} -np 1 ${args} --out ${WORK}/${name}_${how})
    else()
      gsq_run(RUN ${mpirun} -np 2 ${args} --out ${WORK}/${name}_${how})
    endif()
    if(NOT RUN_RC EQUAL 0)
      gsq_fail("${name} ${how} failed")
    endif()
    file(SHA256 "${WORK}/${name}_${how}/adapter/adapter_model.safetensors" h)
    list(APPEND hashes ${h})
    message(STATUS "${name} ${how}: ${h}")
  endforeach()
  list(REMOVE_DUPLICATES hashes)
  list(LENGTH hashes distinct)
  if(NOT distinct EQUAL 1)
    gsq_fail("${name}: the adapters of no MPI, -np 1 and -np 2 differ")
  endif()
endforeach()
gsq_read_json(summary "${WORK}/lora_nearest_np2/summary.json")
string(JSON ranks GET "${summary}" ranks)
if(NOT ranks EQUAL 2 OR NOT RUN_OUT MATCHES "2 ranks")
  gsq_fail("the -np 2 run does not state 2 ranks")
endif()

# A rank that fails stops the job with its message: rank 0 refuses an --out holding a run.
gsq_run(RUN ${mpirun} -np 2 ${args} --out ${WORK}/lora_nearest_np2)
if(RUN_RC EQUAL 0 OR NOT RUN_ERR MATCHES "already holds a run.*rank 0: gsq-finetune failed")
  gsq_fail("a failing rank did not stop the job with its message")
endif()

# Resume across rank counts: a 4-step -np 2 run checkpoints at step 2 (--save-every 2);
# copies of it resumed from that checkpoint at -np 1 and without MPI end with its bytes.
set(args ${common} --data ${train} --steps 4 --save-every 2)
gsq_run(RUN ${mpirun} -np 2 ${args} --out ${WORK}/resume_np2)
if(NOT RUN_RC EQUAL 0)
  gsq_fail("the 4-step -np 2 run failed")
endif()
file(SHA256 "${WORK}/resume_np2/adapter/adapter_model.safetensors" uninterrupted)
foreach(how np1 none)
  file(COPY "${WORK}/resume_np2/" DESTINATION "${WORK}/resume_${how}")
  if(how STREQUAL "np1")
    gsq_run(RUN ${mpirun} -np 1 ${args} --resume --out ${WORK}/resume_${how})
  else()
    gsq_run(RUN ${args} --resume --out ${WORK}/resume_${how})
  endif()
  if(NOT RUN_RC EQUAL 0 OR NOT RUN_OUT MATCHES "resumed from [^\n]* at step 2")
    gsq_fail("resuming the -np 2 checkpoint (${how}) failed or did not start at step 2: ${RUN_OUT}")
  endif()
  file(SHA256 "${WORK}/resume_${how}/adapter/adapter_model.safetensors" h)
  if(NOT h STREQUAL uninterrupted)
    gsq_fail("the -np 2 checkpoint resumed ${how} ends with other bytes than the uninterrupted run")
  endif()
endforeach()

# Rank 1 cannot read its data (MPMD launch: rank 0 gets the real file): the job stops,
# naming the file and the rank.
file(WRITE "${WORK}/broken.json" "{\"broken\": ")
gsq_run(RUN ${mpirun} -np 1 ${common} --data ${train} --steps 2 --out ${WORK}/mpmd
        : -np 1 ${common} --data ${WORK}/broken.json --steps 2 --out ${WORK}/mpmd)
if(RUN_RC EQUAL 0 OR NOT RUN_ERR MATCHES "broken\\.json.*rank 1: gsq-finetune failed")
  gsq_fail("a rank that could not read its data did not stop the job with its message: ${RUN_ERR}")
endif()
message(STATUS "no MPI == -np 1 == -np 2 for LoRA and L4Q, nearest and stochastic; "
               "an -np 2 checkpoint resumes at -np 1 and without MPI to the same bytes; failing ranks stop the job")
