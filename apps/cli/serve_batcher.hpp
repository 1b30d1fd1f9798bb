// `tim serve`: dynamic batching (docs/serve.md, "Batching"). Requests put their images (rows) in
// one queue; a single worker thread takes the oldest row, gathers up to batch_size waiting rows
// with the same batch key (settings, size and seed) and runs them as one sampler call. The runner
// evaluates every row on its own (tim::PerSampleNetwork), so a row's result does not depend on
// what or how much it shares the call with: each image is bit-identical to the same request
// served alone (tests/test_serve.cpp).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "serve_request.hpp"
#include "tim/core/tensor.hpp"

namespace tim_cli::serve {

//! One request as the queue holds it: its rows' images arrive here.
struct Job {
  GenerationRequest request;
  std::uint64_t seed = 0;
  std::vector<std::uint64_t> sample_indices;  // n entries
  std::vector<tim::Tensor<float>> images;     // n images (1, C, H, W), filled as rows finish

  // Text-to-image requests. The handler tokenizes the prompt (its token count is in the batch
  // key); the sampler thread encodes it once, in the first call that has one of its rows, and
  // only that thread touches the features.
  std::int64_t caption_tokens = 0;       // BOS included, after truncation to --max-length
  bool prompt_truncated = false;
  tim::Tensor<float> cap_feats, null_cap_feats;  // (1, caption_tokens, Dc) each; empty until encoded

  std::mutex mutex;
  std::condition_variable changed;
  std::int64_t rows_done = 0;
  bool failed = false;
  std::string error;                // when failed
  bool cancelled = false;           // the client went away: its waiting rows are dropped

  bool finished() const { return failed || rows_done == request.n; }
};

//! What one sampler call gets: 1 to batch_size rows of the same settings and seed.
struct BatchCall {
  const GenerationRequest* settings = nullptr;  // the first row's request (all share its key)
  std::uint64_t seed = 0;
  std::vector<std::int64_t> labels;           // class-conditional: one entry per row (else empty)
  std::vector<std::uint64_t> sample_indices;  // one entry per row
  std::vector<Job*> jobs;                     // one entry per row: the request it belongs to
};

//! Runs one call; `keep_going()` turns false when every request of the call was cancelled
//! (the runner then stops at the next step and throws). Returns one image (1, C, H, W) per row.
using BatchRunner = std::function<std::vector<tim::Tensor<float>>(const BatchCall&, const std::function<bool()>&)>;

class Batcher {
 public:
  Batcher(BatchRunner runner, std::int64_t batch_size, std::int64_t max_queue);
  ~Batcher();

  //! Queues the job's rows; false (nothing queued) when they would pass max_queue.
  bool submit(const std::shared_ptr<Job>& job);
  //! Marks the job cancelled: rows not yet started are dropped; a running call stops when all
  //! its jobs are cancelled.
  void cancel(const std::shared_ptr<Job>& job);
  //! Rows waiting or being sampled.
  std::int64_t queued() const;
  //! Sampler calls run so far (cancelled and failed ones included) and the real rows of the
  //! calls that finished (for /health).
  std::int64_t calls() const;
  std::int64_t rows_sampled() const;
  //! Finishes every queued row, then stops the worker.
  void drain();

 private:
  struct Row {
    std::shared_ptr<Job> job;
    std::int64_t position = 0;  // which of the job's images
  };
  void work();

  BatchRunner runner_;
  std::int64_t batch_size_, max_queue_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Row> waiting_;
  std::int64_t running_rows_ = 0;
  std::int64_t calls_ = 0, rows_sampled_ = 0;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace tim_cli::serve
