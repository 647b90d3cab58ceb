// .npy writing and reading: exact header bytes (NumPy format 1.0, data at a multiple of 64),
// round trips of every supported dtype, hand-made files from the format description, clear errors
// for what we do not read, and interchange with NumPy itself when python3 + numpy are installed.
#include "framework/io/npy.h"

#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "framework/io/atomic_file.h"
#include "gtest/gtest.h"

namespace fam::io {
namespace {

std::string TempDirFor(const std::string& test) {
  std::string dir = ::testing::TempDir() + "/fam_npy_" + test + "_" + std::to_string(getpid());
  std::string command = "rm -rf '" + dir + "' && mkdir -p '" + dir + "'";
  EXPECT_EQ(std::system(command.c_str()), 0);
  return dir;
}

// A version-1.0 .npy file assembled byte by byte from the format description.
std::string HandMadeNpy(const std::string& dict, const std::string& data, int major = 1) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out = std::string("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  const int length_bytes = major == 1 ? 2 : 4;
  for (int i = 0; i < length_bytes; ++i) out.push_back(static_cast<char>(header.size() >> (8 * i)));
  return out + header + data;
}

template <typename T>
std::string LittleEndianBytes(const std::vector<T>& values) {
  std::string out;
  for (T v : values) {
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>(bits >> (8 * i)));
  }
  return out;
}

bool HaveNumpy() { return std::system("python3 -c 'import numpy' > /dev/null 2>&1") == 0; }

TEST(Npy, HeaderBytesAreNumpyFormat10) {
  const std::string dir = TempDirFor("header");
  Tensor t = Tensor::FromFloats({1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f}, {2, 3});
  ASSERT_TRUE(WriteNpy(dir + "/x.npy", t).ok());
  std::string bytes = *ReadFile(dir + "/x.npy");
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  EXPECT_EQ(bytes,
            HandMadeNpy(dict, LittleEndianBytes<float>({1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f})));
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  EXPECT_EQ(bytes[10 + header_len - 1], '\n');
  EXPECT_EQ(bytes.size(), 10 + header_len + 24);
}

TEST(Npy, ShapeTuplesOfEveryRank) {
  const std::string dir = TempDirFor("ranks");
  ASSERT_TRUE(WriteNpy(dir + "/s.npy", Tensor::Scalar(2.0, DType::kF64)).ok());
  EXPECT_NE(ReadFile(dir + "/s.npy")->find("'shape': (), }"), std::string::npos);
  ASSERT_TRUE(WriteNpy(dir + "/v.npy", Tensor::Arange(5)).ok());
  EXPECT_NE(
      ReadFile(dir + "/v.npy")->find("'descr': '<i8', 'fortran_order': False, 'shape': (5,), }"),
      std::string::npos);
  ASSERT_TRUE(WriteNpy(dir + "/e.npy", Tensor::Zeros({2, 0, 3}, DType::kI32)).ok());
  EXPECT_NE(ReadFile(dir + "/e.npy")->find("'shape': (2, 0, 3), }"), std::string::npos);
}

TEST(Npy, RoundTripsEveryDType) {
  const std::string dir = TempDirFor("roundtrip");
  const std::vector<Shape> shapes = {{}, {4}, {2, 3}, {2, 1, 3}, {0, 5}};
  for (DType dtype : {DType::kF32, DType::kF64, DType::kI32, DType::kI64}) {
    for (const Shape& shape : shapes) {
      std::vector<double> values(NumElements(shape));
      for (size_t i = 0; i < values.size(); ++i)
        values[i] = IsFloating(dtype) ? 0.37 * i - 1.1 : 3.0 * i - 7.0;
      Tensor t = Tensor::FromVector(values, shape, dtype);
      const std::string path = dir + "/t.npy";
      ASSERT_TRUE(WriteNpy(path, t).ok());
      absl::StatusOr<Tensor> back = ReadNpy(path);
      ASSERT_TRUE(back.ok()) << back.status();
      EXPECT_EQ(back->dtype(), dtype);
      EXPECT_EQ(back->shape(), shape);
      EXPECT_EQ(back->ToDoubles(), t.ToDoubles()) << DTypeName(dtype) << ShapeString(shape);
    }
  }
  // i64 values beyond 2^53 survive exactly.
  Tensor big = Tensor::FromInts({(int64_t{1} << 62) + 1, -(int64_t{1} << 60) - 3}, {2});
  ASSERT_TRUE(WriteNpy(dir + "/big.npy", big).ok());
  EXPECT_EQ(ReadNpy(dir + "/big.npy")->ToInts(), big.ToInts());
}

TEST(Npy, StridedTensorsAreWrittenInCOrder) {
  const std::string dir = TempDirFor("strided");
  Tensor t = Tensor::FromVector({0, 1, 2, 3, 4, 5}, {2, 3}, DType::kF64).transpose(0, 1);
  ASSERT_TRUE(WriteNpy(dir + "/t.npy", t).ok());
  absl::StatusOr<Tensor> back = ReadNpy(dir + "/t.npy");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->shape(), (Shape{3, 2}));
  EXPECT_EQ(back->ToDoubles(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
}

TEST(Npy, ReadsHandMadeFiles) {
  const std::string dir = TempDirFor("handmade");
  // Version 2.0 (4-byte header length), double quotes and no trailing comma are accepted too.
  ASSERT_TRUE(
      WriteFileAtomic(dir + "/v2.npy", HandMadeNpy("{\"descr\": \"<i8\", \"shape\": (3,), "
                                                   "\"fortran_order\": False}",
                                                   LittleEndianBytes<int64_t>({7, -8, 9}), 2))
          .ok());
  absl::StatusOr<Tensor> t = ReadNpy(dir + "/v2.npy");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dtype(), DType::kI64);
  EXPECT_EQ(t->ToInts(), (std::vector<int64_t>{7, -8, 9}));
  // Fortran order is harmless for 1-D arrays.
  ASSERT_TRUE(
      WriteFileAtomic(dir + "/f1.npy",
                      HandMadeNpy("{'descr': '<f8', 'fortran_order': True, 'shape': (2,), }",
                                  LittleEndianBytes<double>({0.5, -0.25})))
          .ok());
  t = ReadNpy(dir + "/f1.npy");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->ToDoubles(), (std::vector<double>{0.5, -0.25}));
}

