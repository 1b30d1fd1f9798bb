// libFuzzer target for the parsers of `tim sample` at scale (apps/cli/parse.hpp): the first byte
// picks the parser, the rest is its input: 0 a --labels-file's text, 1 a --shard spec, 2 a
// --size, 3 a launcher environment ("NAME=value" lines). Each must return a result that keeps
// the documented invariants or throw tim::Error; a crash, a sanitizer report, another exception
// type or a broken invariant is a bug. Seeds: fuzz/corpus/cli_inputs/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

#include "cli/parse.hpp"

namespace {

void run(std::uint8_t kind, std::string_view text) {
  switch (kind % 4) {
    case 0: {
      const auto labels = tim_cli::parse_labels_file(text, "fuzz");
      if (labels.empty()) std::abort();
      break;
    }
    case 1: {
      const auto shard = tim_cli::parse_shard(text);
      if (shard.count < 1 || shard.index >= shard.count) std::abort();
      // The shards of any run are contiguous, disjoint and cover it.
      for (std::uint64_t total : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{7}, std::uint64_t{50000}}) {
        if (shard.begin(total) > shard.end(total) || shard.end(total) > total) std::abort();
        if (shard.count <= 64) {
          std::uint64_t next = 0;
          for (std::uint64_t k = 0; k < shard.count; ++k) {
            const tim_cli::Shard other{k, shard.count, ""};
            if (other.begin(total) != next) std::abort();
            next = other.end(total);
          }
          if (next != total) std::abort();
        }
      }
      break;
    }
    case 2: {
      const auto size = tim_cli::parse_size(text);
      if (size.width < 1 || size.height < 1 || size.width > 65536 || size.height > 65536) std::abort();
      break;
    }
    default: {
      std::map<std::string, std::string> environment;
      std::size_t start = 0;
      while (start < text.size()) {
        const std::size_t end = std::min(text.find('\n', start), text.size());
        const std::string_view line = text.substr(start, end - start);
        const std::size_t equals = line.find('=');
        if (equals != std::string_view::npos)
          environment[std::string(line.substr(0, equals))] = std::string(line.substr(equals + 1));
        start = end + 1;
      }
      const auto rank = tim_cli::launcher_rank([&](const char* name) -> const char* {
        const auto found = environment.find(name);
        return found == environment.end() ? nullptr : found->second.c_str();
      });
      if (rank.shard.count < 1 || rank.shard.index >= rank.shard.count) std::abort();
      if (rank.shard.count > 1 && rank.shard.source.empty()) std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  try {
    run(data[0], std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  } catch (const tim::Error&) {
    // a clear error is the expected outcome for bad input
  }
  return 0;
}
