// Safetensors reading and writing: round trips of every dtype, byte layout checked by an
// independent parse in the test, zero-copy views that outlive the file object, dtype conversion
// (bf16/f16 → f32, store_as), metadata, and every kind of corrupt file giving an error that names
// the file (and the tensor at fault).
#include "framework/io/safetensors.h"

#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "framework/io/atomic_file.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fam::io {
namespace {

using Json = nlohmann::json;

std::string TempDirFor(const std::string& test) {
  std::string dir = ::testing::TempDir() + "/fam_st_" + test + "_" + std::to_string(getpid());
  std::string command = "rm -rf '" + dir + "' && mkdir -p '" + dir + "'";
  EXPECT_EQ(std::system(command.c_str()), 0);
  return dir;
}

// Writes test input quickly (no fsync; WriteFileAtomic would dominate the fuzz test's time).
void WritePlain(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// A safetensors file assembled by hand: header length (little-endian), header text, data.
std::string HandMade(const std::string& header, const std::string& data) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(header.size() >> (8 * i)));
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

// The raw little-endian bytes of a contiguous tensor, read element by element.
std::string TensorBytes(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw_data()), t.nbytes());
}

// A tensor of any dtype (f16 included) with distinct values; f16 is filled through FloatToHalf.
Tensor MakeTensor(DType dtype, const Shape& shape, double scale = 1.0) {
  const int64_t n = NumElements(shape);
  std::vector<double> values(n);
  for (int64_t i = 0; i < n; ++i)
    values[i] = IsFloating(dtype) ? scale * (0.75 * i - 2.5) : 5 * i - 11;
  if (dtype != DType::kF16) return Tensor::FromVector(values, shape, dtype);
  Tensor t = Tensor::Empty(shape, DType::kF16);
  uint16_t* p = static_cast<uint16_t*>(t.raw_data());
  for (int64_t i = 0; i < n; ++i) p[i] = FloatToHalf(static_cast<float>(values[i]));
  return t;
}

void ExpectErrorNames(const absl::Status& status, const std::vector<std::string>& parts,
                      const std::string& what) {
  EXPECT_FALSE(status.ok()) << what;
  for (const std::string& part : parts)
    EXPECT_NE(status.message().find(part), std::string::npos)
        << what << ": '" << part << "' missing in: " << status.message();
}

TEST(Safetensors, RoundTripsEveryDType) {
  const std::string dir = TempDirFor("roundtrip");
  const std::string path = dir + "/all.safetensors";
  std::vector<std::pair<std::string, Tensor>> tensors;
  const std::vector<DType> dtypes = {DType::kF32, DType::kF64, DType::kBF16,
                                     DType::kF16, DType::kI32, DType::kI64};
  const std::vector<Shape> shapes = {{3}, {2, 3}, {}, {1, 3, 1}, {0, 4}, {5}};
  for (size_t i = 0; i < dtypes.size(); ++i) {
    for (size_t j = 0; j < shapes.size(); ++j) {
      // Odd element counts of 2-byte types would misalign later 4/8-byte tensors without the
      // writer's ordering by element size.
      tensors.push_back(
          {absl::StrCat(DTypeName(dtypes[i]), ".t", j), MakeTensor(dtypes[i], shapes[j])});
    }
  }
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->names().size(), tensors.size());
  EXPECT_TRUE((*file)->metadata().empty());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE((*file)->contains(name)) << name;
    absl::StatusOr<SafetensorsTensorInfo> info = (*file)->Info(name);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->dtype, t.dtype()) << name;
    EXPECT_EQ(info->shape, t.shape()) << name;
    absl::StatusOr<Tensor> loaded = (*file)->Load(name);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->dtype(), t.dtype()) << name;
    EXPECT_EQ(loaded->shape(), t.shape()) << name;
    EXPECT_TRUE(loaded->is_contiguous());
    EXPECT_EQ(TensorBytes(*loaded), TensorBytes(t)) << name;
    // Every view is aligned to its element size.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(loaded->raw_data()) % DTypeSize(t.dtype()), 0u) << name;
  }
}

