// fam_fuzz_seeds <corpus-dir>: writes the seed corpus of every fuzz target (fuzz/corpus/<name>/)
// with the framework's own writers and the project's fixtures, so every seed is a file the
// readers accept. scripts/fuzz.sh --seeds runs it; the output is committed.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "framework/core/error.h"
#include "framework/data/token_shard.h"
#include "framework/data/tokenizer.h"
#include "framework/data/weight_shard.h"
#include "framework/io/checkpoint.h"
#include "framework/io/npy.h"
#include "framework/io/safetensors.h"
#include "framework/ops/ops.h"
#include "fuzz/fuzz_target.h"

namespace fs = std::filesystem;
namespace fam::fuzz {
namespace {

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) ThrowError(absl::StatusCode::kNotFound, "cannot read ", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void Put(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) ThrowError(absl::StatusCode::kInternal, "cannot write ", (dir / name).string());
}

// Writes through a file-path writer and returns the file's bytes.
template <typename WriteFn>
std::string Written(const fs::path& tmp, const std::string& name, WriteFn write) {
  const std::string path = (tmp / name).string();
  ThrowIfError(write(path));
  return ReadAll(path);
}

io::NamedTensors SmallTensors() {
  return {{"model.embed_tokens.weight", Tensor::FromFloats({1, -2, 3.5f, 0, 1e-3f, 7}, {2, 3})},
          {"model.norm.weight", ops::Cast(Tensor::FromFloats({1, 2, 3, 4}, {4}), DType::kBF16)},
          {"ids", Tensor::FromInts({3, 1, 4}, {3})},
          {"scalar", Tensor::Scalar(2.0)}};
}

constexpr const char* kTrainingText[] = {
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void; and darkness was upon the face of the deep.",
    "And the Spirit of God moved upon the face of the waters.",
    "And God said, Let there be light: and there was light.",
    "And God saw the light, that it was good: and God divided the light from the darkness.",
    "And God called the light Day, and the darkness he called Night.",
    "Café naïve façade: 中文 and numbers 12345 67890.",
};

void MakeSeeds(const fs::path& root, const fs::path& source) {
  const fs::path tmp = fs::temp_directory_path() / "fam-fuzz-seeds";
  fs::remove_all(tmp);
  fs::create_directories(tmp);

  Put(root / "safetensors", "small.safetensors", Written(tmp, "a.safetensors", [](auto& p) {
        return io::WriteSafetensors(p, SmallTensors(), {{"format", "pt"}});
      }));
  Put(root / "safetensors", "fixture_gemma.safetensors",
      ReadAll(source / "tests/fixtures/hf/gemma/model.safetensors"));

  Put(root / "npy", "f32.npy", Written(tmp, "a.npy", [](auto& p) {
        return io::WriteNpy(p, Tensor::FromFloats({1, 2, 3, 4, 5, 6}, {2, 3}));
      }));
  Put(root / "npy", "i64.npy", Written(tmp, "b.npy", [](auto& p) {
        return io::WriteNpy(p, Tensor::FromInts({7, 8, 9}, {3}));
      }));
  Put(root / "npy", "f64_scalar.npy", Written(tmp, "c.npy", [](auto& p) {
        return io::WriteNpy(p, Tensor::FromVector({3.25}, {}, DType::kF64));
      }));

  Put(root / "gguf", "tiny_llama.gguf", ReadAll(source / "tests/fixtures/gguf/tiny_llama.gguf"));

  const std::vector<int32_t> tokens = {5, 17, 99, 0, 42, 42, 3, 64, 1, 98};
  uint64_t checksum = 0;
  Put(root / "token_shard", "u16.tok",
      Written(tmp, "a.tok", [&](auto& p) { return data::WriteTokenShard(p, tokens, 100); }));
  Put(root / "token_shard", "u32.tok", Written(tmp, "b.tok", [&](auto& p) {
        return data::WriteTokenShard(p, {70000, 1, 65536}, 70001);
      }));
  {
    absl::StatusOr<data::TokenShard> shard = data::TokenShard::Open((tmp / "a.tok").string());
    ThrowIfError(shard.status());
    checksum = shard->checksum();
  }
  Put(root / "weight_shard", "roles.weights", Written(tmp, "a.weights", [&](auto& p) {
        return data::WriteWeightShard(p, {0, 1, 2, 3, 4, 1, 2, 2, 0, 4},
                                      {0.0f, 0.0f, 1.0f, 0.1f, 0.5f}, checksum);
      }));

  Put(root / "instructions", "forms.jsonl",
      "{\"prompt\": \"Say hi.\", \"response\": \" hi\"}\n"
      "\n"
      "{\"id\": 7, \"segments\": [{\"text\": \"Summarise: a b c\", \"role\": \"instruction\"}, "
      "{\"text\": \" abc\", \"role\": \"answer\", \"weight\": 1.0}, "
      "{\"text\": \" (system)\", \"role\": \"system\", \"weight\": 0.25}]}\n");
  Put(root / "instructions", "unicode.jsonl",
      "{\"prompt\": \"caf\\u00e9 \\ud83d\\ude00\", \"response\": \"\\n\\t\"}\n");

  for (const char* name : {"gpt2", "llama2", "unigram", "llama3"})
    Put(root / "tokenizer_json", absl::StrCat(name, ".json"),
        ReadAll(source / "tests/fixtures/tokenizers" / name / "tokenizer.json"));

  {
    const fs::path text = tmp / "text.txt";
    std::string lines;
    for (int repeat = 0; repeat < 4; ++repeat)
      for (const char* line : kTrainingText) lines += absl::StrCat(line, "\n");
    Put(tmp, "text.txt", lines);
    for (const char* type : {"bpe", "unigram"}) {
      data::TokenizerTrainOptions options;
      options.model_type = type;
      options.hard_vocab_limit = false;
      const std::string prefix = (tmp / type).string();
      ThrowIfError(data::Tokenizer::Train({text.string()}, prefix, 400, options));
      Put(root / "sentencepiece", absl::StrCat(type, ".model"), ReadAll(prefix + ".model"));
    }
  }

  Put(root / "run_config", "inherit.yaml",
      JoinParts({"base: base.yaml\ninclude: [extra.yaml]\nname: seed\ntrainer:\n  steps: 3\n"
                 "  seq_len: 128\n",
                 "model:\n  preset: tiny\n  attention:\n    type: fam\n    block_size: 32\n"
                 "    memory_segments: 1\n    fam_length: 4\n"
                 "data:\n  train: data/train-*.bin\n  val: data/val-*.bin\n"
                 "  tokenizer: data/tokenizer.model\n",
                 "optimizer:\n  lr: 1.0e-3\nschedule:\n  type: cosine\n  warmup_steps: 1\n"}));
  Put(root / "run_config", "main_job.yaml",
      ReadAll(source / "configs/experiments/kjv_tiny_fam.yaml"));

  for (const char* family :
       {"gemma", "gemma2", "llama3_scaled_biases", "llama_linear_tied", "mistral", "qwen2_sharded"})
    Put(root / "hf_config", absl::StrCat(family, ".json"),
        ReadAll(source / "tests/fixtures/hf" / family / "config.json"));

  {
    io::CheckpointManager manager({.dir = (tmp / "checkpoints").string()});
    io::CheckpointData data;
    data.step = 7;
    data.config_hash = "0123456789abcdef";
    data.model = SmallTensors();
    data.trainer_state = {{"step", 7},
                          {"tokens_seen", 7168},
                          {"consecutive_skips", 0},
                          {"elapsed_s", 1.5},
                          {"loader", {{"epoch", 0}, {"samples_consumed", 56}}},
                          {"seed", 1},
                          {"lr", 0.001},
                          {"last_train_loss", 5.25}};
    ThrowIfError(manager.Save(data));
    const fs::path dir = tmp / "checkpoints" / io::CheckpointDirName(7);
    Put(root / "checkpoint", "step7.ckpt",
        JoinParts({ReadAll(dir / "manifest.json"), ReadAll(dir / "trainer_state.json"),
                   ReadAll(dir / "model.safetensors")}));
  }
  fs::remove_all(tmp);
}

}  // namespace
}  // namespace fam::fuzz

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: fam_fuzz_seeds <corpus-dir> <source-dir>\n");
    return 2;
  }
  try {
    fam::fuzz::MakeSeeds(argv[1], argv[2]);
  } catch (const fam::Error& e) {
    std::fprintf(stderr, "fam_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
