#include "models/fam/hf_config.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "framework/io/atomic_file.h"

namespace fam {
namespace {

using Json = nlohmann::json;

// What each supported family fixes about the block.
struct Family {
  std::string architecture;             // the *ForCausalLM class
  bool gemma = false;                   // (1 + w) norms, embeddings × sqrt(d), GELU-tanh gate
  bool gemma2 = false;                  // + sandwich norms, soft-capping, query_pre_attn_scalar
  bool qkv_bias = false;                // always on (qwen2)
  bool has_attention_bias_key = false;  // attention_bias sets q/k/v/o biases
  bool tie_default = false;
};

const std::map<std::string, Family>& Families() {
  static const std::map<std::string, Family> families = {
      {"llama", {"LlamaForCausalLM", false, false, false, true, false}},
      {"mistral", {"MistralForCausalLM", false, false, false, false, false}},
      {"qwen2", {"Qwen2ForCausalLM", false, false, true, false, false}},
      {"gemma", {"GemmaForCausalLM", true, false, false, true, true}},
      {"gemma2", {"Gemma2ForCausalLM", true, true, false, true, true}}};
  return families;
}

// Why other architectures are not imported (model_type → reason).
const std::map<std::string, std::string>& UnsupportedArchitectures() {
  static const std::map<std::string, std::string> reasons = {
      {"gemma3", "q/k norms and a local/global RoPE split"},
      {"qwen3", "RMSNorm on queries and keys"},
      {"qwen2_moe", "mixture-of-experts feed-forward"},
      {"phi3", "fused qkv and gate/up projections"},
      {"mixtral", "mixture-of-experts feed-forward"},
      {"falcon", "parallel attention/MLP and LayerNorm"},
      {"gpt2", "LayerNorm, learned positions, GELU, biases"}};
  return reasons;
}

// Keys that do not change what the weights compute in inference.
const std::set<std::string>& HarmlessKeys() {
  static const std::set<std::string> keys = {"architectures",
                                             "model_type",
                                             "bos_token_id",
                                             "eos_token_id",
                                             "pad_token_id",
                                             "torch_dtype",
                                             "dtype",
                                             "transformers_version",
                                             "max_position_embeddings",
                                             "use_cache",
                                             "pretraining_tp",
                                             "_name_or_path",
                                             "attention_dropout",
                                             "output_attentions",
                                             "output_hidden_states",
                                             "return_dict",
                                             "tokenizer_class",
                                             "max_sequence_length",
                                             "famtrain_attention",
                                             "id2label",
                                             "label2id",
                                             "chunk_size_feed_forward",
                                             "is_encoder_decoder",
                                             "problem_type",
                                             "cache_implementation",
                                             "use_sliding_window",
                                             "max_window_layers",
                                             "sliding_window",
                                             "layer_types",
                                             "tie_word_embeddings",
                                             "initializer_range",
                                             "use_bidirectional_attention"};
  return keys;
}

std::string FormatDouble(double value) {
  char buffer[64];
  auto [ptr, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return ec == std::errc() ? std::string(buffer, ptr) : absl::StrCat(value);
}

// Reads typed keys of a JSON object; the first error is kept and names the key (`prefix` + key).
class HfReader {
 public:
  HfReader(const Json& json, std::string source, std::string prefix = "")
      : json_(json), source_(std::move(source)), prefix_(std::move(prefix)) {}
  const absl::Status& status() const { return status_; }
  void Fail(const std::string& key, const std::string& why) {
    if (status_.ok())
      status_ = absl::InvalidArgumentError(absl::StrCat(source_, ": ", prefix_, key, ": ", why));
  }
  bool Present(const std::string& key) const {
    return json_.contains(key) && !json_.at(key).is_null();
  }
  void Take(const absl::Status& s) {
    if (status_.ok() && !s.ok()) status_ = s;
  }
  int64_t Int(const std::string& key, std::optional<int64_t> fallback) {
    if (!Present(key)) {
      if (!fallback) Fail(key, "missing (required)");
      return fallback.value_or(0);
    }
    const Json& v = json_.at(key);
    if (v.is_number_float() && v.get<double>() == static_cast<double>(v.get<int64_t>()))
      return v.get<int64_t>();  // 64.0 written by some tools
    if (!v.is_number_integer()) {
      Fail(key, absl::StrCat("expected an integer, got ", v.dump()));
      return 0;
    }
    return v.get<int64_t>();
  }
  double Double(const std::string& key, double fallback) {
    if (!Present(key)) return fallback;
    const Json& v = json_.at(key);
    if (!v.is_number()) {
      Fail(key, absl::StrCat("expected a number, got ", v.dump()));
      return fallback;
    }
    return v.get<double>();
  }
  bool Bool(const std::string& key, bool fallback) {
    if (!Present(key)) return fallback;
    const Json& v = json_.at(key);
    if (!v.is_boolean()) {
      Fail(key, absl::StrCat("expected true or false, got ", v.dump()));
      return fallback;
    }
    return v.get<bool>();
  }
  std::string String(const std::string& key) {
    if (!Present(key)) return "";
    const Json& v = json_.at(key);
    if (!v.is_string()) {
      Fail(key, absl::StrCat("expected a string, got ", v.dump()));
      return "";
    }
    return v.get<std::string>();
  }

 private:
  const Json& json_;
  std::string source_, prefix_;
  absl::Status status_;
};

absl::StatusOr<AttentionConfig> AttentionFromJson(const Json& j, const std::string& source) {
  AttentionConfig a;
  const std::string key = "famtrain_attention";
  if (!j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", key, ": expected an object"));
  try {
    if (j.contains("type") && !ParseAttentionType(j.at("type").get<std::string>(), &a.type))
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": ", key, ".type: expected full, bswa or fam"));
    if (j.contains("block_size")) a.block_size = j.at("block_size").get<int64_t>();
    if (j.contains("memory_segments")) a.memory_segments = j.at("memory_segments").get<int64_t>();
    if (j.contains("fam_length")) a.fam_length = j.at("fam_length").get<int64_t>();
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", key, ": ", e.what()));
  }
  return a;
}

// RoPE: transformers 5's rope_parameters {rope_theta, rope_type, ...}, or transformers 4's
// rope_theta + rope_scaling {rope_type | type, ...}.
void ReadRope(const Json& hf, const std::string& source, HfReader& r, ModelConfig* c) {
  const bool v5 = r.Present("rope_parameters");
  const std::string key = v5 ? "rope_parameters" : "rope_scaling";
  c->rope_base = r.Double("rope_theta", 10000.0);
  if (!r.Present(key)) return;
  const Json& p = hf.at(key);
  if (!p.is_object()) return r.Fail(key, absl::StrCat("expected an object, got ", p.dump()));
  HfReader s(p, source, key + ".");
  if (v5) c->rope_base = s.Double("rope_theta", c->rope_base);
  std::string type = s.String("rope_type");
  if (type.empty()) type = s.String("type");
  if (s.Double("partial_rotary_factor", 1.0) != 1.0)
    s.Fail("partial_rotary_factor", "only 1 (RoPE on the whole head) is supported");
  if (type.empty() || type == "default") {
    c->rope_scaling = RopeScaling::kNone;
  } else if (type == "linear") {
    c->rope_scaling = RopeScaling::kLinear;
    c->rope_factor = s.Double("factor", 0);
  } else if (type == "llama3") {
    c->rope_scaling = RopeScaling::kLlama3;
    c->rope_factor = s.Double("factor", 0);
    c->rope_low_freq_factor = s.Double("low_freq_factor", 1.0);
    c->rope_high_freq_factor = s.Double("high_freq_factor", 4.0);
    c->rope_original_context =
        static_cast<double>(s.Int("original_max_position_embeddings", std::nullopt));
  } else {
    s.Fail("rope_type",
           absl::StrCat("\"", type, "\" is not supported (supported: default, linear, llama3)"));
  }
  r.Take(s.status());
}

// The sliding windows a config asks for, which the import does not apply.
void NoteWindows(const Json& hf, const std::string& type, HfReader& r,
                 std::vector<std::string>* notes) {
  int64_t sliding_layers = 0, layers = 0;
  if (r.Present("layer_types") && hf.at("layer_types").is_array()) {
    for (const Json& t : hf.at("layer_types")) {
      ++layers;
      if (t.is_string() && t.get<std::string>() == "sliding_attention") ++sliding_layers;
    }
  }
  const std::string window =
      r.Present("sliding_window") ? hf.at("sliding_window").dump() : std::string("unset");
  std::string note;
  if (type == "mistral" && r.Present("sliding_window")) {
    note = absl::StrCat("sliding_window ", window, " (every layer)");
  } else if (type == "qwen2" && (r.Bool("use_sliding_window", false) || sliding_layers > 0)) {
    note = absl::StrCat("sliding_window ", window, " (use_sliding_window true)");
  } else if (type == "gemma2" || sliding_layers > 0) {
    const int64_t n = layers > 0 ? sliding_layers : hf.value("num_hidden_layers", 0) / 2;
    if (n > 0) note = absl::StrCat("sliding_window ", window, " on ", n, " alternating layers");
  }
  if (!note.empty() && notes != nullptr)
    notes->push_back(absl::StrCat(note,
                                  ": not applied; every layer attends as the model's "
                                  "attention settings say (identical up to the window)"));
}

}  // namespace

absl::StatusOr<Json> ReadJsonObject(const std::string& path) {
  absl::StatusOr<std::string> text = io::ReadFile(path);
  if (!text.ok()) return text.status();
  Json json = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  if (!json.is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a JSON object"));
  return json;
}

absl::StatusOr<ModelConfig> ModelConfigFromHf(const Json& hf, const std::string& source,
                                              const std::optional<AttentionConfig>& attention,
                                              std::vector<std::string>* notes) {
  if (!hf.is_object()) return absl::InvalidArgumentError(source + ": expected a JSON object");
  HfReader r(hf, source);
  const std::string type = r.String("model_type");
  auto family_it = Families().find(type);
  if (family_it == Families().end()) {
    auto it = UnsupportedArchitectures().find(type);
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": model_type: \"", type, "\" is not supported",
        it != UnsupportedArchitectures().end() ? absl::StrCat(" (", it->second, ")") : "",
        "; supported: llama, mistral, qwen2, gemma, gemma2"));
  }
  const Family& family = family_it->second;
  if (r.Present("architectures") && hf.at("architectures").is_array()) {
    std::vector<std::string> archs;
    for (const Json& a : hf.at("architectures"))
      if (a.is_string()) archs.push_back(a.get<std::string>());
    if (!archs.empty() && std::find(archs.begin(), archs.end(), family.architecture) == archs.end())
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": architectures: ", absl::StrJoin(archs, ", "),
          " is not supported for model_type ", type, " (need ", family.architecture, ")"));
  }

  ModelConfig c;
  c.family = type;
  c.vocab_size = r.Int("vocab_size", std::nullopt);
  c.d_model = r.Int("hidden_size", std::nullopt);
  c.ffn_dim = r.Int("intermediate_size", std::nullopt);
  c.n_layers = r.Int("num_hidden_layers", std::nullopt);
  c.n_heads = r.Int("num_attention_heads", std::nullopt);
  c.n_kv_heads = r.Int("num_key_value_heads", c.n_heads);
  if (r.status().ok() && !r.Present("head_dim") && (c.n_heads <= 0 || c.d_model % c.n_heads != 0))
    r.Fail("hidden_size", absl::StrCat(c.d_model, " is not a multiple of num_attention_heads (",
                                       c.n_heads, ") and head_dim is not given"));
  c.head_dim = r.Int("head_dim", c.n_heads > 0 ? c.d_model / c.n_heads : 0);
  c.norm_eps = r.Double("rms_norm_eps", 1e-6);
  c.tie_embeddings = r.Bool("tie_word_embeddings", family.tie_default);
  c.init_std = r.Double("initializer_range", 0.02);
  ReadRope(hf, source, r, &c);
  if (r.Double("partial_rotary_factor", 1.0) != 1.0)
    r.Fail("partial_rotary_factor", "only 1 (RoPE on the whole head) is supported");
  if (r.Bool("use_bidirectional_attention", false))
    r.Fail("use_bidirectional_attention", "true is not supported (causal decoders only)");

  // The gate activation.
  const std::string act_key =
      family.gemma && r.Present("hidden_activation") ? "hidden_activation" : "hidden_act";
  const std::string act = r.String(act_key);
  if (family.gemma) {
    // Gemma's legacy "gelu" means the tanh approximation (as transformers reads it).
    if (!act.empty() && act != "gelu_pytorch_tanh" && act != "gelu" && act != "gelu_new")
      r.Fail(act_key,
             absl::StrCat("\"", act, "\" is not supported (Gemma uses gelu_pytorch_tanh)"));
    c.activation = FfnActivation::kGeluTanh;
  } else if (!act.empty() && act != "silu" && act != "swish") {
    r.Fail(act_key, absl::StrCat("\"", act, "\" is not supported (SwiGLU needs silu)"));
  }

  // Biases.
  const bool attention_bias = r.Bool("attention_bias", false);
  if (attention_bias && !family.has_attention_bias_key)
    r.Fail("attention_bias", absl::StrCat("true is not supported for ", type));
  c.qkv_bias = family.qkv_bias || attention_bias;
  c.o_bias = attention_bias;
  c.mlp_bias = r.Bool("mlp_bias", false);
  if (c.mlp_bias && type != "llama")
    r.Fail("mlp_bias", absl::StrCat("true is not supported for ", type));

  if (family.gemma) {
    c.norm_weight_offset = 1.0;
    c.embedding_scale = true;
  }
  if (family.gemma2) {
    c.sandwich_norms = true;
    c.attn_softcap = r.Double("attn_logit_softcapping", 0.0);
    c.final_softcap = r.Double("final_logit_softcapping", 0.0);
    c.query_scale_dim = r.Double("query_pre_attn_scalar", static_cast<double>(c.head_dim));
  }
  if (!r.status().ok()) return r.status();

  if (attention) {
    c.attention = *attention;
  } else if (r.Present("famtrain_attention")) {
    absl::StatusOr<AttentionConfig> a = AttentionFromJson(hf.at("famtrain_attention"), source);
    if (!a.ok()) return a.status();
    c.attention = *a;
  }
  if (absl::Status s = c.Validate(); !s.ok())
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": gives an invalid model: ", s.message()));
  if (notes != nullptr) {
    NoteWindows(hf, type, r, notes);
    static const std::set<std::string> read = {"vocab_size",
                                               "hidden_size",
                                               "intermediate_size",
                                               "num_hidden_layers",
                                               "num_attention_heads",
                                               "num_key_value_heads",
                                               "head_dim",
                                               "rms_norm_eps",
                                               "rope_theta",
                                               "rope_scaling",
                                               "rope_parameters",
                                               "hidden_act",
                                               "hidden_activation",
                                               "attention_bias",
                                               "mlp_bias",
                                               "partial_rotary_factor",
                                               "attn_logit_softcapping",
                                               "final_logit_softcapping",
                                               "query_pre_attn_scalar"};
    std::vector<std::string> ignored;
    for (auto it = hf.begin(); it != hf.end(); ++it)
      if (!read.count(it.key()) && !HarmlessKeys().count(it.key())) ignored.push_back(it.key());
    if (!ignored.empty())
      notes->push_back(absl::StrCat("config.json keys ignored: ", absl::StrJoin(ignored, ", ")));
  }
  return c;
}

