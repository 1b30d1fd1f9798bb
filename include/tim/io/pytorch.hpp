// PyTorch checkpoints (`torch.save` output: pickles, or zip archives of pickles) cannot be read
// safely (unpickling runs arbitrary code), so tim refuses them with an error that says how to
// convert them. Free of Eigen and of any backend.
#pragma once

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <string>

#include "tim/core/error.hpp"

namespace tim::io {

//! Throws the error for a PyTorch checkpoint at `path`: what it is, why tim does not read it,
//! and the converter to run.
[[noreturn]] inline void fail_pytorch_checkpoint(const std::string& path) {
  fail(path, ": this is a PyTorch pickle checkpoint, which tim does not read (unpickling runs arbitrary code); "
             "convert it to .safetensors with tools/convert_t2i_checkpoint.py (see docs/t2i.md)");
}

//! Whether `path` ends in an extension PyTorch checkpoints use: .bin, .pt, .pth or .ckpt (any case).
inline bool has_pytorch_extension(const std::string& path) {
  std::string extension = std::filesystem::path(path).extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return extension == ".bin" || extension == ".pt" || extension == ".pth" || extension == ".ckpt";
}

//! Whether the file at `path` starts like torch.save output: a zip archive ("PK\3\4") or a pickle
//! of protocol 2 to 5 (0x80, then the protocol). False when it cannot be read or is shorter than
//! 4 bytes. A valid safetensors file may start with the same bytes (its header length), so ask
//! this only once reading the file as safetensors has failed.
inline bool has_pytorch_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char head[4] = {};
  if (!in.read(reinterpret_cast<char*>(head), sizeof head)) return false;
  const bool zip = head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4;
  const bool pickle = head[0] == 0x80 && head[1] >= 2 && head[1] <= 5;
  return zip || pickle;
}

//! Throws the PyTorch error (fail_pytorch_checkpoint) when `path` has a PyTorch extension,
//! whether or not the file exists: call it before opening a checkpoint.
//! Example: `tim::io::check_not_pytorch_checkpoint(path); auto model = tim::load_c2i<float>(path);`
inline void check_not_pytorch_checkpoint(const std::string& path) {
  if (has_pytorch_extension(path)) fail_pytorch_checkpoint(path);
}

}  // namespace tim::io
