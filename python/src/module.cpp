// tim._tim: the nanobind extension behind the Python package `tim` (docs/python.md). It binds the
// library as the `tim` program runs it: models (model.cpp), latent decoders (decoder.cpp), the
// text encoder (text.cpp), tim's noise and the package's thread count (here).
// python/tim/__init__.py turns Python values (lists, DLPack tensors, schedule callables, prompts)
// into the arrays and strings taken here.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <omp.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"
#include "cuda_backend.hpp"
#include "threads.hpp"
#include "tim/tim.hpp"

namespace nb = nanobind;
using namespace nb::literals;

NB_MODULE(_tim, m) {
  m.doc() = "tim's C++ library (the extension behind the package tim; use tim's Python API, docs/python.md)";
  nb::exception<tim::Error>(m, "Error", PyExc_ValueError);
  m.attr("__version__") = std::to_string(TIM_VERSION_MAJOR) + "." + std::to_string(TIM_VERSION_MINOR) + "." +
                          std::to_string(TIM_VERSION_PATCH);
#ifdef TIM_USE_CBLAS
  m.attr("gemm") = "openblas";
#else
  m.attr("gemm") = "eigen";
#endif
#ifdef TIM_PYTHON_CUDA
  m.attr("cuda_built") = true;
#else
  m.attr("cuda_built") = false;
#endif
#ifdef TIM_PYTHON_TEXT
  m.attr("text_built") = true;
#else
  m.attr("text_built") = false;
#endif

  tim_python::bind_model(m);
  tim_python::bind_decoder(m);
#ifdef TIM_PYTHON_TEXT
  tim_python::bind_text(m);
#endif

  m.def(
      "initial_noise",
      [](std::vector<std::int64_t> shape, std::uint64_t seed, std::uint64_t first_index) {
        return tim_python::to_numpy(tim::initial_noise(tim::Shape(std::move(shape)), seed, first_index));
      },
      "shape"_a, "seed"_a = 0, "first_index"_a = 0,
      "Standard normal noise (B, ...) float64 from tim's counter-based generator: sample b is stream "
      "first_index + b of `seed`, the noise `tim sample` and Model.sample start from.");
  m.def("set_num_threads", &tim_python::set_package_threads, "threads"_a,
        "Sets the CPU threads of every computation of the package, whichever Python thread starts it.");
  m.def("num_threads", &tim_python::apply_package_threads,
        "The CPU threads computations use (set_num_threads, else OMP_NUM_THREADS, else the physical cores), "
        "the same in every Python thread.");
  m.def("_openmp_max_threads", [] { return omp_get_max_threads(); },
        "For the tests: OpenMP's thread count on the calling thread now (omp_get_max_threads), as left by the "
        "last computation started from it.");
  m.def(
      "cuda_device_count",
      [] {
#ifdef TIM_PYTHON_CUDA
        try {
          return tim_cli::cuda_device_count();
        } catch (const tim::Error&) {
          return 0;  // no driver reachable: no device
        }
#else
        return 0;
#endif
      },
      "The CUDA devices this process sees (0 without a driver, a device or a build with CUDA).");
}