absl::StatusOr<Json> HfConfigJson(const ModelConfig& c, DType dtype) {
  auto it = Families().find(c.family);
  if (it == Families().end())
    return absl::InvalidArgumentError(absl::StrCat("model.family: \"", c.family, "\" is unknown"));
  const Family& f = it->second;
  auto refuse = [&](const std::string& key, const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.", key, ": ", why, " cannot be written as a HF ", c.family, " config"));
  };
  // The family's fixed features must be exactly what the model has.
  const double offset = f.gemma ? 1.0 : 0.0;
  if (c.norm_weight_offset != offset)
    return refuse("norm_weight_offset", absl::StrCat(FormatDouble(c.norm_weight_offset)));
  if (c.embedding_scale != f.gemma)
    return refuse("embedding_scale", c.embedding_scale ? "true" : "false");
  if ((c.activation == FfnActivation::kGeluTanh) != f.gemma)
    return refuse("activation", FfnActivationName(c.activation));
  if (c.sandwich_norms != f.gemma2)
    return refuse("sandwich_norms", c.sandwich_norms ? "true" : "false");
  if (!f.gemma2 && (c.attn_softcap != 0 || c.final_softcap != 0 || c.query_scale_dim != 0))
    return refuse("attn_softcap", "soft-capping or query_scale_dim");
  if (f.qkv_bias ? (!c.qkv_bias || c.o_bias) : (c.qkv_bias != c.o_bias))
    return refuse("qkv_bias", absl::StrCat("qkv_bias ", c.qkv_bias, " with o_bias ", c.o_bias));
  if (c.qkv_bias && !f.qkv_bias && !f.has_attention_bias_key) return refuse("qkv_bias", "true");
  if (c.mlp_bias && c.family != "llama") return refuse("mlp_bias", "true");

  Json j = Json::object();
  j["architectures"] = Json::array({f.architecture});
  j["model_type"] = c.family;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.d_model;
  j["intermediate_size"] = c.ffn_dim;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["rms_norm_eps"] = c.norm_eps;
  j["rope_theta"] = c.rope_base;
  switch (c.rope_scaling) {
    case RopeScaling::kNone:
      j["rope_scaling"] = nullptr;
      break;
    case RopeScaling::kLinear:
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_factor}};
      break;
    case RopeScaling::kLlama3:
      j["rope_scaling"] = {
          {"rope_type", "llama3"},
          {"factor", c.rope_factor},
          {"low_freq_factor", c.rope_low_freq_factor},
          {"high_freq_factor", c.rope_high_freq_factor},
          {"original_max_position_embeddings", static_cast<int64_t>(c.rope_original_context)}};
      break;
  }
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["initializer_range"] = c.init_std;
  if (f.gemma) {
    j["hidden_act"] = "gelu_pytorch_tanh";
    j["hidden_activation"] = "gelu_pytorch_tanh";
  } else {
    j["hidden_act"] = "silu";
  }
  if (f.has_attention_bias_key) j["attention_bias"] = c.o_bias;
  if (c.family == "llama") j["mlp_bias"] = c.mlp_bias;
  if (c.family == "mistral") j["sliding_window"] = nullptr;
  if (c.family == "qwen2") j["use_sliding_window"] = false;
  if (f.gemma2) {
    j["attn_logit_softcapping"] = c.attn_softcap > 0 ? Json(c.attn_softcap) : Json(nullptr);
    j["final_logit_softcapping"] = c.final_softcap > 0 ? Json(c.final_softcap) : Json(nullptr);
    j["query_pre_attn_scalar"] =
        c.query_scale_dim > 0 ? c.query_scale_dim : static_cast<double>(c.head_dim);
    // Every layer attends alike here: no sliding layers.
    j["layer_types"] = Json::array();
    for (int64_t l = 0; l < c.n_layers; ++l) j["layer_types"].push_back("full_attention");
  }
  j["torch_dtype"] = dtype == DType::kBF16  ? "bfloat16"
                     : dtype == DType::kF16 ? "float16"
                                            : "float32";
  j["famtrain_attention"] = {{"type", AttentionTypeName(c.attention.type)},
                             {"block_size", c.attention.block_size},
                             {"memory_segments", c.attention.memory_segments},
                             {"fam_length", c.attention.fam_length}};
  return j;
}

