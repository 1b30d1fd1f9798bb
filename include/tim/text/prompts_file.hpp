// The prompts file of `tim encode --prompts-file` and `tim sample --prompts-file`: UTF-8 text, one
// prompt per line (LF or CRLF line ends; the newline after the last line is optional). A blank
// line is an error rather than a silent empty prompt (give `--prompt ""` for the unconditional
// one), as is invalid UTF-8 or a NUL byte; each error names the line.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/text/utf8.hpp"

namespace tim::text {

inline std::vector<std::string> parse_prompts_file(std::string_view text, const std::string& label = "prompts file") {
  std::vector<std::string> prompts;
  std::size_t start = 0;
  std::int64_t line = 0;
  if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") start = 3;  // a UTF-8 byte-order mark
  while (start < text.size()) {
    ++line;
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view prompt = text.substr(start, end - start);
    if (!prompt.empty() && prompt.back() == '\r') prompt.remove_suffix(1);
    check(!prompt.empty(), label, ": line ", line, " is empty (one prompt per line; for the empty prompt use --prompt \"\")");
    check(prompt.find('\0') == std::string_view::npos, label, ": line ", line, " contains a NUL byte");
    const auto bad = first_invalid_utf8(prompt);
    check(bad == std::string_view::npos, label, ": line ", line, " is not valid UTF-8 (invalid byte sequence at byte ",
          bad, " of the line)");
    prompts.emplace_back(prompt);
    start = end + 1;
  }
  check(!prompts.empty(), label, ": no prompts (expected one prompt per line)");
  return prompts;
}

}  // namespace tim::text
