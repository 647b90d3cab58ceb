#include "models/fam/hf_import.h"

#include <charconv>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "framework/autograd/node.h"
#include "framework/core/hash.h"
#include "framework/core/rng.h"
#include "framework/io/atomic_file.h"
#include "framework/io/safetensors.h"
#include "framework/ops/ops.h"

namespace fam {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kFamEmbeddings[] = "model.fam.embeddings";

// Keys of HF configs that do not change what the weights compute in inference.
const std::set<std::string>& HarmlessKeys() {
  static const std::set<std::string> keys = {"architectures",
                                             "model_type",
                                             "bos_token_id",
                                             "eos_token_id",
                                             "pad_token_id",
                                             "torch_dtype",
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
                                             "rope_scaling",
                                             "attention_bias",
                                             "mlp_bias",
                                             "sliding_window",
                                             "partial_rotary_factor",
                                             "famtrain_attention"};
  return keys;
}

// Why other architectures are not imported (model_type → reason).
const std::map<std::string, std::string>& UnsupportedArchitectures() {
  static const std::map<std::string, std::string> reasons = {
      {"gemma", "embeddings scaled by sqrt(hidden_size), GeGLU feed-forward and (1 + w) norms"},
      {"gemma2", "embeddings scaled by sqrt(hidden_size), GeGLU, extra norms, logit soft-capping"},
      {"gemma3", "embeddings scaled by sqrt(hidden_size), GeGLU, extra norms, q/k norms"},
      {"qwen2", "biases on q/k/v projections"},
      {"qwen3", "RMSNorm on queries and keys"},
      {"phi3", "fused qkv and gate/up projections"},
      {"mixtral", "mixture-of-experts feed-forward"},
      {"falcon", "parallel attention/MLP and LayerNorm"},
      {"gpt2", "LayerNorm, learned positions, GELU, biases"}};
  return reasons;
}

std::string FormatDouble(double value) {
  char buffer[64];
  auto [ptr, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return ec == std::errc() ? std::string(buffer, ptr) : absl::StrCat(value);
}

// Reads typed keys of a config.json object; the first error is kept and names the key.
class HfReader {
 public:
  HfReader(const Json& json, std::string source) : json_(json), source_(std::move(source)) {}
  const absl::Status& status() const { return status_; }
  void Fail(const std::string& key, const std::string& why) {
    if (status_.ok())
      status_ = absl::InvalidArgumentError(absl::StrCat(source_, ": ", key, ": ", why));
  }
  bool Present(const std::string& key) const {
    return json_.contains(key) && !json_.at(key).is_null();
  }
  int64_t Int(const std::string& key, std::optional<int64_t> fallback) {
    if (!Present(key)) {
      if (!fallback) Fail(key, "missing (required for a Llama model)");
      return fallback.value_or(0);
    }
    const Json& v = json_.at(key);
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
  std::string source_;
  absl::Status status_;
};

// FORMATS.md names and shapes of a model's weights, in FORMATS.md order.
std::vector<std::pair<std::string, Shape>> ExpectedWeights(const ModelConfig& c) {
  const int64_t d = c.d_model, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  std::vector<std::pair<std::string, Shape>> out = {
      {"model.embed_tokens.weight", {c.vocab_size, d}}};
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    out.push_back({p + "input_layernorm.weight", {d}});
    out.push_back({p + "self_attn.q_proj.weight", {q, d}});
    out.push_back({p + "self_attn.k_proj.weight", {kv, d}});
    out.push_back({p + "self_attn.v_proj.weight", {kv, d}});
    out.push_back({p + "self_attn.o_proj.weight", {d, q}});
    out.push_back({p + "post_attention_layernorm.weight", {d}});
    out.push_back({p + "mlp.gate_proj.weight", {c.ffn_dim, d}});
    out.push_back({p + "mlp.up_proj.weight", {c.ffn_dim, d}});
    out.push_back({p + "mlp.down_proj.weight", {d, c.ffn_dim}});
  }
  out.push_back({"model.norm.weight", {d}});
  if (!c.tie_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, d}});
  return out;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

absl::StatusOr<Json> ReadJson(const std::string& path) {
  absl::StatusOr<std::string> text = io::ReadFile(path);
  if (!text.ok()) return text.status();
  Json json = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  if (!json.is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a JSON object"));
  return json;
}

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

}  // namespace

absl::StatusOr<ModelConfig> ModelConfigFromHf(const Json& hf, const std::string& source,
                                              const std::optional<AttentionConfig>& attention,
                                              std::vector<std::string>* notes) {
  if (!hf.is_object()) return absl::InvalidArgumentError(source + ": expected a JSON object");
  HfReader r(hf, source);
  const std::string type = r.String("model_type");
  std::string archs;
  if (r.Present("architectures") && hf.at("architectures").is_array())
    for (const Json& a : hf.at("architectures"))
      archs += a.is_string() ? a.get<std::string>() + " " : "";
  const bool llama_arch = archs.empty() || archs.find("LlamaForCausalLM") != std::string::npos ||
                          archs.find("MistralForCausalLM") != std::string::npos;
  if (type != "llama" && type != "mistral") {
    auto it = UnsupportedArchitectures().find(type);
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": model_type: \"", type, "\" is not supported",
        it != UnsupportedArchitectures().end() ? absl::StrCat(" (", it->second, ")") : "",
        "; supported: llama, mistral without sliding window"));
  }
  if (!llama_arch)
    return absl::InvalidArgumentError(absl::StrCat(source, ": architectures: ", archs,
                                                   "is not supported (need LlamaForCausalLM)"));
  if (r.Present("rope_scaling"))
    r.Fail("rope_scaling", absl::StrCat("is not supported (got ", hf.at("rope_scaling").dump(),
                                        "); only plain RoPE with rope_theta"));
  if (r.Bool("attention_bias", false))
    r.Fail("attention_bias", "true is not supported (no biases)");
  if (r.Bool("mlp_bias", false)) r.Fail("mlp_bias", "true is not supported (no biases)");
  if (r.Present("sliding_window"))
    r.Fail("sliding_window", absl::StrCat("is not supported (got ", hf.at("sliding_window").dump(),
                                          "); use --attention bswa for a windowed model"));
  if (r.Double("partial_rotary_factor", 1.0) != 1.0)
    r.Fail("partial_rotary_factor", "only 1 (RoPE on the whole head) is supported");
  const std::string act = r.String("hidden_act");
  if (!act.empty() && act != "silu" && act != "swish")
    r.Fail("hidden_act", absl::StrCat("\"", act, "\" is not supported (SwiGLU needs silu)"));

  ModelConfig c;
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
  c.rope_base = r.Double("rope_theta", 10000.0);
  c.tie_embeddings = r.Bool("tie_word_embeddings", false);
  c.init_std = r.Double("initializer_range", 0.02);
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
    std::vector<std::string> ignored;
    static const std::set<std::string> read = {
        "vocab_size",          "hidden_size",         "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim",          "rms_norm_eps",
        "rope_theta",          "tie_word_embeddings", "initializer_range", "hidden_act"};
    for (auto it = hf.begin(); it != hf.end(); ++it)
      if (!read.count(it.key()) && !HarmlessKeys().count(it.key())) ignored.push_back(it.key());
    if (!ignored.empty())
      notes->push_back(absl::StrCat("config.json keys ignored: ", absl::StrJoin(ignored, ", ")));
  }
  return c;
}

