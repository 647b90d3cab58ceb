// Element types of tensors: f32, f64 (gradcheck), bf16 (storage; compute in f32 on CPU), i32, i64.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace fam {

enum class DType : uint8_t { kF32, kF64, kBF16, kF16, kI32, kI64 };

size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);
bool IsFloating(DType dtype);

// bfloat16 stored as its upper 16 bits of an IEEE f32; conversion rounds to nearest even.
struct BF16 {
  uint16_t bits = 0;
  BF16() = default;
  explicit BF16(float value) : bits(FromFloat(value)) {}
  explicit operator float() const { return ToFloat(bits); }

  static uint16_t FromFloat(float value) {
    uint32_t u;
    std::memcpy(&u, &value, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
    uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>((u + rounding) >> 16);
  }
  static float ToFloat(uint16_t bits) {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

// IEEE half, for reading f16 safetensors (converted to f32 on load).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<double> {
  static constexpr DType value = DType::kF64;
};
template <>
struct DTypeOf<BF16> {
  static constexpr DType value = DType::kBF16;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kI64;
};

}  // namespace fam
