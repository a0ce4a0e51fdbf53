# GSQ_SANITIZE=ON builds gsq's own targets with AddressSanitizer + UBSan (CI runs the unit
# tests once more this way). Applied globally so every test, bench and example agrees.
option(GSQ_SANITIZE "Build with -fsanitize=address,undefined" OFF)
if(GSQ_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
