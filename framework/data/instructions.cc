#include "framework/data/instructions.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "framework/core/error.h"
#include "framework/core/rng.h"
#include "framework/data/token_shard.h"
#include "framework/data/tokenizer.h"
#include "framework/io/atomic_file.h"
#include "nlohmann/json.hpp"

namespace fam::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Philox stream of the repeat spans (offset: the example's index).
constexpr uint64_t kRepeatSpanStream = 0x5245504541540001ull;
constexpr char kManifestName[] = "data.json";
constexpr int kMaxExplicitClasses = 256 - kLossClassFirstExplicit;

bool IsRoleWithDefault(const std::string& role) {
  return role == "instruction" || role == "answer";
}

std::string JsonKind(const json& value) {
  if (value.is_null()) return "null";
  if (value.is_boolean()) return "a boolean";
  if (value.is_number()) return "a number";
  if (value.is_string()) return "a string";
  if (value.is_array()) return "an array";
  return "an object";
}

// Parses one non-blank line; errors are returned without the "<source>:<line>: " prefix.
absl::StatusOr<InstructionExample> ParseLine(std::string_view line) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number overflow
    return absl::InvalidArgumentError(absl::StrCat("not valid JSON: ", e.what()));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("expected a JSON object, got ", JsonKind(j)));
  }
  InstructionExample example;
  const bool has_segments = j.contains("segments");
  const bool has_pair = j.contains("prompt") || j.contains("response");
  if (has_segments && has_pair) {
    return absl::InvalidArgumentError(
        "has both \"segments\" and \"prompt\"/\"response\" (use one form)");
  }
  if (has_pair) {
    for (const char* key : {"prompt", "response"}) {
      if (!j.contains(key) || !j[key].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "\"", key, "\": expected a string, got ", j.contains(key) ? JsonKind(j[key]) : "none"));
      }
    }
    example.segments.push_back({j["prompt"].get<std::string>(), "instruction", std::nullopt});
    example.segments.push_back({j["response"].get<std::string>(), "answer", std::nullopt});
    return example;
  }
  if (!has_segments) {
    return absl::InvalidArgumentError(
        "expected \"segments\": [{\"text\", \"role\"}, ...] or \"prompt\" and \"response\"");
  }
  const json& segments = j["segments"];
  if (!segments.is_array() || segments.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"segments\": expected a non-empty array, got ",
                     segments.is_array() ? "an empty array" : JsonKind(segments)));
  }
  for (size_t i = 0; i < segments.size(); ++i) {
    const json& s = segments[i];
    const std::string where = absl::StrCat("segments[", i, "]");
    if (!s.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": expected an object, got ", JsonKind(s)));
    }
    for (auto it = s.begin(); it != s.end(); ++it) {
      if (it.key() != "text" && it.key() != "role" && it.key() != "weight") {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": unknown key \"", it.key(), "\" (expected text, role, weight)"));
      }
    }
    InstructionSegment segment;
    for (const char* key : {"text", "role"}) {
      if (!s.contains(key) || !s[key].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".", key, ": expected a string, got ",
                         s.contains(key) ? JsonKind(s[key]) : "none"));
      }
    }
    segment.text = s["text"].get<std::string>();
    segment.role = s["role"].get<std::string>();
    if (s.contains("weight")) {
      const json& w = s["weight"];
      const double value = w.is_number() ? w.get<double>() : -1.0;
      if (!w.is_number() || !std::isfinite(value) || value < 0) {
        return absl::InvalidArgumentError(absl::StrCat(where,
                                                       ".weight: expected a number >= 0, got ",
                                                       w.is_number() ? w.dump() : JsonKind(w)));
      }
      segment.weight = value;
    } else if (!IsRoleWithDefault(segment.role)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": role \"", segment.role,
                       "\" needs a \"weight\" (only instruction and answer have default weights)"));
    }
    example.segments.push_back(std::move(segment));
  }
  return example;
}

