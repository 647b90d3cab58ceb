// The elementwise op kinds and their scalar formulas, shared by every backend: the CPU kernels
// (cpu_elementwise.cc) and the CUDA kernels (cuda_elementwise.cu, compiled by nvcc, where the
// formulas are __host__ __device__) evaluate exactly these functions, so a new unary or binary op
// is one enumerator, one name and one case per formula here. Plain C++17.
#pragma once

#include <math.h>

#include <cstdint>

#include "framework/backends/host_device.h"

namespace fam {

enum class UnaryOp : uint8_t {
  kNeg,
  kExp,
  kLog,
  kSilu,
  kGelu,
  kSqrt,
  kRsqrt,
  kSquare,
  kTanh,
  kSigmoid,
  kRelu,
  kAbs,
  kSoftplus
};
enum class BinaryOp : uint8_t { kAdd, kSub, kMul, kDiv, kMax, kMin };

constexpr const char* UnaryOpName(UnaryOp op) {
  switch (op) {
    case UnaryOp::kNeg:
      return "neg";
    case UnaryOp::kExp:
      return "exp";
    case UnaryOp::kLog:
      return "log";
    case UnaryOp::kSilu:
      return "silu";
    case UnaryOp::kGelu:
      return "gelu";
    case UnaryOp::kSqrt:
      return "sqrt";
    case UnaryOp::kRsqrt:
      return "rsqrt";
    case UnaryOp::kSquare:
      return "square";
    case UnaryOp::kTanh:
      return "tanh";
    case UnaryOp::kSigmoid:
      return "sigmoid";
    case UnaryOp::kRelu:
      return "relu";
    case UnaryOp::kAbs:
      return "abs";
    case UnaryOp::kSoftplus:
      return "softplus";
  }
  return "?";
}

constexpr const char* BinaryOpName(BinaryOp op) {
  switch (op) {
    case BinaryOp::kAdd:
      return "add";
    case BinaryOp::kSub:
      return "sub";
    case BinaryOp::kMul:
      return "mul";
    case BinaryOp::kDiv:
      return "div";
    case BinaryOp::kMax:
      return "max";
    case BinaryOp::kMin:
      return "min";
  }
  return "?";
}

namespace formula {

// The C math library's float and double functions under one name each (the same calls on the host
// and, through nvcc's device overloads, on the GPU).
FAM_HOST_DEVICE inline float Exp(float x) { return ::expf(x); }
FAM_HOST_DEVICE inline double Exp(double x) { return ::exp(x); }
FAM_HOST_DEVICE inline float Log(float x) { return ::logf(x); }
FAM_HOST_DEVICE inline double Log(double x) { return ::log(x); }
FAM_HOST_DEVICE inline float Sqrt(float x) { return ::sqrtf(x); }
FAM_HOST_DEVICE inline double Sqrt(double x) { return ::sqrt(x); }
FAM_HOST_DEVICE inline float Tanh(float x) { return ::tanhf(x); }
FAM_HOST_DEVICE inline double Tanh(double x) { return ::tanh(x); }
FAM_HOST_DEVICE inline float Abs(float x) { return ::fabsf(x); }
FAM_HOST_DEVICE inline double Abs(double x) { return ::fabs(x); }
FAM_HOST_DEVICE inline float Log1p(float x) { return ::log1pf(x); }
FAM_HOST_DEVICE inline double Log1p(double x) { return ::log1p(x); }

inline constexpr double kGeluC = 0.7978845608028654;  // sqrt(2/pi)
inline constexpr double kGeluA = 0.044715;            // GELU's tanh approximation

template <typename T>
FAM_HOST_DEVICE inline T ApplyUnary(UnaryOp op, T x) {
  switch (op) {
    case UnaryOp::kNeg:
      return -x;
    case UnaryOp::kExp:
      return Exp(x);
    case UnaryOp::kLog:
      return Log(x);
    case UnaryOp::kSilu:
      return x / (T(1) + Exp(-x));
    case UnaryOp::kGelu: {
      const T inner = T(kGeluC) * (x + T(kGeluA) * x * x * x);
      return T(0.5) * x * (T(1) + Tanh(inner));
    }
    case UnaryOp::kSqrt:
      return Sqrt(x);
    case UnaryOp::kRsqrt:
      return T(1) / Sqrt(x);
    case UnaryOp::kSquare:
      return x * x;
    case UnaryOp::kTanh:
      return Tanh(x);
    case UnaryOp::kSigmoid:
      return T(1) / (T(1) + Exp(-x));
    case UnaryOp::kRelu:
      return x > T(0) ? x : T(0);
    case UnaryOp::kAbs:
      return Abs(x);
    case UnaryOp::kSoftplus:  // log(1 + e^x) without overflow
      return (x > T(0) ? x : T(0)) + Log1p(Exp(-Abs(x)));
  }
  return x;
}

// d op(x) / dx, given x and y = op(x) (whichever the formula needs).
template <typename T>
FAM_HOST_DEVICE inline T UnaryDerivative(UnaryOp op, T x, T y) {
  switch (op) {
    case UnaryOp::kNeg:
      return T(-1);
    case UnaryOp::kExp:
      return y;
    case UnaryOp::kLog:
      return T(1) / x;
    case UnaryOp::kSilu: {
      const T s = T(1) / (T(1) + Exp(-x));
      return s * (T(1) + x * (T(1) - s));
    }
    case UnaryOp::kGelu: {
      const T inner = T(kGeluC) * (x + T(kGeluA) * x * x * x);
      const T t = Tanh(inner);
      return T(0.5) * (T(1) + t) +
             T(0.5) * x * (T(1) - t * t) * T(kGeluC) * (T(1) + T(3 * kGeluA) * x * x);
    }
    case UnaryOp::kSqrt:
      return T(0.5) / y;
    case UnaryOp::kRsqrt:
      return T(-0.5) * y * y * y;
    case UnaryOp::kSquare:
      return T(2) * x;
    case UnaryOp::kTanh:
      return T(1) - y * y;
    case UnaryOp::kSigmoid:
      return y * (T(1) - y);
    case UnaryOp::kRelu:
      return x > T(0) ? T(1) : T(0);
    case UnaryOp::kAbs:
      return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
    case UnaryOp::kSoftplus:
      return T(1) / (T(1) + Exp(-x));
  }
  return T(0);
}

template <typename T>
FAM_HOST_DEVICE inline T ApplyBinary(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::kAdd:
      return a + b;
    case BinaryOp::kSub:
      return a - b;
    case BinaryOp::kMul:
      return a * b;
    case BinaryOp::kDiv:
      return a / b;
    case BinaryOp::kMax:
      return a > b ? a : b;
    case BinaryOp::kMin:
      return a < b ? a : b;
  }
  return a;
}

}  // namespace formula
}  // namespace fam
