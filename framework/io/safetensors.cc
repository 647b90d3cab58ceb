#include "framework/io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <set>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "framework/autograd/node.h"
#include "framework/io/atomic_file.h"
#include "framework/ops/ops.h"
#include "nlohmann/json.hpp"

namespace fam::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swaps");

namespace {

using Json = nlohmann::json;

// IEEE half as stored in files (computed on only after conversion).
struct Half {
  uint16_t bits;
};

template <typename T>
struct Tag {
  using type = T;
};

// Calls fn(Tag<T>{}) with the C++ type that holds one element of `dtype`.
template <typename Fn>
void DispatchStored(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32:
      fn(Tag<float>{});
      return;
    case DType::kF64:
      fn(Tag<double>{});
      return;
    case DType::kBF16:
      fn(Tag<BF16>{});
      return;
    case DType::kF16:
      fn(Tag<Half>{});
      return;
    case DType::kI32:
      fn(Tag<int32_t>{});
      return;
    case DType::kI64:
      fn(Tag<int64_t>{});
      return;
  }
}

template <typename T>
double ToDouble(T value) {
  if constexpr (std::is_same_v<T, BF16>) {
    return static_cast<float>(value);
  } else if constexpr (std::is_same_v<T, Half>) {
    return HalfToFloat(value.bits);
  } else {
    return static_cast<double>(value);
  }
}

template <typename T>
T FromDouble(double value) {
  if constexpr (std::is_same_v<T, BF16>) {
    return BF16(static_cast<float>(value));
  } else if constexpr (std::is_same_v<T, Half>) {
    return Half{FloatToHalf(static_cast<float>(value))};
  } else {
    return static_cast<T>(value);
  }
}

// Whether Load/WriteSafetensors convert between these dtypes: floating ↔ floating, int ↔ int.
bool CanConvert(DType from, DType to) { return IsFloating(from) == IsFloating(to); }

// Converts n contiguous elements (src may be unaligned). Floating values go through double (f64 →
// bf16/f16 rounds via f32); integers convert directly.
void ConvertElements(const uint8_t* src, DType src_dtype, uint8_t* dst, DType dst_dtype,
                     int64_t n) {
  DispatchStored(src_dtype, [&](auto src_tag) {
    DispatchStored(dst_dtype, [&](auto dst_tag) {
      using S = typename decltype(src_tag)::type;
      using D = typename decltype(dst_tag)::type;
      for (int64_t i = 0; i < n; ++i) {
        S s;
        std::memcpy(&s, src + i * sizeof(S), sizeof(S));
        D d;
        if constexpr (std::is_integral_v<S> && std::is_integral_v<D>) {
          d = static_cast<D>(s);
        } else {
          d = FromDouble<D>(ToDouble(s));
        }
        std::memcpy(dst + i * sizeof(D), &d, sizeof(D));
      }
    });
  });
}

// Copies a strided CPU tensor's elements (any dtype) into contiguous bytes, in C order.
std::vector<uint8_t> GatherBytes(const Tensor& t) {
  const size_t elem = DTypeSize(t.dtype());
  const int64_t n = t.numel();
  std::vector<uint8_t> out(static_cast<size_t>(n) * elem);
  if (n == 0) return out;
  const uint8_t* base = static_cast<const uint8_t*>(t.storage()->data());
  const int rank = static_cast<int>(t.dim());
  std::vector<int64_t> index(rank, 0);
  int64_t offset = t.offset();
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(out.data() + i * elem, base + offset * static_cast<int64_t>(elem), elem);
    for (int d = rank - 1; d >= 0; --d) {
      ++index[d];
      offset += t.strides()[d];
      if (index[d] < t.shape()[d]) break;
      offset -= t.strides()[d] * t.shape()[d];
      index[d] = 0;
    }
  }
  return out;
}

std::string Prefix(const std::string& path) { return absl::StrCat("safetensors ", path, ": "); }