absl::Status ValidateOptions(const PrepareInstructionsOptions& o) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("prepare-instructions: ", what));
  };
  if (o.inputs.empty()) return bad("no input JSONL files");
  if (o.tokenizer.empty()) return bad("no tokenizer (.model or tokenizer.json) given");
  if (o.out_dir.empty()) return bad("out_dir is empty");
  if (o.seq_len < 1) return bad(absl::StrCat("seq_len ", o.seq_len, " must be >= 1"));
  if (o.repeat_tokens < 0) {
    return bad(absl::StrCat("repeat_tokens ", o.repeat_tokens, " must be >= 0"));
  }
  if (!(o.val_fraction >= 0.0 && o.val_fraction <= 0.5)) {
    return bad(absl::StrCat("val_fraction ", o.val_fraction, " not in [0, 0.5]"));
  }
  if (o.shard_tokens < 1) {
    return bad(absl::StrCat("shard_tokens ", o.shard_tokens, " must be >= 1"));
  }
  for (auto [name, w] : {std::pair<const char*, double>{"instruction", o.weights.instruction},
                         {"answer", o.weights.answer},
                         {"repeat", o.weights.repeat}}) {
    if (!std::isfinite(w) || w < 0) {
      return bad(absl::StrCat(name, " weight ", w, " must be a finite number >= 0"));
    }
  }
  return absl::OkStatus();
}

int64_t FileBytes(const fs::path& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  return ec ? -1 : static_cast<int64_t>(size);
}

// Writes one split's packed stream as token shards with weight shards next to them.
absl::Status WriteSplit(const fs::path& dir, const std::string& prefix,
                        const InstructionPacker& packer, const std::vector<float>& class_weights,
                        int64_t shard_tokens, int64_t vocab_size, json* shards,
                        std::vector<std::string>* paths) {
  const std::vector<int32_t>& tokens = packer.tokens();
  const std::vector<uint8_t>& classes = packer.classes();
  *shards = json::array();
  for (size_t begin = 0, index = 0; begin < tokens.size(); begin += shard_tokens, ++index) {
    const size_t end = std::min(tokens.size(), begin + static_cast<size_t>(shard_tokens));
    const std::string name = absl::StrFormat("%s-%05d.bin", prefix, index);
    const fs::path path = dir / name;
    absl::Status status = WriteTokenShard(
        path.string(), std::vector<int32_t>(tokens.begin() + begin, tokens.begin() + end),
        vocab_size);
    if (!status.ok()) return status;
    absl::StatusOr<TokenShard> written = TokenShard::Open(path.string(), false);
    if (!written.ok()) return written.status();
    const std::string weights_path = WeightShardPath(path.string());
    status = WriteWeightShard(weights_path,
                              std::vector<uint8_t>(classes.begin() + begin, classes.begin() + end),
                              class_weights, written->checksum());
    if (!status.ok()) return status;
    shards->push_back({{"file", name},
                       {"tokens", static_cast<int64_t>(end - begin)},
                       {"bytes", FileBytes(path)},
                       {"weights", fs::path(weights_path).filename().string()},
                       {"weights_bytes", FileBytes(weights_path)}});
    paths->push_back(path.string());
  }
  return absl::OkStatus();
}

// Deletes train-/val- token and weight shards that the new data.json does not list.
void RemoveStaleShards(const fs::path& dir, const std::set<std::string>& keep) {
  static const std::regex kShardName(R"((train|val)-\d{5}\.(bin|weights))");
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, kShardName) && keep.count(name) == 0) fs::remove(entry.path(), ec);
  }
}

}  // namespace

absl::StatusOr<std::vector<InstructionExample>> ParseInstructionsJsonl(std::string_view text,
                                                                       const std::string& source) {
  std::vector<InstructionExample> examples;
  int64_t line_number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    absl::StatusOr<InstructionExample> example = ParseLine(line);
    if (!example.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line_number, ": ", example.status().message()));
    }
    example->line = line_number;
    examples.push_back(*std::move(example));
  }
  return examples;
}

absl::StatusOr<std::vector<InstructionExample>> ReadInstructionsJsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("instruction data not found: ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return ParseInstructionsJsonl(buffer.str(), path);
}

LossClasses::LossClasses(const RoleWeights& roles) {
  weights_ = {0.0f, static_cast<float>(roles.instruction), static_cast<float>(roles.answer),
              static_cast<float>(roles.repeat)};
}

