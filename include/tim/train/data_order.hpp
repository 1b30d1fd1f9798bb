// The order in which a training run visits its data: each epoch a permutation of the sample
// indices that is a pure function of (seed, epoch), drawn from the counter-based generator
// (tim/core/random.hpp), so a resumed run and any split of the work (batch sizes, processes
// taking slices of the global order) see the same sequence; and the position in it
// (epoch, offset), which is the whole state a checkpoint needs to continue the data exactly.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/random.hpp"

namespace tim::train {

//! The `step` word of the data-order stream of tim/core/random.hpp ("ORDR"), so the order never
//! shares numbers with the sampler's noise (whose steps are small counts or 0xffffffff).
inline constexpr std::uint32_t data_order_stream = 0x4F524452u;

//! The permutation of 0 .. n-1 of epoch `epoch` for `seed`: Fisher-Yates from the top, the swap
//! partner of position i drawn uniformly in [0, i] by Lemire's multiply-and-reject on 32-bit
//! words of the Philox stream (seed, sample = epoch, step = data_order_stream), words taken in
//! order (word w is lane w % 4 of block w / 4). Exactly uniform (rejection, no modulo bias);
//! n < 2^32. The same (n, seed, epoch) gives the same order on every machine.
//! Example: `auto order = tim::train::epoch_order(60000, seed, epoch);`
inline void epoch_order(std::vector<std::int64_t>& order, std::int64_t n, std::uint64_t seed, std::uint64_t epoch) {
  check(n >= 0 && n < (std::int64_t{1} << 32), "data order: ", n, " samples (expected 0 .. 2^32 - 1)");
  order.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  std::uint64_t word = 0;
  random::Words4 block{};
  auto next_word = [&]() {
    const auto lane = static_cast<int>(word % 4);
    if (lane == 0) block = random::stream_block(seed, epoch, data_order_stream, static_cast<std::uint32_t>(word / 4));
    ++word;
    return block.v[lane];
  };
  for (std::int64_t i = n - 1; i > 0; --i) {
    // Uniform in [0, bound) with bound = i + 1 <= 2^32 - 1 (Lemire 2019): m = x bound, accept
    // unless the low half falls below 2^32 mod bound.
    const auto bound = static_cast<std::uint64_t>(i + 1);
    std::uint64_t m = static_cast<std::uint64_t>(next_word()) * bound;
    if (static_cast<std::uint32_t>(m) < bound) {
      const std::uint64_t threshold = (std::uint64_t{1} << 32) % bound;
      while (static_cast<std::uint32_t>(m) < threshold) m = static_cast<std::uint64_t>(next_word()) * bound;
    }
    const auto j = static_cast<std::int64_t>(m >> 32);
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
}

inline std::vector<std::int64_t> epoch_order(std::int64_t n, std::uint64_t seed, std::uint64_t epoch) {
  std::vector<std::int64_t> order;
  epoch_order(order, n, seed, epoch);
  return order;
}

//! Where a run stands in its data: the next batch starts at `offset` of epoch `epoch`'s order.
struct DataPosition {
  std::int64_t epoch = 0;
  std::int64_t offset = 0;
  friend bool operator==(const DataPosition&, const DataPosition&) = default;
};

//! Walks the epoch orders of n samples in batches of `batch`, as tools/reference/train.py's
//! Batches: a batch that would run past the end of an epoch starts the next epoch instead (the
//! ragged tail is dropped). Holds the current epoch's order (computed once per epoch).
//! Example:
//!   tim::train::BatchOrder walk(n, 64, seed, saved_position);
//!   auto indices = walk.next();   // 64 sample indices; walk.position() is the state to save
class BatchOrder {
 public:
  BatchOrder(std::int64_t samples, std::int64_t batch, std::uint64_t seed, DataPosition start = {})
      : samples_(samples), batch_(batch), seed_(seed), position_(start) {
    check(batch >= 1, "data order: batch size must be >= 1, got ", batch);
    check(samples >= batch, "data order: ", samples, " samples cannot fill one batch of ", batch);
    check(start.epoch >= 0 && start.offset >= 0 && start.offset <= samples, "data order: position (epoch ",
          start.epoch, ", offset ", start.offset, ") is outside a data set of ", samples, " samples");
    indices_.resize(static_cast<std::size_t>(batch));
  }

  //! The sample indices of the next batch (valid until the next call), advancing the position.
  const std::vector<std::int64_t>& next() {
    if (position_.offset + batch_ > samples_) position_ = {position_.epoch + 1, 0};
    if (order_epoch_ != position_.epoch) {
      epoch_order(order_, samples_, seed_, static_cast<std::uint64_t>(position_.epoch));
      order_epoch_ = position_.epoch;
    }
    for (std::int64_t i = 0; i < batch_; ++i)
      indices_[static_cast<std::size_t>(i)] = order_[static_cast<std::size_t>(position_.offset + i)];
    position_.offset += batch_;
    return indices_;
  }

  //! The position after the last batch handed out (what a checkpoint stores).
  DataPosition position() const { return position_; }
  std::int64_t batch_size() const { return batch_; }
  std::int64_t samples() const { return samples_; }

 private:
  std::int64_t samples_, batch_;
  std::uint64_t seed_;
  DataPosition position_;
  std::int64_t order_epoch_ = -1;
  std::vector<std::int64_t> order_, indices_;
};

}  // namespace tim::train
