// `tim serve`: the small pieces of its HTTP side (serve_http.hpp).
// Eigen (through sample.hpp) before httplib.h: <resolv.h>, which it includes, defines a macro `_res`
// that Eigen uses as a parameter name.
#include "sample.hpp"

#include "serve_http.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "tim/io/png.hpp"

namespace tim_cli::serve {

using nlohmann::json;
namespace fs = std::filesystem;

std::string base64(const std::vector<unsigned char>& bytes) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    const std::uint32_t a = bytes[i], b = i + 1 < bytes.size() ? bytes[i + 1] : 0,
                        c = i + 2 < bytes.size() ? bytes[i + 2] : 0;
    const std::uint32_t word = (a << 16) | (b << 8) | c;
    out += alphabet[(word >> 18) & 63];
    out += alphabet[(word >> 12) & 63];
    out += i + 1 < bytes.size() ? alphabet[(word >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? alphabet[word & 63] : '=';
  }
  return out;
}

//! The PNG file of `image` in memory, with `text` chunks (tim::io::write_png's libpng part on a
//! memory stream).
std::vector<unsigned char> png_bytes(const tim::io::PngImage& image, const std::vector<tim::io::PngText>& text) {
  const std::size_t row_bytes = static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.channels);
  std::vector<png_bytep> rows(static_cast<std::size_t>(image.height));
  for (int y = 0; y < image.height; ++y)
    rows[static_cast<std::size_t>(y)] = const_cast<png_bytep>(image.pixels.data() + row_bytes * y);
  const tim::io::detail::PngTextChunks chunks(text, "cannot encode a PNG");  // iTXt for a UTF-8 prompt
  char* buffer = nullptr;
  std::size_t size = 0;
  std::FILE* stream = ::open_memstream(&buffer, &size);
  tim::check(stream != nullptr, "cannot encode a PNG: open_memstream failed");
  tim::io::detail::PngErrorState error;
  const bool written = tim::io::detail::png_write_stream(stream, image, rows.data(), chunks.data(), chunks.size(),
                                                         error);
  std::fclose(stream);
  std::vector<unsigned char> bytes(buffer, buffer + size);
  std::free(buffer);
  tim::check(written, "cannot encode a PNG: ", error.message);
  return bytes;
}

void send_error(httplib::Response& res, int status, const std::string& type, const std::string& message) {
  res.status = status;
  res.set_content(json{{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}}}}
                      .dump(-1, ' ', false, json::error_handler_t::replace),
                  "application/json");
}

//! Equal strings, in time that does not depend on where they differ.
bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char difference = a.size() == b.size() ? 0 : 1;
  const std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i)
    difference |= static_cast<unsigned char>((i < a.size() ? a[i] : 0) ^ (i < b.size() ? b[i] : 0));
  return difference == 0;
}

//! The socket of the connection `req` came on: cpp-httplib 0.11 does not hand it to handlers,
//! so it is found among this process's sockets by its two addresses. -1 when not found.
int connection_socket(const httplib::Request& req) {
  std::error_code ignored;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd", ignored)) {
    int fd = -1;
    try {
      fd = std::stoi(entry.path().filename().string());
    } catch (...) {
      continue;
    }
    sockaddr_storage peer{}, local{};
    socklen_t peer_size = sizeof peer, local_size = sizeof local;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_size) != 0) continue;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_size) != 0) continue;
    const auto port_and_address = [](const sockaddr_storage& a) -> std::pair<int, std::string> {
      char text[INET6_ADDRSTRLEN] = {};
      if (a.ss_family == AF_INET) {
        const auto& v4 = reinterpret_cast<const sockaddr_in&>(a);
        ::inet_ntop(AF_INET, &v4.sin_addr, text, sizeof text);
        return {ntohs(v4.sin_port), text};
      }
      if (a.ss_family == AF_INET6) {
        const auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
        ::inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof text);
        return {ntohs(v6.sin6_port), text};
      }
      return {-1, ""};
    };
    if (port_and_address(peer) == std::pair{req.remote_port, req.remote_addr} &&
        port_and_address(local).first == req.local_port)
      return fd;
  }
  return -1;
}

//! Whether the client closed its side (a read would see the end of the stream).
bool peer_closed(int fd) {
  char byte;
  const ssize_t got = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

void widen_listen_backlog(int fd) {
  int listening = 0;
  socklen_t size = sizeof listening;
  tim::check(fd >= 0 && ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) == 0 && listening == 1,
             "internal error: the server's socket ", fd, " is not listening");
  tim::check(::listen(fd, SOMAXCONN) == 0, "cannot widen the listen backlog: ", std::strerror(errno));
}

}  // namespace tim_cli::serve