absl::StatusOr<uint8_t> LossClasses::ForSegment(const InstructionSegment& segment) {
  if (!segment.weight.has_value()) {
    if (segment.role == "instruction") return kLossClassInstruction;
    if (segment.role == "answer") return kLossClassAnswer;
    return absl::InvalidArgumentError(
        absl::StrCat("role \"", segment.role,
                     "\" needs a \"weight\" (only instruction and answer have default weights)"));
  }
  const double w = *segment.weight;
  if (!std::isfinite(w) || w < 0) {
    return absl::InvalidArgumentError(absl::StrCat("weight ", w, " must be a finite number >= 0"));
  }
  const float value = static_cast<float>(w);
  auto it = explicit_.find(value);
  if (it != explicit_.end()) return it->second;
  if (static_cast<int>(explicit_.size()) >= kMaxExplicitClasses) {
    return absl::InvalidArgumentError(
        absl::StrCat("more than ", kMaxExplicitClasses, " distinct explicit segment weights"));
  }
  const uint8_t code = static_cast<uint8_t>(weights_.size());
  weights_.push_back(value);
  explicit_[value] = code;
  return code;
}

std::string LossClasses::name(uint8_t code) const {
  switch (code) {
    case kLossClassPad:
      return "pad";
    case kLossClassInstruction:
      return "instruction";
    case kLossClassAnswer:
      return "answer";
    case kLossClassRepeat:
      return "repeat";
    default:
      return "explicit";
  }
}

absl::StatusOr<EncodedExample> EncodeExample(const InstructionExample& example,
                                             const EncodeFn& encode, const ExampleOptions& options,
                                             int64_t index, LossClasses* classes,
                                             const std::string& source) {
  auto fail = [&](const absl::Status& status) {
    return absl::InvalidArgumentError(absl::StrCat(source.empty() ? "example" : source, ":",
                                                   example.line, ": ", status.message()));
  };
  EncodedExample out;
  for (const InstructionSegment& segment : example.segments) {
    absl::StatusOr<uint8_t> code = classes->ForSegment(segment);
    if (!code.ok()) return fail(code.status());
    const std::vector<int32_t> ids = encode(segment.text);
    out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
    out.classes.insert(out.classes.end(), ids.size(), *code);
  }
  const int64_t n = static_cast<int64_t>(out.tokens.size());
  if (n == 0) return fail(absl::InvalidArgumentError("the example has no tokens (empty texts)"));
  if (options.repeat_tokens > 0) {
    const int64_t k = std::min(options.repeat_tokens, n);
    const std::array<uint32_t, 4> bits =
        Philox(options.seed, kRepeatSpanStream, static_cast<uint64_t>(index));
    const uint64_t draw = (static_cast<uint64_t>(bits[0]) << 32) | bits[1];
    const int64_t start = static_cast<int64_t>(draw % static_cast<uint64_t>(n - k + 1));
    out.tokens.insert(out.tokens.end(), options.repeat_header.begin(), options.repeat_header.end());
    out.classes.insert(out.classes.end(), options.repeat_header.size(), kLossClassInstruction);
    for (int64_t i = start; i < start + k; ++i) {
      out.tokens.push_back(out.tokens[i]);
      out.classes.push_back(kLossClassRepeat);
    }
  }
  if (options.eos_id >= 0) {
    out.tokens.push_back(options.eos_id);
    out.classes.push_back(out.classes.back());
  }
  return out;
}

int64_t DefaultBoundarySlack(int64_t seq_len) { return std::clamp<int64_t>(seq_len / 16, 1, 64); }

InstructionPacker::InstructionPacker(int64_t seq_len, int64_t slack, int32_t pad_id)
    : seq_len_(seq_len),
      slack_(slack < 0 ? DefaultBoundarySlack(seq_len) : slack),
      pad_id_(pad_id) {
  FAM_CHECK(seq_len >= 1, "instruction packer: seq_len ", seq_len, " must be >= 1");
  FAM_CHECK(pad_id >= 0, "instruction packer: pad id ", pad_id, " must be >= 0");
}

void InstructionPacker::Pad(int64_t count) {
  tokens_.insert(tokens_.end(), static_cast<size_t>(count), pad_id_);
  classes_.insert(classes_.end(), static_cast<size_t>(count), kLossClassPad);
  padding_ += count;
}

