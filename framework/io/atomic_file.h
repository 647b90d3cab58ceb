// Crash-safe file writing: data goes to a temporary file in the destination's directory, is
// fsynced, then renamed over the destination and the directory is fsynced. A reader sees either the
// old file or the complete new one, never a torn write; a failed write leaves the old file
// untouched and removes its temporary file. Also whole-file reading with errors that name the path.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fam::io {

// Streams a new file into place. Nothing is visible at `path` until Commit() succeeds; destroying
// the writer without a successful Commit() deletes the temporary file. The temporary file is
// "<dir>/.<name>.tmp-<pid>-<n>" (callers that clean up after crashes may rely on this pattern).
class AtomicFileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<AtomicFileWriter>> Create(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  absl::Status Write(const void* data, size_t nbytes);
  absl::Status Write(std::string_view bytes) { return Write(bytes.data(), bytes.size()); }
  // fsync, close, rename over the destination, fsync the directory. Call at most once.
  absl::Status Commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }
  size_t bytes_written() const { return bytes_written_; }

 private:
  AtomicFileWriter(std::string path, std::string temp_path, int fd)
      : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd) {}
  void Abort();

  std::string path_;
  std::string temp_path_;
  int fd_;
  size_t bytes_written_ = 0;
  bool done_ = false;
};

// Writes `bytes` to `path` atomically (temp + fsync + rename + fsync of the directory).
absl::Status WriteFileAtomic(const std::string& path, std::string_view bytes);

// Reads the whole file.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// fsyncs a directory so that a rename or a new entry in it survives a crash.
absl::Status FsyncDir(const std::string& dir);

// The directory part of `path` ("." when it has none).
std::string DirName(const std::string& path);

}  // namespace fam::io
