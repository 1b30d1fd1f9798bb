// Parsers of the outside input of `tim sample` at scale (docs/scale.md): the --shard spec, the
// launcher's rank variables, a --labels-file and a --size. Header-only and free of the program's
// other parts, so fuzz/fuzz_cli_inputs.cpp drives them as they are. Each throws tim::Error naming
// the option (or variable), the text and what was expected.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "tim/core/error.hpp"

namespace tim_cli {

//! A non-negative decimal integer that fills `text` exactly (no sign, no spaces), or nothing.
inline bool parse_count(std::string_view text, std::uint64_t& value) {
  if (text.empty() || text.size() > 19) return false;
  for (char ch : text)
    if (ch < '0' || ch > '9') return false;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size();
}

//! Which part of a run this process makes: shard `index` of `count` (0 <= index < count).
struct Shard {
  std::uint64_t index = 0, count = 1;
  std::string source;  // "--shard", "OpenMPI (OMPI_COMM_WORLD_RANK/SIZE)", ...; empty: not sharded
  //! Positions [begin, end) of a run of `total` samples: contiguous, sizes differing by at most 1.
  std::uint64_t begin(std::uint64_t total) const { return total / count * index + std::min(index, total % count); }
  std::uint64_t end(std::uint64_t total) const { return begin(total) + total / count + (index < total % count); }
};

//! "K/N" with 0 <= K < N (K counted from 0, as the launchers' ranks are).
inline Shard parse_shard(std::string_view text, const char* what = "--shard") {
  const auto slash = text.find('/');
  Shard shard;
  const bool ok = slash != std::string_view::npos && parse_count(text.substr(0, slash), shard.index) &&
                  parse_count(text.substr(slash + 1), shard.count);
  tim::check(ok, what, " '", std::string(text), "': expected K/N, two non-negative integers (shard K of N, counted "
             "from 0), e.g. 0/4");
  tim::check(shard.count >= 1 && shard.index < shard.count, what, " '", std::string(text),
             "': the shard K must be in [0, N) and N >= 1, got K = ", shard.index, ", N = ", shard.count);
  shard.source = what;
  return shard;
}

//! The labels of a --labels-file: integers separated by white space or commas; '#' starts a
//! comment that runs to the end of the line. At least one label; values are checked against the
//! model's classes by the caller.
inline std::vector<std::int64_t> parse_labels_file(std::string_view text, const std::string& path) {
  std::vector<std::int64_t> labels;
  std::size_t line = 1, i = 0;
  while (i < text.size()) {
    const char ch = text[i];
    if (ch == '\n') {
      ++line;
      ++i;
    } else if (ch == ' ' || ch == '\t' || ch == '\r' || ch == ',') {
      ++i;
    } else if (ch == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
    } else {
      std::size_t end = i;
      while (end < text.size() && text[end] != ' ' && text[end] != '\t' && text[end] != '\r' && text[end] != '\n' &&
             text[end] != ',' && text[end] != '#')
        ++end;
      const std::string_view word = text.substr(i, end - i);
      std::int64_t value = 0;
      const auto [stop, error] = std::from_chars(word.data(), word.data() + word.size(), value);
      tim::check(error == std::errc() && stop == word.data() + word.size(), "--labels-file '", path, "': line ",
                 line, ": '", std::string(word.substr(0, 40)), "' is not an integer class label (expected labels "
                 "separated by spaces, commas or new lines; # starts a comment)");
      labels.push_back(value);
      i = end;
    }
  }
  tim::check(!labels.empty(), "--labels-file '", path, "': no labels in it (expected one class label per sample)");
  return labels;
}

//! An image size "WxH" (or "W*H", or one number N for N x N), in pixels, each 1 .. 65536.
struct ImageSize {
  std::int64_t width = 0, height = 0;
};

inline ImageSize parse_size(std::string_view text, const char* what = "--size") {
  const auto cross = text.find_first_of("xX*");
  std::uint64_t w = 0, h = 0;
  const bool ok = cross == std::string_view::npos
                      ? parse_count(text, w) && (h = w, true)
                      : parse_count(text.substr(0, cross), w) && parse_count(text.substr(cross + 1), h);
  tim::check(ok, what, " '", std::string(text), "': expected WIDTHxHEIGHT in pixels, e.g. 256x256 (or one number)");
  tim::check(w >= 1 && h >= 1 && w <= 65536 && h <= 65536, what, " '", std::string(text),
             "': width and height must be in [1, 65536] pixels, got ", w, " x ", h);
  return {static_cast<std::int64_t>(w), static_cast<std::int64_t>(h)};
}

//! The shard the launcher gives this process, from its environment (`get` returns nullptr for an
//! unset variable): OpenMPI's mpirun (OMPI_COMM_WORLD_RANK/SIZE), Slurm's srun (SLURM_PROCID,
//! SLURM_NTASKS), torchrun and most others (RANK, WORLD_SIZE). The first complete pair wins; a
//! set but malformed value is an error naming the variable. Also the local rank (the process's
//! index on its node: OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, LOCAL_RANK), or 0.
struct LauncherRank {
  Shard shard;                // count 1, source empty: no launcher
  std::uint64_t local_rank = 0;
};

template <class Getenv>
LauncherRank launcher_rank(Getenv get) {
  struct Names {
    const char *rank, *size, *local, *source;
  };
  constexpr Names launchers[] = {
      {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OpenMPI"},
      {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "Slurm"},
      {"RANK", "WORLD_SIZE", "LOCAL_RANK", "RANK/WORLD_SIZE"},
  };
  const auto number = [&](const char* name, std::uint64_t& value) {
    const char* text = get(name);
    if (text == nullptr) return false;
    tim::check(parse_count(text, value), "the environment variable ", name, " is '", std::string(text).substr(0, 40),
               "'; expected a non-negative integer (the launcher's rank or size)");
    return true;
  };
  LauncherRank found;
  for (const auto& l : launchers) {
    std::uint64_t rank = 0, size = 0;
    const bool has_rank = number(l.rank, rank), has_size = number(l.size, size);
    if (!has_rank || !has_size) continue;
    const std::string source = std::string(l.source) + " (" + l.rank + " " + std::to_string(rank) + ", " + l.size +
                               " " + std::to_string(size) + ")";
    tim::check(size >= 1 && rank < size, "the launcher's environment: ", source, ": the rank must be in [0, size)");
    found.shard = {rank, size, source};
    number(l.local, found.local_rank);
    return found;
  }
  return found;
}

}  // namespace tim_cli
