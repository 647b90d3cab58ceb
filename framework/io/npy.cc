#include "framework/io/npy.h"

#include <cctype>
#include <cstring>
#include <optional>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "framework/autograd/node.h"
#include "framework/core/printable_text.h"
#include "framework/io/atomic_file.h"
#include "framework/io/mmap_file.h"
#include "framework/ops/ops.h"

namespace fam::io {
namespace {

constexpr char kMagic[] = "\x93NUMPY";  // 6 bytes
constexpr size_t kMagicSize = 6;

std::optional<std::string> Descr(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "<f4";
    case DType::kF64:
      return "<f8";
    case DType::kI32:
      return "<i4";
    case DType::kI64:
      return "<i8";
    default:
      return std::nullopt;
  }
}

std::optional<DType> DTypeFromDescr(std::string_view descr) {
  if (descr.size() != 3 || (descr[0] != '<' && descr[0] != '=')) return std::nullopt;
  std::string_view kind = descr.substr(1);
  if (kind == "f4") return DType::kF32;
  if (kind == "f8") return DType::kF64;
  if (kind == "i4") return DType::kI32;
  if (kind == "i8") return DType::kI64;
  return std::nullopt;
}

// NumPy's tuple repr: "()", "(5,)", "(2, 3)".
std::string ShapeTuple(const Shape& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  Shape shape;
};

// A small parser for the Python dict literal NumPy writes:
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class HeaderParser {
 public:
  explicit HeaderParser(std::string_view text) : text_(text) {}

  // Returns an error message, or "" on success.
  std::string Parse(NpyHeader& out) {
    bool have_descr = false, have_order = false, have_shape = false;
    SkipSpace();
    if (!Consume('{')) return "header does not start with '{'";
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      std::string key;
      if (!ParseString(key)) return "expected a quoted key in the header dict";
      SkipSpace();
      if (!Consume(':')) return absl::StrCat("expected ':' after '", EscapeNonPrintable(key), "'");
      SkipSpace();
      if (key == "descr") {
        if (!ParseString(out.descr)) return "'descr' is not a string";
        have_descr = true;
      } else if (key == "fortran_order") {
        if (ConsumeWord("True")) {
          out.fortran_order = true;
        } else if (ConsumeWord("False")) {
          out.fortran_order = false;
        } else {
          return "'fortran_order' is neither True nor False";
        }
        have_order = true;
      } else if (key == "shape") {
        if (!ParseTuple(out.shape)) return "'shape' is not a tuple of non-negative integers";
        have_shape = true;
      } else {
        return absl::StrCat("unexpected key '", EscapeNonPrintable(key), "' in the header dict");
      }
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      if (Consume('}')) break;
      return "expected ',' or '}' in the header dict";
    }
    if (!have_descr || !have_order || !have_shape)
      return "header dict lacks one of 'descr', 'fortran_order', 'shape'";
    SkipSpace();
    if (pos_ != text_.size()) return "trailing characters after the header dict";
    return "";
  }

 private:
  void SkipSpace() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  bool Consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool ConsumeWord(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }
  bool ParseString(std::string& out) {
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) return false;
    char quote = text_[pos_++];
    size_t end = text_.find(quote, pos_);
    if (end == std::string_view::npos) return false;
    out = std::string(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return true;
  }
  bool ParseTuple(Shape& out) {
    if (!Consume('(')) return false;
    while (true) {
      SkipSpace();
      if (Consume(')')) return true;
      size_t start = pos_;
      int64_t value = 0;
      while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
        if (value > (INT64_MAX - 9) / 10) return false;
        value = value * 10 + (text_[pos_++] - '0');
      }
      if (pos_ == start) return false;
      Consume('L');  // Python 2 longs
      out.push_back(value);
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      return Consume(')');
    }
  }

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

