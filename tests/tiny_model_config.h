// The smallest model config the model tests share: 2 layers, d_model 16, GQA (4 query heads over 2
// kv heads), blocks of 4 tokens with one memory segment and 3 FAM rows; f64-gradcheck sized.
#pragma once

#include "models/fam/model_config.h"

namespace fam::testing {

inline ModelConfig TinyModelConfig(AttentionType type) {
  ModelConfig c;
  c.vocab_size = 41;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.ffn_dim = 24;
  c.init_std = 0.3;
  c.attention.type = type;
  c.attention.block_size = 4;
  c.attention.memory_segments = 1;
  c.attention.fam_length = 3;
  return c;
}

}  // namespace fam::testing
