# quarry's Conan 2 recipe. `conan create .` builds the library with CMake (tests, benchmarks and
# examples off), installs it with CMake's install rules, and runs test_package/. Consumers get the
# same find_package(quarry [COMPONENTS cuda]) and targets (quarry::quarry, quarry::cuda) as from a
# plain install. Offline, with dependencies wrapped from Debian packages: packaging/conan/README.md.
import os
import re
import shutil

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy, load, rmdir

required_conan_version = ">=2.0"


class QuarryConan(ConanFile):
    name = "quarry"
    description = "Quantized inference and retrieval: tensors, INT8/INT4 kernels, paged KV-cache, PQ index"
    topics = ("quantization", "inference", "vector-search", "kv-cache", "simd", "cuda")
    package_type = "library"
    settings = "os", "arch", "compiler", "build_type"
    options = {
        "shared": [True, False],
        "fPIC": [True, False],
        "with_cuda": [True, False],  # the quarry::cuda component; needs nvcc to build, a GPU only to run
    }
    default_options = {"shared": False, "fPIC": True, "with_cuda": False}
    # What the top-level CMakeLists.txt reads at configure time with tests, benchmarks, examples
    # and fuzzers off: cmake/ (modules, config templates), src/ (with src/cuda/), include/, and
    # docs/ (added when quarry is the top-level project: the `docs` target, never built here).
    exports_sources = (
        "CMakeLists.txt",
        "cmake/*",
        "include/*",
        "src/*",
        "docs/*",
        "packaging/conan/quarry-components.cmake",
    )
    # Where package() puts packaging/conan/quarry-components.cmake (see package_info()).
    _build_module_dir = os.path.join("lib", "cmake", "quarry")

    def set_version(self):
        # The version is the one CMake's project() says, so the two cannot drift apart.
        cmakelists = load(self, os.path.join(self.recipe_folder, "CMakeLists.txt"))
        self.version = re.search(r"project\(quarry\s+VERSION\s+([0-9.]+)", cmakelists).group(1)

    def config_options(self):
        if self.settings.os == "Windows":
            del self.options.fPIC

    def configure(self):
        if self.options.shared:
            self.options.rm_safe("fPIC")

    def layout(self):
        # A local `conan install .` builds in build-conan/<build type>, beside (not in) build/.
        cmake_layout(self, build_folder="build-conan")

    def requirements(self):
        # Eigen (Eigen::Map interop) and fmt (error messages in inline code) appear in the public
        # headers, so consumers compile against both and link fmt.
        self.requires("eigen/[>=3.3 <4]", transitive_headers=True)
        self.requires("fmt/[>=9.1 <10]", transitive_headers=True, transitive_libs=True)
        # xsimd is used only inside the compiled kernels (src/cpu/): consumers never see it.
        self.requires("xsimd/[>=8.1 <15]")

    def validate(self):
        check_min_cppstd(self, 20)

    def validate_build(self):
        if self.options.with_cuda and not self._nvcc():
            raise ConanInvalidConfiguration(
                "with_cuda=True needs nvcc to build: put it on PATH, set CUDACXX, or name it in "
                "-c tools.build:compiler_executables='{\"cuda\": \"/usr/local/cuda/bin/nvcc\"}'")

    def _nvcc(self):
        named = self.conf.get("tools.build:compiler_executables", default={}, check_type=dict).get("cuda")
        return named or os.environ.get("CUDACXX") or shutil.which("nvcc")

    def generate(self):
        tc = CMakeToolchain(self)
        tc.user_presets_path = False  # never write a CMakeUserPresets.json into the source tree
        tc.cache_variables["QUARRY_BUILD_TESTS"] = False
        tc.cache_variables["QUARRY_BUILD_BENCH"] = False
        tc.cache_variables["QUARRY_BUILD_EXAMPLES"] = False
        tc.cache_variables["QUARRY_BUILD_FUZZERS"] = False
        tc.cache_variables["QUARRY_INSTALL"] = True
        tc.cache_variables["QUARRY_CUDA"] = bool(self.options.with_cuda)
        if self.options.with_cuda:
            # The toolchain sets CMAKE_CXX_STANDARD (cppstd), and CMake takes it for CUDA too where
            # CUDA's is unset: the compiler checks of enable_language(CUDA) then ask nvcc for C++20,
            # which CMake 3.25 cannot. quarry's .cu files are C++17 (src/cuda/CMakeLists.txt).
            tc.variables["CMAKE_CUDA_STANDARD"] = 17
        tc.generate()
        CMakeDeps(self).generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.build()

    def package(self):
        cmake = CMake(self)
        cmake.install()
        # Consumers get the config that CMakeDeps generates from package_info(), not the install's.
        rmdir(self, os.path.join(self.package_folder, "lib", "cmake"))
        copy(self, "quarry-components.cmake", src=os.path.join(self.source_folder, "packaging", "conan"),
             dst=os.path.join(self.package_folder, self._build_module_dir))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "quarry")
        self.cpp_info.set_property("cmake_find_mode", "config")  # quarry has no Find module of its own
        # The aggregate of every component. Not quarry::quarry: CMakeDeps links the aggregate to all
        # components, and quarry::quarry must not bring quarry::cuda along.
        self.cpp_info.set_property("cmake_target_name", "quarry::all")
        # Links quarry::cuda to the CUDA Toolkit and checks find_package's COMPONENTS.
        self.cpp_info.set_property("cmake_build_modules", [os.path.join(self._build_module_dir, "quarry-components.cmake")])

        core = self.cpp_info.components["quarry"]
        core.set_property("cmake_target_name", "quarry::quarry")
        core.libs = ["quarry"]
        core.requires = ["eigen::eigen", "fmt::fmt", "xsimd::xsimd"]
        if self.settings.os in ("Linux", "FreeBSD"):
            core.system_libs = ["pthread", "m"]

        if self.options.with_cuda:
            gpu = self.cpp_info.components["cuda"]
            gpu.set_property("cmake_target_name", "quarry::cuda")
            gpu.libs = ["quarry_cuda"]
            gpu.requires = ["quarry"]
            # The CUDA runtime and cuBLAS (libcudart, libcublas) come from the CUDA Toolkit, which
            # has no Conan package; the build module above links them for CMake consumers, others
            # add -lcudart -lcublas from the toolkit themselves.
