// The allocation counter of allocation_counter.hpp: this program's malloc family, forwarding to
// glibc's __libc_* entry points (exported by glibc for exactly this use).
#include "allocation_counter.hpp"

#include <atomic>
#include <cerrno>
#include <cstddef>

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void* __libc_valloc(std::size_t);
}

namespace {
std::atomic<bool> counting{false};
std::atomic<long> count{0};
inline void count_one() {
  if (counting.load(std::memory_order_relaxed)) count.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

namespace tim_test {
void start_counting_allocations() {
  count = 0;
  counting = true;
}
long stop_counting_allocations() {
  counting = false;
  return count.load();
}
}  // namespace tim_test

extern "C" {
void* malloc(std::size_t size) {
  count_one();
  return __libc_malloc(size);
}
void* calloc(std::size_t n, std::size_t size) {
  count_one();
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t size) {
  count_one();
  return __libc_realloc(p, size);
}
void* aligned_alloc(std::size_t alignment, std::size_t size) {
  count_one();
  return __libc_memalign(alignment, size);
}
void* memalign(std::size_t alignment, std::size_t size) {
  count_one();
  return __libc_memalign(alignment, size);
}
void* valloc(std::size_t size) {
  count_one();
  return __libc_valloc(size);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t size) {
  count_one();
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
  void* p = __libc_memalign(alignment, size);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
}
