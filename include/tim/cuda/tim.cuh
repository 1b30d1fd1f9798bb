// The one header a CUDA user includes (from a .cu file compiled by nvcc): the whole library
// (tim/library.hpp: tensors, loading, transports, the sampler, the decoders) plus the tim::cuda
// backend, without the CPU backend (no Eigen, no OpenMP: host tensors need only core/memory.hpp).
// A file that also runs models on the CPU includes tim/tim.hpp as well. The sampler runs on the model's backend, so the CPU line works unchanged:
//
//   auto model = tim::load_c2i<tim::bfloat16, tim::cuda>("c2i_model_256.safetensors");
//   tim::TransitionSampler sampler{model, tim::OtFm{}, tim::linspace_schedule(4)};
//   auto noise = tim::initial_noise<tim::cuda>({8, 4, 32, 32}, /*seed=*/0);
//   auto result = sampler.sample(noise, labels, {.cfg_scale = 2.5});   // result.x on the GPU
//
// Link with CUDA::cudart and CUDA::cublas (the CMake target tim::cuda does). See docs/cuda.md.
#pragma once

#include "tim/library.hpp"
#include "tim/cuda/runtime.cuh"
#include "tim/cuda/backend.cuh"
