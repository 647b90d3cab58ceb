#include <filesystem>

#include "framework/io/atomic_file.h"
#include "framework/io/yaml_reader.h"
#include "trainers/eval/evaluate.h"

namespace fam::eval {
namespace {

namespace fs = std::filesystem;

void VisitSuite(YamlReader& r, EvalSuite* s) {
  r.Get("name", &s->name, "suite name, shown in the report");
  r.Section(
      "val",
      [&](YamlReader& v) {
        v.Get("enabled", &s->val.enabled, "evaluate validation perplexity (needs data.val)");
        v.GetEnum("mode", &s->val.mode,
                  std::vector<std::pair<std::string, ValMode>>{{"windows", ValMode::kWindows},
                                                               {"stream", ValMode::kStream}},
                  "windows: windows of seq_len with Forward; stream: one long stretch streamed");
        v.Get("seq_len", &s->val.seq_len, 0, "windows mode: window length; 0 = trainer.seq_len");
        v.Get("max_windows", &s->val.max_windows, 0,
              "windows mode: windows evaluated; 0 = eval.val_batches x trainer.micro_batch of "
              "the run (global_batch when micro_batch is derived; all when that is 0)");
        v.Get("stream_tokens", &s->val.stream_tokens, 0,
              "stream mode: tokens streamed; 0 = the whole validation set");
      },
      "validation perplexity");
  r.Section(
      "passkey",
      [&](YamlReader& p) {
        p.Get("enabled", &s->passkey.enabled, "run PassKey retrieval (needs a tokenizer)");
        p.Get("lengths", &s->passkey.lengths, AtLeast(1),
              "context lengths in tokens; [] = the run's eval.passkey_lengths, else sized for "
              "the model");
        p.Get("trials", &s->passkey.trials, 0, "trials per length; 0 = eval.passkey_trials");
        p.Get("max_new_tokens", &s->passkey.max_new_tokens, 0,
              "greedy tokens per answer; 0 = the run's eval.max_new_tokens");
        p.Get("seed", &s->passkey.seed, 0, "seed of the keys and their depths");
        p.Get("chunk", &s->passkey.chunk, 0,
              "prompt tokens per streaming call; 0 = the block size");
        p.Get("max_depth", &s->passkey.max_depth, InRange(0, 1),
              "key depths drawn in [0, max_depth]; below 1 keeps every key at least "
              "(1 - max_depth) x length tokens before the question");
        p.Get("key_digits", &s->passkey.key_digits, InRange(1, 9),
              "digits of each pass key (5 as the paper; fewer makes copying easier for tiny "
              "models)");
      },
      "PassKey retrieval (FAM_SPEC.md section 8)");
  r.Get("plots", &s->plots, "write PNG plots (gnuplot)");
}

}  // namespace

absl::StatusOr<EvalSuite> ParseEvalSuite(const std::string& yaml, const std::string& source_name) {
  absl::StatusOr<ConfigNode> tree = LoadYamlText(yaml, source_name);
  if (!tree.ok()) return tree.status();
  EvalSuite suite;
  suite.name = fs::path(source_name).stem().string();
  YamlReader reader = YamlReader::Reading(&*tree);
  VisitSuite(reader, &suite);
  if (absl::Status s = reader.Finish(); !s.ok()) return s;
  return suite;
}

absl::StatusOr<EvalSuite> LoadEvalSuite(const std::string& path) {
  absl::StatusOr<std::string> text = io::ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseEvalSuite(*text, path);
}

std::string EvalSuiteToYaml(const EvalSuite& suite) {
  ConfigNode root = ConfigNode::Map();
  EvalSuite copy = suite;
  YamlReader writer = YamlReader::Writing(&root);
  VisitSuite(writer, &copy);
  return EmitYaml(root);
}

}  // namespace fam::eval
