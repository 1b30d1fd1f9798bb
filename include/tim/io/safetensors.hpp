// Safetensors reading (memory-mapped, fully validated before any tensor is touched) and writing.
// A checkpoint's weights become zero-copy tensor views into the mapping when dtype and alignment
// allow; otherwise they are converted into owning tensors. Format and rules: docs/safetensors.md.
// Free of Eigen and of any backend: host tensors (Tensor<T, cpu>) need only core/ (tim::headers).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "tim/core/dtype.hpp"
#include "tim/core/error.hpp"
#include "tim/core/shape.hpp"
#include "tim/core/tensor.hpp"

namespace tim::io {

//! Largest JSON header accepted (the limit the reference implementation uses too).
inline constexpr std::uint64_t max_safetensors_header_bytes = 100'000'000;

//! Most dimensions a stored tensor may have.
inline constexpr std::size_t max_safetensors_rank = 64;

//! One tensor of a safetensors file. `begin`/`end` are byte offsets relative to the data
//! section (the bytes after the 8-byte length and the JSON header); end - begin is exactly
//! shape.numel() * dtype_size(dtype).
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  std::size_t begin = 0;
  std::size_t end = 0;
};

namespace detail {

//! The calling thread's errno as readable text ("No such file or directory").
inline std::string os_error_text(int error) { return std::generic_category().message(error); }

//! A read-only private mapping of a whole file, unmapped when the last owner goes away.
class FileMapping {
 public:
  FileMapping(void* address, std::size_t size) : address_(address), size_(size) {}
  FileMapping(const FileMapping&) = delete;
  FileMapping& operator=(const FileMapping&) = delete;
  ~FileMapping() { ::munmap(address_, size_); }
  const std::byte* data() const { return static_cast<const std::byte*>(address_); }
  std::size_t size() const { return size_; }

 private:
  void* address_;
  std::size_t size_;
};

inline bool is_floating(DType d) {
  return d == DType::F64 || d == DType::F32 || d == DType::F16 || d == DType::BF16;
}

inline std::uint64_t read_le_u64(const std::byte* p) {
  std::uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<std::uint64_t>(p[i]);
  return value;
}

inline void write_le_u64(std::uint8_t* p, std::uint64_t value) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(value >> (8 * i));
}

inline const char* json_type_name(const nlohmann::json& j) { return j.type_name(); }

//! What a file that is not safetensors looks like when it is a PyTorch `torch.save` output
//! (such as the released `t2i_model.bin`): "a zip archive" (the format since PyTorch 1.6) or
//! "a pickle" (the legacy format, pickle protocol 2+ opcode 0x80); null otherwise. Only
//! consulted when the header length is impossible, so no valid safetensors file is misread.
inline const char* looks_like_pytorch_checkpoint(const std::byte* p, std::size_t size) {
  if (size >= 4 && p[0] == std::byte{'P'} && p[1] == std::byte{'K'} && p[2] == std::byte{3} && p[3] == std::byte{4})
    return "a zip archive";
  if (size >= 2 && p[0] == std::byte{0x80} && std::to_integer<int>(p[1]) >= 2 && std::to_integer<int>(p[1]) <= 5)
    return "a pickle";
  return nullptr;
}

//! A JSON value for an error message, cut short so a hostile header cannot make it huge.
inline std::string json_excerpt(const nlohmann::json& j) {
  constexpr std::size_t limit = 80;
  std::string text = j.dump();
  if (text.size() > limit) text = text.substr(0, limit) + "...";
  return text;
}

//! SAX handler for the first pass over a header: rejects invalid JSON, nesting deeper than
//! `max_nesting` (a valid header needs 3: file, entry, shape) and a key repeated within one
//! object. On the first problem it records a message and stops the parse.
struct HeaderScan {
  using json = nlohmann::json;
  static constexpr std::size_t max_nesting = 64;

