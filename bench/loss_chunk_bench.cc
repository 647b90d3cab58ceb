// Chunked LM head + cross-entropy (ops::LinearCrossEntropy, trainer.loss_chunk_tokens): peak RSS
// and time of one forward + backward of the loss over hidden [N, d] and a head weight [V, d], for
// the unfused CrossEntropy(Linear(...)) and for each chunk size. Each setting runs in its own child
// process, so every peak is measured from a fresh process. The CPU backend keeps freed buffers in
// the heap (mallopt in cpu_backend.cc), so peak RSS would count reuse-misses of the allocator; this
// program maps buffers of 1 MiB and more directly (returned on free) so the peak RSS is the peak of
// live tensors, unless --heap-cache 1 keeps the backend's setting.
//
//   loss_chunk_bench [--vocab 32768] [--tokens 4096] [--d 256] [--chunks 0,4096,2048,1024,256]
//                    [--steps 3] [--heap-cache 0]
// (chunk 0 = the fused op in one chunk; the unfused path always runs first)
#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "framework/core/rng.h"
#include "framework/ops/ops.h"

namespace {

double PeakRssMb() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

// chunk < 0: unfused CrossEntropy(Linear(hidden, weight)); else LinearCrossEntropy with chunk.
int RunOnce(int64_t vocab, int64_t tokens, int64_t d, int64_t chunk, int64_t steps,
            bool heap_cache) {
  fam::Tensor hidden = fam::Tensor::Empty({tokens, d}, fam::DType::kF32);  // creates the backend
  if (!heap_cache) {
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 20);
  }
  fam::Tensor weight = fam::Tensor::Empty({vocab, d}, fam::DType::kF32);
  fam::Generator(1, 1).FillNormal(hidden, 0.0, 1.0);
  fam::Generator(1, 2).FillNormal(weight, 0.0, 0.05);
  hidden.set_requires_grad(true);
  weight.set_requires_grad(true);
  std::vector<int64_t> ids(tokens);
  for (int64_t i = 0; i < tokens; ++i) ids[i] = (i * 7919 + 13) % vocab;
  fam::Tensor targets = fam::Tensor::FromInts(ids, {tokens});
  const double rss_inputs = PeakRssMb();
  double timed = 0, loss_value = 0;
  for (int64_t s = 0; s < steps; ++s) {
    hidden.zero_grad();
    weight.zero_grad();
    auto start = std::chrono::steady_clock::now();
    fam::Tensor losses =
        chunk < 0 ? fam::ops::CrossEntropy(fam::ops::Linear(hidden, weight), targets)
                  : fam::ops::LinearCrossEntropy(hidden, weight, targets, fam::Tensor(), chunk);
    fam::Tensor loss = fam::ops::SumAll(losses);
    loss.backward(fam::Tensor());
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (s > 0 || steps == 1) timed += seconds;
    loss_value = loss.item();
  }
  const int64_t measured = steps > 1 ? steps - 1 : 1;
  const std::string name = chunk < 0 ? "unfused" : chunk == 0 ? "fused, 1 chunk"
                                                              : "chunk " + std::to_string(chunk);
  std::printf("V %6lld N %5lld d %4lld  %-15s peak RSS %8.1f MB (inputs %7.1f MB, +%7.1f MB)  "
              "fwd+bwd %7.3f s  loss %.6f\n",
              static_cast<long long>(vocab), static_cast<long long>(tokens),
              static_cast<long long>(d), name.c_str(), PeakRssMb(), rss_inputs,
              PeakRssMb() - rss_inputs, timed / measured, loss_value / tokens);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t vocab = 32768, tokens = 4096, d = 256, steps = 3, heap_cache = 0;
  std::vector<int64_t> chunks = {0, 4096, 2048, 1024, 256};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    bool ok = true;
    if (flag == "--vocab") ok = absl::SimpleAtoi(value, &vocab);
    else if (flag == "--tokens") ok = absl::SimpleAtoi(value, &tokens);
    else if (flag == "--d") ok = absl::SimpleAtoi(value, &d);
    else if (flag == "--steps") ok = absl::SimpleAtoi(value, &steps);
    else if (flag == "--heap-cache") ok = absl::SimpleAtoi(value, &heap_cache);
    else if (flag == "--chunks") {
      chunks.clear();
      for (const auto& part : absl::StrSplit(value, ',')) {
        int64_t c = 0;
        ok = ok && absl::SimpleAtoi(part, &c);
        chunks.push_back(c);
      }
    } else {
      std::fprintf(stderr, "loss_chunk_bench: unknown flag %s\n", flag.c_str());
      return 2;
    }
    if (!ok) {
      std::fprintf(stderr, "loss_chunk_bench: bad value %s for %s\n", value.c_str(), flag.c_str());
      return 2;
    }
  }
  std::vector<int64_t> settings = {-1};
  settings.insert(settings.end(), chunks.begin(), chunks.end());
  for (int64_t chunk : settings) {
    const pid_t pid = fork();
    if (pid == 0) _exit(RunOnce(vocab, tokens, d, chunk, steps, heap_cache != 0));
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "loss_chunk_bench: setting chunk %lld failed\n",
                   static_cast<long long>(chunk));
      return 1;
    }
  }
  return 0;
}
