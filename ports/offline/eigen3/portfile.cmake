# OFFLINE TESTING ONLY (see ports/README.md). vcpkg's own eigen3 port downloads its sources; this
# stand-in builds nothing. It checks that the Debian package libeigen3-dev is installed and installs only
# a copyright file, so that find_package(Eigen3) in a port that depends on eigen3 finds the system copy
# under /usr, which the vcpkg toolchain searches after vcpkg's installed tree.
file(GLOB system_config "/usr/share/eigen3/cmake/Eigen3Config.cmake")
if(NOT system_config)
  message(FATAL_ERROR "ports/offline/eigen3 stands for the Debian package libeigen3-dev, which is not installed "
                      "(/usr/share/eigen3/cmake/Eigen3Config.cmake not found). apt-get install libeigen3-dev, or leave ports/offline out of the "
                      "overlay ports to build vcpkg's own eigen3 port (that needs the network).")
endif()
set(VCPKG_POLICY_EMPTY_INCLUDE_FOLDER enabled)
vcpkg_install_copyright(FILE_LIST "/usr/share/doc/libeigen3-dev/copyright")