  std::string problem;                         // empty while all is well
  std::size_t depth = 0;                       // containers open
  std::vector<std::set<std::string>> objects;  // keys seen, one set per open object

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(json::number_integer_t) { return true; }
  bool number_unsigned(json::number_unsigned_t) { return true; }
  bool number_float(json::number_float_t, const json::string_t&) { return true; }
  bool string(json::string_t&) { return true; }
  bool binary(json::binary_t&) { return true; }
  bool start_object(std::size_t) {
    objects.emplace_back();
    return open();
  }
  bool end_object() {
    objects.pop_back();
    --depth;
    return true;
  }
  bool start_array(std::size_t) { return open(); }
  bool end_array() {
    --depth;
    return true;
  }
  bool key(json::string_t& name) {
    if (objects.back().insert(name).second) return true;
    problem = depth == 1 ? "duplicate tensor name '" + name + "'"
                         : "duplicate key '" + name + "' inside a header entry";
    return false;
  }
  bool parse_error(std::size_t, const std::string&, const json::exception& error) {
    problem = std::string("header is not valid JSON: ") + error.what();
    return false;
  }

 private:
  bool open() {
    if (++depth <= max_nesting) return true;
    problem = "header nests deeper than " + std::to_string(max_nesting) + " levels";
    return false;
  }
};

}  // namespace detail

