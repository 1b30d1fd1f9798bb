// Softmax attention on the GPU's tensor cores without the N x N score matrix: each thread block
// takes a tile of 64 queries of one (sample, head) and streams the keys through shared memory a
// tile at a time, keeping per query a running maximum, a running sum and the weighted values (the
// online softmax), so memory is O(tile x hd) whatever the token counts. Internal: include
// <tim/cuda/tim.cuh>.
//
// Shape legend: B batch, nh heads, Nq queries, Nk keys, hd head dim, HD the head-dim capacity
// (hd rounded up to 32, 64, 80, 96 or 128; the padding is zeros), KT keys per tile.
//
// Tiles come from global memory in 16-byte copies when hd x sizeof(T) is a multiple of 16 (hd 64,
// 72, 96, 128 in bfloat16 and float) and the tensors are 16-byte aligned, else element by element.
//
// Work split: 4 warps per block, 16 queries per warp. Per key tile each warp computes its scores
// S (16 x KT) = Q K^T with WMMA matrix products into shared memory, updates the running maximum
// and sum of each query row (two lanes per row), writes the probabilities P (16 x KT), rescales
// its output rows O (16 x HD, float, shared memory) and adds P V with WMMA. Arithmetic:
//   bfloat16  bf16 x bf16 products, float accumulation (m16n16k16), P rounded to bf16; the row
//             sum adds the rounded P, so the output is an exact weighted mean of V rows with
//             those weights. KT = 64.
//   float     three TF32 products per product (a_hi b_hi + a_hi b_lo + a_lo b_hi, with
//             x = x_hi + x_lo split at TF32's 10-bit mantissa), float accumulation (m16n16k8):
//             about float32's accuracy at the tensor cores' rate. KT = 32.
// Needs compute capability 8.0 or newer (bf16 and TF32 WMMA).
#pragma once

#include <cuda_bf16.h>
#include <mma.h>

#include <cmath>
#include <cstdint>

#include "tim/cuda/elementwise.cuh"

namespace tim::cuda_detail {

inline constexpr int attention_warps = 4;
inline constexpr int attention_query_tile = 16 * attention_warps;  // 16 queries per warp

//! The head-dim capacities compiled, in increasing order: a head dim uses the first capacity
//! that holds it (hd 64, 72, 96 and 128 are the released ones).
inline constexpr int attention_capacities[] = {32, 64, 80, 96, 128};

//! Per storage type: the element held in shared memory, its row padding (in elements, keeping
//! WMMA's 32-byte row alignment while spreading rows over the banks) and the key tile.
template <class T>
struct AttentionLayout;
template <>
struct AttentionLayout<bfloat16> {
  static constexpr int element_bytes = 2, pad = 8, key_tile = 64;
};
template <>
struct AttentionLayout<float> {
  static constexpr int element_bytes = 4, pad = 4, key_tile = 32;
};

//! Shared memory of one block, in bytes: the Q tile (64 x (HD + pad)), the K and V tiles
//! (KT x (HD + pad)) as storage elements; per warp S (16 x (KT + 4) float), P (16 x (KT + pad)
//! elements) and O (16 x (HD + 4) float).
template <class T>
constexpr std::size_t attention_shared_bytes(int capacity) {
  using L = AttentionLayout<T>;
  const std::size_t row = static_cast<std::size_t>(capacity + L::pad) * L::element_bytes;
  const std::size_t tiles = (attention_query_tile + 2 * static_cast<std::size_t>(L::key_tile)) * row;
  const std::size_t warp = 16 * (sizeof(float) * (L::key_tile + 4) + static_cast<std::size_t>(L::element_bytes) *
                                                                         (L::key_tile + L::pad) +
                                 sizeof(float) * static_cast<std::size_t>(capacity + 4));
  return tiles + attention_warps * warp;
}

//! How one attention call is launched (a pure function of the shapes, unit-tested on the host).
struct AttentionLaunch {
  int capacity = 0;              // compiled head-dim capacity used
  std::int64_t query_tiles = 0;  // ceil(Nq / 64) per (sample, head)
  std::int64_t blocks = 0;       // B nh query_tiles, a one-dimensional grid
  int threads = 0;               // 32 x attention_warps
  std::size_t shared_bytes = 0;  // dynamic shared memory per block
};

//! The launch of attention over B samples, nh heads, Nq queries of head dim hd; throws
//! tim::Error for a head dim above the largest capacity (128) or an empty problem.
template <class T>
AttentionLaunch attention_launch(std::int64_t batch, std::int64_t heads, std::int64_t query_tokens,
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
  launch.shared_bytes = attention_shared_bytes<T>(launch.capacity);
  return launch;
}

namespace wmma = nvcuda::wmma;

//! The tensor-core arithmetic of one storage type: acc += A (16 x k_step, row-major at `a`, row
//! stride lda) times B (k_step x 16 at `b`, stride ldb, layout Layout), and the conversions.
template <class T>
struct AttentionMath;

template <>
struct AttentionMath<bfloat16> {
  using Element = __nv_bfloat16;
  static constexpr int k_step = 16;
  using Accumulator = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

