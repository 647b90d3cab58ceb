// `fam forward`: the parity interface of FORMATS.md — logits of a token sequence as .npy.
#include <iostream>

#include "framework/autograd/node.h"
#include "framework/core/error.h"
#include "framework/io/npy.h"
#include "framework/ops/ops.h"
#include "models/fam/weights_io.h"
#include "trainers/cli/commands.h"
#include "trainers/train/run_config.h"

namespace fam {

Command ForwardCommand() {
  Command c;
  c.name = "forward";
  c.synopsis = "--model <model.yaml> --weights <file.safetensors> --tokens <ids.txt> --out <logits.npy>";
  c.summary = "logits [T, vocab] of a token sequence in inference mode (parity checks)";
  c.flags = {{"model", "model YAML (a `model:` section or a preset)"},
             {"weights", "safetensors with FORMATS.md names (F32/BF16/F16)"},
             {"tokens", "text file of whitespace-separated token ids"},
             {"out", "output .npy (float32, [T, vocab], C order)"}};
  c.run = [](const cli::Args& args) -> absl::Status {
    if (absl::Status s = args.Require({"model", "weights", "tokens", "out"}); !s.ok()) return s;
    absl::StatusOr<ModelConfig> config = LoadModelConfig(args.Get("model"));
    if (!config.ok()) return config.status();
    absl::StatusOr<std::vector<int64_t>> ids = ReadTokenIds(args.Get("tokens"));
    if (!ids.ok()) return ids.status();
    for (size_t i = 0; i < ids->size(); ++i)
      if ((*ids)[i] < 0 || (*ids)[i] >= config->vocab_size)
        return absl::InvalidArgumentError(absl::StrCat(args.Get("tokens"), ": token ", i, " has id ",
                                                       (*ids)[i], ", outside the vocabulary [0, ",
                                                       config->vocab_size, ")"));
    return CatchToStatus([&] {
      FamModel model(*config);
      ThrowIfError(LoadModelWeights(model, args.Get("weights")));
      NoGradGuard no_grad;
      const int64_t t = static_cast<int64_t>(ids->size());
      Tensor logits = model.Forward(Tensor::FromInts(*ids, {1, t})).logits;
      ThrowIfError(io::WriteNpy(args.Get("out"), ops::Reshape(logits, {t, config->vocab_size})));
      std::cout << "wrote " << args.Get("out") << " [" << t << ", " << config->vocab_size << "]\n";
    });
  };
  return c;
}

}  // namespace fam
