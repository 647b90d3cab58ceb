// Run metrics: metrics.jsonl (one JSON object per line, FORMATS.md), a live progress line that is tidy
// in a terminal (rewritten in place) and in a log file (one line per report), and wall-clock timers.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace fam {

// Appends JSON lines to a file, flushing each one so a crash loses at most the line being written.
class MetricsWriter {
 public:
  MetricsWriter() = default;
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  absl::Status Open(const std::string& path);  // appends when the file exists (resume)
  void Write(const nlohmann::json& record);
  bool is_open() const { return file_ != nullptr; }

 private:
  std::FILE* file_ = nullptr;
};

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  void Reset() { start_ = std::chrono::steady_clock::now(); }

 private:
  std::chrono::steady_clock::time_point start_;
};

struct ProgressFields {
  int64_t step = 0, total_steps = 0;
  double loss = 0, lr = 0, tokens_per_s = 0;
  double mfu = -1;  // < 0: not shown (CPU)
  double eta_s = 0;
  double grad_norm = 0;
};

// "step 120/1000 (12%) | loss 3.214 | lr 3.0e-04 | 5.2k tok/s | ETA 4m10s" — rewritten in place on a
// terminal, a fresh line otherwise.
std::string FormatProgress(const ProgressFields& p);
void PrintProgress(const ProgressFields& p, bool final_line = false);
std::string FormatDuration(double seconds);

}  // namespace fam