TEST(Npy, ErrorsNameTheFileAndTheProblem) {
  const std::string dir = TempDirFor("errors");
  const std::string ok_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  const std::string two_floats = LittleEndianBytes<float>({1.0f, 2.0f});
  struct Case {
    std::string name;
    std::string bytes;
    std::string expected;  // part of the message
  };
  std::string bad_version = HandMadeNpy(ok_dict, two_floats);
  bad_version[6] = 9;
  std::string long_header = HandMadeNpy(ok_dict, two_floats);
  long_header[9] = 0x7f;
  const std::vector<Case> cases = {
      {"empty", "", "bad magic"},
      {"magic", "PK\x03\x04 not numpy at all", "bad magic"},
      {"version", bad_version, "version 9"},
      {"header_length", long_header, "runs past the end"},
      {"big_endian",
       HandMadeNpy("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", two_floats),
       "'>f4'"},
      {"f16", HandMadeNpy("{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }", two_floats),
       "'<f2'"},
      {"fortran",
       HandMadeNpy("{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2), }", two_floats),
       "Fortran"},
      {"short_data", HandMadeNpy(ok_dict, two_floats.substr(0, 6)), "needs 8"},
      {"long_data", HandMadeNpy(ok_dict, two_floats + "xx"), "data is 10 bytes"},
      {"extra_key",
       HandMadeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", two_floats),
       "unexpected key 'x'"},
      {"missing_key", HandMadeNpy("{'descr': '<f4', 'shape': (2,), }", two_floats), "lacks"},
      {"bad_shape",
       HandMadeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", two_floats),
       "'shape'"},
      {"not_dict", HandMadeNpy("['<f4', False, (2,)]", two_floats), "'{'"},
  };
  for (const Case& c : cases) {
    const std::string path = dir + "/" + c.name + ".npy";
    ASSERT_TRUE(WriteFileAtomic(path, c.bytes).ok());
    absl::StatusOr<Tensor> t = ReadNpy(path);
    ASSERT_FALSE(t.ok()) << c.name;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(t.status().message().find(path), std::string::npos) << t.status();
    EXPECT_NE(t.status().message().find(c.expected), std::string::npos) << t.status();
  }
  absl::StatusOr<Tensor> missing = ReadNpy(dir + "/missing.npy");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir + "/missing.npy"), std::string::npos);

  absl::Status s = WriteNpy(dir + "/bf16.npy", Tensor::Zeros({2}, DType::kBF16));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(dir + "/bf16.npy"), std::string::npos) << s;
  EXPECT_NE(s.message().find("bf16"), std::string::npos) << s;
  s = WriteNpy(dir + "/no_such_dir/x.npy", Tensor::Zeros({2}));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
}

