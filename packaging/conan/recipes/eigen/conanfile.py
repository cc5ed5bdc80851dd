# eigen: a Conan package made from the system's Eigen headers (Debian: libeigen3-dev), for
# building quarry's Conan package where no remote is reachable. The version is the one the
# headers say; the package looks to consumers as conan-center's eigen does (find_package(Eigen3),
# target Eigen3::Eigen). See ../../README.md.
import os
import re

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.files import copy, load

required_conan_version = ">=2.0"

SYSTEM_INCLUDE = "/usr/include/eigen3"


class EigenSystemConan(ConanFile):
    name = "eigen"
    description = "Eigen, C++ template library for linear algebra (the system's headers, repackaged)"
    license = "MPL-2.0"
    homepage = "https://eigen.tuxfamily.org"
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    no_copy_source = True

    def set_version(self):
        macros = os.path.join(SYSTEM_INCLUDE, "Eigen", "src", "Core", "util", "Macros.h")
        if not os.path.isfile(macros):
            raise ConanInvalidConfiguration(f"no system Eigen: {macros} does not exist (apt-get install libeigen3-dev)")
        text = load(self, macros)
        parts = [re.search(rf"#define {name}_VERSION (\d+)", text).group(1)
                 for name in ("EIGEN_WORLD", "EIGEN_MAJOR", "EIGEN_MINOR")]
        found = ".".join(parts)
        if self.version and str(self.version) != found:
            raise ConanInvalidConfiguration(f"{self.name}/{self.version} asked for, but the system has {found}")
        self.version = found

    def package_id(self):
        self.info.clear()

    def package(self):
        copy(self, "*", src=SYSTEM_INCLUDE, dst=os.path.join(self.package_folder, "include", "eigen3"))
        copy(self, "copyright", src="/usr/share/doc/libeigen3-dev", dst=os.path.join(self.package_folder, "licenses"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "Eigen3")
        self.cpp_info.set_property("cmake_target_name", "Eigen3::Eigen")
        self.cpp_info.set_property("pkg_config_name", "eigen3")
        self.cpp_info.includedirs = ["include/eigen3"]
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        if self.settings.os in ("Linux", "FreeBSD"):
            self.cpp_info.system_libs = ["m"]
