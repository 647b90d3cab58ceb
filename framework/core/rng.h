// Counter-based random numbers (Philox-4x32-10). A value is a pure function of (seed, stream,
// offset), so results do not depend on thread count or call order: stream separates users (layer
// init, dropout, data order, position offsets, ...), offset counts values within a stream.
#pragma once

#include <array>
#include <cstdint>

#include "framework/core/tensor.h"

namespace fam {

// One Philox-4x32-10 block: 4 random 32-bit words for counter (stream, offset) under key seed.
std::array<uint32_t, 4> Philox(uint64_t seed, uint64_t stream, uint64_t offset);

// Uniform in [0, 1) (24-bit resolution) / standard normal for the i-th value of a stream.
float UniformAt(uint64_t seed, uint64_t stream, uint64_t index);
float NormalAt(uint64_t seed, uint64_t stream, uint64_t index);

// A stream cursor: draws consecutive values of one (seed, stream), advancing the offset.
class Generator {
 public:
  Generator(uint64_t seed = 0, uint64_t stream = 0, uint64_t offset = 0)
      : seed_(seed), stream_(stream), offset_(offset) {}
  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t offset) { offset_ = offset; }

  float Uniform() { return UniformAt(seed_, stream_, offset_++); }
  float Normal() { return NormalAt(seed_, stream_, offset_++); }
  // Uniform integer in [0, n).
  uint64_t UniformInt(uint64_t n);

  // Fills a floating tensor (any device via host staging) with N(mean, std²) / U[lo, hi);
  // value i of the tensor is the stream's value at offset()+i, then offset advances by numel.
  // Fill t (on any device) with the next t.numel() values; defined in
  // framework/ops/tensor_methods.cc.
  void FillNormal(const Tensor& t, double mean, double std);
  void FillUniform(const Tensor& t, double lo, double hi);

 private:
  uint64_t seed_, stream_, offset_;
};

}  // namespace fam
