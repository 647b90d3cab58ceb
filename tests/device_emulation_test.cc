// The device code paths, checked without a GPU: FAM_CUDA_EMULATION=host serves cuda:N with the
// CPU kernels on host memory (framework/backends/emulation). Moving modules, the model's inputs,
// training (f32, bf16 masters, recompute, LoRA, resume), evaluation and checkpoints on "cuda:0"
// must reproduce the CPU bit for bit, and host code must not touch device memory directly.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "framework/autograd/node.h"
#include "framework/backends/emulation/host_emulation_backend.h"
#include "framework/backends/registry.h"
#include "framework/io/checkpoint.h"
#include "framework/nn/module.h"
#include "framework/ops/ops.h"
#include "framework/optim/adafactor.h"
#include "gtest/gtest.h"
#include "models/fam/model.h"
#include "nlohmann/json.hpp"
#include "tests/gradcheck.h"
#include "tests/test_util.h"
#include "tests/tiny_model_config.h"
#include "trainers/eval/evaluate.h"
#include "trainers/train/peak_flops.h"
#include "trainers/train/train_loop.h"
#include "trainers/train/run_config.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

// Before main (and so before the first backend lookup, which reads it once): every test here runs
// with the emulated devices, also the `fam` processes they start.
const bool kEmulationSet = [] { return ::setenv("FAM_CUDA_EMULATION", "host", 1) == 0; }();

const Device kDevice = Device::CUDA(0);

TEST(DeviceEmulationTest, EmulatedDevicesAreAvailable) {
  ASSERT_TRUE(kEmulationSet);
  EXPECT_TRUE(CudaEmulationEnabled());
  EXPECT_TRUE(DeviceAvailable(Device::CUDA(0)));
  EXPECT_TRUE(DeviceAvailable(Device::CUDA(kEmulatedCudaDevices - 1)));
  std::string why;
  EXPECT_FALSE(DeviceAvailable(Device::CUDA(kEmulatedCudaDevices), &why));
  EXPECT_NE(why.find("FAM_CUDA_EMULATION"), std::string::npos) << why;
  EXPECT_EQ(GetBackend(kDevice).type(), DeviceType::kCUDA);
}

TEST(DeviceEmulationTest, DeviceNamesParse) {
  EXPECT_EQ(Device::Parse("cpu"), Device::CPU());
  EXPECT_EQ(Device::Parse("cuda"), Device::CUDA(0));
  EXPECT_EQ(Device::Parse("cuda:3"), Device::CUDA(3));
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", "cuda:1234", ""})
    EXPECT_FALSE(Device::Parse(bad).has_value()) << bad;
}

TEST(DeviceEmulationTest, PeakFlopsOfKnownDevicesOnly) {
  EXPECT_DOUBLE_EQ(PeakFlopsForName("NVIDIA H100 80GB HBM3", DType::kBF16).value_or(0), 989.4e12);
  EXPECT_DOUBLE_EQ(PeakFlopsForName("NVIDIA H100 80GB HBM3", DType::kF32).value_or(0), 66.9e12);
  EXPECT_DOUBLE_EQ(PeakFlopsForName("NVIDIA H100 PCIe", DType::kBF16).value_or(0), 756e12);
  EXPECT_DOUBLE_EQ(PeakFlopsForName("NVIDIA H200", DType::kBF16).value_or(0), 989.4e12);
  EXPECT_FALSE(PeakFlopsForName("NVIDIA H100 80GB HBM3", DType::kF64).has_value());
  EXPECT_FALSE(PeakFlopsForName("Some Future GPU", DType::kBF16).has_value());
  // No MFU on the CPU or an emulated device.
  EXPECT_FALSE(PeakFlopsFor(Device::CPU(), DType::kBF16).has_value());
  EXPECT_FALSE(PeakFlopsFor(kDevice, DType::kBF16).has_value());
}