//! A parsed, validated safetensors file: its metadata, its tensors' descriptions and their
//! bytes, from a read-only memory mapping (open) or an owned buffer (from_bytes).
//!
//! Every structural problem is found on open, so later calls fail only on user errors (a
//! missing name, an impossible conversion, a shape mismatch). Copies are cheap and share the
//! bytes; tensors returned by load() keep the bytes alive on their own.
//! Example:
//!   auto file = tim::io::SafetensorsFile::open("model.safetensors");
//!   auto w = file.load<float>("blocks.0.attn.qkv.weight", {3 * 1152, 1152});
class SafetensorsFile {
 public:
  //! Memory-maps `path` read-only and validates it. Throws tim::Error naming the path and the
  //! OS error when the file cannot be opened or mapped, or naming the problem when the file is
  //! empty or malformed. The mapping stays alive while this object or any view loaded from it
  //! exists. Views of a mapped file are read-only memory: clone() a tensor before writing to it.
  static SafetensorsFile open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int error = errno;
      fail("cannot open safetensors file '", path, "': ", detail::os_error_text(error));
    }
    struct stat status {};
    if (::fstat(fd, &status) != 0) {
      const int error = errno;
      ::close(fd);
      fail("cannot stat safetensors file '", path, "': ", detail::os_error_text(error));
    }
    if (!S_ISREG(status.st_mode)) {
      ::close(fd);
      fail("safetensors file '", path, "' is not a regular file");
    }
    if (status.st_size == 0) {
      ::close(fd);
      fail("safetensors file '", path, "' is empty (0 bytes)");
    }
    const auto size = static_cast<std::size_t>(status.st_size);
    void* address = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int map_error = errno;
    ::close(fd);  // the mapping keeps its own reference to the file
    if (address == MAP_FAILED)
      fail("cannot memory-map safetensors file '", path, "': ", detail::os_error_text(map_error));
    auto mapping = std::make_shared<const detail::FileMapping>(address, size);
    const std::byte* base = mapping->data();
    return SafetensorsFile(std::move(mapping), base, size, path);
  }

  //! Parses and validates an in-memory safetensors image. `label` stands for the path in
  //! error messages and path(). Views loaded from it share ownership of the buffer.
  static SafetensorsFile from_bytes(std::vector<std::uint8_t> bytes, std::string label = "<memory>") {
    auto buffer = std::make_shared<const std::vector<std::uint8_t>>(std::move(bytes));
    const auto* base = reinterpret_cast<const std::byte*>(buffer->data());
    const std::size_t size = buffer->size();
    return SafetensorsFile(std::move(buffer), base, size, std::move(label));
  }

  //! The `__metadata__` string-to-string map (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  //! Every tensor, in the order of their bytes in the data section.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  //! Whether a tensor of that name exists.
  bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }
  //! The description of tensor `name`; throws tim::Error when there is none.
  const TensorInfo& info(std::string_view name) const {
    const auto found = index_.find(name);
    if (found == index_.end()) fail("tensor '", name, "' not found in ", path_);
    return tensors_[found->second];
  }
  //! The path given to open(), or the label given to from_bytes().
  const std::string& path() const { return path_; }

  //! The raw little-endian bytes of tensor `name` (end - begin of them; no alignment promised).
  std::span<const std::byte> bytes(std::string_view name) const {
    const TensorInfo& t = info(name);
    return {data_ + t.begin, t.end - t.begin};
  }

  //! Tensor `name` as a Tensor<T, cpu>. When the stored dtype is dtype_of<T>() and the bytes
  //! are aligned for T, the result is a zero-copy view that keeps the file's bytes alive;
  //! otherwise it is an owning tensor converted element by element. Floating dtypes convert to
  //! each other and integer dtypes (BOOL included) to each other; loading a floating tensor as
  //! an integer type or the reverse throws tim::Error naming the tensor and both dtypes.
  //! Example: `auto labels = file.load<std::int64_t>("labels");`
  template <class T>
  Tensor<T, cpu> load(std::string_view name) const {
    constexpr DType wanted = dtype_of<T>();
    const TensorInfo& t = info(name);
    const std::byte* source = data_ + t.begin;
    if (t.dtype == wanted && reinterpret_cast<std::uintptr_t>(source) % alignof(T) == 0) {
      // Tensor hands out T*; for a mapped file the memory is read-only (documented above).
      auto* typed = const_cast<T*>(reinterpret_cast<const T*>(source));
      return Tensor<T, cpu>::view(typed, t.shape, storage_);
    }
    check(detail::is_floating(t.dtype) == detail::is_floating(wanted), "tensor '", name, "' in ",
          path_, ": cannot load stored dtype ", dtype_name(t.dtype), " as ", dtype_name(wanted),
          " (floating and integer types do not convert to each other)");
    auto out = Tensor<T, cpu>::empty(t.shape);
    convert_elements(source, t.dtype, out.data(), static_cast<std::size_t>(t.shape.numel()));
    return out;
  }

  //! As load(name), after checking that the stored shape is `expected`; a mismatch throws
  //! tim::Error "tensor 'NAME': expected shape [..], got [..]".
  template <class T>
  Tensor<T, cpu> load(std::string_view name, const Shape& expected) const {
    const TensorInfo& t = info(name);
    check(t.shape == expected, "tensor '", name, "': expected shape ", expected, ", got ", t.shape,
          " (in ", path_, ")");
    return load<T>(name);
  }

 private:
  SafetensorsFile(std::shared_ptr<const void> storage, const std::byte* base, std::size_t size,
                  std::string path)
      : storage_(std::move(storage)), path_(std::move(path)) {
    parse(base, size);
  }

  template <class... Parts>
  [[noreturn]] void fail_format(Parts&&... parts) const {
    fail("malformed safetensors file '", path_, "': ", std::forward<Parts>(parts)...);
  }

  // Reads the 8-byte length and the JSON header, validates every entry and the layout of the
  // data section. On success data_ points at the data section and tensors_ is sorted by offset.
  void parse(const std::byte* base, std::size_t size) {
    if (size < 8)
      fail_format("file is ", size, " bytes long, too short for the 8-byte header length");
    const std::uint64_t header_length = detail::read_le_u64(base);
    if (header_length > size - 8 && detail::looks_like_pytorch_checkpoint(base, size))
      fail("'", path_, "' is a PyTorch checkpoint (", detail::looks_like_pytorch_checkpoint(base, size),
           "), not safetensors: convert it first, e.g. `python tools/convert_t2i_checkpoint.py ", path_,
           " model.safetensors` (see docs/t2i.md)");
    if (header_length > max_safetensors_header_bytes)
      fail_format("header length ", header_length, " exceeds the limit of ",
                  max_safetensors_header_bytes, " bytes");
    if (header_length > size - 8)
      fail_format("header length ", header_length, " is larger than the ", size - 8,
                  " bytes that follow the length field");
    const auto* header_begin = reinterpret_cast<const char*>(base + 8);
    const auto* header_end = header_begin + header_length;
    data_ = base + 8 + header_length;
    const std::size_t data_size = size - 8 - static_cast<std::size_t>(header_length);

    const nlohmann::json header = parse_header(header_begin, header_end);
    if (!header.is_object())
      fail_format("header is not a JSON object (it is ", detail::json_type_name(header), ")");

    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        read_metadata(entry);
        continue;
      }
      tensors_.push_back(read_entry(name, entry, data_size));
    }
    check_layout(data_size);
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  }

  // Two passes over the header text. The first (detail::HeaderScan, a SAX handler) checks the
  // syntax, the nesting depth and duplicate keys, which nlohmann's DOM parser would silently
  // collapse to the last one. (Its callback-parser variant could see them too, but it rescans
  // the parent object at every closing brace: quadratic in the number of tensors.) The second
  // builds the DOM, now known to be well formed and shallow.
  nlohmann::json parse_header(const char* first, const char* last) const {
    detail::HeaderScan scan;
    const bool well_formed = nlohmann::json::sax_parse(first, last, &scan);
    if (!scan.problem.empty()) fail_format(scan.problem);
    if (!well_formed) fail_format("header is not valid JSON");
    try {
      return nlohmann::json::parse(first, last);
    } catch (const nlohmann::json::exception& e) {
      fail_format("header is not valid JSON: ", e.what());
    }
  }

  void read_metadata(const nlohmann::json& entry) {
    if (!entry.is_object())
      fail_format("__metadata__ must be an object of strings, got ", detail::json_type_name(entry));
    for (const auto& [key, value] : entry.items()) {
      if (!value.is_string())
        fail_format("__metadata__ value of '", key, "' must be a string, got ",
                    detail::json_type_name(value));
      metadata_.emplace(key, value.get<std::string>());
    }
  }

  TensorInfo read_entry(const std::string& name, const nlohmann::json& entry,
                        std::size_t data_size) const {
    if (!entry.is_object())
      fail_format("tensor '", name, "': entry must be an object, got ", detail::json_type_name(entry));
    const auto field = [&](const char* key) -> const nlohmann::json& {
      const auto found = entry.find(key);
      if (found == entry.end()) fail_format("tensor '", name, "': missing \"", key, "\"");
      return *found;
    };

    TensorInfo info;
    info.name = name;
    const nlohmann::json& dtype = field("dtype");
    if (!dtype.is_string())
      fail_format("tensor '", name, "': \"dtype\" must be a string, got ", detail::json_type_name(dtype));
    try {
      info.dtype = parse_dtype(dtype.get_ref<const std::string&>());
    } catch (const Error& e) {
      fail_format("tensor '", name, "': ", e.what());
    }

    const nlohmann::json& shape = field("shape");
    if (!shape.is_array())
      fail_format("tensor '", name, "': \"shape\" must be an array, got ", detail::json_type_name(shape));
    // No framework makes tensors of more than 64 dimensions (NumPy's limit); refusing longer
    // shapes keeps a hostile header from making Shape's per-extent checks quadratic.
    if (shape.size() > max_safetensors_rank)
      fail_format("tensor '", name, "': shape has ", shape.size(), " dimensions, more than the ",
                  max_safetensors_rank, " supported");
    std::vector<std::int64_t> extents;
    std::int64_t numel = 1;  // running product in Shape's order, so Shape's own check passes too
    for (const auto& e : shape) {
      if (!e.is_number_integer())
        fail_format("tensor '", name, "': shape entry ", detail::json_excerpt(e), " is not an integer");
      if (e.is_number_unsigned()) {
        if (e.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
          fail_format("tensor '", name, "': shape entry ", detail::json_excerpt(e), " is too large");
      } else if (e.get<std::int64_t>() < 0) {
        fail_format("tensor '", name, "': shape entry ", detail::json_excerpt(e), " is negative");
      }
      const auto extent = e.get<std::int64_t>();
      if (extent != 0 && numel > std::numeric_limits<std::int64_t>::max() / extent)
        fail_format("tensor '", name, "': shape ", detail::json_excerpt(shape),
                    " has more elements than a 64-bit count holds");
      numel *= extent;
      extents.push_back(extent);
    }
    info.shape = Shape(std::move(extents));

    const nlohmann::json& offsets = field("data_offsets");
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      fail_format("tensor '", name, "': \"data_offsets\" must be two non-negative integers, got ",
                  detail::json_excerpt(offsets));
    const auto begin = offsets[0].get<std::uint64_t>();
    const auto end = offsets[1].get<std::uint64_t>();
    if (begin > end)
      fail_format("tensor '", name, "': data_offsets [", begin, ", ", end, "] has begin > end");
    if (end > data_size)
      fail_format("tensor '", name, "': data_offsets [", begin, ", ", end,
                  "] extend past the end of the data section (", data_size, " bytes)");

    const std::uint64_t element_size = dtype_size(info.dtype);
    const auto count = static_cast<std::uint64_t>(numel);
    if (count > std::numeric_limits<std::uint64_t>::max() / element_size)
      fail_format("tensor '", name, "': byte size of shape ", info.shape, " overflows 64 bits");
    if (count * element_size != end - begin)
      fail_format("tensor '", name, "': shape ", info.shape, " of ", dtype_name(info.dtype), " needs ",
                  count * element_size, " bytes but data_offsets [", begin, ", ", end, "] span ",
                  end - begin);
    info.begin = static_cast<std::size_t>(begin);
    info.end = static_cast<std::size_t>(end);
    return info;
  }

  // The data section must be exactly the tensors' bytes, back to back from offset 0: no gap
  // (unaccounted bytes), no overlap (two tensors sharing bytes), nothing after the last one.
  void check_layout(std::size_t data_size) {
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    std::size_t expected = 0;
    const TensorInfo* previous = nullptr;
    for (const TensorInfo& t : tensors_) {
      if (t.begin < expected)
        fail_format("tensor '", t.name, "' (bytes [", t.begin, ", ", t.end, ")) overlaps tensor '",
                    previous->name, "' (bytes [", previous->begin, ", ", previous->end, "))");
      if (t.begin > expected)
        fail_format("gap in the data section: bytes [", expected, ", ", t.begin,
                    ") belong to no tensor (next is '", t.name, "')");
      expected = t.end;
      previous = &t;
    }
    if (expected != data_size)
      fail_format("trailing bytes: the tensors end at data offset ", expected,
                  " but the data section is ", data_size, " bytes long");
  }

  std::shared_ptr<const void> storage_;  // the mapping or buffer; shared with loaded views
  const std::byte* data_ = nullptr;      // start of the data section inside storage_
  std::string path_;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;  // name -> position in tensors_
};

