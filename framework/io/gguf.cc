#include "framework/io/gguf.h"

#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "framework/core/dtype.h"
#include "framework/core/printable_text.h"

namespace fam::io {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxStringBytes = uint64_t{1} << 30;

enum ValueType : uint32_t {
  kU8 = 0,
  kI8,
  kU16,
  kI16,
  kU32,
  kI32,
  kF32,
  kBool,
  kString,
  kArray,
  kU64,
  kI64,
  kF64
};

// Elements per block and bytes per block of a ggml type; false when not supported.
bool BlockLayout(uint32_t type, int64_t* elements, int64_t* bytes) {
  switch (type) {
    case 0:  // F32
      *elements = 1, *bytes = 4;
      return true;
    case 1:   // F16
    case 30:  // BF16
      *elements = 1, *bytes = 2;
      return true;
    case 2:  // Q4_0: f16 scale, 16 bytes of nibbles
      *elements = 32, *bytes = 18;
      return true;
    case 3:  // Q4_1: f16 scale, f16 min, 16 bytes of nibbles
      *elements = 32, *bytes = 20;
      return true;
    case 8:  // Q8_0: f16 scale, 32 int8
      *elements = 32, *bytes = 34;
      return true;
  }
  return false;
}

// Bounds-checked little-endian reads from the mapping.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, std::string path)
      : data_(data), size_(size), path_(std::move(path)) {}
  size_t pos() const { return pos_; }
  void Seek(size_t pos) { pos_ = pos; }
  absl::Status Fail(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", what, " (at byte ", pos_, ")"));
  }
  template <typename T>
  absl::Status Read(T* out, const std::string& what) {
    if (size_ - pos_ < sizeof(T) || pos_ > size_) return Fail(absl::StrCat("truncated ", what));
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }
  absl::Status ReadString(std::string* out, const std::string& what) {
    uint64_t n = 0;
    if (absl::Status s = Read(&n, what); !s.ok()) return s;
    if (n > kMaxStringBytes || n > size_ - pos_)
      return Fail(absl::StrCat(what, " of ", n, " bytes runs past the end"));
    out->assign(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return absl::OkStatus();
  }
  absl::Status Skip(uint64_t n, const std::string& what) {
    if (n > size_ - pos_) return Fail(absl::StrCat(what, " runs past the end"));
    pos_ += n;
    return absl::OkStatus();
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string path_;
};

int64_t ScalarBytes(uint32_t type) {
  switch (type) {
    case kU8:
    case kI8:
    case kBool:
      return 1;
    case kU16:
    case kI16:
      return 2;
    case kU32:
    case kI32:
    case kF32:
      return 4;
    case kU64:
    case kI64:
    case kF64:
      return 8;
  }
  return 0;
}

absl::Status ReadScalar(Cursor& c, uint32_t type, GgufValue* v, const std::string& key) {
  auto read = [&](auto zero) -> absl::Status {
    decltype(zero) x{};
    if (absl::Status s = c.Read(&x, key); !s.ok()) return s;
    if constexpr (std::is_floating_point_v<decltype(zero)>) {
      v->kind = GgufValue::Kind::kFloat;
      v->number = static_cast<double>(x);
    } else {
      v->kind = GgufValue::Kind::kInt;
      v->integer = static_cast<int64_t>(x);
      v->number = static_cast<double>(x);
    }
    return absl::OkStatus();
  };
  switch (type) {
    case kU8:
      return read(uint8_t{});
    case kI8:
      return read(int8_t{});
    case kU16:
      return read(uint16_t{});
    case kI16:
      return read(int16_t{});
    case kU32:
      return read(uint32_t{});
    case kI32:
      return read(int32_t{});
    case kF32:
      return read(float{});
    case kU64:
      return read(uint64_t{});
    case kI64:
      return read(int64_t{});
    case kF64:
      return read(double{});
    case kBool: {
      uint8_t b = 0;
      if (absl::Status s = c.Read(&b, key); !s.ok()) return s;
      v->kind = GgufValue::Kind::kBool;
      v->flag = b != 0;
      return absl::OkStatus();
    }
    case kString:
      v->kind = GgufValue::Kind::kString;
      return c.ReadString(&v->text, key);
  }
  return c.Fail(absl::StrCat(key, ": unknown value type ", type));
}

}  // namespace

const char* GgufFile::TypeName(uint32_t type) {
  switch (type) {
    case 0:
      return "F32";
    case 1:
      return "F16";
    case 2:
      return "Q4_0";
    case 3:
      return "Q4_1";
    case 6:
      return "Q5_0";
    case 7:
      return "Q5_1";
    case 8:
      return "Q8_0";
    case 30:
      return "BF16";
  }
  return type >= 10 && type <= 23 ? "a k-quant or i-quant" : "unknown";
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  absl::StatusOr<std::shared_ptr<MmapFile>> file = MmapFile::Open(path);
  if (!file.ok()) return file.status();
  std::unique_ptr<GgufFile> g(new GgufFile(*std::move(file)));
  // Names and strings of the file may appear in the error: it stays one line.
  if (absl::Status s = g->Parse(); !s.ok()) return PrintableStatus(s);
  return g;
}

absl::Status GgufFile::Parse() {
  Cursor c(file_->data(), file_->size(), file_->path());
  uint32_t magic = 0;
  uint64_t tensor_count = 0, kv_count = 0;
  if (absl::Status s = c.Read(&magic, "magic"); !s.ok()) return s;
  if (magic != kMagic) return c.Fail("not a GGUF file (bad magic)");
  if (absl::Status s = c.Read(&version_, "version"); !s.ok()) return s;
  if (version_ != 2 && version_ != 3)
    return c.Fail(absl::StrCat("version ", version_, " is not supported (2 or 3)"));
  if (absl::Status s = c.Read(&tensor_count, "tensor count"); !s.ok()) return s;
  if (absl::Status s = c.Read(&kv_count, "metadata count"); !s.ok()) return s;
  // Each entry takes at least 8 bytes: counts beyond the file are lies.
  if (tensor_count > file_->size() / 8 || kv_count > file_->size() / 8)
    return c.Fail(absl::StrCat("tensor count ", tensor_count, " / metadata count ", kv_count,
                               " exceed what the file could hold"));
  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string key;
    uint32_t type = 0;
    if (absl::Status s = c.ReadString(&key, "metadata key"); !s.ok()) return s;
    if (absl::Status s = c.Read(&type, key); !s.ok()) return s;
    GgufValue v;
    if (type == kArray) {
      v.kind = GgufValue::Kind::kArray;
      if (absl::Status s = c.Read(&v.array_type, key); !s.ok()) return s;
      if (absl::Status s = c.Read(&v.array_size, key); !s.ok()) return s;
      if (v.array_type == kString) {
        std::string item;
        for (uint64_t j = 0; j < v.array_size; ++j)
          if (absl::Status s = c.ReadString(&item, key); !s.ok()) return s;
      } else if (const int64_t bytes = ScalarBytes(v.array_type); bytes > 0) {
        if (v.array_size > file_->size() / static_cast<uint64_t>(bytes))
          return c.Fail(absl::StrCat(key, ": array of ", v.array_size, " runs past the end"));
        if (absl::Status s = c.Skip(v.array_size * bytes, key); !s.ok()) return s;
      } else {
        return c.Fail(absl::StrCat(key, ": array of unsupported type ", v.array_type));
      }
    } else if (absl::Status s = ReadScalar(c, type, &v, key); !s.ok()) {
      return s;
    }
    metadata_[key] = std::move(v);
  }
  absl::StatusOr<int64_t> alignment = Int("general.alignment", 32);
  if (!alignment.ok()) return alignment.status();
  if (*alignment <= 0 || (*alignment & (*alignment - 1)) != 0)
    return c.Fail(absl::StrCat("general.alignment ", *alignment, " is not a power of two"));
  std::vector<uint64_t> relative(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensorInfo t;
    uint32_t n_dims = 0;
    if (absl::Status s = c.ReadString(&t.name, "tensor name"); !s.ok()) return s;
    if (absl::Status s = c.Read(&n_dims, t.name); !s.ok()) return s;
    if (n_dims == 0 || n_dims > 4) return c.Fail(absl::StrCat(t.name, ": ", n_dims, " dimensions"));
    std::vector<int64_t> ne(n_dims);
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t n = 0;
      if (absl::Status s = c.Read(&n, t.name); !s.ok()) return s;
      if (n == 0 || n > file_->size() * 2 || numel > static_cast<int64_t>(file_->size() * 2 / n))
        return c.Fail(absl::StrCat(t.name, ": dimension ", n, " is impossible for this file"));
      ne[d] = static_cast<int64_t>(n);
      numel *= ne[d];
    }
    t.shape.assign(ne.rbegin(), ne.rend());
    if (absl::Status s = c.Read(&t.type, t.name); !s.ok()) return s;
    if (absl::Status s = c.Read(&relative[i], t.name); !s.ok()) return s;
    int64_t block = 1, block_bytes = 0;
    if (BlockLayout(t.type, &block, &block_bytes)) {
      if (ne[0] % block != 0)
        return c.Fail(absl::StrCat(t.name, ": rows of ", ne[0], " are not whole ", TypeName(t.type),
                                   " blocks"));
      t.nbytes = static_cast<uint64_t>(numel / block * block_bytes);
    }
    tensors_.push_back(std::move(t));
  }
  const uint64_t align = static_cast<uint64_t>(*alignment);
  const uint64_t data_start = (c.pos() + align - 1) / align * align;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    GgufTensorInfo& t = tensors_[i];
    if (relative[i] > file_->size() || data_start > file_->size() - relative[i] ||
        t.nbytes > file_->size() - data_start - relative[i])
      return absl::InvalidArgumentError(
          absl::StrCat(path(), ": tensor ", t.name, ": data runs past the end of the file"));
    t.offset = data_start + relative[i];
  }
  return absl::OkStatus();
}

