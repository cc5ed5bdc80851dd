# fmt: a Conan package made from the system's fmt (Debian: libfmt-dev, a shared library only),
# for building quarry's Conan package where no remote is reachable. The version is the one the
# headers say; the package looks to consumers as conan-center's fmt does (find_package(fmt),
# target fmt::fmt). See ../../README.md.
import os
import re

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.files import copy, load

required_conan_version = ">=2.0"

SYSTEM_INCLUDE = "/usr/include"
# Where Debian puts a library for each Conan arch (multiarch triplets).
MULTIARCH = {"x86_64": "x86_64-linux-gnu", "armv8": "aarch64-linux-gnu"}


class FmtSystemConan(ConanFile):
    name = "fmt"
    description = "{fmt}, a formatting library (the system's shared library and headers, repackaged)"
    license = "MIT"
    homepage = "https://github.com/fmtlib/fmt"
    package_type = "shared-library"
    settings = "os", "arch", "compiler", "build_type"
    no_copy_source = True

    def set_version(self):
        core = os.path.join(SYSTEM_INCLUDE, "fmt", "core.h")
        if not os.path.isfile(core):
            raise ConanInvalidConfiguration(f"no system fmt: {core} does not exist (apt-get install libfmt-dev)")
        number = int(re.search(r"#define FMT_VERSION (\d+)", load(self, core)).group(1))
        found = f"{number // 10000}.{number % 10000 // 100}.{number % 100}"
        if self.version and str(self.version) != found:
            raise ConanInvalidConfiguration(f"{self.name}/{self.version} asked for, but the system has {found}")
        self.version = found

    def validate(self):
        if self.settings.os != "Linux" or str(self.settings.arch) not in MULTIARCH:
            raise ConanInvalidConfiguration(f"this fmt wraps a Debian package: Linux on {', '.join(MULTIARCH)} only")

    def package_id(self):
        # The system's binary is the same whatever the consumer's build type or compiler version.
        del self.info.settings.build_type
        del self.info.settings.compiler

    def package(self):
        libdir = os.path.join("/usr/lib", MULTIARCH[str(self.settings.arch)])
        if not os.path.isfile(os.path.join(libdir, "libfmt.so")):
            raise ConanInvalidConfiguration(f"no system libfmt.so in {libdir} (apt-get install libfmt-dev for this arch)")
        copy(self, "*", src=os.path.join(SYSTEM_INCLUDE, "fmt"), dst=os.path.join(self.package_folder, "include", "fmt"))
        copy(self, "libfmt.so*", src=libdir, dst=os.path.join(self.package_folder, "lib"))
        copy(self, "copyright", src="/usr/share/doc/libfmt-dev", dst=os.path.join(self.package_folder, "licenses"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "fmt")
        self.cpp_info.set_property("cmake_target_name", "fmt::fmt")
        self.cpp_info.set_property("pkg_config_name", "fmt")
        self.cpp_info.libs = ["fmt"]
        self.cpp_info.defines = ["FMT_SHARED"]  # as Debian's fmt-targets.cmake says
        self.cpp_info.bindirs = []