TEST(DeviceEmulationTest, HostAccessToDeviceMemoryFails) {
  Tensor host = Tensor::FromVector({1.5, -2.0, 3.25}, {3});
  Tensor dev = ops::To(host, kDevice);
  EXPECT_EQ(dev.device(), kDevice);
  try {
    dev.data<float>();
    FAIL() << "data<float>() on a device tensor must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("host access to f32[3] on cuda:0"), std::string::npos)
        << e.what();
  }
  // Explicit read-outs copy to the host.
  EXPECT_EQ(dev.ToDoubles(), (std::vector<double>{1.5, -2.0, 3.25}));
  EXPECT_EQ(ops::SumAll(dev).item(), 2.75);
  // Copies in place across devices.
  Tensor back = Tensor::Zeros({3});
  ops::CopyInPlace(back, ops::Scale(dev, 2.0));
  EXPECT_EQ(back.ToDoubles(), (std::vector<double>{3.0, -4.0, 6.5}));
  // Mixing devices in one op is an error naming both.
  try {
    ops::Add(host, dev);
    FAIL() << "an op over cpu and cuda:0 inputs must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("different devices"), std::string::npos) << e.what();
  }
}

TEST(DeviceEmulationTest, ModuleToMovesParametersInPlace) {
  nn::Linear linear(3, 2);
  Generator gen(1, 2);
  gen.FillNormal(linear.weight(), 0.0, 1.0);
  const Tensor handle = linear.weight();  // shares the parameter's tensor object
  const std::vector<double> values = handle.ToDoubles();
  ops::SumAll(linear.Forward(Tensor::Ones({1, 3}))).backward();
  ASSERT_TRUE(handle.grad().defined());

  linear.To(kDevice);
  EXPECT_EQ(handle.device(), kDevice);
  EXPECT_TRUE(handle.requires_grad());
  EXPECT_FALSE(handle.grad().defined());  // gradients are dropped
  EXPECT_EQ(handle.ToDoubles(), values);
  Tensor y = linear.Forward(ops::To(Tensor::Ones({1, 3}), kDevice));
  EXPECT_EQ(y.device(), kDevice);
  ops::SumAll(y).backward();
  EXPECT_EQ(handle.grad().device(), kDevice);

  linear.To(Device::CPU());
  EXPECT_TRUE(handle.device().is_cpu());
  EXPECT_EQ(handle.ToDoubles(), values);
}

// Adafactor's state lives on the parameters' device and the fused update reproduces the CPU's:
// factored (3-D batch and 2-D), unfactored (1-D), with and without momentum, f32 and a bf16
// parameter updated through its f32 master.
TEST(DeviceEmulationTest, AdafactorOnDeviceMatchesCpu) {
  for (double beta1 : {0.0, 0.9}) {
    SCOPED_TRACE(beta1);
    std::vector<NamedParameter> cpu_params, dev_params;
    const std::vector<std::pair<Shape, DType>> shapes = {{{2, 5, 7}, DType::kF32},
                                                         {{6, 4}, DType::kF32},
                                                         {{9}, DType::kF32},
                                                         {{3, 8}, DType::kBF16}};
    for (size_t i = 0; i < shapes.size(); ++i) {
      Tensor t = Tensor::Empty(shapes[i].first, DType::kF32);
      Generator gen(11, i);
      gen.FillNormal(t, 0.0, 1.0);
      if (shapes[i].second != DType::kF32) t = ops::Cast(t, shapes[i].second).detach();
      Tensor c = t.clone().detach().set_requires_grad(true);
      Tensor d = ops::To(t, kDevice).detach().set_requires_grad(true);
      const std::string name = "p" + std::to_string(i);
      cpu_params.push_back({name, c, i != 2});
      dev_params.push_back({name, d, i != 2});
    }
    AdafactorOptions o;
    o.beta1 = beta1;
    o.weight_decay = 0.1;
    Adafactor cpu(cpu_params, o), dev(dev_params, o);
    for (int step = 1; step <= 3; ++step) {
      for (size_t i = 0; i < shapes.size(); ++i) {
        Tensor g = Tensor::Empty(shapes[i].first, DType::kF32);
        Generator gen(12 + step, i);
        gen.FillNormal(g, 0.0, 0.5);
        g = ops::Cast(g, shapes[i].second).detach();
        cpu_params[i].param.set_grad(g);
        dev_params[i].param.set_grad(ops::To(g, kDevice).detach());
      }
      cpu.Step(0.05);
      dev.Step(0.05);
    }
    for (size_t i = 0; i < shapes.size(); ++i) {
      EXPECT_EQ(dev_params[i].param.device(), kDevice);
      EXPECT_TRUE(
          testing::SameBits(cpu_params[i].param, ops::To(dev_params[i].param, Device::CPU())))
          << cpu_params[i].name;
    }
    const auto a = cpu.StateTensors(), b = dev.StateTensors();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].first, b[i].first);
      if (a[i].first != kOptimizerStepName) EXPECT_EQ(b[i].second.device(), kDevice);
      EXPECT_TRUE(testing::SameBits(a[i].second, ops::To(b[i].second, Device::CPU())))
          << a[i].first;
    }
  }
}

