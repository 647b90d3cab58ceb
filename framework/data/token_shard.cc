#include "framework/data/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "framework/core/error.h"

namespace fam::data {

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian; big-endian hosts are not supported");

namespace {

// Header layout (see token_shard.h).
struct ShardHeader {
  char magic[8];
  uint32_t version;
  uint32_t dtype;
  uint64_t vocab_size;
  uint64_t num_tokens;
  uint64_t checksum;
  uint8_t reserved[24];
};
static_assert(sizeof(ShardHeader) == kTokenShardHeaderBytes);

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, const void* data, size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write token shard", path);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status WriteTokens(int fd, const std::vector<int32_t>& tokens, uint64_t* checksum,
                         const std::string& path) {
  constexpr size_t kChunk = 1 << 16;
  std::vector<T> buffer;
  buffer.reserve(kChunk);
  uint64_t hash = kFnv1a64Basis;
  for (size_t begin = 0; begin < tokens.size(); begin += kChunk) {
    const size_t end = std::min(tokens.size(), begin + kChunk);
    buffer.clear();
    for (size_t i = begin; i < end; ++i) buffer.push_back(static_cast<T>(tokens[i]));
    const size_t bytes = buffer.size() * sizeof(T);
    hash = Fnv1a64(buffer.data(), bytes, hash);
    absl::Status status = WriteAll(fd, buffer.data(), bytes, path);
    if (!status.ok()) return status;
  }
  *checksum = hash;
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteTokenShard(const std::string& path, const std::vector<int32_t>& tokens,
                             int64_t vocab_size) {
  if (vocab_size <= 0 || vocab_size > (int64_t{1} << 32)) {
    return absl::InvalidArgumentError(
        absl::StrCat("token shard ", path, ": vocab_size ", vocab_size, " out of range"));
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token shard ", path, ": token ", i, " = ",
                                                     tokens[i], " not in [0, ", vocab_size, ")"));
    }
  }
  const uint32_t dtype = vocab_size <= 65536 ? 2 : 4;
  const std::string tmp = absl::StrCat(path, ".tmp-", ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create token shard", tmp);

  ShardHeader header;
  std::memset(&header, 0, sizeof(header));
  std::memcpy(header.magic, kTokenShardMagic, 8);
  header.version = kTokenShardVersion;
  header.dtype = dtype;
  header.vocab_size = static_cast<uint64_t>(vocab_size);
  header.num_tokens = tokens.size();
  absl::Status status = WriteAll(fd, &header, sizeof(header), tmp);  // checksum filled below
  if (status.ok()) {
    status = dtype == 2 ? WriteTokens<uint16_t>(fd, tokens, &header.checksum, tmp)
                        : WriteTokens<uint32_t>(fd, tokens, &header.checksum, tmp);
  }
  if (status.ok() && ::pwrite(fd, &header, sizeof(header), 0) != sizeof(header)) {
    status = ErrnoError("cannot write token shard header", tmp);
  }
  if (status.ok() && ::fsync(fd) != 0) status = ErrnoError("cannot fsync token shard", tmp);
  if (::close(fd) != 0 && status.ok()) status = ErrnoError("cannot close token shard", tmp);
  if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    status = ErrnoError(absl::StrCat("cannot rename ", tmp, " to"), path);
  }
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  // Make the rename durable.
  std::string dir = std::filesystem::path(path).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

struct TokenShard::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr != nullptr) ::munmap(addr, size);
  }
};

