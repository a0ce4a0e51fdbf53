# Helpers shared by the driver tests (run with `cmake -P`): run a command, check its exit
# status and output, read JSON. Arguments arrive as -D variables; lists use '|' as the
# separator (a ';' would be split by add_test).

# gsq_run(<out-var-prefix> <args...>): runs the command, sets <prefix>_RC, _OUT, _ERR.
function(gsq_run prefix)
  string(JOIN " " shown ${ARGN})
  message(STATUS "running: ${shown}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(${prefix}_RC "${rc}" PARENT_SCOPE)
  set(${prefix}_OUT "${out}" PARENT_SCOPE)
  set(${prefix}_ERR "${err}" PARENT_SCOPE)
endfunction()

# gsq_fail(<message>): fails the test, printing the last command's output.
macro(gsq_fail msg)
  message("---- stdout ----\n${RUN_OUT}\n---- stderr ----\n${RUN_ERR}")
  message(FATAL_ERROR "${msg}")
endmacro()

# gsq_require_data(<relative path>): prints a visible skip (matched by the tests'
# SKIP_REGULAR_EXPRESSION) and stops the script when the shared asset is absent.
macro(gsq_require_data relative)
  if(NOT EXISTS "${DATA_DIR}/${relative}")
    message("SKIPPED: shared asset ${DATA_DIR}/${relative} is absent (set -DGSQ_DATA_DIR)")
    return()
  endif()
endmacro()

# gsq_read_json(<var> <file>): the file's content, failing if it is not valid JSON.
function(gsq_read_json var file)
  if(NOT EXISTS "${file}")
    message(FATAL_ERROR "expected ${file} to exist")
  endif()
  file(READ "${file}" text)
  string(JSON type ERROR_VARIABLE error TYPE "${text}")
  if(error)
    message(FATAL_ERROR "${file} is not valid JSON: ${error}")
  endif()
  set(${var} "${text}" PARENT_SCOPE)
endfunction()

# gsq_json_lines(<var> <file>): the lines of a JSONL file as a list, each checked to parse.
function(gsq_json_lines var file)
  if(NOT EXISTS "${file}")
    message(FATAL_ERROR "expected ${file} to exist")
  endif()
  file(STRINGS "${file}" lines)
  set(n 0)
  foreach(line IN LISTS lines)
    string(JSON event ERROR_VARIABLE error GET "${line}" event)
    if(error)
      message(FATAL_ERROR "${file} line ${n} is not a JSON object with an event: ${error}")
    endif()
    math(EXPR n "${n} + 1")
  endforeach()
  set(${var} "${lines}" PARENT_SCOPE)
endfunction()

# gsq_micros(<var> <decimal>): the number times 10^6 as an integer (CMake has no floats;
# plain decimals only, which is how the drivers' JSON writes losses and perplexities).
function(gsq_micros var x)
  if(NOT x MATCHES "^(-?)([0-9]*)\\.?([0-9]*)$")
    message(FATAL_ERROR "not a plain decimal number: ${x}")
  endif()
  set(sign "${CMAKE_MATCH_1}")
  set(int "${CMAKE_MATCH_2}")
  string(SUBSTRING "${CMAKE_MATCH_3}000000" 0 6 frac)
  if(int STREQUAL "")
    set(int 0)
  endif()
  math(EXPR scaled "${sign}(${int} * 1000000 + 1${frac} - 1000000)")
  set(${var} ${scaled} PARENT_SCOPE)
endfunction()

# gsq_less(<a> <b> <message>): fails unless a < b.
function(gsq_less a b msg)
  gsq_micros(ma ${a})
  gsq_micros(mb ${b})
  if(NOT ma LESS mb)
    message(FATAL_ERROR "${msg}: expected ${a} < ${b}")
  endif()
endfunction()

# gsq_close(<a> <b> <relative tolerance in ppm> <message>): fails unless |a-b| <= tol·|b|.
function(gsq_close a b ppm msg)
  gsq_micros(ma ${a})
  gsq_micros(mb ${b})
  math(EXPR diff "${ma} - ${mb}")
  if(diff LESS 0)
    math(EXPR diff "-(${diff})")
  endif()
  math(EXPR limit "${mb} / 1000000 * ${ppm} + ${ppm}")
  if(diff GREATER limit)
    message(FATAL_ERROR "${msg}: ${a} and ${b} differ by more than ${ppm} ppm")
  endif()
endfunction()
