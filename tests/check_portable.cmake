# cmake -DNINJA=ninja -DBUILD_DIR=build -DPORTABLE_TARGET=tim_cli -DNATIVE_TARGET=some_test
#       -DEXPECT_NATIVE=ON|OFF -P check_portable.cmake
# Fails when any command that builds PORTABLE_TARGET (what `cmake --install` installs) passes
# -march; with EXPECT_NATIVE, also when NATIVE_TARGET's commands lack -march=native (then this
# check could not see the flag at all).
function(target_commands target out)
  execute_process(COMMAND ${NINJA} -C ${BUILD_DIR} -t commands ${target}
                  OUTPUT_VARIABLE commands ERROR_VARIABLE errors RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "ninja -t commands ${target} failed (${status}): ${errors}")
  endif()
  set(${out} "${commands}" PARENT_SCOPE)
endfunction()

target_commands(${PORTABLE_TARGET} portable)
if(NOT portable MATCHES " -c ")
  message(FATAL_ERROR "no compile command found for ${PORTABLE_TARGET}:\n${portable}")
endif()
string(REGEX MATCHALL "[^\n]*-march[^\n]*" offending "${portable}")
if(offending)
  list(GET offending 0 first)
  message(FATAL_ERROR "${PORTABLE_TARGET} (installed) is compiled with -march:\n${first}")
endif()
message(STATUS "${PORTABLE_TARGET}: no -march in its compile commands")

if(EXPECT_NATIVE)
  target_commands(${NATIVE_TARGET} native)
  if(NOT native MATCHES "-march=native")
    message(FATAL_ERROR "${NATIVE_TARGET} should be compiled with -march=native (TIM_NATIVE), but is not:\n${native}")
  endif()
  message(STATUS "${NATIVE_TARGET}: -march=native (TIM_NATIVE) present, so the check sees the flag")
endif()
