# vcpkg overlay port for quarry, built from this checkout:
#
#   vcpkg install quarry --overlay-ports=<checkout>/ports            (classic mode)
#   "overlay-ports": ["<checkout>/ports"] in vcpkg-configuration.json (manifest mode)
#
# The source is the tree this port directory sits in (ports/quarry/../..), or the directory named
# by the environment variable QUARRY_SOURCE_DIR. vcpkg hashes only the port's own files, so it
# does not notice edits to the source tree: remove quarry (or use a fresh installed tree) and
# turn binary caching off to rebuild from changed sources (ports/check.sh does both).
# portfile.release.cmake is the same port for a registry: sources from a GitHub release.

if(DEFINED ENV{QUARRY_SOURCE_DIR} AND NOT "$ENV{QUARRY_SOURCE_DIR}" STREQUAL "")
  file(REAL_PATH "$ENV{QUARRY_SOURCE_DIR}" SOURCE_PATH)
else()
  file(REAL_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." SOURCE_PATH)
endif()
if(NOT EXISTS "${SOURCE_PATH}/CMakeLists.txt" OR NOT EXISTS "${SOURCE_PATH}/include/quarry/quarry.hpp")
  message(FATAL_ERROR "quarry's source tree is not at ${SOURCE_PATH}: this overlay port builds the "
                      "checkout it lies in (ports/quarry/../..); set QUARRY_SOURCE_DIR to use another one")
endif()
message(STATUS "quarry: building from the source tree at ${SOURCE_PATH}")

vcpkg_check_features(OUT_FEATURE_OPTIONS feature_options
  FEATURES
    cuda QUARRY_CUDA)

# The cuda feature depends on vcpkg's cuda port, which only checks that a CUDA toolkit is
# installed; point CMake at that toolkit's nvcc. CMAKE_CUDA_ARCHITECTURES defaults to 90 (sm_90);
# a triplet can override it through VCPKG_CMAKE_CONFIGURE_OPTIONS.
set(cuda_options "")
if("cuda" IN_LIST FEATURES)
  vcpkg_find_cuda(OUT_CUDA_TOOLKIT_ROOT cuda_toolkit_root)
  list(APPEND cuda_options
    "-DCMAKE_CUDA_COMPILER=${cuda_toolkit_root}/bin/nvcc${VCPKG_HOST_EXECUTABLE_SUFFIX}"
    "-DCUDAToolkit_ROOT=${cuda_toolkit_root}")
endif()

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${feature_options}
    ${cuda_options}
    -DQUARRY_BUILD_TESTS=OFF
    -DQUARRY_BUILD_BENCH=OFF
    -DQUARRY_BUILD_EXAMPLES=OFF
    -DQUARRY_BUILD_FUZZERS=OFF
    -DQUARRY_INSTALL=ON)
vcpkg_cmake_install()

# quarry installs its package configuration to lib/cmake/quarry; vcpkg wants share/quarry.
vcpkg_cmake_config_fixup(CONFIG_PATH lib/cmake/quarry)

file(REMOVE_RECURSE
  "${CURRENT_PACKAGES_DIR}/debug/include"
  "${CURRENT_PACKAGES_DIR}/debug/share")

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
if(EXISTS "${SOURCE_PATH}/LICENSE")
  vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
else()
  # quarry has no licence file yet (vcpkg.json says "license": null). vcpkg requires
  # share/quarry/copyright, so say so there rather than invent terms.
  file(WRITE "${CURRENT_PACKAGES_DIR}/share/${PORT}/copyright"
    "quarry ${VERSION}: the source tree this package was built from (${SOURCE_PATH}) has no LICENSE\n"
    "file, so no licence has been granted for it. Ask its maintainers before redistributing it.\n")
endif()