std::string ModelConfigYaml(const ModelConfig& c, const std::string& comment) {
  std::string out;
  if (!comment.empty()) {
    for (const auto& line : std::vector<std::string>(absl::StrSplit(comment, '\n')))
      absl::StrAppend(&out, "# ", line, "\n");
  }
  auto flag = [](bool b) { return b ? "true" : "false"; };
  absl::StrAppend(&out, "model:\n");
  absl::StrAppend(&out, "  vocab_size: ", c.vocab_size, "\n");
  absl::StrAppend(&out, "  d_model: ", c.d_model, "\n");
  absl::StrAppend(&out, "  n_layers: ", c.n_layers, "\n");
  absl::StrAppend(&out, "  n_heads: ", c.n_heads, "\n");
  absl::StrAppend(&out, "  n_kv_heads: ", c.n_kv_heads, "\n");
  absl::StrAppend(&out, "  head_dim: ", c.head_dim, "\n");
  absl::StrAppend(&out, "  ffn_dim: ", c.ffn_dim, "\n");
  absl::StrAppend(&out, "  norm_eps: ", FormatDouble(c.norm_eps), "\n");
  absl::StrAppend(&out, "  rope_base: ", FormatDouble(c.rope_base), "\n");
  absl::StrAppend(&out, "  tie_embeddings: ", flag(c.tie_embeddings), "\n");
  absl::StrAppend(&out, "  init_std: ", FormatDouble(c.init_std), "\n");
  absl::StrAppend(&out, "  family: ", c.family, "\n");
  const ModelConfig plain;
  if (c.activation != plain.activation)
    absl::StrAppend(&out, "  activation: ", FfnActivationName(c.activation), "\n");
  if (c.qkv_bias) absl::StrAppend(&out, "  qkv_bias: true\n");
  if (c.o_bias) absl::StrAppend(&out, "  o_bias: true\n");
  if (c.mlp_bias) absl::StrAppend(&out, "  mlp_bias: true\n");
  if (c.norm_weight_offset != 0)
    absl::StrAppend(&out, "  norm_weight_offset: ", FormatDouble(c.norm_weight_offset), "\n");
  if (c.embedding_scale) absl::StrAppend(&out, "  embedding_scale: true\n");
  if (c.sandwich_norms) absl::StrAppend(&out, "  sandwich_norms: true\n");
  if (c.attn_softcap > 0)
    absl::StrAppend(&out, "  attn_softcap: ", FormatDouble(c.attn_softcap), "\n");
  if (c.final_softcap > 0)
    absl::StrAppend(&out, "  final_softcap: ", FormatDouble(c.final_softcap), "\n");
  if (c.query_scale_dim > 0)
    absl::StrAppend(&out, "  query_scale_dim: ", FormatDouble(c.query_scale_dim), "\n");
  if (c.rope_scaling != RopeScaling::kNone) {
    absl::StrAppend(&out, "  rope_scaling:\n    type: ", RopeScalingName(c.rope_scaling), "\n");
    absl::StrAppend(&out, "    factor: ", FormatDouble(c.rope_factor), "\n");
    if (c.rope_scaling == RopeScaling::kLlama3) {
      absl::StrAppend(&out, "    low_freq_factor: ", FormatDouble(c.rope_low_freq_factor), "\n");
      absl::StrAppend(&out, "    high_freq_factor: ", FormatDouble(c.rope_high_freq_factor), "\n");
      absl::StrAppend(&out, "    original_context: ", FormatDouble(c.rope_original_context), "\n");
    }
  }
  absl::StrAppend(&out, "  attention:\n");
  absl::StrAppend(&out, "    type: ", AttentionTypeName(c.attention.type), "\n");
  absl::StrAppend(&out, "    block_size: ", c.attention.block_size, "\n");
  absl::StrAppend(&out, "    memory_segments: ", c.attention.memory_segments, "\n");
  absl::StrAppend(&out, "    fam_length: ", c.attention.fam_length, "\n");
  return out;
}

}  // namespace fam
