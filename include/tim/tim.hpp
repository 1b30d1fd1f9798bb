// The one header a CPU user includes: core types, the Eigen backend, the network and file I/O.
#pragma once

#include "tim/version.hpp"
#include "tim/core/dtype.hpp"
#include "tim/core/error.hpp"
#include "tim/core/shape.hpp"
#include "tim/core/tensor.hpp"
#include "tim/cpu/backend.hpp"
#include "tim/math/activations.hpp"
#include "tim/math/embedding.hpp"
#include "tim/math/normalization.hpp"
#include "tim/io/safetensors.hpp"
#include "tim/nn/config.hpp"
#include "tim/nn/modules.hpp"
#include "tim/nn/c2i.hpp"
#include "tim/load.hpp"
