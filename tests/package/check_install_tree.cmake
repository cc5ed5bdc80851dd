# cmake -P check_install_tree.cmake: checks what `cmake --install` put in PREFIX.
#   PREFIX, INCLUDEDIR, LIBDIR   the install prefix and its include/ and lib/ directories
#   BUILD_DIR, SOURCE_DIR        quarry's build and source trees: no installed file may name them
#   VERSION                      quarry's version
#   EXPECT_CUDA                  1 when the quarry::cuda component was built and must be installed
# Checks that
#   - the package files are there: quarryConfig, quarryConfigVersion, quarryTargets;
#   - no installed header or package file names the build or source tree (relocatable);
#   - every "quarry/..." include of an installed header resolves inside the installed headers,
#     and the others are standard headers or public dependencies (Eigen, fmt): never xsimd/xtl
#     (a private dependency of the compiled part) nor CUDA headers;
#   - the exported targets link only quarry:: targets and targets of packages that
#     quarryConfig.cmake find_dependency()s (Eigen3, fmt and Threads at least), never xsimd,
#     and take their include directories from the install prefix;
#   - quarryCudaTargets.cmake (quarry::cuda) is installed exactly when EXPECT_CUDA.
set(errors "")
macro(fail msg)
  string(APPEND errors "  - ${msg}\n")
endmacro()

set(cmake_dir "${PREFIX}/${LIBDIR}/cmake/quarry")
set(include_dir "${PREFIX}/${INCLUDEDIR}")
foreach(f quarryConfig.cmake quarryConfigVersion.cmake quarryTargets.cmake)
  if(NOT EXISTS "${cmake_dir}/${f}")
    fail("${cmake_dir}/${f} was not installed")
  endif()
endforeach()
if(NOT EXISTS "${include_dir}/quarry/quarry.hpp" OR NOT EXISTS "${include_dir}/quarry/config.hpp")
  fail("quarry/quarry.hpp or the generated quarry/config.hpp is not installed in ${include_dir}")
endif()
if(errors)
  message(FATAL_ERROR "installed tree in ${PREFIX}:\n${errors}")
endif()

# ---- No installed text file names the build or source tree ------------------------------
file(GLOB_RECURSE headers LIST_DIRECTORIES false "${include_dir}/*")
file(GLOB package_files LIST_DIRECTORIES false "${cmake_dir}/*.cmake")
foreach(f IN LISTS headers package_files)
  file(READ "${f}" text)
  foreach(tree "${BUILD_DIR}" "${SOURCE_DIR}")
    string(FIND "${text}" "${tree}" at)
    if(NOT at EQUAL -1)
      fail("${f} names ${tree}")
    endif()
  endforeach()
endforeach()

