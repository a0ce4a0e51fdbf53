# --data-format (issue 12): JSON Lines train; a JSON object or JSON Lines given as text or
# alpaca is an error, never plain text; auto-detection refuses a lone JSON object.
#   -DFINETUNE= -DDATA_DIR= -DWORK=
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
gsq_require_data(models/stories260K/stories260K.bin)
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")
file(WRITE "${WORK}/object.json" "{\n  \"instruction\": \"Say hi\",\n  \"output\": \"hi\"\n}\n")
file(WRITE "${WORK}/items.jsonl" "{\"instruction\": \"Say hi\", \"output\": \"hi there friend\"}\n\n{\"instruction\": \"Say bye\", \"input\": \"now\", \"output\": \"bye\"}\n")
file(WRITE "${WORK}/texts.jsonl" "{\"text\": \"Once upon a time there was a cat.\"}\n{\"text\": \"The dog ran home.\"}\n")
file(WRITE "${WORK}/mixed.jsonl" "{\"text\": \"Once upon a time.\"}\n{\"instruction\": \"a\", \"output\": \"b\"}\n")
set(base ${FINETUNE} --model ${DATA_DIR}/models/stories260K/stories260K.bin --steps 1 --batch 1 --seq-len 128
    --no-fp32-eval)

# expect_error(<name> <regex> <args...>)
function(expect_error name regex)
  gsq_run(RUN ${base} --out ${WORK}/${name} ${ARGN})
  if(RUN_RC EQUAL 0 OR NOT RUN_ERR MATCHES "${regex}")
    gsq_fail("${name}: expected an error matching '${regex}'")
  endif()
  message(STATUS "${name}: ${RUN_ERR}")
endfunction()
expect_error(object_auto "\\[gsq\\.io\\.303\\].*single JSON object" --data ${WORK}/object.json)
expect_error(object_text "\\[gsq\\.io\\.303\\].*--data-format text: this is a JSON object"
             --data ${WORK}/object.json --data-format text)
expect_error(jsonl_text "\\[gsq\\.io\\.303\\].*--data-format text: this is JSON Lines"
             --data ${WORK}/items.jsonl --data-format text)
expect_error(jsonl_alpaca "\\[gsq\\.io\\.303\\].*--data-format alpaca: this is JSON Lines"
             --data ${WORK}/items.jsonl --data-format alpaca)
expect_error(mixed "\\[gsq\\.io\\.303\\].*line 2: mixes instruction records and text records"
             --data ${WORK}/mixed.jsonl)
expect_error(bad_format "\\[gsq\\.config\\.401\\].*--data-format" --data ${WORK}/items.jsonl --data-format csv)

foreach(case items texts)
  gsq_run(RUN ${base} --out ${WORK}/${case} --data ${WORK}/${case}.jsonl)
  if(NOT RUN_RC EQUAL 0)
    gsq_fail("training on ${case}.jsonl failed")
  endif()
  if(case STREQUAL "items")
    set(expect "data: .*items.jsonl \\(jsonl, instruction, ")
  else()
    set(expect "data: .*texts.jsonl \\(jsonl, text, ")
  endif()
  if(NOT RUN_OUT MATCHES "${expect}")
    gsq_fail("${case}.jsonl was not read as JSON Lines")
  endif()
endforeach()
message(STATUS "JSON Lines read, ambiguous or mislabelled data refused")
