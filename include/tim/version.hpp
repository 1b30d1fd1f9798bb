// The library version, defined once; CMake reads these three lines.
#pragma once

#define TIM_VERSION_MAJOR 0
#define TIM_VERSION_MINOR 1
#define TIM_VERSION_PATCH 0

namespace tim {
//! The version as "MAJOR.MINOR.PATCH".
inline constexpr const char* version_string = "0.1.0";
}  // namespace tim