// Loss, every gradient and streaming logits of a model moved to the device equal the CPU's.
void ExpectModelMatchesCpu(AttentionType type) {
  SCOPED_TRACE(static_cast<int>(type));
  const ModelConfig config = testing::TinyModelConfig(type);
  FamModel cpu(config), dev(config);
  cpu.InitializeWeights(5);
  dev.InitializeWeights(5);
  dev.To(kDevice);
  EXPECT_EQ(dev.device(), kDevice);

  std::vector<int64_t> ids, targets;
  for (int i = 0; i < 2 * 13; ++i) {
    ids.push_back((i * 7 + 3) % config.vocab_size);
    targets.push_back((i * 5 + 1) % config.vocab_size);
  }
  targets[4] = -100;
  const Tensor tokens = Tensor::FromInts(ids, {2, 13});
  const Tensor target_ids = Tensor::FromInts(targets, {2, 13});
  const Tensor weights = Tensor::Full({2, 13}, 0.5);
  ForwardOptions fo;
  fo.compute_logits = false;
  fo.position_offsets = {0, 9};
  Tensor loss_cpu = cpu.LossFromHidden(cpu.Forward(tokens, fo).hidden, target_ids, weights, 8);
  // The device model takes host inputs (it moves them) ...
  Tensor loss_dev = dev.LossFromHidden(dev.Forward(tokens, fo).hidden, target_ids, weights, 8);
  EXPECT_EQ(loss_dev.device(), kDevice);
  EXPECT_EQ(loss_cpu.item(), loss_dev.item());
  loss_cpu.backward();
  loss_dev.backward();
  const auto cpu_params = cpu.NamedParameters();
  const auto dev_params = dev.NamedParameters();
  ASSERT_EQ(cpu_params.size(), dev_params.size());
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    ASSERT_TRUE(dev_params[i].second.grad().defined()) << dev_params[i].first;
    EXPECT_EQ(dev_params[i].second.grad().device(), kDevice);
    EXPECT_TRUE(testing::SameBits(cpu_params[i].second.grad(),
                                  ops::To(dev_params[i].second.grad(), Device::CPU())))
        << cpu_params[i].first;
  }
  // ... and device inputs.
  Tensor logits_cpu = cpu.Forward(tokens).logits;
  Tensor logits_dev = dev.Forward(ops::To(tokens, kDevice)).logits;
  EXPECT_TRUE(testing::SameBits(logits_cpu, ops::To(logits_dev, Device::CPU())));

  StreamingState s_cpu = cpu.NewStreamingState(2), s_dev = dev.NewStreamingState(2);
  for (int64_t start : {0, 5}) {
    const int64_t len = start == 0 ? 5 : 8;
    Tensor piece = ops::Slice(tokens, 1, start, start + len);
    Tensor a = cpu.ForwardStreaming(piece, s_cpu);
    Tensor b = dev.ForwardStreaming(piece, s_dev);
    EXPECT_EQ(b.device(), kDevice);
    EXPECT_TRUE(testing::SameBits(a, ops::To(b, Device::CPU()))) << "piece at " << start;
  }
}

TEST(DeviceEmulationTest, ModelOnDeviceMatchesCpu) {
  ExpectModelMatchesCpu(AttentionType::kFam);
  ExpectModelMatchesCpu(AttentionType::kBswa);
  ExpectModelMatchesCpu(AttentionType::kFull);
}

class DeviceTrainingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::FreshTestDir("fam_device_emulation_test_");
    testing::WriteSentenceShards(dir_, 600);
  }
  void TearDown() override { fs::remove_all(dir_); }

  RunConfig Config(const std::string& name, std::vector<std::string> overrides) {
    // 6 steps, validation and a checkpoint every 3.
    overrides.insert(overrides.begin(), {"trainer.steps=6", "schedule.decay_steps=6",
                                         "trainer.eval_interval=3", "checkpoint.interval=3"});
    const std::string yaml = testing::LearningRunYaml(name, dir_);
    absl::StatusOr<RunConfig> c = ParseRunConfig(yaml, (dir_ / "test.yaml").string(), overrides);
    EXPECT_TRUE(c.ok()) << c.status();
    return *c;
  }

  absl::StatusOr<TrainResult> Train(const std::string& name, std::vector<std::string> overrides) {
    return RunTraining(Config(name, std::move(overrides)));
  }

  fs::path Checkpoint(const std::string& name, int step) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "step-%08d", step);
    return dir_ / "runs" / name / "checkpoints" / buf;
  }

  // The checkpoints of two runs hold the same tensors, bit for bit.
  void ExpectSameCheckpoint(const std::string& a, const std::string& b, int step) {
    absl::StatusOr<io::LoadedCheckpoint> ca = io::LoadCheckpoint(Checkpoint(a, step).string());
    absl::StatusOr<io::LoadedCheckpoint> cb = io::LoadCheckpoint(Checkpoint(b, step).string());
    ASSERT_TRUE(ca.ok()) << ca.status();
    ASSERT_TRUE(cb.ok()) << cb.status();
    using Tensors = std::map<std::string, Tensor>;
    for (Tensors io::LoadedCheckpoint::*part :
         {&io::LoadedCheckpoint::model, &io::LoadedCheckpoint::optimizer,
          &io::LoadedCheckpoint::extra}) {
      const Tensors& ma = (*ca).*part;
      const Tensors& mb = (*cb).*part;
      ASSERT_EQ(ma.size(), mb.size());
      for (const auto& [name, t] : ma) {
        ASSERT_TRUE(mb.count(name)) << name;
        EXPECT_TRUE(testing::SameBits(t, mb.at(name))) << a << " vs " << b << ": " << name;
      }
    }
  }

  fs::path dir_;
};

TEST_F(DeviceTrainingTest, TrainingOnDeviceMatchesCpu) {
  // f32 with both training tricks; bf16 parameters with f32 masters and recomputation.
  const std::vector<std::vector<std::string>> variants = {
      {}, {"trainer.precision=bf16", "trainer.recompute=true"}};
  for (size_t v = 0; v < variants.size(); ++v) {
    const std::string cpu = "cpu" + std::to_string(v), dev = "dev" + std::to_string(v);
    std::vector<std::string> on_device = variants[v];
    on_device.push_back("trainer.device=cuda");
    absl::StatusOr<TrainResult> a = Train(cpu, variants[v]);
    absl::StatusOr<TrainResult> b = Train(dev, on_device);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(a->device, Device::CPU());
    EXPECT_EQ(b->device, kDevice);
    EXPECT_EQ(a->last_train_loss, b->last_train_loss);
    EXPECT_EQ(a->last_val_loss, b->last_val_loss);
    EXPECT_LT(b->last_val_loss, b->first_val_loss);
    ExpectSameCheckpoint(cpu, dev, 6);
  }
  // Resumed on the device from the CPU run's step-3 checkpoint: the same step 6.
  fs::create_directories(dir_ / "runs" / "resumed" / "checkpoints");
  fs::copy(Checkpoint("cpu0", 3), Checkpoint("resumed", 3), fs::copy_options::recursive);
  absl::StatusOr<TrainResult> r = Train("resumed", {"trainer.device=cuda"});
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectSameCheckpoint("cpu0", "resumed", 6);
}

