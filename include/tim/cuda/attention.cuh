// Softmax attention on the GPU without the N x N score matrix: each thread block takes a tile of
// queries of one (sample, head) and streams the keys through shared memory a tile at a time,
// keeping a running maximum, a running sum and the weighted values (the online softmax), so
// memory is O(tile x hd) whatever the token counts. Arithmetic in float (float and bfloat16
// storage). Internal: include <tim/cuda/tim.cuh>.
//
// Shape legend: B batch, nh heads, Nq queries, Nk keys, hd head dim.
//
// Work split: 4 warps per block, 4 queries per warp (16 per block). For a tile of 32 keys,
// lane j of a warp scores key j against the warp's query (a dot product over hd), the warp
// reduces the tile's maximum and sum with shuffles, and then lane l accumulates the value
// dimensions l, l + 32, ... over the tile's 32 probabilities (broadcast by shuffle). The key tile
// is stored with a row stride of capacity + 1 floats (an odd number), so the 32 lanes reading 32
// different keys at the same dimension hit 32 different shared-memory banks.
#pragma once

#include <cmath>
#include <cstdint>

#include "tim/cuda/elementwise.cuh"

namespace tim::cuda_detail {

inline constexpr int attention_warps = 4;
inline constexpr int attention_queries_per_warp = 4;
inline constexpr int attention_query_tile = attention_warps * attention_queries_per_warp;
inline constexpr int attention_key_tile = 32;

//! The head-dim capacities compiled, in increasing order: a head dim uses the first capacity
//! that holds it (hd 64, 72, 96 and 128 get their own; smaller ones 32 or 64).
inline constexpr int attention_capacities[] = {32, 64, 72, 96, 128};

//! Shared memory of one block for a capacity: the query tile, the key tile (padded rows) and
//! the value tile, in floats.
constexpr std::size_t attention_shared_bytes(int capacity) {
  return sizeof(float) * (static_cast<std::size_t>(attention_query_tile) * capacity +
                          static_cast<std::size_t>(attention_key_tile) * (capacity + 1) +
                          static_cast<std::size_t>(attention_key_tile) * capacity);
}

//! How one attention call is launched (a pure function of the shapes, unit-tested on the host).
struct AttentionLaunch {
  int capacity = 0;           // compiled head-dim capacity used
  std::int64_t query_tiles = 0;  // ceil(Nq / 16) per (sample, head)
  std::int64_t blocks = 0;    // B nh query_tiles, a one-dimensional grid
  int threads = 0;            // 32 x attention_warps
  std::size_t shared_bytes = 0;
};

//! The launch of attention over B samples, nh heads, Nq queries of head dim hd; throws
//! tim::Error for a head dim above the largest capacity (128) or an empty problem.
inline AttentionLaunch attention_launch(std::int64_t batch, std::int64_t heads, std::int64_t query_tokens,
                                        std::int64_t key_tokens, std::int64_t head_dim) {
  check(batch > 0 && heads > 0 && query_tokens > 0 && key_tokens > 0 && head_dim > 0,
        "tim::cuda attention: empty problem (B ", batch, ", nh ", heads, ", Nq ", query_tokens, ", Nk ", key_tokens,
        ", hd ", head_dim, ")");
  AttentionLaunch launch;
  for (int capacity : attention_capacities)
    if (head_dim <= capacity) {
      launch.capacity = capacity;
      break;
    }
  check(launch.capacity > 0, "tim::cuda attention: head dim ", head_dim, " is above the largest supported (",
        attention_capacities[sizeof(attention_capacities) / sizeof(int) - 1], ")");
  launch.query_tiles = (query_tokens + attention_query_tile - 1) / attention_query_tile;
  launch.blocks = batch * heads * launch.query_tiles;
  check(launch.blocks <= std::int64_t{0x7fffffff}, "tim::cuda attention: ", launch.blocks, " blocks exceed the grid");
  launch.threads = 32 * attention_warps;
  launch.shared_bytes = attention_shared_bytes(launch.capacity);
  return launch;
}

__device__ __forceinline__ float warp_max(float value) {
  for (int offset = 16; offset > 0; offset /= 2) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}
__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

//! out (B, Nq, nh, hd) = softmax(scale q k^T) v per (sample, head); q (B, nh, Nq, hd), k and v
//! (B, nh, Nk, hd). Block b handles query tile b % query_tiles of (sample, head) b / query_tiles.
template <class T, int Capacity>
__global__ void __launch_bounds__(32 * attention_warps)
    attention_kernel(T* out, const T* q, const T* k, const T* v, std::int64_t heads, std::int64_t query_tokens,
                     std::int64_t key_tokens, int head_dim, std::int64_t query_tiles, float scale) {
  constexpr int owned = (Capacity + 31) / 32;  // value dimensions per lane
  __shared__ float q_tile[attention_query_tile][Capacity];
  __shared__ float k_tile[attention_key_tile][Capacity + 1];
  __shared__ float v_tile[attention_key_tile][Capacity];

  const std::int64_t bh = blockIdx.x / query_tiles;
  const std::int64_t first_query = (blockIdx.x % query_tiles) * attention_query_tile;
  const std::int64_t b = bh / heads, h = bh % heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T* q_head = q + bh * query_tokens * head_dim;
  const T* k_head = k + bh * key_tokens * head_dim;
  const T* v_head = v + bh * key_tokens * head_dim;

  for (int index = threadIdx.x; index < attention_query_tile * head_dim; index += blockDim.x) {
    const int r = index / head_dim, d = index % head_dim;
    const std::int64_t query = first_query + r;
    q_tile[r][d] = query < query_tokens ? static_cast<float>(q_head[query * head_dim + d]) : 0.0f;
  }

  float running_max[attention_queries_per_warp], running_sum[attention_queries_per_warp];
  float accumulator[attention_queries_per_warp][owned];
  for (int qi = 0; qi < attention_queries_per_warp; ++qi) {
    running_max[qi] = -INFINITY;
    running_sum[qi] = 0.0f;
    for (int o = 0; o < owned; ++o) accumulator[qi][o] = 0.0f;
  }

  for (std::int64_t first_key = 0; first_key < key_tokens; first_key += attention_key_tile) {
    __syncthreads();  // the previous tiles are consumed (first pass: the query tile is written)
    for (int index = threadIdx.x; index < attention_key_tile * head_dim; index += blockDim.x) {
      const int j = index / head_dim, d = index % head_dim;
      const std::int64_t key = first_key + j;
      const bool valid = key < key_tokens;
      k_tile[j][d] = valid ? static_cast<float>(k_head[key * head_dim + d]) : 0.0f;
      v_tile[j][d] = valid ? static_cast<float>(v_head[key * head_dim + d]) : 0.0f;
    }
    __syncthreads();
    const bool key_valid = first_key + lane < key_tokens;
    for (int qi = 0; qi < attention_queries_per_warp; ++qi) {
      const int r = warp * attention_queries_per_warp + qi;
      float score = 0.0f;
      for (int d = 0; d < head_dim; ++d) score += q_tile[r][d] * k_tile[lane][d];
      score = key_valid ? score * scale : -INFINITY;
      // The tile holds at least one valid key (first_key < Nk), so the new maximum is finite.
      const float new_max = fmaxf(running_max[qi], warp_max(score));
      const float p = key_valid ? expf(score - new_max) : 0.0f;
      const float correction = expf(running_max[qi] - new_max);  // 0 on the first tile
      running_sum[qi] = running_sum[qi] * correction + warp_sum(p);
      running_max[qi] = new_max;
      for (int o = 0; o < owned; ++o) accumulator[qi][o] *= correction;
      for (int j = 0; j < attention_key_tile; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
        for (int o = 0; o < owned; ++o) {
          const int d = lane + 32 * o;
          if (d < head_dim) accumulator[qi][o] += pj * v_tile[j][d];
        }
      }
    }
  }

  for (int qi = 0; qi < attention_queries_per_warp; ++qi) {
    const std::int64_t query = first_query + warp * attention_queries_per_warp + qi;
    if (query >= query_tokens) continue;
    T* dst = out + ((b * query_tokens + query) * heads + h) * head_dim;
    const float inverse = 1.0f / running_sum[qi];
    for (int o = 0; o < owned; ++o) {
      const int d = lane + 32 * o;
      if (d < head_dim) dst[d] = static_cast<T>(accumulator[qi][o] * inverse);
    }
  }
}

template <class T, int Capacity>
void launch_attention(const AttentionLaunch& launch, T* out, const T* q, const T* k, const T* v, std::int64_t heads,
                      std::int64_t query_tokens, std::int64_t key_tokens, std::int64_t head_dim, double scale) {
  attention_kernel<T, Capacity><<<static_cast<unsigned>(launch.blocks), launch.threads, 0, current_stream()>>>(
      out, q, k, v, heads, query_tokens, key_tokens, static_cast<int>(head_dim), launch.query_tiles,
      static_cast<float>(scale));
  check_launch("tim::cuda attention kernel");
}

//! Dispatches to the kernel compiled for the head dim's capacity.
template <class T>
void attention(T* out, const T* q, const T* k, const T* v, std::int64_t batch, std::int64_t heads,
               std::int64_t query_tokens, std::int64_t key_tokens, std::int64_t head_dim, double scale) {
  static_assert(!std::is_same_v<T, double>, "tim::cuda attention runs in float32 arithmetic: use float or bfloat16");
  const AttentionLaunch launch = attention_launch(batch, heads, query_tokens, key_tokens, head_dim);
  switch (launch.capacity) {
    case 32: return launch_attention<T, 32>(launch, out, q, k, v, heads, query_tokens, key_tokens, head_dim, scale);
    case 64: return launch_attention<T, 64>(launch, out, q, k, v, heads, query_tokens, key_tokens, head_dim, scale);
    case 72: return launch_attention<T, 72>(launch, out, q, k, v, heads, query_tokens, key_tokens, head_dim, scale);
    case 96: return launch_attention<T, 96>(launch, out, q, k, v, heads, query_tokens, key_tokens, head_dim, scale);
    default: return launch_attention<T, 128>(launch, out, q, k, v, heads, query_tokens, key_tokens, head_dim, scale);
  }
}

}  // namespace tim::cuda_detail
