// Compiler glue shared by every layer: TIM_HD marks functions usable on host and device;
// TIM_CPU_ABI names the configuration of the CPU backend's inline bodies.
#pragma once

#if defined(__CUDACC__)
#define TIM_HD __host__ __device__
#else
#define TIM_HD
#endif

// tim::cpu's inline bodies depend on TIM_USE_CBLAS (GEMMs through CBLAS or through Eigen). Two
// translation units of one program that disagree on it would otherwise define the same inline
// functions differently (an ODR violation the linker resolves silently, by picking one). So
// tim::cpu is declared in an inline namespace named after the configuration: every symbol that
// mentions it (Tensor<float> = Tensor<float, tim::cpu>, nn::C2IModel<float, tim::cpu>,
// tim::load_c2i<float>, a user's `void run(tim::Tensor<float>&)`) gets a different mangled name
// per configuration, and a mixed program fails to link (tests/abi_mix, docs/architecture.md).
// Source code keeps writing tim::cpu.
// TIM_USE_DNNL (oneDNN's bfloat16 matmul for bfloat16 weights, cpu/gemm_bf16.hpp) is part of the
// name too: cpu_cblas_dnnl, cpu_eigen_dnnl.
#if defined(TIM_USE_CBLAS) && defined(TIM_USE_DNNL)
#define TIM_CPU_ABI cpu_cblas_dnnl
#elif defined(TIM_USE_CBLAS)
#define TIM_CPU_ABI cpu_cblas
#elif defined(TIM_USE_DNNL)
#define TIM_CPU_ABI cpu_eigen_dnnl
#else
#define TIM_CPU_ABI cpu_eigen
#endif
