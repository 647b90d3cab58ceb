// Training throughput of the real trainer (RunTraining: loader, forward, chunked loss, backward,
// clipping, AdamW with f32 masters) on synthetic tokens, FAM against BSWA (and full attention on
// request) at the same block size and memory segments: tokens/s, model TFLOP/s, MFU against the
// device's datasheet peak (trainers/train/peak_flops.h; attention counted over the attended span only,
// recomputation not counted) and the step-time ratio FAM / BSWA. The issue's GPU goals: MFU >= 50%
// for the 1B preset at seq 8192 on one GPU, FAM <= 1.05x BSWA.
//
//   train_device_bench [--preset 1b] [--seq 8192] [--micro-batch 1] [--accum 1] [--steps 6]
//                      [--warmup 2] [--precision bf16] [--device cuda] [--recompute true]
//                      [--attention fam,bswa] [--set key=value ...] [--out result.json]
//
// Steps after the first `warmup` are timed (metrics.jsonl of each run). On the CPU or an emulated
// device (FAM_CUDA_EMULATION=host) it runs the same way with no MFU: `--preset tiny --seq 512
// --device cpu` is a quick smoke test.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "framework/backends/registry.h"
#include "framework/data/token_shard.h"
#include "nlohmann/json.hpp"
#include "trainers/train/peak_flops.h"
#include "trainers/train/train_loop.h"
#include "trainers/train/run_config.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

struct Options {
  std::string preset = "1b";
  int64_t seq = 8192, micro_batch = 1, accum = 1, steps = 6, warmup = 2;
  std::string precision = "bf16", device = "cuda", recompute = "true";
  std::vector<std::string> attention = {"fam", "bswa"};
  std::vector<std::string> sets;
  std::string out;
};

[[noreturn]] void Usage(const std::string& problem) {
  std::cerr << "train_device_bench: " << problem
            << "\nusage: train_device_bench [--preset 1b] [--seq 8192] [--micro-batch 1] "
               "[--accum 1] [--steps 6] [--warmup 2] [--precision bf16|f32] [--device cuda|cpu] "
               "[--recompute true|false] [--attention fam,bswa,full] [--set key=value ...] "
               "[--out result.json]\n";
  std::exit(2);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) Usage(flag + " needs a value");
    const std::string value = argv[++i];
    auto integer = [&](int64_t* out) {
      try {
        size_t used = 0;
        *out = std::stoll(value, &used);
        if (used != value.size() || *out < 0) throw std::invalid_argument(value);
      } catch (const std::exception&) {
        Usage(flag + " expects a non-negative integer, got \"" + value + "\"");
      }
    };
    if (flag == "--preset")
      o.preset = value;
    else if (flag == "--seq")
      integer(&o.seq);
    else if (flag == "--micro-batch")
      integer(&o.micro_batch);
    else if (flag == "--accum")
      integer(&o.accum);
    else if (flag == "--steps")
      integer(&o.steps);
    else if (flag == "--warmup")
      integer(&o.warmup);
    else if (flag == "--precision")
      o.precision = value;
    else if (flag == "--device")
      o.device = value;
    else if (flag == "--recompute")
      o.recompute = value;
    else if (flag == "--attention")
      o.attention = absl::StrSplit(value, ',', absl::SkipEmpty());
    else if (flag == "--set")
      o.sets.push_back(value);
    else if (flag == "--out")
      o.out = value;
    else
      Usage("unknown flag " + flag);
  }
  if (o.steps <= o.warmup) Usage("--steps must be larger than --warmup");
  if (o.seq < 2 || o.micro_batch < 1 || o.accum < 1)
    Usage("--seq >= 2, --micro-batch, --accum >= 1");
  return o;
}

struct Result {
  std::string attention;
  double seconds_per_step = 0, tokens_per_s = 0, model_tflops = 0;
  std::optional<double> mfu;
  double flops_per_token = 0;
  double final_loss = 0;
};

// Mean seconds per step over the steps after `warmup`, from the run's metrics.jsonl.
double TimedSecondsPerStep(const fs::path& metrics, int64_t warmup, double* last_loss) {
  std::ifstream in(metrics);
  std::map<int64_t, double> elapsed;
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || j["kind"] != "train") continue;
    elapsed[j["step"].get<int64_t>()] = j["elapsed_s"].get<double>();
    *last_loss = j["loss"].get<double>();
  }
  FAM_CHECK(elapsed.size() >= 2 && elapsed.count(warmup) && !elapsed.empty(), metrics.string(),
            ": fewer train lines than steps");
  const auto last = *elapsed.rbegin();
  return (last.second - elapsed.at(warmup)) / static_cast<double>(last.first - warmup);
}

