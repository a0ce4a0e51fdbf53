# GSQ_SANITIZE=ON builds gsq's own targets with AddressSanitizer + UBSan (CI runs the unit
# tests once more this way). Applied globally so every test, bench and example agrees.
option(GSQ_SANITIZE "Build with -fsanitize=address,undefined" OFF)
if(GSQ_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

# GSQ_SANITIZE_THREAD=ON builds with ThreadSanitizer (CI runs the core tests and the
# two-contexts test this way: the thread pool and the contexts are where threads meet).
option(GSQ_SANITIZE_THREAD "Build with -fsanitize=thread" OFF)
if(GSQ_SANITIZE_THREAD)
  if(GSQ_SANITIZE)
    message(FATAL_ERROR "GSQ_SANITIZE (ASan) and GSQ_SANITIZE_THREAD (TSan) cannot be combined")
  endif()
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
endif()
