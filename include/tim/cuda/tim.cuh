// The one header a CUDA user includes (from a .cu file compiled by nvcc): the whole CPU library
// (tim/tim.hpp: tensors, loading, transports, the sampler) plus the tim::cuda backend and
// CudaFlow, which runs a class-conditional network on the GPU under tim::TransitionSampler.
//
//   auto model = tim::load_c2i<tim::bfloat16, tim::cuda>("c2i_model_256.safetensors");
//   tim::TransitionSampler sampler{tim::cuda_flow(model, tim::OtFm{}), tim::OtFm{}, tim::linspace_schedule(4)};
//
// Link with CUDA::cudart and CUDA::cublas (the CMake target tim::cuda does). See docs/cuda.md.
#pragma once

#include "tim/tim.hpp"
#include "tim/cuda/runtime.cuh"
#include "tim/cuda/backend.cuh"
#include "tim/cuda/flow.cuh"
