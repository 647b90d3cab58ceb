// Atomic file writing: the destination holds the old or the complete new content, temporary files
// never stay behind, and errors name the path.
#include "framework/io/atomic_file.h"

#include <dirent.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace fam::io {
namespace {

std::string TempDirFor(const std::string& test) {
  std::string dir = ::testing::TempDir() + "/fam_atomic_" + test + "_" + std::to_string(getpid());
  std::string command = "rm -rf '" + dir + "' && mkdir -p '" + dir + "'";
  EXPECT_EQ(std::system(command.c_str()), 0);
  return dir;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* entry = readdir(d)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

TEST(AtomicFile, WriteReadAndReplace) {
  const std::string dir = TempDirFor("replace");
  const std::string path = dir + "/state.bin";
  const std::string first("one\0two", 7);
  ASSERT_TRUE(WriteFileAtomic(path, first).ok());
  absl::StatusOr<std::string> read = ReadFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, first);
  ASSERT_TRUE(WriteFileAtomic(path, "second").ok());
  EXPECT_EQ(*ReadFile(path), "second");
  ASSERT_TRUE(WriteFileAtomic(path, "").ok());
  EXPECT_EQ(*ReadFile(path), "");
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"state.bin"});
}

TEST(AtomicFile, UncommittedWriterLeavesTheOldFile) {
  const std::string dir = TempDirFor("abort");
  const std::string path = dir + "/latest";
  ASSERT_TRUE(WriteFileAtomic(path, "old").ok());
  {
    absl::StatusOr<std::unique_ptr<AtomicFileWriter>> writer = AtomicFileWriter::Create(path);
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Write("new and longer").ok());
    EXPECT_EQ((*writer)->bytes_written(), 14u);
    EXPECT_EQ(ListDir(dir).size(), 2u);  // the temporary file sits next to the destination
    EXPECT_EQ(*ReadFile(path), "old");
  }  // destroyed without Commit()
  EXPECT_EQ(*ReadFile(path), "old");
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"latest"});
}

TEST(AtomicFile, StreamedWriterCommits) {
  const std::string dir = TempDirFor("stream");
  const std::string path = dir + "/big.bin";
  absl::StatusOr<std::unique_ptr<AtomicFileWriter>> writer = AtomicFileWriter::Create(path);
  ASSERT_TRUE(writer.ok());
  std::string expected;
  for (int i = 0; i < 100; ++i) {
    std::string piece(1000 + i, static_cast<char>('a' + i % 26));
    ASSERT_TRUE((*writer)->Write(piece).ok());
    expected += piece;
  }
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_FALSE((*writer)->Commit().ok());  // only once
  EXPECT_EQ(*ReadFile(path), expected);
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"big.bin"});
}

TEST(AtomicFile, ErrorsNameThePath) {
  absl::Status s = WriteFileAtomic("/nonexistent/dir/out.bin", "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("/nonexistent/dir/out.bin"), std::string::npos) << s;

  absl::StatusOr<std::string> r = ReadFile("/nonexistent/file.txt");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/file.txt"), std::string::npos);

  const std::string dir = TempDirFor("errors");
  r = ReadFile(dir);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(dir), std::string::npos);

  EXPECT_TRUE(FsyncDir(dir).ok());
  s = FsyncDir(dir + "/missing");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find(dir + "/missing"), std::string::npos);

  // A directory in the way of the destination: the rename fails and nothing is left behind.
  ASSERT_EQ(std::system(("mkdir -p '" + dir + "/occupied/sub'").c_str()), 0);
  s = WriteFileAtomic(dir + "/occupied", "x");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(dir + "/occupied"), std::string::npos) << s;
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"occupied"});
}

TEST(AtomicFile, DirName) {
  EXPECT_EQ(DirName("a/b/c.txt"), "a/b");
  EXPECT_EQ(DirName("c.txt"), ".");
  EXPECT_EQ(DirName("/c.txt"), "/");
}

TEST(AtomicFile, RelativePathInCurrentDirectory) {
  const std::string dir = TempDirFor("relative");
  char cwd[4096];
  ASSERT_NE(getcwd(cwd, sizeof(cwd)), nullptr);
  ASSERT_EQ(chdir(dir.c_str()), 0);
  absl::Status s = WriteFileAtomic("plain.txt", "hello");
  ASSERT_EQ(chdir(cwd), 0);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(*ReadFile(dir + "/plain.txt"), "hello");
}

}  // namespace
}  // namespace fam::io
