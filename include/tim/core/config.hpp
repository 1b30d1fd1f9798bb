// Compiler glue shared by every layer: TIM_HD marks functions usable on host and device.
#pragma once

#if defined(__CUDACC__)
#define TIM_HD __host__ __device__
#else
#define TIM_HD
#endif