const GgufTensorInfo* GgufFile::Find(const std::string& name) const {
  for (const GgufTensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

absl::StatusOr<int64_t> GgufFile::Int(const std::string& key,
                                      std::optional<int64_t> fallback) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) {
    if (fallback) return *fallback;
    return absl::InvalidArgumentError(absl::StrCat(path(), ": ", key, ": missing"));
  }
  if (it->second.kind != GgufValue::Kind::kInt)
    return absl::InvalidArgumentError(absl::StrCat(path(), ": ", key, ": expected an integer"));
  return it->second.integer;
}

absl::StatusOr<double> GgufFile::Number(const std::string& key,
                                        std::optional<double> fallback) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) {
    if (fallback) return *fallback;
    return absl::InvalidArgumentError(absl::StrCat(path(), ": ", key, ": missing"));
  }
  if (it->second.kind != GgufValue::Kind::kInt && it->second.kind != GgufValue::Kind::kFloat)
    return absl::InvalidArgumentError(absl::StrCat(path(), ": ", key, ": expected a number"));
  return it->second.number;
}

absl::StatusOr<std::string> GgufFile::String(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end())
    return absl::InvalidArgumentError(absl::StrCat(path(), ": ", key, ": missing"));
  if (it->second.kind != GgufValue::Kind::kString)
    return absl::InvalidArgumentError(absl::StrCat(path(), ": ", key, ": expected a string"));
  return it->second.text;
}