//! Builds a safetensors file: tensors are copied in on add() and laid out in insertion order,
//! back to back from data offset 0, after a JSON header padded with spaces so the data section
//! starts at a multiple of 8 bytes (8-byte types stay aligned for zero-copy loading).
//! Example:
//!   tim::io::SafetensorsWriter writer;
//!   writer.add("x", x);                       // a Tensor<float, cpu>
//!   writer.set_metadata("format", "pt");
//!   writer.write("out.safetensors");
class SafetensorsWriter {
 public:
  //! Adds a tensor of `dtype` and `shape` whose shape.numel() * dtype_size(dtype) bytes are
  //! copied from `data` (which may be null only when that count is 0). Throws tim::Error on a
  //! duplicate name or the reserved name "__metadata__".
  void add(std::string name, DType dtype, Shape shape, const void* data) {
    check(name != "__metadata__", "safetensors writer: '__metadata__' is reserved and cannot name a tensor");
    check(!names_.contains(name), "safetensors writer: duplicate tensor name '", name, "'");
    const auto count = static_cast<std::uint64_t>(shape.numel());
    check(count <= std::numeric_limits<std::uint64_t>::max() / dtype_size(dtype),
          "safetensors writer: tensor '", name, "': byte size of shape ", shape, " overflows 64 bits");
    const std::size_t nbytes = static_cast<std::size_t>(count * dtype_size(dtype));
    check(data != nullptr || nbytes == 0, "safetensors writer: tensor '", name, "': data is null");
    Entry entry{name, dtype, std::move(shape), std::vector<std::uint8_t>(nbytes)};
    if (nbytes) std::memcpy(entry.bytes.data(), data, nbytes);
    names_.insert(name);
    entries_.push_back(std::move(entry));
  }