std::string ModelConfigYaml(const ModelConfig& c, const std::string& comment) {
  std::string out;
  if (!comment.empty()) {
    for (const auto& line : std::vector<std::string>(absl::StrSplit(comment, '\n')))
      absl::StrAppend(&out, "# ", line, "\n");
  }
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
  absl::StrAppend(&out, "  tie_embeddings: ", c.tie_embeddings ? "true" : "false", "\n");
  absl::StrAppend(&out, "  init_std: ", FormatDouble(c.init_std), "\n");
  absl::StrAppend(&out, "  attention:\n");
  absl::StrAppend(&out, "    type: ", AttentionTypeName(c.attention.type), "\n");
  absl::StrAppend(&out, "    block_size: ", c.attention.block_size, "\n");
  absl::StrAppend(&out, "    memory_segments: ", c.attention.memory_segments, "\n");
  absl::StrAppend(&out, "    fam_length: ", c.attention.fam_length, "\n");
  return out;
}

Json HfConfigJson(const ModelConfig& c, DType dtype) {
  Json j = Json::object();
  j["architectures"] = Json::array({"LlamaForCausalLM"});
  j["model_type"] = "llama";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.d_model;
  j["intermediate_size"] = c.ffn_dim;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = c.norm_eps;
  j["rope_theta"] = c.rope_base;
  j["rope_scaling"] = nullptr;
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["initializer_range"] = c.init_std;
  j["torch_dtype"] = dtype == DType::kBF16  ? "bfloat16"
                     : dtype == DType::kF16 ? "float16"
                                            : "float32";
  j["famtrain_attention"] = {{"type", AttentionTypeName(c.attention.type)},
                             {"block_size", c.attention.block_size},
                             {"memory_segments", c.attention.memory_segments},
                             {"fam_length", c.attention.fam_length}};
  return j;
}

