// `tim serve` as a child process for the loopback tests (test_serve.cpp, test_serve_t2i.cpp):
// started on a free port with its stderr in a file, killed at the end; small helpers for its
// answers (base64, PNGs, float32 values) and a client that holds a request open until released.
#pragma once

#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tim/io/png.hpp"

// After Eigen (tim/tim.hpp, included first by the tests): <resolv.h>, which httplib.h includes,
// defines a macro `_res`.
#include <httplib.h>

namespace tim_test::serve {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

//! `tim serve --port 0 ARGS` with stderr in a file; the port read from its "listening on" line.
struct Server {
  fs::path dir, log;
  pid_t pid = -1;
  int port = 0;

  explicit Server(const std::string& args, const std::string& model = TIM_SHIPPED_MODEL) {
    static std::atomic<int> counter{0};
    dir = fs::temp_directory_path() / ("tim_serve_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(dir);
    log = dir / "stderr.txt";
    const std::string command = std::string("exec '") + TIM_EXECUTABLE + "' serve --port 0 --model '" +
                                model + "' " + args + " 2> '" + log.string() + "'";
    pid = ::fork();
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < 120s) {
      const std::string text = read_text(log);
      const auto found = text.find("listening on http://127.0.0.1:");
      if (found != std::string::npos && text.find('\n', found) != std::string::npos) {
        port = std::stoi(text.substr(found + std::string("listening on http://127.0.0.1:").size()));
        return;
      }
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        break;
      }
      std::this_thread::sleep_for(50ms);
    }
    FAIL("tim serve did not start: ", read_text(log));
  }
  ~Server() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
  httplib::Client client(int read_timeout_s = 120) const {
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(30, 0);
    c.set_read_timeout(read_timeout_s, 0);
    return c;
  }
  //! SIGTERM, then the exit status (-1: still running after `limit`).
  int terminate(std::chrono::seconds limit = 60s) {
    ::kill(pid, SIGTERM);
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < limit) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(20ms);
    }
    return -1;
  }
};

inline std::vector<unsigned char> from_base64(const std::string& text) {
  std::vector<unsigned char> out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (const char ch : text) {
    int value = -1;
    if (ch >= 'A' && ch <= 'Z') value = ch - 'A';
    else if (ch >= 'a' && ch <= 'z') value = ch - 'a' + 26;
    else if (ch >= '0' && ch <= '9') value = ch - '0' + 52;
    else if (ch == '+') value = 62;
    else if (ch == '/') value = 63;
    else if (ch == '=') break;
    REQUIRE(value >= 0);
    buffer = (buffer << 6) | static_cast<std::uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<unsigned char>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

inline tim::io::PngImage decode_png(const std::string& b64, const fs::path& dir) {
  static std::atomic<int> counter{0};
  const fs::path file = dir / ("image_" + std::to_string(counter++) + ".png");
  const auto bytes = from_base64(b64);
  std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
  return tim::io::read_png(file.string());
}

inline std::vector<float> floats_of(const std::string& b64) {
  const auto bytes = from_base64(b64);
  std::vector<float> values(bytes.size() / sizeof(float));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
  return values;
}

inline json post(httplib::Client& client, const json& body, int expected_status = 200) {
  const auto res = client.Post("/v1/images/generations", body.dump(), "application/json");
  REQUIRE(res);
  INFO(body.dump(), " -> ", res->body);
  CHECK(res->status == expected_status);
  return json::parse(res->body);
}


//! A request sent on a raw socket and left waiting for its answer until release() closes the
//! connection, which the server takes as the client going away (it cancels the request's work).
//! Holds the sampler thread busy with a long request while a test queues others behind it.
class HeldRequest {
 public:
  HeldRequest(int port, const std::string& body) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    const std::string request = "POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                                "application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    REQUIRE(::send(fd_, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size()));
  }
  HeldRequest(const HeldRequest&) = delete;
  HeldRequest& operator=(const HeldRequest&) = delete;
  ~HeldRequest() { release(); }
  void release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

//! GET /health as JSON.
inline json health(const Server& server) {
  auto client = server.client();
  const auto res = client.Get("/health");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  return json::parse(res->body);
}

//! Waits (up to a minute) until /health counts `images` queued (waiting or being sampled).
inline bool wait_for_queue(const Server& server, std::int64_t images) {
  for (int i = 0; i < 1200; ++i) {
    if (health(server)["queued_images"] == images) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

//! Posts every (body, message) pair to /v1/images/generations and checks each answer is a 400
//! invalid_request_error whose message contains `message`.
inline void check_bad_requests(httplib::Client& client,
                               const std::vector<std::pair<std::string, std::string>>& bad) {
  for (const auto& [body, message] : bad) {
    const auto res = client.Post("/v1/images/generations", body, "application/json");
    REQUIRE(res);
    INFO(body, " -> ", res->body);
    CHECK(res->status == 400);
    const auto error = nlohmann::json::parse(res->body);
    CHECK(error["error"]["type"] == "invalid_request_error");
    CHECK(error["error"]["message"].get<std::string>().find(message) != std::string::npos);
  }
}

}  // namespace tim_test::serve
