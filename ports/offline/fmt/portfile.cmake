# OFFLINE TESTING ONLY (see ports/README.md). vcpkg's own fmt port downloads its sources; this
# stand-in builds nothing. It checks that the Debian package libfmt-dev is installed and installs only
# a copyright file, so that find_package(fmt) in a port that depends on fmt finds the system copy
# under /usr, which the vcpkg toolchain searches after vcpkg's installed tree.
file(GLOB system_config "/usr/lib/*/cmake/fmt/fmt-config.cmake")
if(NOT system_config)
  message(FATAL_ERROR "ports/offline/fmt stands for the Debian package libfmt-dev, which is not installed "
                      "(/usr/lib/*/cmake/fmt/fmt-config.cmake not found). apt-get install libfmt-dev, or leave ports/offline out of the "
                      "overlay ports to build vcpkg's own fmt port (that needs the network).")
endif()
set(VCPKG_POLICY_EMPTY_INCLUDE_FOLDER enabled)
vcpkg_install_copyright(FILE_LIST "/usr/share/doc/libfmt-dev/copyright")
