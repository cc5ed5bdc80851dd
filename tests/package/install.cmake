# cmake -P install.cmake: installs the quarry build in BUILD_DIR into a fresh PREFIX.
#   BUILD_DIR  quarry's build tree      PREFIX  where to install (emptied first)
#   CONFIG     the configuration to install (may be empty)
#   LIBRARY    the built quarry library: it must exist, i.e. the project has been built
foreach(var BUILD_DIR PREFIX LIBRARY)
  if(NOT ${var})
    message(FATAL_ERROR "install.cmake: ${var} is not set")
  endif()
endforeach()
if(NOT EXISTS "${LIBRARY}")
  set(build_command "cmake --build ${BUILD_DIR}")
  if(CONFIG)
    string(APPEND build_command " --config ${CONFIG}")
  endif()
  message(FATAL_ERROR "quarry's library ${LIBRARY} does not exist: build the project "
                      "(${build_command}) before running the packaging tests")
endif()

file(REMOVE_RECURSE "${PREFIX}")
set(config_args "")
if(CONFIG)
  set(config_args --config "${CONFIG}")
endif()
execute_process(
  COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" ${config_args}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install ${BUILD_DIR} --prefix ${PREFIX} failed (${rc})")
endif()
