# skiff_test(NAME SOURCES a.cc ... LIBS lib... LABEL unit|privileged|cluster|vm [TIMEOUT s])
# One GoogleTest binary, its tests registered with ctest under LABEL.
# Unit test binaries are also collected in the `unit-tests` target, which the
# ASan+UBSan build compiles and runs.
include(GoogleTest)
if(NOT TARGET unit-tests)
  add_custom_target(unit-tests)
endif()
function(skiff_test NAME)
  cmake_parse_arguments(T "" "LABEL;TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT SKIFF_BUILD_TESTS)
    # Without tests the target still exists (so a component's own
    # target_*/add_dependencies calls on it stay valid) but is never built or run.
    add_executable(${NAME} EXCLUDE_FROM_ALL ${T_SOURCES})
    target_link_libraries(${NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock skiff_gtest_main)
    return()
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_executable(${NAME} ${T_SOURCES})
  set_target_properties(${NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  target_link_libraries(${NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock skiff_gtest_main)
  # The environment goes in through a launcher: gtest_discover_tests cannot
  # pass a list-valued ENVIRONMENT property (it splits at the ';').
  set_target_properties(${NAME} PROPERTIES CROSSCOMPILING_EMULATOR
    "/usr/bin/env;SKIFF_SOURCE_DIR=${CMAKE_SOURCE_DIR};SKIFF_BUILD_DIR=${CMAKE_BINARY_DIR}")
  gtest_discover_tests(${NAME}
    DISCOVERY_MODE PRE_TEST
    DISCOVERY_TIMEOUT 60
    PROPERTIES LABELS ${T_LABEL} TIMEOUT ${T_TIMEOUT})
  if(T_LABEL STREQUAL "unit")
    add_dependencies(unit-tests ${NAME})
  endif()
endfunction()
