// `fam import`: a Hugging Face checkpoint directory → our model.yaml + model.safetensors
// (models/fam/hf_config.h says which families are supported, models/fam/hf_import.h how the
// weights are checked and the FAM prompt is initialised).
#include <iostream>

#include "absl/strings/str_cat.h"
#include "models/fam/gguf_import.h"
#include "models/fam/hf_import.h"
#include "trainers/cli/commands.h"

namespace fam {
namespace {

absl::StatusOr<std::optional<AttentionConfig>> AttentionFlags(const cli::Args& args) {
  if (!args.Has("attention") && !args.Has("block-size") && !args.Has("memory-segments") &&
      !args.Has("fam-length"))
    return std::optional<AttentionConfig>();
  AttentionConfig a;
  if (args.Has("attention") && !ParseAttentionType(args.Get("attention"), &a.type))
    return absl::InvalidArgumentError(absl::StrCat(
        "fam import: --attention expects full, bswa or fam, got \"", args.Get("attention"), "\""));
  absl::StatusOr<int64_t> block = args.GetInt("block-size", a.block_size);
  if (!block.ok()) return block.status();
  absl::StatusOr<int64_t> memory = args.GetInt("memory-segments", a.memory_segments);
  if (!memory.ok()) return memory.status();
  absl::StatusOr<int64_t> fam_length = args.GetInt("fam-length", a.fam_length);
  if (!fam_length.ok()) return fam_length.status();
  a.block_size = *block;
  a.memory_segments = *memory;
  a.fam_length = *fam_length;
  return std::optional<AttentionConfig>(a);
}

}  // namespace

Command ImportCommand() {
  Command c;
  c.name = "import";
  c.synopsis =
      "--hf <dir>|--gguf <file> --out <dir> [--attention fam|bswa|full] [--block-size N] "
      "[--memory-segments N] "
      "[--fam-length N] [--fam-init span|normal] [--fam-init-start ID] [--seed N] "
      "[--dtype bf16|f32]";
  c.summary =
      "Hugging Face checkpoint (llama, mistral, qwen2, gemma, gemma2) → model.yaml + "
      "model.safetensors";
  c.flags = {{"hf", "HF directory: config.json + model.safetensors or sharded with its index"},
             {"gguf",
              "llama.cpp GGUF file of the llama architecture (F32/F16/BF16/Q8_0/Q4_0/Q4_1, "
              "dequantized to f32; models/fam/gguf_import.h)"},
             {"out",
              "output directory (model.yaml, model.safetensors, and the source's tokenizer: "
              "tokenizer.json + tokenizer_config.json, else tokenizer.model)"},
             {"attention", "attention of the imported model: fam (default), bswa or full"},
             {"block-size", "B: tokens per block (default 1024)"},
             {"memory-segments", "m: previous blocks attended (default 3)"},
             {"fam-length", "F: FAM rows (default 64)"},
             {"fam-init", "FAM prompt init: span (token embeddings, default) or normal"},
             {"fam-init-start", "first token id of the span (default vocab_size / 2)"},
             {"seed", "seed of --fam-init normal (default 0)"},
             {"dtype", "stored dtype: bf16 or f32 (default: keep each tensor's)"}};
  c.run = [](const cli::Args& args) -> absl::Status {
    if (absl::Status s = args.Require({"out"}); !s.ok()) return s;
    if (args.Has("hf") == args.Has("gguf"))
      return absl::InvalidArgumentError(
          "fam import: pass exactly one of --hf <dir> or --gguf <file>");
    HfImportOptions options;
    absl::StatusOr<std::optional<AttentionConfig>> attention = AttentionFlags(args);
    if (!attention.ok()) return attention.status();
    options.attention = *attention;
    const std::string init = args.Get("fam-init", "span");
    if (init == "normal") {
      options.fam_init = FamInit::kNormal;
    } else if (init != "span") {
      return absl::InvalidArgumentError(
          absl::StrCat("fam import: --fam-init expects span or normal, got \"", init, "\""));
    }
    absl::StatusOr<int64_t> start = args.GetInt("fam-init-start", -1);
    if (!start.ok()) return start.status();
    if (args.Has("fam-init-start") && *start < 0)
      return absl::InvalidArgumentError("fam import: --fam-init-start must be >= 0");
    options.fam_init_start = *start;
    absl::StatusOr<int64_t> seed = args.GetInt("seed", 0);
    if (!seed.ok()) return seed.status();
    options.seed = static_cast<uint64_t>(*seed);
    if (args.Has("dtype")) {
      const std::string d = args.Get("dtype");
      if (d == "bf16")
        options.dtype = DType::kBF16;
      else if (d == "f32")
        options.dtype = DType::kF32;
      else
        return absl::InvalidArgumentError(
            absl::StrCat("fam import: --dtype expects bf16 or f32, got \"", d, "\""));
    }
    absl::StatusOr<HfImportResult> result =
        args.Has("gguf") ? ImportGgufCheckpoint(args.Get("gguf"), args.Get("out"), options)
                         : ImportHfCheckpoint(args.Get("hf"), args.Get("out"), options);
    if (!result.ok()) return result.status();
    for (const std::string& note : result->notes) std::cout << "note: " << note << "\n";
    const ModelConfig& m = result->config;
    std::cout << "imported " << m.n_layers << " layers, d_model " << m.d_model << ", vocab "
              << m.vocab_size << ", attention " << AttentionTypeName(m.attention.type) << " → "
              << result->model_yaml << ", " << result->weights << "\n";
    return absl::OkStatus();
  };
  return c;
}

}  // namespace fam
