// Activation recomputation (trainer.recompute): peak RSS and step time of one training step
// (forward, loss, backward) of a model on random tokens, with recompute off and on. Each setting
// runs in its own child process, so every peak is measured from a fresh process.
//
//   recompute_bench [--model configs/models/tiny.yaml] [--seq 4096] [--batch 1] [--steps 2]
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "models/fam/model.h"
#include "trainers/train/run_config.h"

namespace {

double PeakRssMb() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

// Runs `steps` steps; prints peak RSS before the first step (weights only) and after, and the
// mean time of the steps after the first (warm-up).
int RunOnce(const fam::ModelConfig& config, bool recompute, int64_t batch, int64_t seq,
            int64_t steps) {
  fam::FamModel model(config);
  model.InitializeWeights(1);
  std::vector<int64_t> ids(batch * (seq + 1));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = (i * 7919 + 13) % config.vocab_size;
  std::vector<int64_t> in, target;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t) {
      in.push_back(ids[b * (seq + 1) + t]);
      target.push_back(ids[b * (seq + 1) + t + 1]);
    }
  fam::Tensor tokens = fam::Tensor::FromInts(in, {batch, seq});
  fam::Tensor targets = fam::Tensor::FromInts(target, {batch, seq});
  const double rss_weights = PeakRssMb();
  double timed = 0;
  for (int64_t s = 0; s < steps; ++s) {
    model.ZeroGrad();
    auto start = std::chrono::steady_clock::now();
    fam::ForwardOptions fo;
    fo.recompute = recompute;
    fam::Tensor loss = model.Loss(model.Forward(tokens, fo).logits, targets);
    loss.backward(fam::Tensor());
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (s > 0 || steps == 1) timed += seconds;
  }
  const int64_t measured = steps > 1 ? steps - 1 : 1;
  std::printf("%-5s %-13s batch %lld seq %6lld  peak RSS %8.1f MB (weights %6.1f MB)  step %7.3f s\n",
              fam::AttentionTypeName(config.attention.type),
              recompute ? "recompute on" : "recompute off", static_cast<long long>(batch),
              static_cast<long long>(seq), PeakRssMb(), rss_weights, timed / measured);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = "configs/models/tiny.yaml";
  int64_t seq = 4096, batch = 1, steps = 2;
  for (int i = 1; i < argc; i += 2) {
    std::string flag = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "error: %s needs a value\n", flag.c_str());
      return 2;
    }
    std::string value = argv[i + 1];
    int64_t* target = flag == "--seq" ? &seq : flag == "--batch" ? &batch : flag == "--steps" ? &steps : nullptr;
    if (flag == "--model") {
      model_path = value;
    } else if (target) {
      if (!absl::SimpleAtoi(value, target) || *target < 1) {
        std::fprintf(stderr, "error: %s expects a positive integer, got %s\n", flag.c_str(),
                     value.c_str());
        return 2;
      }
    } else {
      std::fprintf(stderr, "error: unknown flag %s (known: --model, --seq, --batch, --steps)\n",
                   flag.c_str());
      return 2;
    }
  }
  absl::StatusOr<fam::ModelConfig> config = fam::LoadModelConfig(model_path);
  if (!config.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  for (bool recompute : {false, true}) {
    pid_t pid = fork();
    if (pid == 0) _exit(RunOnce(*config, recompute, batch, seq, steps));
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "error: the %s run failed\n", recompute ? "recompute" : "baseline");
      return 1;
    }
  }
  return 0;
}
