#include "framework/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "framework/io/mmap_file.h"

namespace fam::io {
namespace {

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// A name unique within this process and across processes (pid) for the temporary file.
std::string TempPathFor(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  std::string dir = DirName(path);
  return absl::StrCat(dir, "/.", BaseName(path), ".tmp-", ::getpid(), "-", counter.fetch_add(1));
}

}  // namespace

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::StatusOr<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Create(
    const std::string& path) {
  if (path.empty() || path.back() == '/')
    return absl::InvalidArgumentError(
        absl::StrCat("cannot write file '", path, "': not a file name"));
  std::string temp_path = TempPathFor(path);
  int fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) return ErrnoStatus(errno, "cannot create temporary file for", path);
  return std::unique_ptr<AtomicFileWriter>(new AtomicFileWriter(path, std::move(temp_path), fd));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!done_) Abort();
}

void AtomicFileWriter::Abort() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(temp_path_.c_str());
  done_ = true;
}

absl::Status AtomicFileWriter::Write(const void* data, size_t nbytes) {
  if (done_) return absl::FailedPreconditionError(absl::StrCat("write to finished file ", path_));
  const char* p = static_cast<const char*>(data);
  while (nbytes > 0) {
    ssize_t n = ::write(fd_, p, nbytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      int error_number = errno;
      Abort();
      return ErrnoStatus(error_number, "cannot write", path_);
    }
    p += n;
    nbytes -= static_cast<size_t>(n);
    bytes_written_ += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  if (done_) return absl::FailedPreconditionError(absl::StrCat("commit of finished file ", path_));
  if (::fsync(fd_) != 0) {
    int error_number = errno;
    Abort();
    return ErrnoStatus(error_number, "cannot fsync", path_);
  }
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    int error_number = errno;
    Abort();
    return ErrnoStatus(error_number, "cannot close", path_);
  }
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    int error_number = errno;
    Abort();
    return ErrnoStatus(error_number, "cannot rename temporary file onto", path_);
  }
  done_ = true;
  return FsyncDir(DirName(path_));
}

absl::Status WriteFileAtomic(const std::string& path, std::string_view bytes) {
  absl::StatusOr<std::unique_ptr<AtomicFileWriter>> writer = AtomicFileWriter::Create(path);
  if (!writer.ok()) return writer.status();
  if (absl::Status s = (*writer)->Write(bytes); !s.ok()) return s;
  return (*writer)->Commit();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "cannot open", path);
  struct stat st;
  const bool stat_ok = ::fstat(fd, &st) == 0;
  if (!stat_ok || S_ISDIR(st.st_mode)) {
    int error_number = stat_ok ? EISDIR : errno;
    ::close(fd);
    return ErrnoStatus(error_number, "cannot read", path);
  }
  std::string bytes;
  bytes.reserve(static_cast<size_t>(st.st_size));
  char buffer[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      int error_number = errno;
      ::close(fd);
      return ErrnoStatus(error_number, "cannot read", path);
    }
    if (n == 0) break;
    bytes.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return bytes;
}

absl::Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "cannot open directory", dir);
  int rc = ::fsync(fd);
  int error_number = errno;
  ::close(fd);
  // Some file systems cannot fsync directories (EINVAL); there is nothing more to do there.
  if (rc != 0 && error_number != EINVAL)
    return ErrnoStatus(error_number, "cannot fsync directory", dir);
  return absl::OkStatus();
}

}  // namespace fam::io
