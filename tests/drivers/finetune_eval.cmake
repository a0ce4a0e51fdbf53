# gsq-finetune on stories260K + Alpaca for a few steps, then gsq-eval on the result:
# the run log parses and the loss falls; the summary, the PEFT adapter and the merged
# model exist and parse; gsq-eval reads base + adapter and the merged model, and the two
# agree under an FP32 forward.
#   -DFINETUNE= -DEVAL= -DDATA_DIR= -DWORK=
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
gsq_require_data(models/stories260K/stories260K.bin)
gsq_require_data(alpaca/alpaca_train.json)
file(REMOVE_RECURSE "${WORK}")
set(model "${DATA_DIR}/models/stories260K/stories260K.bin")
gsq_run(RUN ${FINETUNE} --model ${model} --data ${DATA_DIR}/alpaca/alpaca_train.json
        --eval-data ${DATA_DIR}/alpaca/alpaca_dev.json --eval-max 16 --max-items 300
        --steps 30 --batch 4 --seq-len 128 --lr 3e-3 --precision w8a8g8 --rank 8
        --eval-every 15 --out ${WORK}/run)
if(NOT RUN_RC EQUAL 0)
  gsq_fail("gsq-finetune failed")
endif()

gsq_json_lines(lines "${WORK}/run/log.jsonl")
set(losses)
set(evals 0)
foreach(line IN LISTS lines)
  string(JSON event GET "${line}" event)
  if(event STREQUAL "step")
    string(JSON loss GET "${line}" loss)
    list(APPEND losses ${loss})
  elseif(event STREQUAL "eval")
    math(EXPR evals "${evals} + 1")
  endif()
endforeach()
list(LENGTH losses n)
if(NOT n EQUAL 30)
  gsq_fail("log.jsonl has ${n} step records, expected 30")
endif()
if(evals LESS 3)  # step 15, the end (w8a8g8 forward) and the end (fp32 forward)
  gsq_fail("log.jsonl has ${evals} eval records, expected 3")
endif()
list(GET losses 0 first)
gsq_read_json(summary "${WORK}/run/summary.json")
string(JSON last GET "${summary}" final_train_loss)
gsq_less(${last} ${first} "the training loss did not fall")
string(JSON ppl GET "${summary}" eval ppl)
string(JSON ppl_fp32 GET "${summary}" eval_fp32_forward ppl)
message(STATUS "loss ${first} -> ${last}; held-out ppl ${ppl} (fp32 forward ${ppl_fp32})")

foreach(f adapter/adapter_model.safetensors merged/config.json merged/model.safetensors merged/model.bin
          merged/tokenizer.bin)
  if(NOT EXISTS "${WORK}/run/${f}")
    gsq_fail("gsq-finetune did not write ${f}")
  endif()
endforeach()
gsq_read_json(cfg "${WORK}/run/adapter/adapter_config.json")
string(JSON r GET "${cfg}" r)
string(JSON peft GET "${cfg}" peft_type)
if(NOT r EQUAL 8 OR NOT peft STREQUAL "LORA")
  gsq_fail("adapter_config.json: peft_type ${peft}, r = ${r}; expected LORA, 8")
endif()

# Base + adapter, with the trained forward and with an FP32 forward.
gsq_run(RUN ${EVAL} --model ${model} --adapter ${WORK}/run/adapter --precision w8a8g8 --also-fp32
        --data ${DATA_DIR}/alpaca/alpaca_dev.json --task boolq --max-items 8
        --generate "Once upon a time" --max-new-tokens 12 --json ${WORK}/eval.json)
if(NOT RUN_RC EQUAL 0)
  gsq_fail("gsq-eval --adapter failed")
endif()
gsq_read_json(ev "${WORK}/eval.json")
string(JSON forward0 GET "${ev}" results 0 forward)
string(JSON forward1 GET "${ev}" results 1 forward)
string(JSON items GET "${ev}" results 0 multiple_choice boolq items)
string(JSON ppl_adapter GET "${ev}" results 0 perplexity ppl)
string(JSON ppl_adapter_fp32 GET "${ev}" results 1 perplexity ppl)
string(JSON continuation GET "${ev}" generate continuation)
if(NOT forward0 STREQUAL "w8a8g8" OR NOT forward1 STREQUAL "fp32" OR NOT items EQUAL 8)
  gsq_fail("eval.json: forwards ${forward0}/${forward1}, ${items} boolq items")
endif()
if(continuation STREQUAL "")
  gsq_fail("eval.json: empty generated continuation")
endif()

# The merged model (its own tokenizer inside) equals base + adapter under an FP32 forward.
gsq_run(RUN ${EVAL} --model ${WORK}/run/merged --data ${DATA_DIR}/alpaca/alpaca_dev.json --max-items 8
        --json ${WORK}/eval_merged.json)
if(NOT RUN_RC EQUAL 0)
  gsq_fail("gsq-eval of the merged model failed")
endif()
gsq_read_json(em "${WORK}/eval_merged.json")
string(JSON ppl_merged GET "${em}" results 0 perplexity ppl)
gsq_close(${ppl_merged} ${ppl_adapter_fp32} 1000 "merged model vs base + adapter (FP32 forward)")
message(STATUS "gsq-eval: adapter ppl ${ppl_adapter} (w8a8g8), ${ppl_adapter_fp32} (fp32); merged ${ppl_merged}")
