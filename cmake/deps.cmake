# Finds every dependency the Debian way and fails with the package to install.
function(vlm_missing what package)
  message(FATAL_ERROR "vlm: ${what} not found. Install the Debian package '${package}' "
                      "(scripts/setup.sh installs everything).")
endfunction()

find_package(Threads REQUIRED)
find_package(OpenMP COMPONENTS C)
if(NOT OpenMP_C_FOUND)
  vlm_missing("OpenMP for C" "gcc (libgomp1)")
endif()

# OpenBLAS is loaded at run time (autograd/gemm.c explains why); we need the
# path of the OpenMP build so it shares our thread pool.
find_file(VLM_OPENBLAS_PATH libopenblas.so.0
  PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp NO_DEFAULT_PATH)
if(NOT VLM_OPENBLAS_PATH)
  vlm_missing("OpenBLAS (OpenMP build)" "libopenblas0-openmp")
endif()
find_path(VLM_CBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas)
if(NOT VLM_CBLAS_INCLUDE)
  vlm_missing("cblas.h" "libopenblas-dev")
endif()

find_package(dnnl CONFIG QUIET)
if(NOT dnnl_FOUND)
  vlm_missing("oneDNN (CMake config dnnlConfig.cmake)" "libdnnl-dev")
endif()

find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  vlm_missing("pkg-config" "pkg-config")
endif()
pkg_check_modules(CJSON IMPORTED_TARGET libcjson)
if(NOT CJSON_FOUND)
  vlm_missing("cJSON (pkg-config libcjson)" "libcjson-dev")
endif()

find_package(HDF5 COMPONENTS C QUIET)
if(NOT HDF5_FOUND)
  vlm_missing("HDF5 C library" "libhdf5-dev")
endif()

# zlib: `vlm prepare fashion-mnist` reads the .gz idx files with gzread.
find_package(ZLIB QUIET)
if(NOT ZLIB_FOUND)
  vlm_missing("zlib" "zlib1g-dev")
endif()

find_path(VLM_STB_INCLUDE stb_image.h PATH_SUFFIXES stb)
if(NOT VLM_STB_INCLUDE)
  vlm_missing("stb_image.h" "libstb-dev")
endif()