TEST_F(DeviceTrainingTest, LoraFinetuneOnDeviceMatchesCpu) {
  ASSERT_TRUE(Train("base", {}).ok());
  const std::vector<std::string> lora = {
      "trainer.type=finetune", "finetune.base_weights=" + (dir_ / "runs" / "base").string(),
      "lora.rank=4",           "lora.dropout=0.1",
      "lora.train_fam=true",   "trainer.precision=bf16",
      "trainer.steps=4",       "schedule.decay_steps=4"};
  std::vector<std::string> on_device = lora;
  on_device.push_back("trainer.device=cuda");
  absl::StatusOr<TrainResult> a = Train("lora_cpu", lora);
  absl::StatusOr<TrainResult> b = Train("lora_dev", on_device);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->device, kDevice);
  EXPECT_EQ(a->last_train_loss, b->last_train_loss);
  ExpectSameCheckpoint("lora_cpu", "lora_dev", 3);
  EXPECT_EQ(testing::Slurp(dir_ / "runs" / "lora_cpu" / "adapters.safetensors"),
            testing::Slurp(dir_ / "runs" / "lora_dev" / "adapters.safetensors"));
}

TEST_F(DeviceTrainingTest, EvaluationOnDeviceMatchesCpu) {
  ASSERT_TRUE(Train("run", {}).ok());
  eval::ModelSource source;
  source.checkpoint = (dir_ / "runs" / "run").string();
  absl::StatusOr<eval::LoadedModel> cpu = eval::LoadModelForEval(source);
  source.device = kDevice;
  absl::StatusOr<eval::LoadedModel> dev = eval::LoadModelForEval(source);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_EQ(dev->model->device(), kDevice);
  absl::StatusOr<eval::PerplexityResult> wa =
      eval::WindowPerplexity(*cpu->model, (dir_ / "val-*.bin").string(), 32, 4);
  absl::StatusOr<eval::PerplexityResult> wb =
      eval::WindowPerplexity(*dev->model, (dir_ / "val-*.bin").string(), 32, 4);
  ASSERT_TRUE(wa.ok()) << wa.status();
  ASSERT_TRUE(wb.ok()) << wb.status();
  EXPECT_EQ(wa->loss, wb->loss);
  std::vector<int64_t> tokens;
  for (int i = 0; i < 70; ++i) tokens.push_back(4 + (i * 3) % 30);
  eval::PerplexityResult sa = eval::StreamingPerplexity(*cpu->model, tokens, 16);
  eval::PerplexityResult sb = eval::StreamingPerplexity(*dev->model, tokens, 16);
  EXPECT_EQ(sa.loss, sb.loss);

  source.device = Device::CUDA(kEmulatedCudaDevices);
  absl::StatusOr<eval::LoadedModel> missing = eval::LoadModelForEval(source);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("--device cuda:8: unavailable"), std::string::npos)
      << missing.status();
}

TEST_F(DeviceTrainingTest, FamCommandsTakeADevice) {
  ASSERT_TRUE(Train("run", {}).ok());
  const std::string ckpt = (dir_ / "runs" / "run").string();
  testing::CommandResult cpu = testing::RunFam("eval --checkpoint " + ckpt + " --no-plots --out " +
                                               (dir_ / "cpu.json").string());
  testing::CommandResult dev =
      testing::RunFam("eval --checkpoint " + ckpt + " --no-plots --device cuda --out " +
                      (dir_ / "dev.json").string());
  ASSERT_EQ(cpu.exit_code, 0) << cpu.output;
  ASSERT_EQ(dev.exit_code, 0) << dev.output;
  const nlohmann::json a = nlohmann::json::parse(testing::Slurp(dir_ / "cpu.json"));
  const nlohmann::json b = nlohmann::json::parse(testing::Slurp(dir_ / "dev.json"));
  EXPECT_EQ(a["val"], b["val"]);
  testing::CommandResult bad = testing::RunFam("eval --checkpoint " + ckpt + " --device gpu");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("--device expects cpu, cuda or cuda:N, got \"gpu\""), std::string::npos)
      << bad.output;
}

}  // namespace
}  // namespace fam