// The file's bytes, parsed here with nlohmann::json straight from the format description.
TEST(Safetensors, LayoutMatchesTheFormat) {
  const std::string dir = TempDirFor("layout");
  const std::string path = dir + "/w.safetensors";
  Tensor a = Tensor::FromFloats({1.0f, -2.0f, 0.5f}, {3});
  Tensor b = Tensor::FromInts({1, -2}, {2, 1}, DType::kI64);
  Tensor c = MakeTensor(DType::kBF16, {3});
  ASSERT_TRUE(WriteSafetensors(path, {{"z.a", a}, {"b", b}, {"c", c}}, {{"format", "pt"}}).ok());
  const std::string bytes = *ReadFile(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_LE(8 + n, bytes.size());
  const Json header = Json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["__metadata__"], Json({{"format", "pt"}}));
  EXPECT_EQ(header["z.a"]["dtype"], "F32");
  EXPECT_EQ(header["z.a"]["shape"], Json({3}));
  EXPECT_EQ(header["b"]["dtype"], "I64");
  EXPECT_EQ(header["b"]["shape"], Json({2, 1}));
  EXPECT_EQ(header["c"]["dtype"], "BF16");
  // Larger elements first, then names; offsets leave no gaps.
  EXPECT_EQ(header["b"]["data_offsets"], Json({0, 16}));
  EXPECT_EQ(header["z.a"]["data_offsets"], Json({16, 28}));
  EXPECT_EQ(header["c"]["data_offsets"], Json({28, 34}));
  const std::string data = bytes.substr(8 + n);
  EXPECT_EQ(data.size(), 34u);
  EXPECT_EQ(data.substr(0, 16), LittleEndianBytes<int64_t>({1, -2}));
  EXPECT_EQ(data.substr(16, 12), LittleEndianBytes<float>({1.0f, -2.0f, 0.5f}));
  std::vector<uint16_t> c_bits;
  for (double v : {-2.5, -1.75, -1.0}) c_bits.push_back(BF16::FromFloat(static_cast<float>(v)));
  EXPECT_EQ(data.substr(28, 6), LittleEndianBytes<uint16_t>(c_bits));
}

TEST(Safetensors, ReadsHandMadeFilesIncludingMisalignedData) {
  const std::string dir = TempDirFor("handmade");
  const std::string path = dir + "/h.safetensors";
  // Header of odd length and no padding: the f32 data starts at an odd file offset.
  const std::string header =
      R"({"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("e":{"dtype":"I32","shape":[0],"data_offsets":[16,16]}})";
  ASSERT_EQ(header.size() % 2, 1u);
  ASSERT_TRUE(WriteFileAtomic(path, HandMade(header, LittleEndianBytes<float>({1, 2, 3, 4}))).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->names(), (std::vector<std::string>{"e", "w"}));
  EXPECT_EQ((*file)->metadata().at("k"), "v");
  absl::StatusOr<Tensor> w = (*file)->Load("w");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->shape(), (Shape{2, 2}));
  EXPECT_EQ(w->ToDoubles(), (std::vector<double>{1, 2, 3, 4}));
  absl::StatusOr<Tensor> e = (*file)->Load("e");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->shape(), (Shape{0}));
  EXPECT_EQ(e->dtype(), DType::kI32);
}