  __device__ static Element element(bfloat16 value) {
    __nv_bfloat16_raw raw;
    raw.x = value.bits;
    return Element(raw);
  }
  __device__ static Element element(float value) { return __float2bfloat16_rn(value); }
  __device__ static float value(Element e) { return __bfloat162float(e); }

  template <class Layout>
  __device__ static void mma(Accumulator& acc, const Element* a, unsigned lda, const Element* b, unsigned ldb) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, Element, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, Element, Layout> fb;
    wmma::load_matrix_sync(fa, a, lda);
    wmma::load_matrix_sync(fb, b, ldb);
    wmma::mma_sync(acc, fa, fb, acc);
  }
};

template <>
struct AttentionMath<float> {
  using Element = float;
  static constexpr int k_step = 8;
  using Accumulator = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

  __device__ static Element element(float value) { return value; }
  __device__ static float value(Element e) { return e; }

  //! Splits each loaded float x into hi = tf32(x) (in place) and lo = tf32(x - hi).
  template <class Fragment>
  __device__ static void split(Fragment& hi, Fragment& lo) {
    for (int i = 0; i < hi.num_elements; ++i) {
      const float x = hi.x[i];
      const float high = wmma::__float_to_tf32(x);
      hi.x[i] = high;
      lo.x[i] = wmma::__float_to_tf32(x - high);
    }
  }

  template <class Layout>
  __device__ static void mma(Accumulator& acc, const Element* a, unsigned lda, const Element* b, unsigned ldb) {
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a_hi, a_lo;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, Layout> b_hi, b_lo;
    wmma::load_matrix_sync(a_hi, a, lda);
    wmma::load_matrix_sync(b_hi, b, ldb);
    split(a_hi, a_lo);
    split(b_hi, b_lo);
    wmma::mma_sync(acc, a_lo, b_hi, acc);  // the small terms first
    wmma::mma_sync(acc, a_hi, b_lo, acc);
    wmma::mma_sync(acc, a_hi, b_hi, acc);
  }
};

//! Rows [first, first + Rows) of a head (hd values per row, `count` rows in all) into a shared
//! tile of rows `ld` elements apart; rows past `count` become zeros. `vectorized`: 16-byte copies
//! of the hd values (hd a multiple of 16 / sizeof(T), 16-byte aligned rows; the padding columns
//! hd .. Capacity were zeroed once); else element by element, padding included.
template <class T, int Capacity, int Rows, int ld, class E>
__device__ __forceinline__ void load_tile(E* tile, const T* head, std::int64_t first, std::int64_t count,
                                          int head_dim, bool vectorized) {
  using M = AttentionMath<T>;
  if (vectorized) {
    static_assert(sizeof(E) == sizeof(T), "16-byte copies keep the bits: the tile holds the storage type");
    constexpr int per_chunk = 16 / static_cast<int>(sizeof(T));
    const int chunks = head_dim / per_chunk;
    for (int index = threadIdx.x; index < Rows * chunks; index += blockDim.x) {
      const int r = index / chunks, c = index % chunks;
      const std::int64_t source_row = first + r;
      const uint4 value = source_row < count
                              ? *reinterpret_cast<const uint4*>(head + source_row * head_dim + c * per_chunk)
                              : make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4*>(tile + r * ld + c * per_chunk) = value;
    }
    return;
  }
  for (int index = threadIdx.x; index < Rows * Capacity; index += blockDim.x) {
    const int r = index / Capacity, d = index % Capacity;
    const std::int64_t source_row = first + r;
    tile[r * ld + d] =
        source_row < count && d < head_dim ? M::element(head[source_row * head_dim + d]) : M::element(0.0f);
  }
}

//! out (B, Nq, nh, hd) = softmax(scale q k^T) v per (sample, head); q (B, nh, Nq, hd), k and v
//! (B, nh, Nk, hd). Block b handles query tile b % query_tiles of (sample, head) b / query_tiles.
template <class T, int Capacity>
__global__ void __launch_bounds__(32 * attention_warps)
    attention_kernel(T* out, const T* q, const T* k, const T* v, std::int64_t heads, std::int64_t query_tokens,
                     std::int64_t key_tokens, int head_dim, std::int64_t query_tiles, float scale,
                     bool vectorized) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 and TF32 WMMA need compute capability 8.0 (attention_forward checks first)
