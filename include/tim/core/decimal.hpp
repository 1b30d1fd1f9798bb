// The shortest decimal spelling of a double that reads back to the same double: for metadata,
// PNG parameters and messages, where "0.6" must not become "0.59999999999999998".
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace tim {

//! The `%g` spelling of `value` with the fewest significant digits (1 to 17) that std::strtod
//! reads back exactly: 0.6 -> "0.6", 2.5 -> "2.5", 1.0 / 3 -> "0.3333333333333333", 100 ->
//! "1e+02", 1e-05 -> "1e-05"; infinities and NaN as printf spells them ("inf", "-inf", "nan").
//! Example: `writer.set_metadata("cfg_scale", tim::shortest_decimal(2.5));`
inline std::string shortest_decimal(double value) {
  char buffer[32];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buffer, sizeof buffer, "%.*g", digits, value);
    if (!std::isfinite(value) || std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

}  // namespace tim