# ---- Includes of installed headers ------------------------------------------------------
list(LENGTH headers n_headers)
foreach(h IN LISTS headers)
  file(STRINGS "${h}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
  get_filename_component(h_dir "${h}" DIRECTORY)
  file(RELATIVE_PATH h_rel "${include_dir}" "${h}")
  foreach(line IN LISTS lines)
    if(NOT line MATCHES "#[ \t]*include[ \t]*([<\"])([^>\"]+)[>\"]")
      continue()
    endif()
    set(inc "${CMAKE_MATCH_2}")
    if(inc MATCHES "^quarry/")
      if(NOT EXISTS "${include_dir}/${inc}")
        fail("${h_rel} includes ${inc}, which is not installed")
      endif()
    elseif(CMAKE_MATCH_1 STREQUAL "\"" AND EXISTS "${h_dir}/${inc}")
      # a quoted include next to the header: installed with it
    elseif(inc MATCHES "^(xsimd|xtl)([/.]|$)")
      fail("${h_rel} includes <${inc}>: xsimd is private to the compiled part; consumers do not have it")
    elseif(inc MATCHES "^(cuda|cuda_[A-Za-z0-9_]*|cublas[A-Za-z0-9_]*|curand[A-Za-z0-9_]*|cufft[A-Za-z0-9_]*|nvrtc)\\.h$|^(thrust|cub|cuda)/")
      fail("${h_rel} includes <${inc}>: public headers never include CUDA headers")
    elseif(inc MATCHES "/" AND NOT inc MATCHES "^(Eigen|unsupported/Eigen|fmt)/")
      fail("${h_rel} includes <${inc}>, which is neither quarry's, a standard header, nor a public dependency's (Eigen, fmt)")
    elseif(NOT inc MATCHES "/" AND CMAKE_MATCH_1 STREQUAL "\"")
      fail("${h_rel} includes \"${inc}\", which is not installed next to it")
    endif()
  endforeach()
endforeach()

# ---- Exported targets and find_dependency ------------------------------------------------
file(READ "${cmake_dir}/quarryConfig.cmake" config)
file(GLOB target_files "${cmake_dir}/quarry*Targets*.cmake")
set(namespaces "")
foreach(f IN LISTS target_files)
  file(READ "${f}" text)
  get_filename_component(name "${f}" NAME)
  if(text MATCHES "xsimd")
    fail("${name} mentions xsimd: it must stay a private, build-only dependency")
  endif()
  string(REGEX MATCHALL "INTERFACE_LINK_LIBRARIES \"[^\"]*\"" links "${text}")
  foreach(l IN LISTS links)
    string(REGEX MATCHALL "[A-Za-z_][A-Za-z0-9_]*::" ns "${l}")
    list(APPEND namespaces ${ns})
  endforeach()
  # The values are ;-lists, so MATCHALL splits them: strip the property name and quotes, and
  # what is left is the list of directories.
  string(REGEX MATCHALL "INTERFACE_INCLUDE_DIRECTORIES \"[^\"]*\"" dirs "${text}")
  list(TRANSFORM dirs REPLACE "^INTERFACE_INCLUDE_DIRECTORIES \"" "")
  list(TRANSFORM dirs REPLACE "\"$" "")
  foreach(d IN LISTS dirs)
    if(NOT d MATCHES "^\\\${_IMPORT_PREFIX}/")
      fail("${name}: include directory ${d} is not inside the install prefix")
    endif()
  endforeach()
endforeach()
list(TRANSFORM namespaces REPLACE "::$" "")
list(REMOVE_DUPLICATES namespaces)
list(REMOVE_ITEM namespaces quarry)
# The package each imported namespace comes from, when its name differs.
set(package_of_CUDA CUDAToolkit)
set(required Eigen3 fmt Threads)
foreach(ns IN LISTS namespaces)
  if(DEFINED package_of_${ns})
    list(APPEND required "${package_of_${ns}}")
  else()
    list(APPEND required "${ns}")
  endif()
endforeach()
list(REMOVE_DUPLICATES required)
foreach(pkg IN LISTS required)
  if(NOT config MATCHES "find_dependency\\(${pkg}[ )]")
    fail("quarryConfig.cmake has no find_dependency(${pkg}), yet the exported targets need it")
  endif()
endforeach()
if(config MATCHES "xsimd")
  fail("quarryConfig.cmake mentions xsimd: consumers must not need it")
endif()

# ---- Version and the cuda component ------------------------------------------------------
file(READ "${cmake_dir}/quarryConfigVersion.cmake" version_file)
if(NOT version_file MATCHES "PACKAGE_VERSION \"${VERSION}\"")
  fail("quarryConfigVersion.cmake does not say version ${VERSION}")
endif()
if(EXPECT_CUDA)
  if(NOT EXISTS "${cmake_dir}/quarryCudaTargets.cmake")
    fail("quarry::cuda was built but quarryCudaTargets.cmake was not installed")
  else()
    file(READ "${cmake_dir}/quarryCudaTargets.cmake" cuda_targets)
    if(NOT cuda_targets MATCHES "add_library\\(quarry::cuda ")
      fail("quarryCudaTargets.cmake does not define quarry::cuda")
    endif()
  endif()
elseif(EXISTS "${cmake_dir}/quarryCudaTargets.cmake")
  fail("quarryCudaTargets.cmake is installed, but quarry was built without its CUDA backend")
endif()

if(errors)
  message(FATAL_ERROR "installed tree in ${PREFIX}:\n${errors}")
endif()
list(JOIN required ", " required_text)
message(STATUS "installed tree in ${PREFIX}: ${n_headers} headers, relocatable, "
               "includes resolved, find_dependency for ${required_text}")
