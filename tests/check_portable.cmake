# cmake -DNINJA=ninja -DBUILD_DIR=build -DPROGRAM_TARGET=tim_cli "-DEXPECTED_MARCH=-march=x86-64-v3"
#       -P check_portable.cmake
# Reads the real compile commands of PROGRAM_TARGET (what `cmake --install` installs) and fails
# unless every one of them is compiled for the baseline EXPECTED_MARCH (empty: no -march at all)
# and for nothing else (a stray -march=native, -mavx512f, ...), with one exception that must be
# there: apps/cpu_baseline.cpp, the CPUID check that runs before any other code of the program,
# compiled last with -march=x86-64 so that it runs on any x86-64 CPU.
execute_process(COMMAND ${NINJA} -C ${BUILD_DIR} -t commands ${PROGRAM_TARGET}
                OUTPUT_VARIABLE commands ERROR_VARIABLE errors RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "ninja -t commands ${PROGRAM_TARGET} failed (${status}): ${errors}")
endif()
string(REGEX MATCHALL "[^\n]* -c [^\n]*" compiles "${commands}")
list(LENGTH compiles count)
if(count EQUAL 0)
  message(FATAL_ERROR "no compile command found for ${PROGRAM_TARGET}:\n${commands}")
endif()

set(found_check OFF)
foreach(line IN LISTS compiles)
  string(REGEX MATCHALL "-march=[^ ]+|-mavx[^ ]*|-mamx[^ ]*" isa_flags "${line}")
  if(line MATCHES "cpu_baseline\\.cpp")
    set(found_check ON)
    list(GET isa_flags -1 last)
    if(NOT last STREQUAL "-march=x86-64")
      message(FATAL_ERROR "apps/cpu_baseline.cpp must be compiled for plain x86-64 (last -march), got ${last}:\n${line}")
    endif()
    continue()
  endif()
  if(EXPECTED_MARCH)
    if(NOT isa_flags STREQUAL "${EXPECTED_MARCH}")
      message(FATAL_ERROR "${PROGRAM_TARGET} must be compiled with ${EXPECTED_MARCH} and no other instruction-set "
                          "flag, found '${isa_flags}':\n${line}")
    endif()
  elseif(isa_flags)
    message(FATAL_ERROR "${PROGRAM_TARGET} is compiled with '${isa_flags}', expected no instruction-set flag:\n${line}")
  endif()
endforeach()
if(NOT found_check)
  message(FATAL_ERROR "${PROGRAM_TARGET} has no apps/cpu_baseline.cpp (the CPU check before any other code)")
endif()
message(STATUS "${PROGRAM_TARGET}: ${count} compile commands, all for '${EXPECTED_MARCH}' (the CPU check for x86-64)")
