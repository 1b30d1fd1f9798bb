// tim::cuda's device requirements: compute capability 8.0 or newer (checked at first use, with a
// tim::Error naming the device), and the attention kernel's shared memory per block, which must
// fit the 99 KiB of compute capability 8.6 / 8.9 devices for every head dim up to 96. Includes
// only the runtime and attention headers (no Eigen), so it is the one small .cu that checks them.
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cstddef>
#include <initializer_list>
#include <string>
#include <utility>

#include "tim/cuda/attention.cuh"
#include "tim/cuda/runtime.cuh"

TEST_SUITE("cuda-host") {

TEST_CASE("cuda host: devices below compute capability 8.0 are refused with the device named") {
  using tim::cuda_detail::unsupported_device_reason;
  CHECK(unsupported_device_reason(1, "Tesla T4", 7, 5) ==
        "tim::cuda needs compute capability >= 8.0, device 1 (Tesla T4) has 7.5");
  CHECK(unsupported_device_reason(0, "Tesla V100", 7, 0) != "");
  CHECK(unsupported_device_reason(0, "Quadro P6000", 6, 1) != "");
  for (const auto& [major, minor] : std::initializer_list<std::pair<int, int>>{{8, 0}, {8, 6}, {8, 7}, {8, 9}, {9, 0}, {10, 0}, {12, 0}})
    CHECK(unsupported_device_reason(0, "supported", major, minor) == "");
}

TEST_CASE("cuda host: attention's shared memory fits 99 KiB up to head dim 96, not at 128") {
  using tim::cuda_detail::attention_shared_bytes;
  constexpr std::size_t sm86_limit = 99 * 1024;  // cudaDevAttrMaxSharedMemoryPerBlockOptin, 8.6 / 8.9
  for (const int capacity : {32, 64, 80, 96}) {
    CHECK(attention_shared_bytes<tim::bfloat16>(capacity) <= sm86_limit);
    CHECK(attention_shared_bytes<float>(capacity) <= sm86_limit);
  }
  CHECK(attention_shared_bytes<tim::bfloat16>(128) == 112640);  // 110 KiB: needs 8.0 (163 KiB) or 9.0 (227)
  CHECK(attention_shared_bytes<float>(128) == 119808);          // 117 KiB
}

}  // TEST_SUITE("cuda-host")

TEST_SUITE("cuda") {

TEST_CASE("cuda: this device passes the capability check, and head dim 128 runs where it fits") {
  int device = 0, major = 0, limit = 0;
  REQUIRE(cudaGetDevice(&device) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) == cudaSuccess);
  if (major < 8) {
    CHECK_THROWS_WITH_AS(tim::cuda_detail::require_supported_device(),
                         doctest::Contains("needs compute capability >= 8.0"), tim::Error);
    return;
  }
  CHECK_NOTHROW(tim::cuda_detail::require_supported_device());
  // One (sample, head) of 16 queries and keys at head dim 128 (capacity 128), bfloat16.
  constexpr int tokens = 16, head_dim = 128, n = tokens * head_dim;
  tim::bfloat16* buffer = nullptr;
  REQUIRE(cudaMalloc(&buffer, 4 * n * sizeof(tim::bfloat16)) == cudaSuccess);
  REQUIRE(cudaMemset(buffer, 0, 4 * n * sizeof(tim::bfloat16)) == cudaSuccess);
  const auto run = [&] {
    tim::cuda_detail::attention(buffer, buffer + n, buffer + 2 * n, buffer + 3 * n, 1, 1, tokens, tokens, head_dim, 1.0);
    tim::cuda_detail::check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  };
  if (static_cast<std::size_t>(limit) >= tim::cuda_detail::attention_shared_bytes<tim::bfloat16>(128))
    CHECK_NOTHROW(run());
  else
    CHECK_THROWS_WITH_AS(run(), doctest::Contains("bytes of shared memory per block"), tim::Error);
  CHECK(cudaFree(buffer) == cudaSuccess);
}

}  // TEST_SUITE("cuda")
