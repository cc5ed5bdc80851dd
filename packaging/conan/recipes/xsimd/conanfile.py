# xsimd: a Conan package made from the system's xsimd headers (Debian: libxsimd-dev), for
# building quarry's Conan package where no remote is reachable. The version is the one the
# headers say; the package looks to consumers as conan-center's xsimd does (find_package(xsimd),
# target xsimd). Without xtl: quarry does not use xsimd's xtl complex support. See ../../README.md.
import os
import re

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.files import copy, load

required_conan_version = ">=2.0"

SYSTEM_INCLUDE = "/usr/include"


class XsimdSystemConan(ConanFile):
    name = "xsimd"
    description = "xsimd, C++ wrappers for SIMD intrinsics (the system's headers, repackaged)"
    license = "BSD-3-Clause"
    homepage = "https://github.com/xtensor-stack/xsimd"
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    no_copy_source = True

    def set_version(self):
        config = os.path.join(SYSTEM_INCLUDE, "xsimd", "config", "xsimd_config.hpp")
        if not os.path.isfile(config):
            raise ConanInvalidConfiguration(f"no system xsimd: {config} does not exist (apt-get install libxsimd-dev)")
        text = load(self, config)
        parts = [re.search(rf"#define XSIMD_VERSION_{part} (\d+)", text).group(1) for part in ("MAJOR", "MINOR", "PATCH")]
        found = ".".join(parts)
        if self.version and str(self.version) != found:
            raise ConanInvalidConfiguration(f"{self.name}/{self.version} asked for, but the system has {found}")
        self.version = found

    def package_id(self):
        self.info.clear()

    def package(self):
        copy(self, "*", src=os.path.join(SYSTEM_INCLUDE, "xsimd"), dst=os.path.join(self.package_folder, "include", "xsimd"))
        copy(self, "copyright", src="/usr/share/doc/libxsimd-dev", dst=os.path.join(self.package_folder, "licenses"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "xsimd")
        self.cpp_info.set_property("cmake_target_name", "xsimd")
        self.cpp_info.set_property("pkg_config_name", "xsimd")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
