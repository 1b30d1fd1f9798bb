// `tim serve`: the queue and the worker that batches rows into sampler calls (serve_batcher.hpp).
#include "serve_batcher.hpp"

#include <algorithm>
#include <exception>
#include <utility>

namespace tim_cli::serve {

Batcher::Batcher(BatchRunner runner, std::int64_t batch_size, std::int64_t max_queue)
    : runner_(std::move(runner)), batch_size_(batch_size), max_queue_(max_queue), worker_([this] { work(); }) {}

Batcher::~Batcher() { drain(); }

bool Batcher::submit(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return false;
    if (static_cast<std::int64_t>(waiting_.size()) + running_rows_ + job->request.n > max_queue_) return false;
    job->images.resize(static_cast<std::size_t>(job->request.n));
    for (std::int64_t i = 0; i < job->request.n; ++i) waiting_.push_back({job, i});
  }
  wake_.notify_one();
  return true;
}

void Batcher::cancel(const std::shared_ptr<Job>& job) {
  std::lock_guard lock(mutex_);
  {
    std::lock_guard job_lock(job->mutex);
    job->cancelled = true;
  }
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), [&](const Row& row) { return row.job == job; }),
                 waiting_.end());
}

std::int64_t Batcher::queued() const {
  std::lock_guard lock(mutex_);
  return static_cast<std::int64_t>(waiting_.size()) + running_rows_;
}

std::int64_t Batcher::calls() const {
  std::lock_guard lock(mutex_);
  return calls_;
}

std::int64_t Batcher::rows_sampled() const {
  std::lock_guard lock(mutex_);
  return rows_sampled_;
}

void Batcher::drain() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void Batcher::work() {
  while (true) {
    std::vector<Row> rows;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !waiting_.empty(); });
      if (waiting_.empty()) return;  // stopping, and nothing left
      // The oldest row's key decides the call; later rows with that key join it, in order.
      const std::string key = waiting_.front().job->request.batch_key;
      for (auto it = waiting_.begin(); it != waiting_.end() && static_cast<std::int64_t>(rows.size()) < batch_size_;) {
        if (it->job->request.batch_key == key) {
          rows.push_back(std::move(*it));
          it = waiting_.erase(it);
        } else {
          ++it;
        }
      }
      running_rows_ = static_cast<std::int64_t>(rows.size());
    }

    BatchCall call;
    call.settings = &rows.front().job->request;
    call.seed = rows.front().job->seed;
    for (const Row& row : rows) {
      if (!row.job->request.labels.empty())
        call.labels.push_back(row.job->request.labels[static_cast<std::size_t>(row.position)]);
      call.sample_indices.push_back(row.job->sample_indices[static_cast<std::size_t>(row.position)]);
      call.jobs.push_back(row.job.get());
    }
    const auto keep_going = [&rows] {
      for (const Row& row : rows) {
        std::lock_guard job_lock(row.job->mutex);
        if (!row.job->cancelled) return true;
      }
      return false;
    };

    std::vector<tim::Tensor<float>> images;
    std::string error;
    try {
      images = runner_(call, keep_going);
      if (images.size() != rows.size()) error = "internal error: the sampler call returned "
                                                                            "the wrong number of images";
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "internal error";
    }
    {  // counted before the jobs hear of it, so /health after an answer includes its images
      std::lock_guard lock(mutex_);
      ++calls_;
      if (error.empty()) rows_sampled_ += static_cast<std::int64_t>(rows.size());
    }
    for (std::size_t b = 0; b < rows.size(); ++b) {
      Job& job = *rows[b].job;
      {
        std::lock_guard job_lock(job.mutex);
        if (!error.empty()) {
          job.failed = true;
          job.error = error;
        } else {
          job.images[static_cast<std::size_t>(rows[b].position)] = std::move(images[b]);
          ++job.rows_done;
        }
      }
      job.changed.notify_all();
    }
    {
      std::lock_guard lock(mutex_);
      running_rows_ = 0;
      // A failed job's other rows are not worth sampling.
      waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(),
                                    [](const Row& row) {
                                      std::lock_guard job_lock(row.job->mutex);
                                      return row.job->failed;
                                    }),
                     waiting_.end());
    }
  }
}

}  // namespace tim_cli::serve
