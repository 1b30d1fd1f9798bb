// Counting every heap allocation of a test program: allocation_counter.cpp replaces the C
// allocator's entry points (malloc, calloc, realloc, aligned_alloc, posix_memalign, memalign,
// valloc), forwarding to glibc's own, and counts each call between start and stop. operator new
// (plain and aligned), Eigen's temporaries (aligned_malloc ends in malloc) and the standard
// containers all end there, so nothing that takes heap memory goes unseen. Link the .cpp into a
// test program once; while nothing is counting, the replacements only forward.
#pragma once

namespace tim_test {

//! Resets the count and starts counting allocations (of every thread).
void start_counting_allocations();
//! Stops counting and returns how many allocations were made since the start.
long stop_counting_allocations();

}  // namespace tim_test