std::string TensorPrefix(const std::string& path, const std::string& name) {
  return absl::StrCat("safetensors ", path, ": tensor '", name, "': ");
}

std::string OffsetsString(uint64_t begin, uint64_t end) {
  return absl::StrCat("[", begin, ", ", end, "]");
}

// Parses and checks one tensor entry of the header.
absl::StatusOr<SafetensorsTensorInfo> ParseEntry(const std::string& path, const std::string& name,
                                                 const Json& entry, uint64_t buffer_size) {
  const std::string prefix = TensorPrefix(path, name);
  if (!entry.is_object()) return absl::InvalidArgumentError(prefix + "entry is not a JSON object");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field))
      return absl::InvalidArgumentError(absl::StrCat(prefix, "missing field '", field, "'"));
  }
  SafetensorsTensorInfo info;
  const Json& dtype = entry["dtype"];
  if (!dtype.is_string()) return absl::InvalidArgumentError(prefix + "'dtype' is not a string");
  std::optional<DType> parsed = ParseSafetensorsDType(dtype.get<std::string>());
  if (!parsed) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "unsupported dtype '",
                                                   dtype.get<std::string>(),
                                                   "' (need F32, F64, BF16, F16, I32 or I64)"));
  }
  info.dtype = *parsed;

  const Json& shape = entry["shape"];
  if (!shape.is_array()) return absl::InvalidArgumentError(prefix + "'shape' is not an array");
  uint64_t numel = 1;
  bool overflow = false;
  for (const Json& d : shape) {
    if (!d.is_number_unsigned()) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, "'shape' ", shape.dump(), " holds a non-integer or negative size"));
    }
    uint64_t size = d.get<uint64_t>();
    if (size > static_cast<uint64_t>(INT64_MAX)) overflow = true;
    info.shape.push_back(static_cast<int64_t>(size));
    overflow = overflow || __builtin_mul_overflow(numel, size, &numel);
  }
  uint64_t nbytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, DTypeSize(info.dtype), &nbytes);
  if (overflow)
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "'shape' ", shape.dump(), " is too large"));

  const Json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "'data_offsets' ", offsets.dump(),
                                                   " is not two non-negative integers"));
  }
  info.begin = offsets[0].get<uint64_t>();
  info.end = offsets[1].get<uint64_t>();
  if (info.begin > info.end) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, "'data_offsets' ", OffsetsString(info.begin, info.end), " end before they begin"));
  }
  if (info.end > buffer_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "'data_offsets' ", OffsetsString(info.begin, info.end),
                     " exceed the data buffer of ", buffer_size, " bytes"));
  }
  if (info.end - info.begin != nbytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, "shape ", ShapeString(info.shape), " of ", SafetensorsDTypeName(info.dtype),
        " needs ", nbytes, " bytes but 'data_offsets' ", OffsetsString(info.begin, info.end),
        " span ", info.end - info.begin));
  }
  return info;
}

}  // namespace

const char* SafetensorsDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF64:
      return "F64";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

