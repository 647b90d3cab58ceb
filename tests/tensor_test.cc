// Tensor handle: factories, views without copies, contiguous(), dtype conversion, bf16 rounding.
#include "framework/core/tensor.h"

#include "framework/ops/ops.h"
#include "gtest/gtest.h"

namespace fam {
namespace {

TEST(Tensor, FactoriesAndReadout) {
  Tensor t = Tensor::FromVector({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.dtype(), DType::kF32);
  EXPECT_EQ(t.ToDoubles(), (std::vector<double>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(Tensor::Full({2}, 3.5).ToDoubles(), (std::vector<double>{3.5, 3.5}));
  EXPECT_EQ(Tensor::Zeros({3}, DType::kI64).ToInts(), (std::vector<int64_t>{0, 0, 0}));
  EXPECT_EQ(Tensor::Arange(4).ToInts(), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_DOUBLE_EQ(Tensor::Scalar(2.5).item(), 2.5);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::FromVector({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor tt = t.transpose(0, 1);
  EXPECT_EQ(tt.shape(), (Shape{3, 2}));
  EXPECT_EQ(tt.storage().get(), t.storage().get());
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.ToDoubles(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  Tensor c = tt.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage().get(), t.storage().get());
  EXPECT_EQ(c.ToDoubles(), (std::vector<double>{0, 3, 1, 4, 2, 5}));

  Tensor s = t.slice(1, 1, 3);
  EXPECT_EQ(s.storage().get(), t.storage().get());
  EXPECT_EQ(s.ToDoubles(), (std::vector<double>{1, 2, 4, 5}));
  Tensor r = t.reshape({3, -1});
  EXPECT_EQ(r.storage().get(), t.storage().get());
  EXPECT_EQ(r.shape(), (Shape{3, 2}));
  Tensor p = Tensor::Zeros({2, 3, 4}).permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.strides(), (Strides{1, 12, 4}));
  Tensor e = Tensor::FromVector({1, 2}, {2, 1}).expand({2, 3});
  EXPECT_EQ(e.ToDoubles(), (std::vector<double>{1, 1, 1, 2, 2, 2}));
  EXPECT_EQ(t.unsqueeze(0).shape(), (Shape{1, 2, 3}));
  EXPECT_EQ(t.unsqueeze(0).squeeze(0).shape(), (Shape{2, 3}));
}

TEST(Tensor, ReshapeOfNonContiguousCopies) {
  Tensor t = Tensor::FromVector({0, 1, 2, 3, 4, 5}, {2, 3}).transpose(0, 1);
  Tensor r = t.reshape({6});
  EXPECT_EQ(r.ToDoubles(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
}

TEST(Tensor, DTypeConversion) {
  Tensor t = Tensor::FromVector({1.5, -2.25, 3.0}, {3});
  EXPECT_EQ(t.to(DType::kF64).ToDoubles(), (std::vector<double>{1.5, -2.25, 3.0}));
  EXPECT_EQ(t.to(DType::kI64).ToInts(), (std::vector<int64_t>{1, -2, 3}));
  Tensor b = t.to(DType::kBF16);
  EXPECT_EQ(b.dtype(), DType::kBF16);
  EXPECT_EQ(b.nbytes(), 6u);
  EXPECT_EQ(b.ToDoubles(), (std::vector<double>{1.5, -2.25, 3.0}));
}

TEST(Tensor, BF16RoundsToNearestEven) {
  // 1 + 2^-8 lies exactly between two bf16 values (1 and 1 + 2^-7): ties go to even (1).
  EXPECT_EQ(static_cast<float>(BF16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(static_cast<float>(BF16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_EQ(static_cast<float>(BF16(3.140625f)), 3.140625f);
  EXPECT_TRUE(std::isnan(static_cast<float>(BF16(NAN))));
}

TEST(Tensor, HalfConversionRoundTrips) {
  for (float f : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 0.333251953125f})
    EXPECT_EQ(HalfToFloat(FloatToHalf(f)), f) << f;
}

TEST(Tensor, BadShapesGiveClearErrors) {
  Tensor t = Tensor::Zeros({2, 3});
  try {
    t.reshape({4, 2});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[4, 2]"), std::string::npos) << e.what();
    EXPECT_EQ(e.code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_THROW(t.slice(1, 2, 5), Error);
  EXPECT_THROW(t.transpose(0, 3), Error);
  EXPECT_THROW(Tensor::Zeros({-1}), Error);
  EXPECT_THROW(t.data<double>(), Error);
}

TEST(Tensor, UnavailableDeviceIsAClearError) {
  try {
    Tensor::Zeros({2}, DType::kF32, Device::CUDA(0));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fam
