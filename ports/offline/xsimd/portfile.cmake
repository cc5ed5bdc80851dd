# OFFLINE TESTING ONLY (see ports/README.md). vcpkg's own xsimd port downloads its sources; this
# stand-in builds nothing. It checks that the Debian package libxsimd-dev is installed and installs only
# a copyright file, so that find_package(xsimd) in a port that depends on xsimd finds the system copy
# under /usr, which the vcpkg toolchain searches after vcpkg's installed tree.
file(GLOB system_config "/usr/lib/*/cmake/xsimd/xsimdConfig.cmake")
if(NOT system_config)
  message(FATAL_ERROR "ports/offline/xsimd stands for the Debian package libxsimd-dev, which is not installed "
                      "(/usr/lib/*/cmake/xsimd/xsimdConfig.cmake not found). apt-get install libxsimd-dev, or leave ports/offline out of the "
                      "overlay ports to build vcpkg's own xsimd port (that needs the network).")
endif()
# Debian's xsimd 8.1 needs xtl (xtl-dev), which quarry finds as well.
if(NOT EXISTS "/usr/share/cmake/xtl/xtlConfig.cmake")
  message(FATAL_ERROR "ports/offline/xsimd: xsimd 8.1 needs xtl: apt-get install xtl-dev")
endif()
set(VCPKG_POLICY_EMPTY_INCLUDE_FOLDER enabled)
vcpkg_install_copyright(FILE_LIST "/usr/share/doc/libxsimd-dev/copyright")