#else
  using M = AttentionMath<T>;
  using L = AttentionLayout<T>;
  using E = typename M::Element;
  constexpr int KT = L::key_tile;
  constexpr int ldh = Capacity + L::pad;  // Q, K, V rows (elements)
  constexpr int lds = KT + 4;             // S rows (floats)
  constexpr int ldp = KT + L::pad;        // P rows (elements)
  constexpr int ldo = Capacity + 4;       // O rows (floats)
  constexpr int columns = KT / 2;         // S columns per lane (two lanes per query row)
  constexpr int half_capacity = Capacity / 2;

  extern __shared__ __align__(128) unsigned char shared[];
  E* q_tile = reinterpret_cast<E*>(shared);
  E* k_tile = q_tile + attention_query_tile * ldh;
  E* v_tile = k_tile + KT * ldh;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* S = reinterpret_cast<float*>(v_tile + KT * ldh) + warp * (16 * lds + 16 * ldp * L::element_bytes / 4 + 16 * ldo);
  E* P = reinterpret_cast<E*>(S + 16 * lds);
  float* O = reinterpret_cast<float*>(P + 16 * ldp);

  const std::int64_t bh = blockIdx.x / query_tiles;
  const std::int64_t first_query = (blockIdx.x % query_tiles) * attention_query_tile;
  const std::int64_t b = bh / heads, h = bh % heads;
  const T* q_head = q + bh * query_tokens * head_dim;
  const T* k_head = k + bh * key_tokens * head_dim;
  const T* v_head = v + bh * key_tokens * head_dim;

  if (vectorized) {  // the padding columns hd .. Capacity of the Q, K and V tiles, zero for good
    const int pad_columns = Capacity - head_dim;
    for (int index = threadIdx.x; index < (attention_query_tile + 2 * KT) * pad_columns; index += blockDim.x)
      q_tile[(index / pad_columns) * ldh + head_dim + index % pad_columns] = M::element(0.0f);
  }
  // The query tile, zero beyond hd and beyond the last query.
  load_tile<T, Capacity, attention_query_tile, ldh>(q_tile, q_head, first_query, query_tokens, head_dim, vectorized);
  // Each lane owns half a row of this warp's queries: row lane / 2, columns from half * ....
  const int row = lane / 2, half = lane % 2;
  for (int c = 0; c < half_capacity; ++c) O[row * ldo + half * half_capacity + c] = 0.0f;
  float running_max = -INFINITY, running_sum = 0.0f;
  const E* q_rows = q_tile + warp * 16 * ldh;

  for (std::int64_t first_key = 0; first_key < key_tokens; first_key += KT) {
    __syncthreads();  // the previous K and V tiles are consumed (first pass: the query tile is written)
    // Keys past the last are zero rows (their scores are masked; zero V rows keep 0 x V finite).
    load_tile<T, Capacity, KT, ldh>(k_tile, k_head, first_key, key_tokens, head_dim, vectorized);
    load_tile<T, Capacity, KT, ldh>(v_tile, v_head, first_key, key_tokens, head_dim, vectorized);
    __syncthreads();

    // S = Q K^T: K row-major (key, d) is K^T column-major.
    for (int n = 0; n < KT / 16; ++n) {
      typename M::Accumulator acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int kk = 0; kk < Capacity; kk += M::k_step)
        M::template mma<wmma::col_major>(acc, q_rows + kk, ldh, k_tile + n * 16 * ldh + kk, ldh);
      wmma::store_matrix_sync(S + n * 16, acc, lds, wmma::mem_row_major);
    }
    __syncwarp();

    // The online softmax of this lane's half row. The tile holds at least one valid key
    // (first_key < Nk), so the row's new maximum is finite.
    float* s_row = S + row * lds + half * columns;
    E* p_row = P + row * ldp + half * columns;
    float tile_max = -INFINITY;
    for (int c = 0; c < columns; ++c) {
      const bool valid = first_key + half * columns + c < key_tokens;
      const float score = valid ? s_row[c] * scale : -INFINITY;
      s_row[c] = score;
      tile_max = fmaxf(tile_max, score);
    }
    const float new_max = fmaxf(running_max, fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1)));
    float tile_sum = 0.0f;
    for (int c = 0; c < columns; ++c) {
      const E p = M::element(expf(s_row[c] - new_max));  // exp(-inf) = 0 for the invalid keys
      p_row[c] = p;
      tile_sum += M::value(p);
    }
    tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 1);
    const float correction = expf(running_max - new_max);  // 0 on the first tile
    running_sum = running_sum * correction + tile_sum;
    running_max = new_max;
    float* o_row = O + row * ldo + half * half_capacity;
    for (int c = 0; c < half_capacity; ++c) o_row[c] *= correction;
    __syncwarp();

    // O += P V: V row-major (key, d).
    for (int j = 0; j < Capacity / 16; ++j) {
      typename M::Accumulator acc;
      wmma::load_matrix_sync(acc, O + j * 16, ldo, wmma::mem_row_major);
      for (int kk = 0; kk < KT; kk += M::k_step)
        M::template mma<wmma::row_major>(acc, P + kk, ldp, v_tile + kk * ldh + j * 16, ldh);
      wmma::store_matrix_sync(O + j * 16, acc, ldo, wmma::mem_row_major);
    }
    __syncwarp();
  }

  const std::int64_t query = first_query + warp * 16 + row;
  if (query >= query_tokens) return;
  T* dst = out + ((b * query_tokens + query) * heads + h) * head_dim;
  const float inverse = 1.0f / running_sum;
  for (int c = half * half_capacity; c < (half + 1) * half_capacity && c < head_dim; ++c)
    dst[c] = static_cast<T>(O[row * ldo + c] * inverse);
