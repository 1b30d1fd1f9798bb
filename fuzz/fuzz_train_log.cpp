// libFuzzer target for the reader of a training log on resume (tim/train/run_log.hpp,
// log_lines_through): any input keeps a subset of its lines or throws tim::Error. Seeds:
// fuzz/corpus/train_log/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tim/train/run_log.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const std::string kept = tim::train::log_lines_through(text, 100, "<fuzz input>");
    if (kept.size() > text.size() + text.size() / 2 + 1) std::abort();  // at most a newline per line added
  } catch (const tim::Error&) {
  }
  return 0;
}
