// tim::Error, the one exception type the library throws, and the check helper that builds it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace tim {

//! Every failure the library reports: what went wrong, on which tensor or argument, and what
//! was expected. Derives from std::runtime_error so `what()` is the whole message.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}
}  // namespace detail

//! Throws tim::Error with the concatenated message parts when `condition` is false.
//! Example: `tim::check(x.rank() == 4, "input 'x': expected rank 4, got ", x.rank());`
template <class... Parts>
inline void check(bool condition, Parts&&... parts) {
  if (!condition) throw Error(detail::concat(std::forward<Parts>(parts)...));
}

//! Throws tim::Error unconditionally with the concatenated message parts.
template <class... Parts>
[[noreturn]] inline void fail(Parts&&... parts) {
  throw Error(detail::concat(std::forward<Parts>(parts)...));
}

}  // namespace tim