void InstructionPacker::Add(const EncodedExample& example) {
  FAM_CHECK(example.tokens.size() == example.classes.size(),
            "instruction packer: ", example.tokens.size(), " tokens but ", example.classes.size(),
            " classes");
  const int64_t n = static_cast<int64_t>(example.tokens.size());
  const int64_t offset = static_cast<int64_t>(tokens_.size()) % seq_len_;
  const int64_t room = seq_len_ - offset;
  if (offset != 0 && n > room && room < slack_) Pad(room);
  starts_.push_back(static_cast<int64_t>(tokens_.size()));
  tokens_.insert(tokens_.end(), example.tokens.begin(), example.tokens.end());
  classes_.insert(classes_.end(), example.classes.begin(), example.classes.end());
  if (n > seq_len_) ++longer_;
}

void InstructionPacker::Finish() {
  const int64_t n = static_cast<int64_t>(tokens_.size());
  if (n == 0) return;
  const int64_t windows = std::max<int64_t>(1, (n - 1 + seq_len_ - 1) / seq_len_);
  const int64_t want = windows * seq_len_ + 1;
  if (want > n) Pad(want - n);
}

absl::StatusOr<InstructionDataSummary> PrepareInstructions(const PrepareInstructionsOptions& o) {
  if (absl::Status s = ValidateOptions(o); !s.ok()) return s;
  auto log = [&](const std::string& line) {
    if (o.log) o.log(line);
  };
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::Load(o.tokenizer);
  if (!tokenizer.ok()) return tokenizer.status();
  // Read everything before touching the output directory: a bad line changes nothing.
  std::vector<std::pair<std::string, std::vector<InstructionExample>>> inputs;
  json sources = json::array();
  for (const std::string& path : o.inputs) {
    absl::StatusOr<std::vector<InstructionExample>> examples = ReadInstructionsJsonl(path);
    if (!examples.ok()) return examples.status();
    sources.push_back({{"path", path},
                       {"bytes", FileBytes(path)},
                       {"examples", static_cast<int64_t>(examples->size())}});
    log(absl::StrCat("prepare-instructions: ", path, ": ", examples->size(), " examples"));
    inputs.emplace_back(path, *std::move(examples));
  }

  ExampleOptions eo;
  eo.repeat_tokens = o.repeat_tokens;
  eo.repeat_header = tokenizer->Encode(kRepeatHeader);
  eo.eos_id = tokenizer->eos_id();
  eo.seed = o.seed;
  const int32_t pad_id = tokenizer->pad_id() >= 0   ? tokenizer->pad_id()
                         : tokenizer->eos_id() >= 0 ? tokenizer->eos_id()
                                                    : 0;
  LossClasses classes(o.weights);
  InstructionPacker train(o.seq_len, o.boundary_slack, pad_id);
  InstructionPacker val(o.seq_len, o.boundary_slack, pad_id);
  const EncodeFn encode = [&](std::string_view text) { return tokenizer->Encode(text); };
  int64_t index = 0;
  for (const auto& [path, examples] : inputs) {
    for (const InstructionExample& example : examples) {
      const double f = o.val_fraction;
      const bool to_val = std::floor((index + 1) * f) > std::floor(index * f);
      absl::StatusOr<EncodedExample> encoded =
          EncodeExample(example, encode, eo, index, &classes, path);
      if (!encoded.ok()) return encoded.status();
      (to_val ? val : train).Add(*encoded);
      ++index;
    }
  }
  if (train.starts().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("prepare-instructions: no training examples in ",
                                                   absl::StrJoin(o.inputs, ", ")));
  }
  train.Finish();
  val.Finish();

  const fs::path dir(o.out_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("prepare-instructions: cannot create ", dir.string(), ": ", ec.message()));
  }
  fs::remove(dir / kManifestName, ec);  // the outputs are about to change
  absl::StatusOr<std::string> copied = CopyTokenizer(o.tokenizer, dir.string());
  if (!copied.ok()) {
    return absl::Status(copied.status().code(),
                        absl::StrCat("prepare-instructions: ", copied.status().message()));
  }

  InstructionDataSummary summary;
  summary.class_weights = classes.weights();
  json split_json[2];
  json shard_lists[2];
  std::set<std::string> keep;
  const InstructionPacker* packers[2] = {&train, &val};
  InstructionSplitSummary* splits[2] = {&summary.train, &summary.val};
  const char* prefixes[2] = {"train", "val"};
  for (int s = 0; s < 2; ++s) {
    const InstructionPacker& p = *packers[s];
    InstructionSplitSummary& split = *splits[s];
    absl::Status status = WriteSplit(dir, prefixes[s], p, classes.weights(), o.shard_tokens,
                                     tokenizer->vocab_size(), &shard_lists[s], &split.shards);
    if (!status.ok()) return status;
    for (const json& shard : shard_lists[s]) {
      keep.insert(shard["file"].get<std::string>());
      keep.insert(shard["weights"].get<std::string>());
    }
    split.examples = static_cast<int64_t>(p.starts().size());
    split.tokens = static_cast<int64_t>(p.tokens().size());
    split.padding_tokens = p.padding();
    split.longer_than_window = p.longer_than_window();
    for (uint8_t code : p.classes()) split.weighted_tokens += classes.weights()[code] > 0;
    split_json[s] = {{"examples", split.examples},
                     {"padding_tokens", split.padding_tokens},
                     {"weighted_tokens", split.weighted_tokens},
                     {"longer_than_window", split.longer_than_window}};
  }
  RemoveStaleShards(dir, keep);

  json class_list = json::array();
  for (size_t c = 0; c < classes.weights().size(); ++c) {
    // The f32 weight printed with 7 significant digits (0.1, not 0.10000000149011612).
    const double weight = std::stod(absl::StrFormat("%.7g", classes.weights()[c]));
    class_list.push_back(
        {{"code", c}, {"name", classes.name(static_cast<uint8_t>(c))}, {"weight", weight}});
  }
  json files = json::array();
  for (const std::string& name : TokenizerFilesIn(dir.string())) {
    files.push_back({{"file", name}, {"bytes", FileBytes(dir / name)}});
  }
  for (const json& list : shard_lists) {
    for (const json& s : list) {
      files.push_back({{"file", s["file"]}, {"bytes", s["bytes"]}});
      files.push_back({{"file", s["weights"]}, {"bytes", s["weights_bytes"]}});
    }
  }
  const json manifest = {
      {"format", "famtrain-data"},
      {"version", 1},
      {"kind", "instructions"},
      {"vocab_size", tokenizer->vocab_size()},
      {"bos_id", tokenizer->bos_id()},
      {"eos_id", tokenizer->eos_id()},
      {"pad_id", tokenizer->pad_id()},
      {"newline_id", tokenizer->newline_id()},
      {"tokenizer", fs::path(*copied).filename().string()},
      {"train",
       {{"tokens", summary.train.tokens},
        {"documents", summary.train.examples},
        {"shards", shard_lists[0]}}},
      {"val",
       {{"tokens", summary.val.tokens},
        {"documents", summary.val.examples},
        {"shards", shard_lists[1]}}},
      {"instructions",
       {{"seq_len", o.seq_len},
        {"boundary_slack", train.slack()},
        {"repeat_tokens", o.repeat_tokens},
        {"repeat_header", kRepeatHeader},
        {"seed", o.seed},
        {"val_fraction", o.val_fraction},
        {"pad_token", pad_id},
        {"classes", class_list},
        {"train", split_json[0]},
        {"val", split_json[1]}}},
      {"sources", sources},
      {"files", files},
  };
  if (absl::Status s = io::WriteFileAtomic((dir / kManifestName).string(), manifest.dump(2) + "\n");
      !s.ok()) {
    return s;
  }
  log(absl::StrFormat(
      "prepare-instructions: train %d examples, %d tokens (%d padding, %d weighted) in %d "
      "shard(s); val %d examples, %d tokens; windows of %d tokens → %s",
      summary.train.examples, summary.train.tokens, summary.train.padding_tokens,
      summary.train.weighted_tokens, summary.train.shards.size(), summary.val.examples,
      summary.val.tokens, o.seq_len, dir.string()));
  if (summary.train.longer_than_window + summary.val.longer_than_window > 0) {
    log(absl::StrCat("prepare-instructions: warning: ",
                     summary.train.longer_than_window + summary.val.longer_than_window,
                     " example(s) are longer than seq_len ", o.seq_len,
                     " and span several windows"));
  }
  return summary;
}

}  // namespace fam::data