TEST(Safetensors, LoadIsAZeroCopyViewThatOutlivesTheFile) {
  const std::string dir = TempDirFor("zerocopy");
  const std::string path = dir + "/w.safetensors";
  Tensor a = MakeTensor(DType::kF32, {4, 3});
  Tensor b = MakeTensor(DType::kBF16, {5});
  ASSERT_TRUE(WriteSafetensors(path, {{"a", a}, {"b", b}}).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  std::shared_ptr<MmapFile> mapping = (*file)->mapping();
  const uint8_t* begin = mapping->data();
  const uint8_t* end = begin + mapping->size();
  Tensor va = *(*file)->Load("a");
  Tensor vb = *(*file)->Load("b");
  for (const Tensor& v : {va, vb}) {
    const uint8_t* p = static_cast<const uint8_t*>(v.raw_data());
    EXPECT_GE(p, begin);
    EXPECT_LE(p + v.nbytes(), end);
  }
  // The bytes sit at their data_offsets past the header.
  EXPECT_EQ(static_cast<const uint8_t*>(vb.raw_data()) - static_cast<const uint8_t*>(va.raw_data()),
            static_cast<ptrdiff_t>((*file)->Info("b")->begin - (*file)->Info("a")->begin));
  const long uses_with_views = mapping.use_count();
  mapping.reset();
  file->reset();  // the SafetensorsFile is gone; the views keep the mapping alive
  EXPECT_GE(uses_with_views, 3);
  EXPECT_EQ(TensorBytes(va), TensorBytes(a));
  EXPECT_EQ(TensorBytes(vb), TensorBytes(b));

  // Replacing the file on disk does not disturb the views (the old inode stays mapped), and
  // writing into a view never reaches the file (copy-on-write).
  ASSERT_TRUE(WriteSafetensors(path, {{"a", Tensor::Zeros({4, 3})}}).ok());
  EXPECT_EQ(TensorBytes(va), TensorBytes(a));
  va.data<float>()[0] = 123.0f;
  EXPECT_EQ(va.ToDoubles()[0], 123.0);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> again = SafetensorsFile::Open(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->Load("a")->ToDoubles(), std::vector<double>(12, 0.0));
}

TEST(Safetensors, ConvertsHalfTypesToF32OnRequest) {
  const std::string dir = TempDirFor("convert");
  const std::string path = dir + "/h.safetensors";
  Tensor h = MakeTensor(DType::kF16, {2, 3}, 0.1);
  Tensor b = MakeTensor(DType::kBF16, {4}, 0.3);
  Tensor i = MakeTensor(DType::kI32, {3});
  ASSERT_TRUE(WriteSafetensors(path, {{"h", h}, {"b", b}, {"i", i}}).ok());
  auto file = *SafetensorsFile::Open(path);
  absl::StatusOr<Tensor> hf = file->Load("h", DType::kF32);
  ASSERT_TRUE(hf.ok()) << hf.status();
  EXPECT_EQ(hf->dtype(), DType::kF32);
  EXPECT_EQ(hf->shape(), (Shape{2, 3}));
  const uint16_t* hbits = static_cast<const uint16_t*>(h.raw_data());
  for (int k = 0; k < 6; ++k) EXPECT_EQ(hf->data<float>()[k], HalfToFloat(hbits[k])) << k;
  const uint8_t* p = static_cast<const uint8_t*>(hf->raw_data());
  const uint8_t* map_begin = file->mapping()->data();
  EXPECT_TRUE(p < map_begin || p >= map_begin + file->mapping()->size());  // new memory

  absl::StatusOr<Tensor> bf = file->Load("b", DType::kF32);
  ASSERT_TRUE(bf.ok());
  const uint16_t* bbits = static_cast<const uint16_t*>(b.raw_data());
  for (int k = 0; k < 4; ++k) EXPECT_EQ(bf->data<float>()[k], BF16::ToFloat(bbits[k])) << k;

  EXPECT_EQ(file->Load("i", DType::kI64)->ToInts(), i.ToInts());
  EXPECT_EQ(file->Load("b", DType::kBF16)->dtype(), DType::kBF16);  // same dtype: a view
  ExpectErrorNames(file->Load("i", DType::kF32).status(), {path, "'i'", "I32", "F32"}, "int→f32");
  absl::Status missing = file->Load("nope").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  ExpectErrorNames(missing, {path, "'nope'"}, "missing tensor");
  ExpectErrorNames(file->Info("nope").status(), {path, "'nope'"}, "missing info");
}

TEST(Safetensors, StoreAsConvertsFloatingTensorsOnly) {
  const std::string dir = TempDirFor("store_as");
  const std::string path = dir + "/bf16.safetensors";
  std::vector<float> values = {1.0f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -3.3f, 1e-20f, 65504.0f};
  Tensor f = Tensor::FromFloats(values, {2, 3});
  Tensor d = Tensor::FromVector({0.1, -0.2}, {2}, DType::kF64);
  Tensor ids = Tensor::FromInts({3, 1, 4}, {3});
  ASSERT_TRUE(WriteSafetensors(path, {{"f", f}, {"d", d}, {"ids", ids}}, {}, DType::kBF16).ok());
  auto file = *SafetensorsFile::Open(path);
  EXPECT_EQ(file->Info("f")->dtype, DType::kBF16);
  EXPECT_EQ(file->Info("d")->dtype, DType::kBF16);
  EXPECT_EQ(file->Info("ids")->dtype, DType::kI64);
  Tensor fb = *file->Load("f");
  const uint16_t* bits = static_cast<const uint16_t*>(fb.raw_data());
  for (size_t k = 0; k < values.size(); ++k) {
    // Reference rounding: nearest even on the upper 16 bits, written out here.
    uint32_t u;
    std::memcpy(&u, &values[k], 4);
    uint32_t lower = u & 0xffff, upper = u >> 16;
    if (lower > 0x8000 || (lower == 0x8000 && (upper & 1))) ++upper;
    EXPECT_EQ(bits[k], upper) << values[k];
  }
  EXPECT_EQ(file->Load("ids")->ToInts(), (std::vector<int64_t>{3, 1, 4}));

  // To F32 from f64 and f16.
  const std::string path32 = dir + "/f32.safetensors";
  Tensor h = MakeTensor(DType::kF16, {3});
  ASSERT_TRUE(WriteSafetensors(path32, {{"d", d}, {"h", h}}, {}, DType::kF32).ok());
  auto file32 = *SafetensorsFile::Open(path32);
  EXPECT_EQ(file32->Load("d")->ToFloats(), (std::vector<float>{0.1f, -0.2f}));
  EXPECT_EQ(file32->Load("h")->ToFloats(), (std::vector<float>{-2.5f, -1.75f, -1.0f}));

  ExpectErrorNames(WriteSafetensors(dir + "/x.safetensors", {{"f", f}}, {}, DType::kI32),
                   {dir + "/x.safetensors", "i32"}, "integer store_as");
}

TEST(Safetensors, StridedAndBroadcastTensorsAreWrittenInCOrder) {
  const std::string dir = TempDirFor("strided");
  const std::string path = dir + "/s.safetensors";
  Tensor base = Tensor::FromVector({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor t = base.transpose(0, 1);                               // [3, 2]
  Tensor e = Tensor::FromVector({7, 8}, {2, 1}).expand({2, 3});  // stride 0
  Tensor s = base.slice(1, 1, 3);                                // offset, gaps
  Tensor hs = MakeTensor(DType::kF16, {2, 3}).transpose(0, 1);   // f16, strided
  ASSERT_TRUE(
      WriteSafetensors(path, {{"t", t}, {"e", e}, {"s", s}, {"hs", hs}}, {}, std::nullopt).ok());
  auto file = *SafetensorsFile::Open(path);
  EXPECT_EQ(file->Load("t")->ToDoubles(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(file->Load("e")->ToDoubles(), (std::vector<double>{7, 7, 7, 8, 8, 8}));
  EXPECT_EQ(file->Load("s")->ToDoubles(), (std::vector<double>{1, 2, 4, 5}));
  // f16 values -2.5 + 0.75 i in [2, 3], read transposed.
  std::vector<float> expected;
  for (int col = 0; col < 3; ++col)
    for (int row = 0; row < 2; ++row) expected.push_back(-2.5f + 0.75f * (row * 3 + col));
  EXPECT_EQ(file->Load("hs", DType::kF32)->ToFloats(), expected);
}

TEST(Safetensors, MetadataAndNames) {
  const std::string dir = TempDirFor("metadata");
  const std::string path = dir + "/m.safetensors";
  std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"step", "1000"}, {"note", "quotes \" and \\ and ünïcode"}};
  ASSERT_TRUE(
      WriteSafetensors(path, {{"zeta", Tensor::Zeros({1})}, {"alpha", Tensor::Ones({2})}}, metadata)
          .ok());
  auto file = *SafetensorsFile::Open(path);
  EXPECT_EQ(file->metadata(), metadata);
  EXPECT_EQ(file->names(), (std::vector<std::string>{"alpha", "zeta"}));
  EXPECT_TRUE(file->contains("alpha"));
  EXPECT_FALSE(file->contains("__metadata__"));
  EXPECT_FALSE(file->contains("beta"));

  // An empty file of tensors is valid too.
  ASSERT_TRUE(WriteSafetensors(dir + "/empty.safetensors", {}).ok());
  auto empty = SafetensorsFile::Open(dir + "/empty.safetensors");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE((*empty)->names().empty());
}

TEST(Safetensors, BadWritesKeepTheOldFile) {
  const std::string dir = TempDirFor("badwrite");
  const std::string path = dir + "/w.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"a", Tensor::Ones({2})}}).ok());
  const std::string before = *ReadFile(path);
  ExpectErrorNames(WriteSafetensors(path, {{"x", Tensor::Ones({1})}, {"x", Tensor::Ones({1})}}),
                   {path, "'x'", "duplicate"}, "duplicate");
  ExpectErrorNames(WriteSafetensors(path, {{"__metadata__", Tensor::Ones({1})}}),
                   {path, "__metadata__"}, "reserved");
  ExpectErrorNames(WriteSafetensors(path, {{"u", Tensor()}}), {path, "'u'", "undefined"},
                   "undefined");
  EXPECT_EQ(*ReadFile(path), before);
  EXPECT_EQ(std::system(("test $(ls -A '" + dir + "' | wc -l) -eq 1").c_str()), 0);
  ExpectErrorNames(WriteSafetensors(dir + "/missing/w.safetensors", {}),
                   {dir + "/missing/w.safetensors"}, "missing dir");
}

struct CorruptCase {
  std::string name;
  std::string bytes;
  std::vector<std::string> expected;  // parts of the message besides the path
};

TEST(Safetensors, CorruptFilesGiveErrorsNamingFileAndTensor) {
  const std::string dir = TempDirFor("corrupt");
  const std::string data16 = LittleEndianBytes<float>({1, 2, 3, 4});
  auto one = [](const std::string& entry) { return "{\"w\":" + entry + "}"; };
  std::string long_length =
      HandMade(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"), data16);
  long_length[1] = 0x10;  // header length 4096 + original
  std::string flipped =
      HandMade(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"), data16);
  flipped[8] = 'x';  // '{' → 'x'
  const std::vector<CorruptCase> cases = {
      {"empty", "", {"shorter than the 8-byte header"}},
      {"five_bytes", "abcde", {"5 bytes"}},
      {"header_length", long_length, {"header length", "runs past"}},
      {"huge_length", std::string("\xff\xff\xff\xff\xff\xff\xff\xff{}", 10), {"header length"}},
      {"flipped_byte", flipped, {"not valid JSON"}},
      {"truncated_json", HandMade(R"({"w":{"dtype":"F32")", ""), {"not valid JSON"}},
      {"not_object", HandMade("[1, 2]", ""), {"not a JSON object"}},
      {"duplicate_key",
       HandMade(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                data16.substr(0, 8)),
       {"'w'", "twice"}},
      {"unknown_dtype",
       HandMade(one(R"({"dtype":"F8_E4M3","shape":[16],"data_offsets":[0,16]})"), data16),
       {"'w'", "F8_E4M3"}},
      {"dtype_not_string",
       HandMade(one(R"({"dtype":4,"shape":[4],"data_offsets":[0,16]})"), data16),
       {"'w'", "'dtype'"}},
      {"size_mismatch",
       HandMade(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,16]})"), data16),
       {"'w'", "needs 12 bytes", "span 16"}},
      {"bf16_size_mismatch",
       HandMade(one(R"({"dtype":"BF16","shape":[2,3],"data_offsets":[0,16]})"), data16),
       {"'w'", "[2, 3]", "BF16"}},
      {"offsets_out_of_buffer",
       HandMade(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"), data16.substr(0, 12)),
       {"'w'", "exceed the data buffer of 12 bytes"}},
      {"offsets_reversed",
       HandMade(one(R"({"dtype":"F32","shape":[0],"data_offsets":[8,4]})"), data16),
       {"'w'", "[8, 4]"}},
      {"offsets_three",
       HandMade(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0,8,16]})"), data16),
       {"'w'", "'data_offsets'"}},
      {"offsets_negative",
       HandMade(one(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})"), data16),
       {"'w'", "'data_offsets'"}},
      {"overlap",
       HandMade(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                data16),
       {"'a'", "'b'", "overlap"}},
      {"missing_dtype",
       HandMade(one(R"({"shape":[4],"data_offsets":[0,16]})"), data16),
       {"'w'", "missing field 'dtype'"}},
      {"missing_shape",
       HandMade(one(R"({"dtype":"F32","data_offsets":[0,16]})"), data16),
       {"'w'", "missing field 'shape'"}},
      {"missing_offsets",
       HandMade(one(R"({"dtype":"F32","shape":[4]})"), data16),
       {"'w'", "missing field 'data_offsets'"}},
      {"entry_not_object", HandMade(one("[1]"), data16), {"'w'", "not a JSON object"}},
      {"negative_shape",
       HandMade(one(R"({"dtype":"F32","shape":[-4],"data_offsets":[0,16]})"), data16),
       {"'w'", "'shape'"}},
      {"fractional_shape",
       HandMade(one(R"({"dtype":"F32","shape":[4.0],"data_offsets":[0,16]})"), data16),
       {"'w'", "'shape'"}},
      {"overflowing_shape",
       HandMade(one(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]})"),
                data16),
       {"'w'", "too large"}},
      {"metadata_not_string",
       HandMade(R"({"__metadata__":{"step":5}})", ""),
       {"__metadata__", "'step'"}},
  };
  for (const CorruptCase& c : cases) {
    const std::string path = dir + "/" + c.name + ".safetensors";
    WritePlain(path, c.bytes);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok()) << c.name;
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    std::vector<std::string> parts = c.expected;
    parts.push_back(path);
    ExpectErrorNames(file.status(), parts, c.name);
  }
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> missing =
      SafetensorsFile::Open(dir + "/missing.safetensors");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  ExpectErrorNames(missing.status(), {dir + "/missing.safetensors"}, "missing file");
}

