# GGUF bases fine-tune (issue 15): stories260K exported by gsq-export as F16, Q8_0, Q4_0
# and Q4_1 GGUF trains through gsq-finetune --model FILE.gguf, the loss falls, and the
# first loss is the original llama2.c model's within the weights' rounding (FP32 LoRA over
# the decoded base: 0.5% for 16/8-bit types, 6% for 4-bit; measured 0.03% and 2.4-3.5%).
# The Q4_1 base also trains with W8A8G8 products over NF4 (its decoded weights
# re-quantized), the drivers' integer path.
#   -DEXPORT= -DFINETUNE= -DDATA_DIR= -DWORK=
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
gsq_require_data(models/stories260K/stories260K.bin)
file(REMOVE_RECURSE "${WORK}")
set(src ${DATA_DIR}/models/stories260K)
function(finetune model out precision)
  gsq_run(RUN ${FINETUNE} --model ${model} --tokenizer ${src}/tok512.bin --data ${DATA_DIR}/alpaca/alpaca_train.json
          --max-items 40 --steps 10 --lr 5e-3 --batch 2 --seq-len 256 --precision ${precision} --no-fp32-eval
          --threads 1 --out ${out})
  if(NOT RUN_RC EQUAL 0)
    gsq_fail("fine-tuning ${model} failed")
  endif()
  gsq_read_json(summary "${out}/summary.json")
  string(JSON steps GET "${summary}" steps_done)
  string(JSON first GET "${summary}" first_loss)
  string(JSON final GET "${summary}" final_train_loss)
  if(NOT steps EQUAL 10 OR NOT EXISTS "${out}/adapter/adapter_model.safetensors")
    gsq_fail("${model}: ${steps} steps done, adapter missing or run incomplete")
  endif()
  gsq_less(${final} ${first} "${model}: the training loss did not fall")
  set(first_loss ${first} PARENT_SCOPE)
endfunction()

finetune(${src}/stories260K.bin ${WORK}/reference fp32)
set(reference ${first_loss})
foreach(case "f16|5000" "q8_0|5000" "q4_0|60000" "q4_1|60000")
  string(REPLACE "|" ";" case "${case}")
  list(GET case 0 type)
  list(GET case 1 ppm)
  gsq_run(RUN ${EXPORT} --model ${src}/stories260K.bin --tokenizer ${src}/tok512.bin --type ${type}
          --out ${WORK}/base-${type}.gguf)
  if(NOT RUN_RC EQUAL 0)
    gsq_fail("gsq-export --type ${type} failed")
  endif()
  finetune(${WORK}/base-${type}.gguf ${WORK}/run-${type} fp32)
  gsq_close(${first_loss} ${reference} ${ppm} "${type} GGUF base: first loss against the llama2.c base")
  message(STATUS "${type} GGUF base: first loss ${first_loss} (llama2.c base ${reference}), loss falls")
endforeach()
finetune(${WORK}/base-q4_1.gguf ${WORK}/run-q4_1-w8a8g8 w8a8g8)
message(STATUS "q4_1 GGUF base, W8A8G8 over NF4: first loss ${first_loss}, loss falls")
