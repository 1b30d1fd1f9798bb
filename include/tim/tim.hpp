// The one header a CPU user includes: the whole library (tim/library.hpp: core types, the networks
// (C2I and T2I), the sampler, the latent decoders, file I/O) with the Eigen/OpenMP CPU backend.
#pragma once

#include "tim/cpu/backend.hpp"
#include "tim/library.hpp"