  //! Adds a copy of a CPU tensor under `name`, stored with dtype_of<T>().
  template <class T, class B>
  void add(std::string name, const Tensor<T, B>& tensor) {
    static_assert(std::is_same_v<B, cpu>, "SafetensorsWriter::add: copy the tensor to the CPU first");
    add(std::move(name), dtype_of<T>(), tensor.shape(), tensor.data());
  }

  //! Sets `__metadata__[key] = value` (a later call with the same key replaces the value).
  void set_metadata(std::string key, std::string value) {
    metadata_.insert_or_assign(std::move(key), std::move(value));
  }

  //! The whole file as bytes.
  std::vector<std::uint8_t> to_bytes() const {
    std::vector<std::uint8_t> out = header_bytes();
    for (const Entry& e : entries_) out.insert(out.end(), e.bytes.begin(), e.bytes.end());
    return out;
  }

  //! Writes the file to `path` (created or truncated). Throws tim::Error naming the path and
  //! the OS error on failure.
  void write(const std::string& path) const {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      const int error = errno;
      fail("cannot create safetensors file '", path, "': ", detail::os_error_text(error));
    }
    auto write_all = [&](const std::uint8_t* p, std::size_t n) {
      while (n > 0) {
        const ::ssize_t written = ::write(fd, p, n);
        if (written < 0 && errno == EINTR) continue;
        if (written <= 0) {
          const int error = written < 0 ? errno : EIO;
          ::close(fd);
          fail("cannot write safetensors file '", path, "': ", detail::os_error_text(error));
        }
        p += written;
        n -= static_cast<std::size_t>(written);
      }
    };
    const std::vector<std::uint8_t> header = header_bytes();
    write_all(header.data(), header.size());
    for (const Entry& e : entries_) write_all(e.bytes.data(), e.bytes.size());
    if (::close(fd) != 0) {
      const int error = errno;
      fail("cannot finish writing safetensors file '", path, "': ", detail::os_error_text(error));
    }
  }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    std::vector<std::uint8_t> bytes;
  };

  // The 8-byte length followed by the space-padded JSON header.
  std::vector<std::uint8_t> header_bytes() const {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata_.empty()) {
      nlohmann::ordered_json metadata = nlohmann::ordered_json::object();
      for (const auto& [key, value] : metadata_) metadata[key] = value;
      header["__metadata__"] = std::move(metadata);
    }
    std::uint64_t offset = 0;
    for (const Entry& e : entries_) {
      const std::uint64_t end = offset + e.bytes.size();
      header[e.name] = {{"dtype", std::string(dtype_name(e.dtype))},
                        {"shape", e.shape.extents()},
                        {"data_offsets", {offset, end}}};
      offset = end;
    }
    std::string text;
    try {
      text = header.dump();
    } catch (const nlohmann::json::exception& e) {
      fail("safetensors writer: a tensor name or metadata string is not valid UTF-8: ", e.what());
    }
    text.append((8 - text.size() % 8) % 8, ' ');  // 8 + text.size() is then a multiple of 8
    check(text.size() <= max_safetensors_header_bytes, "safetensors writer: header of ", text.size(),
          " bytes exceeds the limit of ", max_safetensors_header_bytes);
    std::vector<std::uint8_t> out(8 + text.size());
    detail::write_le_u64(out.data(), text.size());
    std::memcpy(out.data() + 8, text.data(), text.size());
    return out;
  }

  std::vector<Entry> entries_;
  std::set<std::string, std::less<>> names_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace tim::io