absl::StatusOr<TokenShard> TokenShard::Open(const std::string& path, bool verify_checksum) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("token shard not found: ", path));
    return ErrnoError("cannot open token shard", path);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    absl::Status status = ErrnoError("cannot stat token shard", path);
    ::close(fd);
    return status;
  }
  const size_t file_size = static_cast<size_t>(st.st_size);
  if (file_size < sizeof(ShardHeader)) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat("token shard ", path, " truncated: ", file_size,
                                            " bytes, smaller than the 64-byte header"));
  }
  void* addr = ::mmap(nullptr, file_size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (addr == MAP_FAILED) return ErrnoError("cannot mmap token shard", path);
  auto mapping = std::make_shared<Mapping>();
  mapping->addr = addr;
  mapping->size = file_size;

  ShardHeader header;
  std::memcpy(&header, addr, sizeof(header));
  if (std::memcmp(header.magic, kTokenShardMagic, 8) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("token shard ", path, ": bad magic (not a FAMTOK01 token shard)"));
  }
  if (header.version != kTokenShardVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("token shard ", path, ": format version ", header.version, " (supported: 1)"));
  }
  if (header.dtype != 2 && header.dtype != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("token shard ", path, ": dtype ", header.dtype, " (expected 2 or 4)"));
  }
  if (header.vocab_size == 0 || (header.dtype == 2 && header.vocab_size > 65536) ||
      header.vocab_size > (uint64_t{1} << 32)) {
    return absl::InvalidArgumentError(absl::StrCat("token shard ", path, ": vocab_size ",
                                                   header.vocab_size, " invalid for dtype ",
                                                   header.dtype));
  }
  const uint64_t data_bytes = file_size - sizeof(ShardHeader);
  if (header.num_tokens > data_bytes / header.dtype ||
      header.num_tokens * header.dtype != data_bytes) {
    const bool short_file = header.num_tokens > data_bytes / header.dtype;
    return absl::DataLossError(
        absl::StrCat("token shard ", path, short_file ? " truncated" : " has trailing bytes",
                     ": header says ", header.num_tokens, " tokens of ", header.dtype,
                     " bytes, file has ", data_bytes, " data bytes"));
  }
  TokenShard shard;
  shard.mapping_ = std::move(mapping);
  shard.tokens_ = static_cast<const unsigned char*>(addr) + sizeof(ShardHeader);
  shard.path_ = path;
  shard.num_tokens_ = static_cast<int64_t>(header.num_tokens);
  shard.vocab_size_ = static_cast<int64_t>(header.vocab_size);
  shard.bytes_per_token_ = static_cast<int>(header.dtype);
  shard.checksum_ = header.checksum;
  if (verify_checksum) {
    absl::Status status = shard.Verify();
    if (!status.ok()) return status;
  }
  return shard;
}

absl::Status TokenShard::Verify() const {
  const uint64_t actual =
      Fnv1a64(tokens_, static_cast<size_t>(num_tokens_) * static_cast<size_t>(bytes_per_token_));
  if (actual != checksum_) {
    return absl::DataLossError(absl::StrCat("token shard ", path_,
                                            ": checksum mismatch (corrupted data): header ",
                                            absl::Hex(checksum_), ", data ", absl::Hex(actual)));
  }
  return absl::OkStatus();
}

absl::Status TokenShard::CheckIds(int64_t begin, int64_t end) const {
  if (end < 0) end = num_tokens_;
  if (begin < 0 || begin > end || end > num_tokens_) {
    return absl::InvalidArgumentError(absl::StrCat("token shard ", path_, ": range [", begin, ", ",
                                                   end, ") outside [0, ", num_tokens_, ")"));
  }
  for (int64_t i = begin; i < end; ++i) {
    const int64_t id = at(i);
    if (id >= vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat("token shard ", path_, ": token id ", id,
                                                     " at offset ", i, " >= vocab_size ",
                                                     vocab_size_));
    }
  }
  return absl::OkStatus();
}

int64_t TokenShard::at(int64_t i) const {
  FAM_CHECK(i >= 0 && i < num_tokens_, "token shard ", path_, ": index ", i, " outside [0, ",
            num_tokens_, ")");
  if (bytes_per_token_ == 2) {
    uint16_t v;
    std::memcpy(&v, tokens_ + 2 * i, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, tokens_ + 4 * i, 4);
  return v;
}

void TokenShard::Read(int64_t begin, int64_t count, int64_t* out) const {
  FAM_CHECK(begin >= 0 && count >= 0 && begin + count <= num_tokens_, "token shard ", path_,
            ": read [", begin, ", ", begin + count, ") outside [0, ", num_tokens_, ")");
  for (int64_t i = 0; i < count; ++i) {
    int64_t id;
    if (bytes_per_token_ == 2) {
      uint16_t v;
      std::memcpy(&v, tokens_ + 2 * (begin + i), 2);
      id = v;
    } else {
      uint32_t v;
      std::memcpy(&v, tokens_ + 4 * (begin + i), 4);
      id = v;
    }
    if (id >= vocab_size_) {
      ThrowInvalid("token shard ", path_, ": token id ", id, " at offset ", begin + i,
                   " >= vocab_size ", vocab_size_);
    }
    out[i] = id;
  }
}

}  // namespace fam::data
