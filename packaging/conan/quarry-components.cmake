# Part of quarry's Conan package (conanfile.py packages it as lib/cmake/quarry/quarry-components.cmake
# and names it in cmake_build_modules). The quarry-config.cmake that Conan's CMakeDeps generates
# includes it after declaring the targets, to do what the plain install's quarryConfig.cmake does
# and CMakeDeps cannot:
#  - quarry::cuda links the CUDA runtime and cuBLAS of the CUDA Toolkit that FindCUDAToolkit
#    finds (the toolkit is a system requirement: there is no Conan package of it). Link only: the
#    public headers include no CUDA header.
#  - find_package(quarry COMPONENTS ...) fails, naming the component, when the package lacks it
#    (CMakeDeps itself ignores COMPONENTS).

if(TARGET quarry::cuda AND NOT TARGET CUDA::cudart)
  include(CMakeFindDependencyMacro)
  find_dependency(CUDAToolkit)
endif()
if(TARGET quarry::cuda)
  get_property(_quarry_cuda_links TARGET quarry::cuda PROPERTY INTERFACE_LINK_LIBRARIES)
  if(NOT "$<LINK_ONLY:CUDA::cudart>" IN_LIST _quarry_cuda_links)  # once, however often find_package runs
    set_property(TARGET quarry::cuda APPEND PROPERTY INTERFACE_LINK_LIBRARIES
                 "$<LINK_ONLY:CUDA::cudart>" "$<LINK_ONLY:CUDA::cublas>")
  endif()
  unset(_quarry_cuda_links)
endif()

foreach(_quarry_comp IN LISTS quarry_FIND_COMPONENTS)
  if(_quarry_comp STREQUAL "cuda")
    if(TARGET quarry::cuda)
      set(quarry_cuda_FOUND TRUE)
    else()
      set(quarry_cuda_FOUND FALSE)
      set(quarry_NOT_FOUND_MESSAGE
          "quarry was built without its CUDA backend (the Conan package's option with_cuda is False), so the 'cuda' component is not available")
    endif()
  else()
    set(quarry_${_quarry_comp}_FOUND FALSE)
    set(quarry_NOT_FOUND_MESSAGE "quarry has no component '${_quarry_comp}' (components: cuda)")
  endif()
  if(NOT quarry_${_quarry_comp}_FOUND AND quarry_FIND_REQUIRED_${_quarry_comp})
    set(quarry_FOUND FALSE)
  endif()
endforeach()
unset(_quarry_comp)
