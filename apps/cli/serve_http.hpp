// `tim serve` (docs/serve.md): the small pieces of its HTTP side (serve.cpp): base64, PNG bytes
// in memory, error answers, the API key comparison, the connection's socket (to see a client go
// away), the access log's time and the listen backlog.
#pragma once

#include <string>
#include <vector>

#include "tim/io/image.hpp"

// After Eigen (the includer's sample.hpp): <resolv.h>, which httplib.h includes, defines a macro
// `_res` that Eigen uses as a parameter name.
#include <httplib.h>

namespace tim_cli::serve {

//! Standard base64 (RFC 4648, with padding) of `bytes`.
std::string base64(const std::vector<unsigned char>& bytes);

//! The PNG file of `image` in memory, with `text` chunks (tim::io::write_png's libpng part on a
//! memory stream; iTXt for the texts that are not ASCII).
std::vector<unsigned char> png_bytes(const tim::io::PngImage& image, const std::vector<tim::io::PngText>& text);

//! An error answer in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
void send_error(httplib::Response& res, int status, const std::string& type, const std::string& message);

//! Equal strings, in time that does not depend on where they differ.
bool constant_time_equal(const std::string& a, const std::string& b);

//! The socket of the connection `req` came on: cpp-httplib 0.11 does not hand it to handlers,
//! so it is found among this process's sockets by its two addresses. -1 when not found.
int connection_socket(const httplib::Request& req);

//! Whether the client closed its side (a read would see the end of the stream).
bool peer_closed(int fd);

//! Now, in UTC, as 2026-01-31T12:00:00Z (the access log).
std::string utc_now();

//! Raises the listen backlog of the bound listening socket `fd` (cpp-httplib 0.11 listens with
//! a backlog of 5, compiled into its library) to SOMAXCONN: with 5, a burst of connections
//! overflows the accept queue, the kernel drops the handshakes past it, and a client whose
//! request then reaches the server more than the keep-alive timeout (5 s) after the connection
//! is accepted gets the connection closed without an answer. Throws tim::Error when `fd` is not
//! a listening socket.
void widen_listen_backlog(int fd);

}  // namespace tim_cli::serve
