# install() + export of quarry::quarry and, when built, the `cuda` component (quarry::cuda).
set(QUARRY_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/quarry")

install(TARGETS quarry EXPORT quarryTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})  # headers: the target's $<INSTALL_INTERFACE:include>
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/quarry" DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.hpp")
install(FILES "${PROJECT_BINARY_DIR}/include/quarry/config.hpp" DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/quarry)
install(EXPORT quarryTargets NAMESPACE quarry:: DESTINATION ${QUARRY_CMAKE_DIR})

# The component's target: quarry_cuda in the build tree (src/cuda, EXPORT_NAME cuda), quarry::cuda
# once installed. Guarded on the target, so the CPU package installs whatever src/cuda defines.
if(TARGET quarry_cuda)
  install(TARGETS quarry_cuda EXPORT quarryCudaTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  install(EXPORT quarryCudaTargets NAMESPACE quarry:: DESTINATION ${QUARRY_CMAKE_DIR})
endif()

configure_package_config_file(cmake/quarryConfig.cmake.in
  "${PROJECT_BINARY_DIR}/quarryConfig.cmake"
  INSTALL_DESTINATION ${QUARRY_CMAKE_DIR})
write_basic_package_version_file("${PROJECT_BINARY_DIR}/quarryConfigVersion.cmake"
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/quarryConfig.cmake" "${PROJECT_BINARY_DIR}/quarryConfigVersion.cmake"
  DESTINATION ${QUARRY_CMAKE_DIR})
