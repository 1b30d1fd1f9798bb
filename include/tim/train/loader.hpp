// The batch loader of a training run: batches of a Dataset in the order of tim/train/data_order.hpp,
// read ahead on a thread of their own into a ring of buffers allocated once, so the training
// step finds its next batch ready and never waits for files (unless reading is slower than the
// step). With `prefetch = 0` it reads on the caller's thread instead (same batches, same bits).
// A read error on the loader's thread is handed to the caller at the batch it belongs to.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/tensor.hpp"
#include "tim/train/data_order.hpp"
#include "tim/train/datasets.hpp"

namespace tim::train {

//! One batch: x (B, C, H, W) float in the data set's range, labels (B) int64, the sample indices
//! it holds and the data position after it (what a checkpoint stores after this batch's step).
struct Batch {
  Tensor<float> x;
  Tensor<std::int64_t> labels;
  std::vector<std::int64_t> indices;
  DataPosition position_after;
};

//! Batches of `batch` samples of `data` from position `start` of the (seed, epoch) orders.
//! Example:
//!   tim::train::BatchLoader loader(data, 64, seed, saved_position);   // prefetches 2 batches
//!   const tim::train::Batch& b = loader.next();   // valid until the next call to next()
class BatchLoader {
 public:
  //! The loader shares ownership of `data`. `prefetch` batches are read ahead (0: read in next()).
  BatchLoader(std::shared_ptr<const Dataset> data, std::int64_t batch, std::uint64_t seed, DataPosition start = {},
              int prefetch = 2)
      : data_(std::move(data)), order_(data_->size(), batch, seed, start) {
    check(prefetch >= 0 && prefetch <= 64, "batch loader: prefetch ", prefetch, " (expected 0 .. 64)");
    const Shape s = data_->sample_shape();
    slots_.resize(static_cast<std::size_t>(prefetch) + 1);
    for (auto& slot : slots_) {
      slot.batch.x = Tensor<float>::empty({batch, s[0], s[1], s[2]});
      slot.batch.labels = Tensor<std::int64_t>::empty({batch});
      slot.batch.indices.resize(static_cast<std::size_t>(batch));
    }
    if (prefetch > 0) worker_ = std::thread([this] { run(); });
  }

  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  //! Stops the loader's thread (waiting for the read in progress to finish) and joins it.
  ~BatchLoader() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  //! The next batch; the reference stays valid until the next call. Rethrows a read error (a
  //! tim::Error naming the file) of the batch it belongs to; the loader is unusable after that.
  const Batch& next() {
    if (!worker_.joinable()) {
      fill(slots_[0]);
      return slots_[0].batch;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    if (handed_out_) {  // the previous batch is given back to the ring
      handed_out_ = false;
      consumed_ = (consumed_ + 1) % slots_.size();
      --ready_;
      changed_.notify_all();
    }
    changed_.wait(lock, [&] { return ready_ > 0 || failure_; });
    if (ready_ == 0 && failure_) std::rethrow_exception(failure_);
    handed_out_ = true;
    return slots_[consumed_].batch;
  }

  std::int64_t batch_size() const { return order_.batch_size(); }
  const Dataset& dataset() const { return *data_; }

 private:
  struct Slot {
    Batch batch;
  };

  // Called on one thread only (the worker's, or the caller's without prefetch).
  void fill(Slot& slot) {
    const auto& indices = order_.next();
    Batch& b = slot.batch;
    const std::int64_t per = b.x.numel() / b.x.dim(0);
    for (std::size_t i = 0; i < indices.size(); ++i) {
      b.indices[i] = indices[i];
      b.labels.data()[i] = data_->read(indices[i], b.x.data() + static_cast<std::int64_t>(i) * per);
    }
    b.position_after = order_.position();
  }

  void run() {
    std::size_t produced = 0;  // next slot to fill
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        // The slot being handed out is not free: keep ready_ < slots (ring full otherwise).
        changed_.wait(lock, [&] { return stopping_ || ready_ < slots_.size(); });
        if (stopping_) return;
      }
      try {
        fill(slots_[produced]);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        failure_ = std::current_exception();
        changed_.notify_all();
        return;
      }
      std::lock_guard<std::mutex> lock(mutex_);
      produced = (produced + 1) % slots_.size();
      ++ready_;
      changed_.notify_all();
    }
  }

  std::shared_ptr<const Dataset> data_;
  BatchOrder order_;  // used by the filling thread only
  std::vector<Slot> slots_;
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::size_t ready_ = 0;     // filled slots not yet given back (the handed-out one included)
  std::size_t consumed_ = 0;  // the slot handed out / next to hand out
  bool handed_out_ = false;
  bool stopping_ = false;
  std::exception_ptr failure_;
};

}  // namespace tim::train
