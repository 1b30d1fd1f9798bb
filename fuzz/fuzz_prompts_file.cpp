// libFuzzer target for the prompts-file reader (tim/text/prompts_file.hpp): any input must either
// give prompts or throw tim::Error; every prompt it gives is non-empty valid UTF-8 without NUL or
// newline. Seeds: fuzz/corpus/prompts_file/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tim/text/prompts_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto prompts = tim::text::parse_prompts_file(std::string_view(reinterpret_cast<const char*>(data), size));
    if (prompts.empty()) std::abort();
    for (const auto& p : prompts)
      if (p.empty() || p.find('\n') != std::string::npos || p.find('\0') != std::string::npos ||
          tim::text::first_invalid_utf8(p) != std::string_view::npos)
        std::abort();
  } catch (const tim::Error&) {
  }
  return 0;
}