TEST(Npy, NumpyReadsOursAndWeReadNumpys) {
  if (!HaveNumpy()) GTEST_SKIP() << "python3 with numpy is not installed";
  const std::string dir = TempDirFor("numpy");
  Tensor ours = Tensor::FromFloats({0.5f, -1.25f, 3.0f, 4.5f, -0.125f, 1e-7f}, {3, 2});
  ASSERT_TRUE(WriteNpy(dir + "/ours.npy", ours).ok());
  const std::string script =
      "import numpy as np\n"
      "a = np.load('" +
      dir +
      "/ours.npy')\n"
      "assert a.dtype == np.float32 and a.shape == (3, 2), (a.dtype, a.shape)\n"
      "assert (a == np.array([[0.5, -1.25], [3.0, 4.5], [-0.125, 1e-7]], np.float32)).all(), a\n"
      "np.save('" +
      dir +
      "/theirs_f8.npy', np.arange(12, dtype=np.float64).reshape(3, 4) / 8)\n"
      "np.save('" +
      dir +
      "/theirs_i4.npy', np.array([[-3, 2], [1, 0]], dtype=np.int32))\n"
      "np.save('" +
      dir + "/theirs_i8.npy', np.array(5, dtype=np.int64))\n";
  ASSERT_TRUE(WriteFileAtomic(dir + "/check.py", script).ok());
  ASSERT_EQ(std::system(("python3 '" + dir + "/check.py'").c_str()), 0);

  absl::StatusOr<Tensor> f8 = ReadNpy(dir + "/theirs_f8.npy");
  ASSERT_TRUE(f8.ok()) << f8.status();
  EXPECT_EQ(f8->dtype(), DType::kF64);
  EXPECT_EQ(f8->shape(), (Shape{3, 4}));
  for (int i = 0; i < 12; ++i) EXPECT_EQ(f8->ToDoubles()[i], i / 8.0);
  absl::StatusOr<Tensor> i4 = ReadNpy(dir + "/theirs_i4.npy");
  ASSERT_TRUE(i4.ok()) << i4.status();
  EXPECT_EQ(i4->dtype(), DType::kI32);
  EXPECT_EQ(i4->ToInts(), (std::vector<int64_t>{-3, 2, 1, 0}));
  absl::StatusOr<Tensor> i8 = ReadNpy(dir + "/theirs_i8.npy");
  ASSERT_TRUE(i8.ok()) << i8.status();
  EXPECT_EQ(i8->shape(), Shape{});
  EXPECT_EQ(i8->ToInts(), (std::vector<int64_t>{5}));
}

}  // namespace
}  // namespace fam::io