absl::Status WriteNpy(const std::string& path, const Tensor& tensor) {
  const std::string prefix = absl::StrCat("WriteNpy ", path, ": ");
  if (!tensor.defined()) return absl::InvalidArgumentError(prefix + "undefined tensor");
  std::optional<std::string> descr = Descr(tensor.dtype());
  if (!descr) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "dtype ", DTypeName(tensor.dtype()),
                                                   " is not supported (need f32, f64, i32, i64)"));
  }
  Tensor host;
  absl::Status status = CatchToStatus([&] {
    NoGradGuard no_grad;
    host = ops::Contiguous(ops::To(tensor.detach(), Device::CPU()));
  });
  if (!status.ok()) return absl::Status(status.code(), prefix + std::string(status.message()));

  std::string header =
      absl::StrCat("{'descr': '", *descr,
                   "', 'fortran_order': False, 'shape': ", ShapeTuple(host.shape()), ", }");
  // Magic (6) + version (2) + length (2) + header + '\n' is padded with spaces to a multiple of 64.
  const size_t unpadded = kMagicSize + 4 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  if (header.size() > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "shape ", ShapeString(host.shape()),
                                                   " makes the header too long for version 1.0"));
  }
  std::string preamble(kMagic, kMagicSize);
  preamble.push_back('\x01');
  preamble.push_back('\x00');
  preamble.push_back(static_cast<char>(header.size() & 0xff));
  preamble.push_back(static_cast<char>(header.size() >> 8));

  absl::StatusOr<std::unique_ptr<AtomicFileWriter>> writer = AtomicFileWriter::Create(path);
  if (!writer.ok()) return writer.status();
  if (absl::Status s = (*writer)->Write(preamble + header); !s.ok()) return s;
  if (host.nbytes() > 0) {
    if (absl::Status s = (*writer)->Write(host.raw_data(), host.nbytes()); !s.ok()) return s;
  }
  return (*writer)->Commit();
}

absl::StatusOr<Tensor> ReadNpy(const std::string& path) {
  absl::StatusOr<std::shared_ptr<MmapFile>> mapped = MmapFile::Open(path);
  if (!mapped.ok()) return mapped.status();
  const MmapFile& file = **mapped;
  const std::string prefix = absl::StrCat("npy ", path, ": ");
  const uint8_t* data = file.data();
  const size_t size = file.size();
  if (size < kMagicSize + 4 || std::memcmp(data, kMagic, kMagicSize) != 0)
    return absl::InvalidArgumentError(prefix + "not a .npy file (bad magic)");
  const int major = data[6];
  size_t header_start, header_size;
  if (major == 1) {
    header_start = 10;
    header_size = data[8] | (static_cast<size_t>(data[9]) << 8);
  } else if (major == 2 || major == 3) {
    if (size < 12) return absl::InvalidArgumentError(prefix + "truncated header");
    header_start = 12;
    header_size = data[8] | (static_cast<size_t>(data[9]) << 8) |
                  (static_cast<size_t>(data[10]) << 16) | (static_cast<size_t>(data[11]) << 24);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "unsupported format version ", major, ".", data[7]));
  }
  if (header_size > size - header_start) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, "header length ", header_size, " runs past the end of the ", size, "-byte file"));
  }
  std::string_view header_text(reinterpret_cast<const char*>(data + header_start), header_size);
  NpyHeader header;
  std::string error = HeaderParser(header_text).Parse(header);
  if (!error.empty()) return absl::InvalidArgumentError(prefix + error);

  std::optional<DType> dtype = DTypeFromDescr(header.descr);
  if (!dtype) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "unsupported dtype '",
                                                   EscapeNonPrintable(header.descr),
                                                   "' (need little-endian <f4, <f8, <i4 or <i8)"));
  }
  if (header.fortran_order && header.shape.size() > 1) {
    return absl::InvalidArgumentError(
        prefix + "Fortran-order arrays are not supported (save with np.ascontiguousarray)");
  }
  uint64_t numel = 1;
  for (int64_t d : header.shape) {
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel))
      return absl::InvalidArgumentError(prefix + "shape is too large");
  }
  const size_t data_start = header_start + header_size;
  const uint64_t available = size - data_start;
  uint64_t needed = 0;
  if (__builtin_mul_overflow(numel, DTypeSize(*dtype), &needed) || needed != available) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "data is ", available,
                                                   " bytes but shape ", ShapeTuple(header.shape),
                                                   " of ", header.descr, " needs ", needed));
  }
  Tensor out;
  absl::Status status = CatchToStatus([&] { out = Tensor::Empty(header.shape, *dtype); });
  if (!status.ok()) return status;
  if (needed > 0) std::memcpy(out.raw_data(), data + data_start, needed);
  return out;
}

}  // namespace fam::io
