#include "framework/metrics/metrics.h"

#include <unistd.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fam {

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

absl::Status MetricsWriter::Open(const std::string& path) {
  file_ = std::fopen(path.c_str(), "a");
  if (!file_) return absl::NotFoundError(absl::StrCat(path, ": cannot open metrics file for append"));
  return absl::OkStatus();
}

void MetricsWriter::Write(const nlohmann::json& record) {
  if (!file_) return;
  std::string line = record.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

std::string FormatDuration(double seconds) {
  if (!(seconds >= 0) || std::isinf(seconds)) return "?";
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

std::string FormatProgress(const ProgressFields& p) {
  std::string tps = p.tokens_per_s >= 1000 ? absl::StrFormat("%.1fk", p.tokens_per_s / 1000)
                                           : absl::StrFormat("%.0f", p.tokens_per_s);
  std::string out = absl::StrFormat("step %d/%d (%3.0f%%) | loss %.4f | lr %.2e | gnorm %.3f | %s tok/s",
                                    p.step, p.total_steps,
                                    p.total_steps ? 100.0 * p.step / p.total_steps : 0.0, p.loss,
                                    p.lr, p.grad_norm, tps);
  if (p.mfu >= 0) absl::StrAppendFormat(&out, " | MFU %.1f%%", 100 * p.mfu);
  absl::StrAppend(&out, " | ETA ", FormatDuration(p.eta_s));
  return out;
}

void PrintProgress(const ProgressFields& p, bool final_line) {
  static const bool tty = isatty(fileno(stdout));
  std::string line = FormatProgress(p);
  if (tty) {
    std::printf("\r\033[K%s%s", line.c_str(), final_line ? "\n" : "");
  } else {
    std::printf("%s\n", line.c_str());
  }
  std::fflush(stdout);
}

}  // namespace fam
