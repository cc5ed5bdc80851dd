# CMake toolchain file: cross-compile quarry for AArch64 Linux on a Debian/Ubuntu x86-64 host, and
# run the tests under qemu-aarch64 (ctest uses CMAKE_CROSSCOMPILING_EMULATOR).
#
#   apt-get install g++-aarch64-linux-gnu qemu-user
#   dpkg --add-architecture arm64 && apt-get update && apt-get install libfmt-dev:arm64
#   cmake -S . -B /tmp/q-arm64 -DCMAKE_TOOLCHAIN_FILE=tests/portability/aarch64-linux-gnu.cmake \
#         -DQUARRY_CUDA=OFF -DQUARRY_BUILD_BENCH=OFF
#   cmake --build /tmp/q-arm64 -j2 && ctest --test-dir /tmp/q-arm64
#
# fmt is a compiled library, so it must be the arm64 package. Eigen, xsimd (with xtl for 8.x)
# and doctest are header-only: the host's copies are used. Their CMake packages all name
# /usr/include as their include directory; passing that to a cross compiler as -isystem would
# put the host's C library headers ahead of the cross ones, so /usr/include is declared
# implicit (CMake then drops it from the command line) and searched last, with -idirafter.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(QUARRY_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${QUARRY_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${QUARRY_CROSS_TRIPLE}-g++)
set(CMAKE_LIBRARY_ARCHITECTURE ${QUARRY_CROSS_TRIPLE})

set(CMAKE_CXX_FLAGS_INIT "-idirafter /usr/include")
set(CMAKE_C_FLAGS_INIT "-idirafter /usr/include")
list(APPEND CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES /usr/include)
list(APPEND CMAKE_C_IMPLICIT_INCLUDE_DIRECTORIES /usr/include)

# Programs (cmake, nm) from the host; libraries and packages from the arm64 multiarch paths
# (/usr/lib/aarch64-linux-gnu) or the architecture-independent ones (/usr/share, /usr/lib/cmake).
set(CMAKE_FIND_ROOT_PATH /usr/${QUARRY_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# Debian's libxsimd-dev keeps its (architecture-independent) CMake package under the host's
# multiarch directory, where a search for arm64 packages does not look.
if(NOT DEFINED xsimd_DIR AND EXISTS /usr/lib/x86_64-linux-gnu/cmake/xsimd/xsimdConfig.cmake)
  set(xsimd_DIR /usr/lib/x86_64-linux-gnu/cmake/xsimd CACHE PATH "")
endif()

# qemu's -L prefix must hold a dynamic loader of the same glibc build as the libc.so.6 that
# loader then finds. Installing libfmt-dev:arm64 brings Debian's libc6:arm64 (/lib/aarch64-linux-gnu,
# loader /lib/ld-linux-aarch64.so.1), and that loader searches /lib/aarch64-linux-gnu first even
# under -L /usr/aarch64-linux-gnu. Pairing the cross package's ld.so (2.36-8cross1) with
# libc6:arm64's libc.so.6 (2.36-9+deb12u14) hangs in pthread_create (nptl's stack cache list
# in ld.so's private data), so the multiarch root is used whenever it is there.
if(EXISTS /lib/ld-linux-aarch64.so.1)
  set(QUARRY_QEMU_AARCH64_PREFIX /)
else()
  set(QUARRY_QEMU_AARCH64_PREFIX /usr/${QUARRY_CROSS_TRIPLE})
endif()
find_program(QUARRY_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(QUARRY_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${QUARRY_QEMU_AARCH64} -L ${QUARRY_QEMU_AARCH64_PREFIX})
endif()