std::optional<DType> ParseSafetensorsDType(std::string_view name) {
  for (DType d : {DType::kF32, DType::kF64, DType::kBF16, DType::kF16, DType::kI32, DType::kI64}) {
    if (name == SafetensorsDTypeName(d)) return d;
  }
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  absl::StatusOr<std::shared_ptr<MmapFile>> mapped = MmapFile::Open(path);
  if (!mapped.ok()) return mapped.status();
  std::shared_ptr<MmapFile> file = *std::move(mapped);
  const std::string prefix = Prefix(path);
  const uint64_t file_size = file->size();
  if (file_size < 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, "file is ", file_size, " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | file->data()[i];
  if (header_size > file_size - 8) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "header length ", header_size,
                                                   " runs past the end of the ", file_size,
                                                   "-byte file"));
  }
  const size_t data_start = 8 + static_cast<size_t>(header_size);
  const uint64_t buffer_size = file_size - data_start;

  // Parse the header, noticing duplicate top-level keys (JSON parsers keep only one of them).
  std::set<std::string> seen_keys;
  std::string duplicate;
  Json header;
  try {
    const char* begin = reinterpret_cast<const char*>(file->data() + 8);
    header = Json::parse(
        begin, begin + header_size, [&](int depth, Json::parse_event_t event, Json& parsed) {
          if (depth == 1 && event == Json::parse_event_t::key &&
              !seen_keys.insert(parsed.get<std::string>()).second && duplicate.empty()) {
            duplicate = parsed.get<std::string>();
          }
          return true;
        });
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "header is not valid JSON (", e.what(), ")"));
  }
  if (!header.is_object())
    return absl::InvalidArgumentError(prefix + "header is not a JSON object");
  if (!duplicate.empty())
    return absl::InvalidArgumentError(absl::StrCat(prefix, "header lists '", duplicate, "' twice"));

  auto result = std::unique_ptr<SafetensorsFile>(new SafetensorsFile(file, data_start));
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object())
        return absl::InvalidArgumentError(prefix + "'__metadata__' is not a JSON object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(prefix, "'__metadata__' value of '", key,
                                                         "' is not a string: ", value.dump()));
        }
        result->metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    absl::StatusOr<SafetensorsTensorInfo> info = ParseEntry(path, name, entry, buffer_size);
    if (!info.ok()) return info.status();
    result->tensors_[name] = *std::move(info);
  }

  // No two tensors may share bytes. Sorting by (begin, end) puts empty tensors before the tensor
  // starting at the same offset, so each only has to start at or after the previous one's end.
  std::vector<std::pair<const std::string*, const SafetensorsTensorInfo*>> by_offset;
  for (const auto& [name, info] : result->tensors_) by_offset.push_back({&name, &info});
  std::sort(by_offset.begin(), by_offset.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.second->begin, a.second->end) <
           std::make_pair(b.second->begin, b.second->end);
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SafetensorsTensorInfo& prev = *by_offset[i - 1].second;
    const SafetensorsTensorInfo& cur = *by_offset[i].second;
    if (cur.begin < prev.end) {
      return absl::InvalidArgumentError(absl::StrCat(
          prefix, "tensors '", *by_offset[i - 1].first, "' ", OffsetsString(prev.begin, prev.end),
          " and '", *by_offset[i].first, "' ", OffsetsString(cur.begin, cur.end), " overlap"));
    }
  }
  return result;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, info] : tensors_) names.push_back(name);
  return names;
}

absl::StatusOr<SafetensorsTensorInfo> SafetensorsFile::Info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    return absl::NotFoundError(absl::StrCat(Prefix(path()), "no tensor '", name, "'"));
  return it->second;
}