#endif
}

template <class T, int Capacity>
void launch_attention(const AttentionLaunch& launch, T* out, const T* q, const T* k, const T* v, std::int64_t heads,
                      std::int64_t query_tokens, std::int64_t key_tokens, std::int64_t head_dim, double scale) {
  // Dynamic shared memory above 48 KiB must be allowed per kernel, once per device.
  static thread_local int allowed_on = -1;
  const int device = current_device();
  if (allowed_on != device) {
    // Devices of compute capability 8.6 and 8.9 allow 99 KiB per block (8.0: 163, 9.0: 227): head
    // dims above 96 (capacity 128: 110 KiB bfloat16, 117 KiB float) do not fit there.
    int limit = 0;
    check_cuda(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "cudaDeviceGetAttribute");
    check(launch.shared_bytes <= static_cast<std::size_t>(limit), "tim::cuda attention: head dim ", head_dim, " needs ",
          launch.shared_bytes, " bytes of shared memory per block, device ", device, " allows ", limit,
          " (head dims up to 96 fit 99 KiB, the least of compute capability >= 8.0)");
    check_cuda(cudaFuncSetAttribute(attention_kernel<T, Capacity>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(launch.shared_bytes)),
               "cudaFuncSetAttribute (tim::cuda attention kernel)");
    allowed_on = device;
  }
  // 16-byte tile copies when every head row starts 16-byte aligned.
  const auto aligned = [](const void* pointer) { return reinterpret_cast<std::uintptr_t>(pointer) % 16 == 0; };
  const bool vectorized = (head_dim * static_cast<std::int64_t>(sizeof(T))) % 16 == 0 && aligned(q) && aligned(k) &&
                          aligned(v);
  attention_kernel<T, Capacity>
      <<<static_cast<unsigned>(launch.blocks), launch.threads, launch.shared_bytes, current_stream()>>>(
          out, q, k, v, heads, query_tokens, key_tokens, static_cast<int>(head_dim), launch.query_tiles,
          static_cast<float>(scale), vectorized);
  check_launch("tim::cuda attention kernel");
}

//! Dispatches to the kernel compiled for the head dim's capacity.
template <class T>
void attention(T* out, const T* q, const T* k, const T* v, std::int64_t batch, std::int64_t heads,
               std::int64_t query_tokens, std::int64_t key_tokens, std::int64_t head_dim, double scale) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bfloat16>,
                "tim::cuda attention takes float or bfloat16 storage");
  const AttentionLaunch launch = attention_launch<T>(batch, heads, query_tokens, key_tokens, head_dim);
  check(compute_capability() >= 80, "tim::cuda attention needs compute capability 8.0 or newer (tensor-core bf16 and "
        "TF32), this device has ", compute_capability() / 10, ".", compute_capability() % 10);
  switch (launch.capacity) {
    case 32: return launch_attention<T, 32>(launch, out, q, k, v, heads, query_tokens, key_tokens, head_dim, scale);
    case 64: return launch_attention<T, 64>(launch, out, q, k, v, heads, query_tokens, key_tokens, head_dim, scale);
    case 80: return launch_attention<T, 80>(launch, out, q, k, v, heads, query_tokens, key_tokens, head_dim, scale);
    case 96: return launch_attention<T, 96>(launch, out, q, k, v, heads, query_tokens, key_tokens, head_dim, scale);
    default: return launch_attention<T, 128>(launch, out, q, k, v, heads, query_tokens, key_tokens, head_dim, scale);
  }
}

}  // namespace tim::cuda_detail