absl::StatusOr<Tensor> GgufFile::Dequantize(const std::string& name) const {
  const GgufTensorInfo* t = Find(name);
  if (t == nullptr)
    return absl::NotFoundError(absl::StrCat(path(), ": no tensor ", EscapeNonPrintable(name)));
  int64_t block = 1, block_bytes = 0;
  if (!BlockLayout(t->type, &block, &block_bytes))
    return absl::InvalidArgumentError(absl::StrCat(path(), ": tensor ", EscapeNonPrintable(name),
                                                   ": type ", TypeName(t->type), " (", t->type,
                                                   ") is not supported (F32, F16, BF16, Q8_0, "
                                                   "Q4_0, Q4_1)"));
  Tensor out = Tensor::Empty(t->shape, DType::kF32);
  float* dst = out.data<float>();
  const uint8_t* src = file_->data() + t->offset;
  const int64_t numel = out.numel();
  auto half = [](const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return HalfToFloat(h);
  };
  switch (t->type) {
    case 0:
      std::memcpy(dst, src, static_cast<size_t>(numel) * 4);
      break;
    case 1:
      for (int64_t i = 0; i < numel; ++i) dst[i] = half(src + 2 * i);
      break;
    case 30:
      for (int64_t i = 0; i < numel; ++i) {
        uint16_t b;
        std::memcpy(&b, src + 2 * i, 2);
        dst[i] = BF16::ToFloat(b);
      }
      break;
    case 8:  // Q8_0: x = d·q
      for (int64_t b = 0; b < numel / 32; ++b) {
        const uint8_t* blk = src + b * 34;
        const float d = half(blk);
        for (int j = 0; j < 32; ++j) dst[b * 32 + j] = d * static_cast<int8_t>(blk[2 + j]);
      }
      break;
    case 2:  // Q4_0: x = d·(q − 8); the low nibbles are elements 0..15, the high ones 16..31
      for (int64_t b = 0; b < numel / 32; ++b) {
        const uint8_t* blk = src + b * 18;
        const float d = half(blk);
        for (int j = 0; j < 16; ++j) {
          dst[b * 32 + j] = d * static_cast<float>((blk[2 + j] & 0xF) - 8);
          dst[b * 32 + j + 16] = d * static_cast<float>((blk[2 + j] >> 4) - 8);
        }
      }
      break;
    case 3:  // Q4_1: x = d·q + m
      for (int64_t b = 0; b < numel / 32; ++b) {
        const uint8_t* blk = src + b * 20;
        const float d = half(blk), m = half(blk + 2);
        for (int j = 0; j < 16; ++j) {
          dst[b * 32 + j] = d * static_cast<float>(blk[4 + j] & 0xF) + m;
          dst[b * 32 + j + 16] = d * static_cast<float>(blk[4 + j] >> 4) + m;
        }
      }
      break;
  }
  return out;
}

}  // namespace fam::io
