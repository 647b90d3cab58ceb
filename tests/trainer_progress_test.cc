// ParseTrainerProgress: trainer_state.json as a checkpoint records it, and the damaged or
// hand-edited files a resume must refuse with an error naming the file and the key.
#include "trainers/train/trainer_progress.h"

#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fam {
namespace {

using Json = nlohmann::json;

Json GoodState() {
  return Json::parse(R"({"step": 12, "tokens_seen": 49152, "consecutive_skips": 1,
    "elapsed_s": 3.5, "loader": {"epoch": 2, "samples_consumed": 40},
    "first_val_loss": 5.25, "last_train_loss": 4.5})");
}

TEST(TrainerProgress, ReadsEveryField) {
  absl::StatusOr<TrainerProgress> p = ParseTrainerProgress(GoodState(), "/ck/step-00000012");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->step, 12);
  EXPECT_EQ(p->tokens_seen, 49152);
  EXPECT_EQ(p->consecutive_skips, 1);
  EXPECT_DOUBLE_EQ(p->elapsed_s, 3.5);
  EXPECT_EQ(p->loader.epoch, 2);
  EXPECT_EQ(p->loader.samples_consumed, 40);
  EXPECT_DOUBLE_EQ(p->first_val_loss, 5.25);
  EXPECT_DOUBLE_EQ(p->last_val_loss, -1);  // absent: not recorded
  EXPECT_DOUBLE_EQ(p->last_train_loss, 4.5);
}

// Each edit of a good state, and the key its error must name.
struct BadCase {
  const char* edit;  // a JSON merge patch applied to GoodState()
  const char* key;
};

TEST(TrainerProgress, RefusesWrongTypesAndRangesNamingFileAndKey) {
  const BadCase cases[] = {
      {R"({"step": null})", "step"},
      {R"({"step": -1})", "step"},
      {R"({"step": 1.5})", "step"},
      {R"({"step": 1e300})", "step"},
      {R"({"step": 18446744073709551615})", "step"},
      {R"({"tokens_seen": "many"})", "tokens_seen"},
      {R"({"consecutive_skips": 4294967296})", "consecutive_skips"},
      {R"({"elapsed_s": -2})", "elapsed_s"},
      {R"({"elapsed_s": "soon"})", "elapsed_s"},
      {R"({"loader": 3})", "loader"},
      {R"({"loader": {"epoch": -4}})", "loader.epoch"},
      {R"({"loader": {"samples_consumed": null}})", "loader.samples_consumed"},
      {R"({"last_val_loss": true})", "last_val_loss"},
  };
  for (const BadCase& c : cases) {
    Json state = GoodState();
    state.merge_patch(Json::parse(c.edit));
    absl::StatusOr<TrainerProgress> p = ParseTrainerProgress(state, "/ck/step-00000012");
    ASSERT_FALSE(p.ok()) << c.edit;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kDataLoss) << c.edit;
    const std::string message(p.status().message());
    EXPECT_NE(message.find("/ck/step-00000012/trainer_state.json"), std::string::npos) << message;
    EXPECT_NE(message.find(c.key), std::string::npos) << c.edit << ": " << message;
  }
  absl::StatusOr<TrainerProgress> array = ParseTrainerProgress(Json::array(), "/ck/s");
  EXPECT_FALSE(array.ok());
}

}  // namespace
}  // namespace fam
