# Warnings for gsq's own targets (tests, benches, examples). Users get none of these.
option(GSQ_WERROR "Treat warnings in gsq's own targets as errors" OFF)

function(gsq_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
  if(GSQ_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
