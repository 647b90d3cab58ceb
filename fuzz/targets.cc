// The table of fuzz targets: adding a reader's target is adding a row.
#include "fuzz/targets.h"

#include "fuzz/fuzz_target.h"

namespace fam::fuzz {

const std::vector<Target>& Targets() {
  static const std::vector<Target> targets = {
      {"safetensors", "io::SafetensorsFile (header, offsets, dtype conversion)", FuzzSafetensors},
      {"npy", "io::ReadNpy", FuzzNpy},
      {"gguf", "io::GgufFile and fam import --gguf", FuzzGguf},
      {"token_shard", "data::TokenShard", FuzzTokenShard},
      {"weight_shard", "data::WeightShard", FuzzWeightShard},
      {"instructions", "instruction JSONL, encoded and packed", FuzzInstructions},
      {"tokenizer_json", "Hugging Face tokenizer.json through data::Tokenizer", FuzzTokenizerJson},
      {"sentencepiece", "SentencePiece .model through data::Tokenizer", FuzzSentencePiece},
      {"run_config", "run-config YAML with base:/include: and presets", FuzzRunConfig},
      {"hf_config", "HF config.json → ModelConfig → config.json", FuzzHfConfig},
      {"checkpoint", "checkpoint directory: manifest, trainer state, tensors", FuzzCheckpoint},
  };
  return targets;
}

}  // namespace fam::fuzz
