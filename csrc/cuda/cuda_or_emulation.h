// What the CUDA kernel source needs from CUDA, for two compilers.
//
// Under nvcc this is CUDA itself. In the host-emulation build (a plain C++
// compiler with FUSED_RMSPROP_EMULATION defined) the built-ins the kernel uses
// are emulated: `threadIdx`, `blockIdx`, `blockDim`, `gridDim` are
// thread-local variables, and `emulated_launch` runs every block and every
// thread of a launch one after another. That is a faithful model of our
// kernels because their threads never communicate (no shared memory, no
// __syncthreads, no atomics), with one exception: the 8-bit state kernel
// takes a maximum across each warp with shuffles, and its emulated build runs
// one thread per warp, its lanes as a loop (NOTE: [warp blocks]).
#pragma once

#include <torch/headeronly/macros/Macros.h>

#include <cstdint>

#if defined(FUSED_RMSPROP_EMULATION)

#define FUSED_RMSPROP_GLOBAL
#define FUSED_RMSPROP_DEVICE inline
#define FUSED_RMSPROP_LAUNCH_BOUNDS(threads)
// A kernel argument: passed by value to a CUDA kernel, by reference to an
// emulated one (else every emulated thread would copy up to 32 KB).
#define FUSED_RMSPROP_KERNEL_ARG(T) const T&

namespace fused_rmsprop {

struct EmulatedDim3 {
  unsigned int x = 0, y = 0, z = 0;
};

inline thread_local EmulatedDim3 threadIdx;
inline thread_local EmulatedDim3 blockIdx;
inline thread_local EmulatedDim3 blockDim;
inline thread_local EmulatedDim3 gridDim;

// kernel<<<blocks, threads>>>(args...), run sequentially on the host.
template <typename Kernel, typename... Args>
void emulated_launch(int64_t blocks, int64_t threads, Kernel kernel, const Args&... args) {
  gridDim.x = static_cast<unsigned int>(blocks);
  blockDim.x = static_cast<unsigned int>(threads);
  for (int64_t b = 0; b < blocks; ++b) {
    blockIdx.x = static_cast<unsigned int>(b);
    for (int64_t t = 0; t < threads; ++t) {
      threadIdx.x = static_cast<unsigned int>(t);
      kernel(args...);
    }
  }
}

}  // namespace fused_rmsprop

#else

#include <cuda_runtime.h>

#define FUSED_RMSPROP_GLOBAL __global__
#define FUSED_RMSPROP_DEVICE __device__ __forceinline__
#define FUSED_RMSPROP_LAUNCH_BOUNDS(threads) __launch_bounds__(threads)
#define FUSED_RMSPROP_KERNEL_ARG(T) T

#endif
