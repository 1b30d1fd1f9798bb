// The CUDA runtime glue of the tim::cuda backend: error checks that throw tim::Error, the device
// query the tests use to skip, the stream every operation is enqueued on, and the cuBLAS handle
// (with its workspace allocated once, so GEMMs allocate nothing per call), and the check that the
// device has compute capability 8.0 or newer.
// Internal: include <tim/cuda/tim.cuh>.
#pragma once

#if !defined(__CUDACC__)
#error "tim/cuda/*.cuh are CUDA headers: compile this file with nvcc and include <tim/cuda/tim.cuh>"
#endif

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "tim/core/error.hpp"

namespace tim::cuda_detail {

//! Throws tim::Error naming the failed call and CUDA's error when `status` is not success.
inline void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    fail("CUDA: ", what, " failed: ", cudaGetErrorName(status), " (", cudaGetErrorString(status), ")");
}

inline const char* cublas_status_name(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "unknown cuBLAS status";
  }
}

//! Throws tim::Error naming the failed cuBLAS call when `status` is not success.
inline void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) fail("cuBLAS: ", what, " failed: ", cublas_status_name(status));
}

//! Checks the launch just made (configuration errors surface here; execution errors at the
//! next synchronising call).
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

//! Device allocations made by tim::cuda::allocate since the program started: tests use it to
//! check that a sampling loop allocates nothing after its first step.
inline std::atomic<std::int64_t>& allocation_counter() {
  static std::atomic<std::int64_t> count{0};
  return count;
}

//! Stream-ordered scratch allocations (cudaMallocAsync, or cudaMalloc without memory pools) made
//! by the decoder operations for their temporaries: the other allocation path, counted apart.
inline std::atomic<std::int64_t>& scratch_allocation_counter() {
  static std::atomic<std::int64_t> count{0};
  return count;
}

//! The stream tim::cuda operations of this host thread are enqueued on (default: the per-thread
//! default stream, so two host threads driving two models do not serialise on stream 0).
inline cudaStream_t& current_stream() {
  thread_local cudaStream_t stream = cudaStreamPerThread;
  return stream;
}

//! The current device of this host thread.
inline int current_device() {
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  return device;
}

//! The current device's compute capability as 10 major + minor (90 for an H100).
inline int compute_capability() {
  const int device = current_device();
  int major = 0, minor = 0;
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
  return 10 * major + minor;
}

//! The oldest GPUs tim::cuda runs on: compute capability 8.0 (A100), for the bfloat16 and TF32
//! tensor-core (WMMA) products of the attention kernel. CMAKE_CUDA_ARCHITECTURES defaults to
//! 80;86;89;90 (docs/cuda.md).
inline constexpr int minimum_compute_major = 8;

//! Why device `device` (`name`, compute capability major.minor) cannot run tim::cuda, or an empty
//! string when it can. A pure function, tested on the host.
inline std::string unsupported_device_reason(int device, const std::string& name, int major, int minor) {
  if (major >= minimum_compute_major) return {};
  return detail::concat("tim::cuda needs compute capability >= ", minimum_compute_major, ".0, device ", device, " (",
                        name, ") has ", major, ".", minor);
}

//! Throws tim::Error (unsupported_device_reason) unless the current device has compute
//! capability >= 8.0. Called at first use: every allocation and every new cuBLAS handle; a
//! supported device is remembered, so later calls cost one cudaGetDevice.
inline void require_supported_device() {
  static std::atomic<std::uint64_t> supported{0};  // bit d: device d (< 64) passed
  const int device = current_device();
  const bool cached = device >= 0 && device < 64;
  if (cached && (supported.load(std::memory_order_relaxed) >> device & 1u)) return;
  int major = 0, minor = 0;
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
  if (major < minimum_compute_major) {
    cudaDeviceProp properties{};
    const bool named = cudaGetDeviceProperties(&properties, device) == cudaSuccess;
    fail(unsupported_device_reason(device, named ? properties.name : "unknown", major, minor));
  }
  if (cached) supported.fetch_or(std::uint64_t{1} << device, std::memory_order_relaxed);
}

//! cuBLAS workspace per handle: 32 MiB, NVIDIA's recommendation for Hopper.
inline constexpr std::size_t cublas_workspace_bytes = std::size_t{32} << 20;

//! One cuBLAS handle per (host thread, device), created on first use with its workspace set,
//! then reused. Handles and workspaces are deliberately never destroyed: destroying them from
//! a static or thread_local destructor can run after the CUDA runtime has shut down.
inline cublasHandle_t cublas_handle() {
  constexpr int max_devices = 64;
  struct Slot {
    cublasHandle_t handle = nullptr;
  };
  thread_local Slot slots[max_devices];
  const int device = current_device();
  check(device >= 0 && device < max_devices, "tim::cuda: device index ", device, " out of range");
  Slot& slot = slots[device];
  if (!slot.handle) {
    require_supported_device();
    check_cublas(cublasCreate(&slot.handle), "cublasCreate");
    void* workspace = nullptr;
    check_cuda(cudaMalloc(&workspace, cublas_workspace_bytes), "cudaMalloc (cuBLAS workspace)");
    check_cublas(cublasSetWorkspace(slot.handle, workspace, cublas_workspace_bytes), "cublasSetWorkspace");
    // float32 GEMMs stay float32: no TF32 tensor-core rounding unless the user opts in.
    check_cublas(cublasSetMathMode(slot.handle, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  }
  check_cublas(cublasSetStream(slot.handle, current_stream()), "cublasSetStream");
  return slot.handle;
}

}  // namespace tim::cuda_detail
