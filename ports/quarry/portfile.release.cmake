# The quarry port for a vcpkg registry (microsoft/vcpkg or a private one): the same build as
# portfile.cmake, with the sources of a tagged release downloaded from GitHub instead of taken
# from this checkout. vcpkg never reads this file here; at release time it becomes the
# registry's ports/quarry/portfile.cmake. ports/README.md lists the steps:
#   - REPO: the GitHub owner/name quarry is published under;
#   - REF: the release tag, "v${VERSION}" with "version" in vcpkg.json set to the release;
#   - SHA512: of that tag's source archive (vcpkg prints the right one when it is 0);
#   - a LICENSE file at the top of the tagged tree (vcpkg_install_copyright fails without one).

vcpkg_from_github(
  OUT_SOURCE_PATH SOURCE_PATH
  REPO OWNER/quarry  # placeholder: the GitHub repository of the release
  REF "v${VERSION}"
  SHA512 0           # placeholder: the SHA512 of https://github.com/OWNER/quarry/archive/v${VERSION}.tar.gz
  HEAD_REF main)

vcpkg_check_features(OUT_FEATURE_OPTIONS feature_options
  FEATURES
    cuda QUARRY_CUDA)

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
vcpkg_cmake_config_fixup(CONFIG_PATH lib/cmake/quarry)

file(REMOVE_RECURSE
  "${CURRENT_PACKAGES_DIR}/debug/include"
  "${CURRENT_PACKAGES_DIR}/debug/share")

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
