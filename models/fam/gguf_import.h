// GGUF checkpoint import (`fam import --gguf`): a llama.cpp GGUF file of the llama architecture
// (Llama, SmolLM2, TinyLlama, Mistral-style dense models) becomes our model YAML + f32 weights. The
// config comes from the llama.* metadata (embedding_length, block_count, feed_forward_length,
// attention.head_count[_kv], attention.key_length or rope.dimension_count, layer_norm_rms_epsilon,
// rope.freq_base); weights are dequantized from F32/F16/BF16/Q8_0/Q4_0/Q4_1 (framework/io/gguf.h),
// renamed to FORMATS.md names (token_embd → model.embed_tokens, blk.N.attn_q → model.layers.N.
// self_attn.q_proj, ...) and q/k rows un-permuted (llama.cpp's converter interleaves the two
// rotary halves of each head). No output.weight means tied embeddings. Refused with the key or
// tensor named: other architectures, RoPE scaling (rope.scaling.type, rope_freqs.weight), other
// quantization types, missing or extra tensors, shapes that contradict the metadata. The tokenizer
// is not converted: pass one to `fam prepare-data` / `fam generate`.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "models/fam/hf_import.h"

namespace fam {

absl::StatusOr<HfImportResult> ImportGgufCheckpoint(const std::string& gguf_path,
                                                    const std::string& out_dir,
                                                    const HfImportOptions& options);

}  // namespace fam
