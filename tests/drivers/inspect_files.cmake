# gsq-inspect blames the right parser (issue 12): a .safetensors file whose length field
# is broken is reported by the safetensors parser, not as a bad llama2.c checkpoint.
#   -DINSPECT= -DWORK=
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")
string(ASCII 255 ff)
# A header length of 2^64-1 followed by a JSON header.
file(WRITE "${WORK}/broken.safetensors" "${ff}${ff}${ff}${ff}${ff}${ff}${ff}${ff}{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}    ")
# The same bytes without the name: still recognised by the JSON header after the length.
file(COPY_FILE "${WORK}/broken.safetensors" "${WORK}/broken.bin")
foreach(name broken.safetensors broken.bin)
  gsq_run(RUN ${INSPECT} ${WORK}/${name})
  if(RUN_RC EQUAL 0 OR NOT RUN_ERR MATCHES "\\[gsq\\.io\\.30[0-9]\\].*${name}.*header" OR RUN_ERR MATCHES "llama2")
    gsq_fail("${name}: expected the safetensors parser's error about the header length")
  endif()
  message(STATUS "${name}: ${RUN_ERR}")
endforeach()
