# cmake -P expect_configure_failure.cmake: configures a project that must fail to configure,
# cleanly and for the expected reason.
#   SOURCE, BINARY       the project and its (fresh) build directory
#   GENERATOR[, GENERATOR_PLATFORM, GENERATOR_TOOLSET, INIT_CACHE]   as for the other consumers
#   COMPONENTS           value of QUARRY_CONSUMER_COMPONENTS
#   EXPECT               a regular expression the output must match (the package's message)
# Passes when the configure step fails, its output matches EXPECT, and the error is reported by
# find_package as "package not found", not raised from inside quarry's package files.
set(args --fresh -G "${GENERATOR}" -S "${SOURCE}" -B "${BINARY}")
if(GENERATOR_PLATFORM)
  list(APPEND args -A "${GENERATOR_PLATFORM}")
endif()
if(GENERATOR_TOOLSET)
  list(APPEND args -T "${GENERATOR_TOOLSET}")
endif()
if(INIT_CACHE)
  list(APPEND args -C "${INIT_CACHE}")
endif()
execute_process(
  COMMAND "${CMAKE_COMMAND}" ${args} "-DQUARRY_CONSUMER_COMPONENTS=${COMPONENTS}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
message("${out}")

if(rc EQUAL 0)
  message(FATAL_ERROR "configuring with find_package(quarry COMPONENTS ${COMPONENTS}) succeeded; it must fail")
endif()
# CMake wraps the package's message: match it with whitespace runs made single spaces.
string(REGEX REPLACE "[ \t\r\n]+" " " flat "${out}")
if(NOT flat MATCHES "${EXPECT}")
  message(FATAL_ERROR "configure failed, but without the expected message /${EXPECT}/")
endif()
if(NOT flat MATCHES "quarry_FOUND to FALSE")
  message(FATAL_ERROR "configure failed, but not as 'package not found' (quarry_FOUND FALSE)")
endif()
if(out MATCHES "CMake Error at [^\n]*quarry[A-Za-z]*\\.cmake:[0-9]+")
  message(FATAL_ERROR "an error was raised inside quarry's package files instead of a clean 'not found'")
endif()
message(STATUS "failed as expected: /${EXPECT}/")
