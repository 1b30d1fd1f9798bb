// Files written whole or not at all: to a temporary file beside the target (a name unique to the
// process and call), flushed to disk, renamed over the target, then the folder flushed. A crash or
// an error leaves the old file (or none) and never a half-written one; the temporary is removed on
// failure. POSIX (open/fsync/rename); free of Eigen and of any backend.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "tim/core/error.hpp"
#include "tim/io/safetensors.hpp"

namespace tim::io {

namespace detail {

//! fsync of a file, or of a folder (where a file system refuses it, only opening must succeed).
inline void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    fail("cannot open '", path, "' to flush it: ", std::strerror(error));
  }
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  check(rc == 0 || directory, "cannot flush '", path, "' to disk: ", std::strerror(error));
}

}  // namespace detail

//! Calls `write(temporary)` to write the whole file under a temporary name in `path`'s folder
//! (PATH.tmp-PID-N), then flushes it and renames it over `path`. Throws tim::Error naming the path
//! and the OS error; `path` is then unchanged.
template <class Write>
void write_file_atomically(const std::string& path, Write&& write) {
  static std::atomic<unsigned> counter{0};
  const std::string temporary = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  const auto remove_temporary = [&] {
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
  };
  try {
    write(temporary);
    detail::fsync_path(temporary, false);
  } catch (...) {
    remove_temporary();
    throw;
  }
  std::error_code renamed;
  std::filesystem::rename(temporary, path, renamed);
  if (renamed) {
    remove_temporary();
    fail("cannot replace '", path, "': ", renamed.message());
  }
  const auto parent = std::filesystem::path(path).parent_path();
  detail::fsync_path(parent.empty() ? std::string(".") : parent.string(), true);
}

//! A safetensors file written atomically (write_file_atomically).
inline void write_safetensors_atomically(const SafetensorsWriter& writer, const std::string& path) {
  write_file_atomically(path, [&](const std::string& temporary) { writer.write(temporary); });
}

//! A text file written atomically (write_file_atomically).
inline void write_text_atomically(const std::string& path, std::string_view text) {
  write_file_atomically(path, [&](const std::string& temporary) {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.close();
    check(!out.fail(), "cannot write '", temporary, "'");
  });
}

}  // namespace tim::io
