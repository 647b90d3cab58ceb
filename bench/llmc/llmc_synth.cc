// Writes a synthetic GPT-2 checkpoint and a token file in llm.c's binary formats (as read by
// gpt2_build_from_checkpoint and dataloader_init in llm.c's train_gpt2.c / llmc/dataloader.h), so
// llm.c's CPU trainer can be timed on a chosen config without any download:
//   checkpoint: 256 int32 header {20240326, 3, maxT, V, L, NH, C, Vp, 0...}, then float32
//     parameters in llm.c's order: wte [Vp, C], wpe [maxT, C], ln1w [L, C], ln1b [L, C],
//     qkvw [L, 3C, C], qkvb [L, 3C], attprojw [L, C, C], attprojb [L, C], ln2w [L, C],
//     ln2b [L, C], fcw [L, 4C, C], fcb [L, 4C], fcprojw [L, C, 4C], fcprojb [L, C], lnfw [C],
//     lnfb [C];
//   tokens: 256 int32 header {20240520, 1, ntok, 0...}, then ntok uint16 token ids.
// Weights are N(0, 0.02²) (residual projections scaled by 1/sqrt(2L), GPT-2's init), layer-norm
// scales 1, biases 0, padded vocabulary rows 0; tokens are uniform in [0, V).
// Usage: llmc_synth <checkpoint.bin> <tokens.bin> <L> <C> <NH> <V> <maxT> <ntok> [seed]
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

bool WriteAll(std::FILE* f, const void* data, size_t bytes) {
  return std::fwrite(data, 1, bytes, f) == bytes;
}

class Writer {
 public:
  Writer(std::FILE* f, uint64_t seed) : f_(f), rng_(seed) {}
  bool Normal(size_t n, float std) {
    std::normal_distribution<float> dist(0.0f, std);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng_);
    return WriteAll(f_, v.data(), n * sizeof(float));
  }
  bool Constant(size_t n, float value) {
    std::vector<float> v(n, value);
    return WriteAll(f_, v.data(), n * sizeof(float));
  }

 private:
  std::FILE* f_;
  std::mt19937_64 rng_;
};

bool WriteCheckpoint(const std::string& path, int L, int C, int NH, int V, int maxT,
                     uint64_t seed) {
  const int Vp = (V + 127) / 128 * 128;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  int32_t header[256] = {0};
  header[0] = 20240326;
  header[1] = 3;
  header[2] = maxT;
  header[3] = V;
  header[4] = L;
  header[5] = NH;
  header[6] = C;
  header[7] = Vp;
  Writer w(f, seed);
  const size_t c = C, l = L;
  const float std = 0.02f, proj_std = 0.02f / std::sqrt(2.0f * L);
  bool ok = WriteAll(f, header, sizeof(header));
  ok = ok && w.Normal(static_cast<size_t>(V) * c, std) && w.Constant((Vp - V) * c, 0.0f);  // wte
  ok = ok && w.Normal(maxT * c, 0.01f);                                                    // wpe
  ok = ok && w.Constant(l * c, 1.0f) && w.Constant(l * c, 0.0f);            // ln1w, ln1b
  ok = ok && w.Normal(l * 3 * c * c, std) && w.Constant(l * 3 * c, 0.0f);   // qkvw, qkvb
  ok = ok && w.Normal(l * c * c, proj_std) && w.Constant(l * c, 0.0f);      // attprojw, attprojb
  ok = ok && w.Constant(l * c, 1.0f) && w.Constant(l * c, 0.0f);            // ln2w, ln2b
  ok = ok && w.Normal(l * 4 * c * c, std) && w.Constant(l * 4 * c, 0.0f);   // fcw, fcb
  ok = ok && w.Normal(l * c * 4 * c, proj_std) && w.Constant(l * c, 0.0f);  // fcprojw, fcprojb
  ok = ok && w.Constant(c, 1.0f) && w.Constant(c, 0.0f);                    // lnfw, lnfb
  return std::fclose(f) == 0 && ok;
}

bool WriteTokens(const std::string& path, int V, int64_t ntok, uint64_t seed) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  int32_t header[256] = {0};
  header[0] = 20240520;
  header[1] = 1;
  header[2] = static_cast<int32_t>(ntok);
  std::mt19937_64 rng(seed + 1);
  std::uniform_int_distribution<int> token(0, V - 1);
  std::vector<uint16_t> ids(ntok);
  for (uint16_t& id : ids) id = static_cast<uint16_t>(token(rng));
  const bool ok = WriteAll(f, header, sizeof(header)) &&
                  WriteAll(f, ids.data(), ids.size() * sizeof(uint16_t));
  return std::fclose(f) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 9 && argc != 10) {
    std::fprintf(stderr,
                 "usage: %s <checkpoint.bin> <tokens.bin> <L> <C> <NH> <V> <maxT> <ntok> [seed]\n",
                 argv[0]);
    return 2;
  }
  const int L = std::atoi(argv[3]), C = std::atoi(argv[4]), NH = std::atoi(argv[5]);
  const int V = std::atoi(argv[6]), maxT = std::atoi(argv[7]);
  const int64_t ntok = std::atoll(argv[8]);
  const uint64_t seed = argc == 10 ? std::strtoull(argv[9], nullptr, 10) : 1234;
  if (L <= 0 || C <= 0 || NH <= 0 || C % NH != 0 || V <= 0 || V > 65536 || maxT <= 0 ||
      ntok <= 0 || ntok > INT32_MAX) {
    std::fprintf(stderr,
                 "llmc_synth: bad config L=%d C=%d NH=%d V=%d maxT=%d ntok=%lld (need positive "
                 "sizes, C %% NH == 0, V <= 65536, ntok < 2^31)\n",
                 L, C, NH, V, maxT, static_cast<long long>(ntok));
    return 2;
  }
  if (!WriteCheckpoint(argv[1], L, C, NH, V, maxT, seed)) {
    std::fprintf(stderr, "llmc_synth: cannot write checkpoint %s\n", argv[1]);
    return 1;
  }
  if (!WriteTokens(argv[2], V, ntok, seed)) {
    std::fprintf(stderr, "llmc_synth: cannot write tokens %s\n", argv[2]);
    return 1;
  }
  std::printf("wrote %s (L=%d C=%d NH=%d V=%d maxT=%d) and %s (%lld tokens)\n", argv[1], L, C, NH,
              V, maxT, argv[2], static_cast<long long>(ntok));
  return 0;
}