absl::StatusOr<HfImportResult> ImportHfCheckpoint(const std::string& hf_dir,
                                                  const std::string& out_dir,
                                                  const HfImportOptions& options) {
  HfImportResult result;
  const fs::path dir(hf_dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return absl::NotFoundError(absl::StrCat(hf_dir, ": not a directory"));
  absl::StatusOr<Json> hf = ReadJson((dir / "config.json").string());
  if (!hf.ok()) return hf.status();
  absl::StatusOr<ModelConfig> config =
      ModelConfigFromHf(*hf, (dir / "config.json").string(), options.attention, &result.notes);
  if (!config.ok()) return config.status();
  result.config = *config;
  const ModelConfig& c = result.config;

  // Which file holds each tensor.
  std::map<std::string, std::string> where;  // tensor → file name
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (fs::exists(index_path, ec)) {
    absl::StatusOr<Json> index = ReadJson(index_path.string());
    if (!index.ok()) return index.status();
    if (!index->contains("weight_map") || !index->at("weight_map").is_object())
      return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": weight_map: missing"));
    for (auto it = index->at("weight_map").begin(); it != index->at("weight_map").end(); ++it) {
      if (!it.value().is_string())
        return absl::InvalidArgumentError(
            absl::StrCat(index_path.string(), ": weight_map.", it.key(), ": expected a file name"));
      where[it.key()] = it.value().get<std::string>();
    }
  } else if (fs::exists(dir / "model.safetensors", ec)) {
    absl::StatusOr<std::unique_ptr<io::SafetensorsFile>> single =
        io::SafetensorsFile::Open((dir / "model.safetensors").string());
    if (!single.ok()) return single.status();
    for (const std::string& name : (*single)->names()) where[name] = "model.safetensors";
  } else {
    return absl::NotFoundError(
        absl::StrCat(hf_dir,
                     ": no model.safetensors or model.safetensors.index.json (PyTorch .bin "
                     "checkpoints are not read: convert them to safetensors first)"));
  }
  std::map<std::string, std::unique_ptr<io::SafetensorsFile>> files;
  for (const auto& [name, file] : where) {
    if (files.count(file)) continue;
    if (file.find('/') != std::string::npos || file.empty() || file[0] == '.')
      return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": weight_map.", name,
                                                     ": bad file name \"", file, "\""));
    absl::StatusOr<std::unique_ptr<io::SafetensorsFile>> f =
        io::SafetensorsFile::Open((dir / file).string());
    if (!f.ok()) return f.status();
    files[file] = std::move(*f);
  }

  // Check every tensor before writing anything.
  std::vector<std::string> missing, misshaped, unexpected, ignored;
  std::set<std::string> expected_names;
  for (const auto& [name, shape] : ExpectedWeights(c)) {
    expected_names.insert(name);
    auto it = where.find(name);
    if (it == where.end()) {
      missing.push_back(name);
      continue;
    }
    const io::SafetensorsFile& f = *files.at(it->second);
    absl::StatusOr<io::SafetensorsTensorInfo> info = f.Info(name);
    if (!info.ok())
      return absl::InvalidArgumentError(absl::StrCat(
          f.path(), ": tensor ", name, " is listed in the index but not stored in this file"));
    if (info->shape != shape || !IsFloating(info->dtype))
      misshaped.push_back(absl::StrCat(name, " ", io::SafetensorsDTypeName(info->dtype),
                                       ShapeString(info->shape), " (expected ", ShapeString(shape),
                                       ")"));
  }
  // A prompt stored in the checkpoint (one exported by `fam export`) is kept when it fits.
  bool stored_prompt = false;
  if (where.count(kFamEmbeddings)) {
    absl::StatusOr<io::SafetensorsTensorInfo> info =
        files.at(where.at(kFamEmbeddings))->Info(kFamEmbeddings);
    stored_prompt = info.ok() && c.fam_rows() > 0 && IsFloating(info->dtype) &&
                    info->shape == Shape{c.fam_rows(), c.d_model};
  }
  for (const auto& [name, file] : where) {
    if (expected_names.count(name) || (stored_prompt && name == kFamEmbeddings)) continue;
    if (EndsWith(name, ".rotary_emb.inv_freq") || name == kFamEmbeddings ||
        (c.tie_embeddings && name == "lm_head.weight"))
      ignored.push_back(name);
    else
      unexpected.push_back(name);
  }
  if (!missing.empty() || !misshaped.empty() || !unexpected.empty()) {
    std::vector<std::string> parts;
    if (!missing.empty()) parts.push_back(absl::StrCat("missing: ", absl::StrJoin(missing, ", ")));
    if (!misshaped.empty())
      parts.push_back(absl::StrCat("wrong shape or dtype: ", absl::StrJoin(misshaped, ", ")));
    if (!unexpected.empty())
      parts.push_back(absl::StrCat("unexpected (unsupported architecture?): ",
                                   absl::StrJoin(unexpected, ", ")));
    return absl::InvalidArgumentError(absl::StrCat(hf_dir, ": weights do not match config.json (",
                                                   absl::StrJoin(parts, "; "), ")"));
  }
  if (!ignored.empty())
    result.notes.push_back(absl::StrCat("tensors ignored: ", absl::StrJoin(ignored, ", ")));

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, shape] : ExpectedWeights(c)) {
    absl::StatusOr<Tensor> t = files.at(where.at(name))->Load(name);  // zero-copy
    if (!t.ok()) return t.status();
    tensors.emplace_back(name, *t);
  }
  const int64_t f = c.fam_rows();
  if (stored_prompt) {
    absl::StatusOr<Tensor> t = files.at(where.at(kFamEmbeddings))->Load(kFamEmbeddings);
    if (!t.ok()) return t.status();
    tensors.emplace_back(kFamEmbeddings, *t);
    result.notes.push_back("model.fam.embeddings: taken from the checkpoint");
  } else if (f > 0) {
    Tensor prompt = Tensor::Empty({f, c.d_model}, DType::kF32);
    if (options.fam_init == FamInit::kNormal) {
      Generator gen(options.seed, ParameterNameHash(kFamEmbeddings));
      gen.FillNormal(prompt, 0.0, c.init_std);
      result.notes.push_back(
          absl::StrCat("model.fam.embeddings: N(0, ", c.init_std, "^2), seed ", options.seed));
    } else {
      if (options.fam_init_start >= c.vocab_size)
        return absl::InvalidArgumentError(absl::StrCat("fam_init_start: ", options.fam_init_start,
                                                       " is outside the vocabulary [0, ",
                                                       c.vocab_size, ")"));
      const int64_t start = options.fam_init_start >= 0 ? options.fam_init_start : c.vocab_size / 2;
      std::vector<int64_t> ids(f);
      for (int64_t r = 0; r < f; ++r) ids[r] = (start + r) % c.vocab_size;
      absl::StatusOr<Tensor> table = files.at(where.at("model.embed_tokens.weight"))
                                         ->Load("model.embed_tokens.weight", DType::kF32);
      if (!table.ok()) return table.status();
      NoGradGuard no_grad;
      prompt = ops::Embedding(*table, Tensor::FromInts(ids, {f}));
      result.notes.push_back(
          absl::StrCat("model.fam.embeddings: embeddings of token ids ", ids[0], "..", ids[f - 1]));
    }
    tensors.emplace_back(kFamEmbeddings, prompt);
  }

  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(out_dir, ": cannot create: ", ec.message()));
  result.weights = (fs::path(out_dir) / "model.safetensors").string();
  result.model_yaml = (fs::path(out_dir) / "model.yaml").string();
  std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"producer", "famtrain import"}, {"source", hf_dir}};
  if (absl::Status s = io::WriteSafetensors(result.weights, tensors, meta, options.dtype); !s.ok())
    return s;
  const std::string yaml = ModelConfigYaml(
      c, absl::StrCat("Imported by `fam import` from ", hf_dir, " (", hf->value("model_type", ""),
                      ").\nWeights: model.safetensors next to this file."));
  if (absl::Status s = io::WriteFileAtomic(result.model_yaml, yaml); !s.ok()) return s;
  if (fs::exists(dir / "tokenizer.model", ec)) {
    absl::StatusOr<std::string> bytes = io::ReadFile((dir / "tokenizer.model").string());
    if (!bytes.ok()) return bytes.status();
    const std::string dst = (fs::path(out_dir) / "tokenizer.model").string();
    if (absl::Status s = io::WriteFileAtomic(dst, *bytes); !s.ok()) return s;
    result.notes.push_back(absl::StrCat("copied tokenizer.model to ", dst));
  }
  return result;
}

}  // namespace fam