absl::StatusOr<Tensor> SafetensorsFile::Load(const std::string& name,
                                             std::optional<DType> as) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    return absl::NotFoundError(absl::StrCat(Prefix(path()), "no tensor '", name, "'"));
  const SafetensorsTensorInfo& info = it->second;
  const DType dtype = as.value_or(info.dtype);
  if (!CanConvert(info.dtype, dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(TensorPrefix(path(), name), "cannot convert ",
                                                   SafetensorsDTypeName(info.dtype), " to ",
                                                   SafetensorsDTypeName(dtype)));
  }
  uint8_t* bytes = file_->data() + data_start_ + info.begin;
  const size_t nbytes = static_cast<size_t>(info.end - info.begin);
  const int64_t numel = NumElements(info.shape);
  if (dtype == info.dtype && reinterpret_cast<uintptr_t>(bytes) % DTypeSize(dtype) == 0) {
    // Zero copy: the storage's release callback holds the mapping until the last view is gone.
    std::shared_ptr<Storage> storage =
        Storage::Wrap(bytes, nbytes, Device::CPU(), [file = file_] {});
    return Tensor::MakeView(std::move(storage), info.shape, ContiguousStrides(info.shape), 0,
                            dtype);
  }
  // A conversion, or data not aligned to its element size (only in files written by other tools).
  Tensor out;
  absl::Status status = CatchToStatus([&] { out = Tensor::Empty(info.shape, dtype); });
  if (!status.ok()) return status;
  ConvertElements(bytes, info.dtype, static_cast<uint8_t*>(out.raw_data()), dtype, numel);
  return out;
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata,
                              std::optional<DType> store_as) {
  const std::string prefix = absl::StrCat("WriteSafetensors ", path, ": ");
  if (store_as && !IsFloating(*store_as)) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "store_as must be a floating dtype, got ", DTypeName(*store_as)));
  }
  struct Entry {
    std::string name;
    Tensor tensor;
    DType stored;
    uint64_t begin = 0;
    uint64_t end = 0;
  };
  std::vector<Entry> entries;
  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    const std::string tensor_prefix = absl::StrCat(prefix, "tensor '", name, "': ");
    if (name.empty() || name == "__metadata__")
      return absl::InvalidArgumentError(tensor_prefix + "reserved or empty name");
    if (!names.insert(name).second)
      return absl::InvalidArgumentError(tensor_prefix + "duplicate name");
    if (!tensor.defined()) return absl::InvalidArgumentError(tensor_prefix + "undefined tensor");
    DType stored = store_as && IsFloating(tensor.dtype()) ? *store_as : tensor.dtype();
    entries.push_back({name, tensor.detach(), stored});
  }
  // Larger elements first, so that each tensor starts at a multiple of its element size.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    size_t sa = DTypeSize(a.stored), sb = DTypeSize(b.stored);
    return sa != sb ? sa > sb : a.name < b.name;
  });

  Json header = Json::object();
  uint64_t offset = 0;
  for (Entry& e : entries) {
    e.begin = offset;
    e.end = offset + static_cast<uint64_t>(e.tensor.numel()) * DTypeSize(e.stored);
    offset = e.end;
    header[e.name] = {{"dtype", SafetensorsDTypeName(e.stored)},
                      {"shape", e.tensor.shape()},
                      {"data_offsets", {e.begin, e.end}}};
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(header_text.size() >> (8 * i));

  absl::StatusOr<std::unique_ptr<AtomicFileWriter>> writer = AtomicFileWriter::Create(path);
  if (!writer.ok()) return writer.status();
  if (absl::Status s = (*writer)->Write(length, 8); !s.ok()) return s;
  if (absl::Status s = (*writer)->Write(header_text); !s.ok()) return s;
  for (const Entry& e : entries) {
    if (e.tensor.numel() == 0) continue;
    Tensor host = e.tensor;
    absl::Status status = CatchToStatus([&] {
      if (!host.device().is_cpu()) {
        NoGradGuard no_grad;
        host = ops::To(host, Device::CPU());
      }
    });
    if (!status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat(prefix, "tensor '", e.name, "': ", status.message()));
    }
    if (host.dtype() == e.stored && host.is_contiguous()) {
      status = (*writer)->Write(host.raw_data(), host.nbytes());
    } else {
      std::vector<uint8_t> raw;
      const uint8_t* src = static_cast<const uint8_t*>(host.raw_data());
      if (!host.is_contiguous()) {
        raw = GatherBytes(host);
        src = raw.data();
      }
      if (host.dtype() == e.stored) {
        status = (*writer)->Write(src, host.nbytes());
      } else {
        // Convert in chunks to bound the extra memory.
        constexpr int64_t kChunk = 1 << 20;
        std::vector<uint8_t> converted(kChunk * DTypeSize(e.stored));
        const int64_t n = host.numel();
        for (int64_t i = 0; i < n && status.ok(); i += kChunk) {
          int64_t count = std::min(kChunk, n - i);
          ConvertElements(src + i * DTypeSize(host.dtype()), host.dtype(), converted.data(),
                          e.stored, count);
          status = (*writer)->Write(converted.data(), count * DTypeSize(e.stored));
        }
      }
    }
    if (!status.ok()) return status;
  }
  return (*writer)->Commit();
}

}  // namespace fam::io