int Main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  const fs::path dir = fs::temp_directory_path() / absl::StrCat("fam_train_bench_", ::getpid());
  fs::create_directories(dir);
  std::vector<Result> results;
  std::string device_name;
  for (const std::string& attention : o.attention) {
    const std::string yaml = absl::StrFormat(
        R"(name: %s
run_dir: %s
model: {preset: %s}
data: {train: %s/train-*.bin}
optimizer: {type: adamw, lr: 1.0e-4, weight_decay: 0.1, grad_clip: 1.0}
schedule: {type: constant}
trainer: {steps: %d, global_batch: %d, micro_batch: %d, seq_len: %d, precision: %s, device: %s,
          recompute: %s, log_interval: 1, eval_interval: 0, seed: 1}
checkpoint: {interval: 0, save_final: false, resume: never}
)",
        attention, (dir / "runs").string(), o.preset, dir.string(), o.steps,
        o.micro_batch * o.accum, o.micro_batch, o.seq, o.precision, o.device, o.recompute);
    std::vector<std::string> overrides = o.sets;
    overrides.push_back("model.attention.type=" + attention);
    absl::StatusOr<RunConfig> config =
        ParseRunConfig(yaml, (dir / "bench.yaml").string(), overrides);
    if (!config.ok()) {
      std::cerr << "train_device_bench: " << config.status().message() << "\n";
      return 2;
    }
    if (results.empty()) {
      // Random tokens, enough for every step without wrapping.
      const int64_t tokens = (o.steps + 1) * o.micro_batch * o.accum * (o.seq + 1) + 1;
      std::mt19937 rng(7);
      std::uniform_int_distribution<int32_t> id(3,
                                                static_cast<int32_t>(config->model.vocab_size) - 1);
      std::vector<int32_t> ids(static_cast<size_t>(tokens));
      for (int32_t& t : ids) t = id(rng);
      const absl::Status w =
          data::WriteTokenShard((dir / "train-00000.bin").string(), ids, config->model.vocab_size);
      if (!w.ok()) {
        std::cerr << "train_device_bench: " << w.message() << "\n";
        return 1;
      }
    }
    std::cout << "== " << attention << "\n" << std::flush;
    absl::StatusOr<TrainResult> run = RunTraining(*config);
    if (!run.ok()) {
      std::cerr << "train_device_bench: " << attention << ": " << run.status().message() << "\n";
      fs::remove_all(dir);
      return 1;
    }
    Result r;
    r.attention = attention;
    r.seconds_per_step =
        TimedSecondsPerStep(dir / "runs" / attention / "metrics.jsonl", o.warmup, &r.final_loss);
    const double tokens_per_step = static_cast<double>(o.micro_batch * o.accum * o.seq);
    r.tokens_per_s = tokens_per_step / r.seconds_per_step;
    r.flops_per_token = config->model.TrainingFlopsPerToken(o.seq);
    r.model_tflops = r.tokens_per_s * r.flops_per_token / 1e12;
    const std::optional<PeakFlops> peak = PeakFlopsFor(run->device, config->trainer.precision);
    if (peak) {
      r.mfu = r.model_tflops * 1e12 / peak->flops_per_s;
      device_name = peak->device_name;
    } else {
      device_name = GetBackend(run->device).name();
    }
    results.push_back(r);
  }
  fs::remove_all(dir);

  std::cout << absl::StrFormat(
      "\npreset %s, seq %d, micro-batch %d x %d, %s, recompute %s, on %s (%d timed steps)\n",
      o.preset, o.seq, o.micro_batch, o.accum, o.precision, o.recompute, device_name,
      o.steps - o.warmup);
  std::cout << absl::StrFormat("%-6s %12s %12s %14s %8s %16s\n", "attn", "s/step", "tokens/s",
                               "model TFLOP/s", "MFU", "GFLOP/token");
  nlohmann::json report = {{"preset", o.preset},           {"seq", o.seq},
                           {"micro_batch", o.micro_batch}, {"accum", o.accum},
                           {"precision", o.precision},     {"recompute", o.recompute == "true"},
                           {"device", device_name},        {"timed_steps", o.steps - o.warmup}};
  for (const Result& r : results) {
    std::cout << absl::StrFormat("%-6s %12.4f %12.0f %14.2f %8s %16.3f\n", r.attention,
                                 r.seconds_per_step, r.tokens_per_s, r.model_tflops,
                                 r.mfu ? absl::StrFormat("%.1f%%", *r.mfu * 100) : "-",
                                 r.flops_per_token / 1e9);
    report["runs"][r.attention] = {{"seconds_per_step", r.seconds_per_step},
                                   {"tokens_per_s", r.tokens_per_s},
                                   {"model_tflops", r.model_tflops},
                                   {"mfu", r.mfu ? nlohmann::json(*r.mfu) : nlohmann::json()},
                                   {"flops_per_token", r.flops_per_token},
                                   {"final_loss", r.final_loss}};
  }
  auto find = [&](const std::string& name) -> const Result* {
    for (const Result& r : results)
      if (r.attention == name) return &r;
    return nullptr;
  };
  if (const Result* fam = find("fam"), *bswa = find("bswa"); fam && bswa) {
    const double ratio = fam->seconds_per_step / bswa->seconds_per_step;
    std::cout << absl::StrFormat("FAM / BSWA step time: %.3f (goal <= 1.05)\n", ratio);
    report["fam_over_bswa_step_time"] = ratio;
  }
  if (!o.out.empty()) std::ofstream(o.out) << report.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace fam

int main(int argc, char** argv) { return fam::Main(argc, argv); }
