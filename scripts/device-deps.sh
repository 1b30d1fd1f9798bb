#!/usr/bin/env bash
# Copies the header-only dependencies the CUDA tests need (Eigen, nlohmann-json, doctest; each
# with its CMake package files) from this machine's Debian packages into .device-deps/ (git-ignored),
# so that a GPU machine without Debian packages can build them: carry .device-deps to it and run
# scripts/test-cuda.sh there. Google Benchmark (a compiled library) is copied too when present,
# for bench_cuda_network; it only works there if that machine's C library is as new as this one's.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.device-deps
rm -rf "$out"
mkdir -p "$out/include" "$out/share/eigen3" "$out/share/cmake" "$out/lib/cmake"

test -f /usr/include/eigen3/Eigen/Core || { echo "device-deps: Eigen not found (apt-get install libeigen3-dev)" >&2; exit 1; }
cp -r /usr/include/eigen3 "$out/include/"
cp -r /usr/share/eigen3/cmake "$out/share/eigen3/"               # prefix = 3 levels up: relocatable

test -f /usr/include/nlohmann/json.hpp || { echo "device-deps: nlohmann-json not found" >&2; exit 1; }
cp -r /usr/include/nlohmann "$out/include/"
cp -r /usr/share/cmake/nlohmann_json "$out/share/cmake/"         # prefix = 3 levels up: relocatable

test -f /usr/include/doctest/doctest.h || { echo "device-deps: doctest not found" >&2; exit 1; }
cp -r /usr/include/doctest "$out/include/"
cp -r /usr/lib/cmake/doctest "$out/lib/cmake/"
# Debian's doctestTargets.cmake names /usr literally; make it relative to its own folder.
sed -i 's|^set(_IMPORT_PREFIX "/usr")|get_filename_component(_IMPORT_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)|' \
  "$out/lib/cmake/doctest/doctestTargets.cmake"

multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
if [ -d "/usr/lib/$multiarch/cmake/benchmark" ] && [ -f /usr/include/benchmark/benchmark.h ]; then
  mkdir -p "$out/lib/$multiarch/cmake"
  cp -r /usr/include/benchmark "$out/include/"
  cp -r "/usr/lib/$multiarch/cmake/benchmark" "$out/lib/$multiarch/cmake/"
  cp -a /usr/lib/"$multiarch"/libbenchmark*.so* /usr/lib/"$multiarch"/libbenchmark*.a "$out/lib/$multiarch/" 2>/dev/null || true
fi
# For the `tim` program (tim sample/forward --device cuda): CLI11 (headers), yaml-cpp, libpng and
# zlib (headers and libraries; yaml-cpp's CMake files are relocatable, libpng/zlib are found by
# CMake's FindPNG/FindZLIB through CMAKE_PREFIX_PATH).
if [ -f /usr/include/CLI/CLI.hpp ] && [ -d "/usr/lib/$multiarch/cmake/yaml-cpp" ] && [ -f /usr/include/png.h ]; then
  mkdir -p "$out/lib/$multiarch/cmake" "$out/share/cmake"
  cp -r /usr/include/CLI "$out/include/"
  cp -r /usr/share/cmake/CLI11 "$out/share/cmake/"
  cp -r /usr/include/yaml-cpp "$out/include/"
  cp -r "/usr/lib/$multiarch/cmake/yaml-cpp" "$out/lib/$multiarch/cmake/"
  cp -a /usr/lib/"$multiarch"/libyaml-cpp.so* "$out/lib/$multiarch/"
  cp /usr/include/png.h /usr/include/pngconf.h /usr/include/pnglibconf.h /usr/include/zlib.h /usr/include/zconf.h \
    "$out/include/"
  cp -a /usr/lib/"$multiarch"/libpng16.a /usr/lib/"$multiarch"/libz.a "$out/lib/$multiarch/"
  ln -sf libpng16.a "$out/lib/$multiarch/libpng.a"
fi
du -sh "$out" | sed 's/^/device-deps: /'
