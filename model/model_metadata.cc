#include "model/model_metadata.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace fsrst {
namespace {

absl::Status Bad(absl::string_view key, absl::string_view expected) {
  return absl::InvalidArgumentError(
      absl::StrCat("model metadata: \"", key, "\" must be ", expected));
}

absl::StatusOr<int> PositiveInt(const nlohmann::json& doc, const char* key) {
  auto it = doc.find(key);
  if (it == doc.end() || !it->is_number_integer() || it->get<int64_t>() <= 0 ||
      it->get<int64_t>() > 1 << 20) {
    return Bad(key, "a positive integer");
  }
  return it->get<int>();
}

}  // namespace

absl::StatusOr<ModelMetadata> ParseModelMetadata(absl::string_view json) {
  nlohmann::json doc = nlohmann::json::parse(json.begin(), json.end(), nullptr,
                                             /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError("model metadata: not a JSON object");
  }
  ModelMetadata m;
  m.json = std::string(json);
  auto name = doc.find("name");
  if (name == doc.end() || !name->is_string() || name->get<std::string>().empty()) {
    return Bad("name", "a non-empty string");
  }
  m.name = name->get<std::string>();
  auto version = doc.find("version");
  if (version != doc.end() && version->is_string()) m.version = version->get<std::string>();
  auto trained = doc.find("trained");
  m.trained = trained != doc.end() && trained->is_boolean() && trained->get<bool>();
  struct IntField {
    const char* key;
    int* out;
  };
  for (const IntField& f : {IntField{"lr_size", &m.lr_size}, IntField{"scale", &m.scale},
                            IntField{"reference_size", &m.reference_size},
                            IntField{"max_references", &m.max_references}}) {
    absl::StatusOr<int> value = PositiveInt(doc, f.key);
    if (!value.ok()) return value.status();
    *f.out = *value;
  }
  auto shape = doc.find("feature_shape");
  if (shape == doc.end() || !shape->is_array() || shape->empty()) {
    return Bad("feature_shape", "a non-empty array of positive integers");
  }
  for (const auto& dim : *shape) {
    if (!dim.is_number_integer() || dim.get<int64_t>() <= 0) {
      return Bad("feature_shape", "a non-empty array of positive integers");
    }
    m.feature_shape.push_back(dim.get<int64_t>());
  }
  auto parameters = doc.find("parameters");
  if (parameters != doc.end() && parameters->is_number_integer()) {
    m.parameters = parameters->get<int64_t>();
  }
  return m;
}

}  // namespace fsrst