// Every truncation of a valid file fails cleanly; every single-byte change of the header either
// fails with a message naming the file or still loads every tensor it lists.
TEST(Safetensors, TruncationsAndByteFlipsNeverCrash) {
  const std::string dir = TempDirFor("fuzz");
  const std::string good = dir + "/good.safetensors";
  ASSERT_TRUE(WriteSafetensors(
                  good,
                  {{"a", MakeTensor(DType::kF32, {2, 2})}, {"b", MakeTensor(DType::kI64, {3})}},
                  {{"k", "v"}})
                  .ok());
  const std::string bytes = *ReadFile(good);
  const std::string path = dir + "/bad.safetensors";
  for (size_t len = 0; len < bytes.size(); ++len) {
    WritePlain(path, bytes.substr(0, len));
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok()) << "truncated to " << len;
    ASSERT_NE(file.status().message().find(path), std::string::npos) << file.status();
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  for (size_t pos = 0; pos < 8 + n; ++pos) {
    for (uint8_t mask : {0x01, 0x20, 0x80}) {
      std::string changed = bytes;
      changed[pos] = static_cast<char>(changed[pos] ^ mask);
      WritePlain(path, changed);
      absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
      if (!file.ok()) {
        ASSERT_NE(file.status().message().find(path), std::string::npos) << file.status();
        continue;
      }
      for (const std::string& name : (*file)->names()) {
        absl::StatusOr<Tensor> t = (*file)->Load(name);
        ASSERT_TRUE(t.ok()) << t.status();
        t->ToDoubles();
      }
    }
  }
}

}  // namespace
}  // namespace fam::io
