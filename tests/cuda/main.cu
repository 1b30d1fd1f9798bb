// The doctest runner of the CUDA tests. Test suites: "cuda-host" (host-side logic, runs
// anywhere) and "cuda" (needs a GPU). Without a usable device the "cuda" suite is excluded and
// a note says so; with --require-device (how CTest runs the device suite) the program instead
// prints why and exits 77, CTest's SKIP_RETURN_CODE, so the suite shows as skipped, not passed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  bool require_device = false;
  std::vector<char*> arguments;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--require-device") == 0)
      require_device = true;
    else
      arguments.push_back(argv[i]);
  }
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  const bool present = status == cudaSuccess && devices > 0;
  const std::string reason = status != cudaSuccess ? std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status)
                                                   : "cudaGetDeviceCount found no device";

  doctest::Context context;
  if (!present) {
    if (require_device) {
      std::printf("SKIPPED: the CUDA device tests need a GPU and none is usable here (%s).\n"
                  "They were compiled but NOT run: nothing on the GPU has been verified by this run.\n",
                  reason.c_str());
      return 77;
    }
    std::printf("note: no usable CUDA device (%s): the device tests (suite \"cuda\") are excluded;\n"
                "only the host-side tests (suite \"cuda-host\") run.\n",
                reason.c_str());
    context.addFilter("test-suite-exclude", "cuda");
  }
  context.applyCommandLine(static_cast<int>(arguments.size()), arguments.data());
  return context.run();
}
