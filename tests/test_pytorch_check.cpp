// PyTorch checkpoints are recognised (tim/io/pytorch.hpp): by extension, whatever the file, and by
// their first bytes (zip archive or pickle protocol 2..5), with the error that names the converter.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "tim/io/pytorch.hpp"

namespace {

namespace fs = std::filesystem;

struct TempFolder {
  fs::path path = fs::temp_directory_path() / ("tim_pytorch_check_" + std::to_string(::getpid()));
  TempFolder() { fs::create_directories(path); }
  ~TempFolder() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string file = (path / name).string();
    std::ofstream(file, std::ios::binary) << bytes;
    return file;
  }
};

}  // namespace

TEST_CASE("PyTorch checkpoints: extensions, first bytes, and the error") {
  for (const char* name : {"model.bin", "model.pt", "model.PTH", "dir.d/last.ckpt", "x.Bin"}) {
    CAPTURE(name);
    CHECK(tim::io::has_pytorch_extension(name));
    std::string message;
    try {
      tim::io::check_not_pytorch_checkpoint(name);
    } catch (const tim::Error& e) {
      message = e.what();
    }
    CHECK(message.rfind(std::string(name) + ": this is a PyTorch pickle checkpoint", 0) == 0);
  }
  for (const char* name : {"model.safetensors", "model.bin.safetensors", "bin", "model.pth.json", "model"}) {
    CAPTURE(name);
    CHECK(!tim::io::has_pytorch_extension(name));
    CHECK_NOTHROW(tim::io::check_not_pytorch_checkpoint(name));
  }
  CHECK_THROWS_WITH_AS(tim::io::fail_pytorch_checkpoint("m.bin"),
                       doctest::Contains("convert it to .safetensors with tools/convert_t2i_checkpoint.py"),
                       tim::Error);

  const TempFolder folder;
  CHECK(tim::io::has_pytorch_magic(folder.write("zip.safetensors", std::string("PK\x03\x04", 4) + "rest")));
  CHECK(tim::io::has_pytorch_magic(folder.write("p2", std::string("\x80\x02\x7d\x71", 4))));
  CHECK(tim::io::has_pytorch_magic(folder.write("p5", std::string("\x80\x05xyz", 5))));
  CHECK(!tim::io::has_pytorch_magic(folder.write("p1", std::string("\x80\x01xyz", 5))));  // not a protocol of torch.save
  CHECK(!tim::io::has_pytorch_magic(folder.write("p6", std::string("\x80\x06xyz", 5))));
  CHECK(!tim::io::has_pytorch_magic(folder.write("pk", std::string("PK\x05\x06", 4))));  // an empty zip's end record
  CHECK(!tim::io::has_pytorch_magic(folder.write("short", std::string("PK\x03", 3))));
  CHECK(!tim::io::has_pytorch_magic(folder.write("json", "{\"a\": 1}")));
  CHECK(!tim::io::has_pytorch_magic((folder.path / "missing").string()));
}
