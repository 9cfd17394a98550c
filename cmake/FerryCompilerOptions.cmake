# Compiler warnings and sanitizer switches shared by every Ferry target.
set(FERRY_WARNING_FLAGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast
                        -Wcast-align -Woverloaded-virtual -Wimplicit-fallthrough)
# GCC 12 false alarms, both fixed in later GCC: -Wmissing-field-initializers
# fires on C++20 designated initializers that leave fields to their defaults,
# and -Wmaybe-uninitialized fires inside std::variant at -O2.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  list(APPEND FERRY_WARNING_FLAGS -Wno-missing-field-initializers -Wno-maybe-uninitialized)
endif()
if(FERRY_WERROR)
  list(APPEND FERRY_WARNING_FLAGS -Werror)
endif()
add_compile_options(${FERRY_WARNING_FLAGS})

if(FERRY_ASAN AND FERRY_TSAN)
  message(FATAL_ERROR "FERRY_ASAN and FERRY_TSAN cannot be combined")
endif()
if(FERRY_ASAN)
  # No vptr check: cpprestsdk's stream buffers are instantiated from its
  # headers in our code but their type info lives in the uninstrumented
  # libcpprest.so, so every call through them (the HTTP client, in the
  # kube and webhook server tests) is a false "wrong dynamic type". Every
  # other UBSan check stays on.
  add_compile_options(-fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
if(FERRY_TSAN)
  # -Wno-tsan: Boost.Asio's fences (lib/httpserver) draw GCC's "not
  # supported with -fsanitize=thread" warning; TSan still checks the rest.
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer -Wno-tsan)
  add_link_options(-fsanitize=thread)
endif()

# Third-party headers (cpprestsdk, boost, prometheus-cpp) are not ours to fix:
# mark them as system headers so -Werror only judges Ferry's own code.
set(CMAKE_NO_SYSTEM_FROM_IMPORTED OFF)
