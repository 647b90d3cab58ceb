// The fuzz target functions (see fuzz_target.h for their contract), grouped by the files that
// hold them.
#pragma once

#include <string_view>

namespace fam::fuzz {

// targets_tensor_files.cc
void FuzzSafetensors(std::string_view input);
void FuzzNpy(std::string_view input);
void FuzzGguf(std::string_view input);
// targets_data_files.cc
void FuzzTokenShard(std::string_view input);
void FuzzWeightShard(std::string_view input);
void FuzzInstructions(std::string_view input);
void FuzzTokenizerJson(std::string_view input);
void FuzzSentencePiece(std::string_view input);
// targets_config_files.cc
void FuzzRunConfig(std::string_view input);
void FuzzHfConfig(std::string_view input);
void FuzzCheckpoint(std::string_view input);

}  // namespace fam::fuzz
