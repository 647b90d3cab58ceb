// Streaming inference memory: runs the tiny FAM preset (random weights) over N tokens one block at a
// time and reports peak RSS, for N = 8k and 256k by default, each length in its own child process so
// every peak is measured from a fresh process. Memory must not grow with context length.
//
//   streaming_memory_bench [--model configs/models/tiny.yaml] [--tokens 8192,262144]
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "framework/autograd/node.h"
#include "models/fam/model.h"
#include "trainers/train/run_config.h"

namespace {

double PeakRssMb() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

int StreamOnce(const fam::ModelConfig& config, int64_t tokens) {
  fam::FamModel model(config);
  model.InitializeWeights(1);
  fam::NoGradGuard no_grad;
  fam::StreamingState state = model.NewStreamingState(1);
  const int64_t block = config.attention.type == fam::AttentionType::kFull ? 64 : config.attention.block_size;
  auto start = std::chrono::steady_clock::now();
  double rss_after_first = 0;
  for (int64_t done = 0; done < tokens; done += block) {
    const int64_t n = std::min(block, tokens - done);
    std::vector<int64_t> ids(n);
    for (int64_t i = 0; i < n; ++i) ids[i] = (done + i) * 7919 % config.vocab_size;
    model.ForwardStreaming(fam::Tensor::FromInts(ids, {1, n}), state);
    if (done == 0) rss_after_first = PeakRssMb();
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%-9s tokens %8lld  peak RSS %7.1f MB (after first block %7.1f MB)  state %6.1f KB  %6.1f s  %7.0f tok/s\n",
              fam::AttentionTypeName(config.attention.type), static_cast<long long>(tokens), PeakRssMb(),
              rss_after_first, state.Bytes() / 1024.0, seconds, tokens / seconds);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = "configs/models/tiny.yaml";
  std::vector<int64_t> lengths = {8192, 262144};
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--model") {
      model_path = argv[i + 1];
    } else if (flag == "--tokens") {
      lengths.clear();
      for (auto part : absl::StrSplit(argv[i + 1], ',')) {
        int64_t v;
        if (!absl::SimpleAtoi(std::string(part), &v)) {
          std::fprintf(stderr, "error: --tokens expects integers, got %s\n", argv[i + 1]);
          return 2;
        }
        lengths.push_back(v);
      }
    } else {
      std::fprintf(stderr, "error: unknown flag %s (known: --model, --tokens)\n", argv[i]);
      return 2;
    }
  }
  absl::StatusOr<fam::ModelConfig> config = fam::LoadModelConfig(model_path);
  if (!config.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  for (int64_t n : lengths) {
    pid_t pid = fork();
    if (pid == 0) _exit(StreamOnce(*config, n));
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
  }
  return 0;
}
