#include "model/feature_serialization.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fsrst {
namespace {

// Little-endian hosts only (x86-64, arm64), like the model files: the
// integers and floats are written as they lie in memory.
template <typename T>
void Append(std::string* out, T value) {
  out->append(reinterpret_cast<const char*>(&value), sizeof(value));
}

void AppendString(std::string* out, absl::string_view s) {
  Append<uint32_t>(out, static_cast<uint32_t>(s.size()));
  out->append(s.data(), s.size());
}

// Reads fixed-size fields off the front of the bytes; every read is checked.
class Reader {
 public:
  explicit Reader(absl::string_view bytes) : rest_(bytes) {}

  template <typename T>
  absl::Status Read(absl::string_view field, T* value) {
    if (rest_.size() < sizeof(T)) return Truncated(field, sizeof(T));
    std::memcpy(value, rest_.data(), sizeof(T));
    rest_.remove_prefix(sizeof(T));
    return absl::OkStatus();
  }

  absl::Status ReadString(absl::string_view field, std::string* value) {
    uint32_t length = 0;
    absl::Status status = Read(field, &length);
    if (!status.ok()) return status;
    if (length > kMaxFeatureNameBytes) {
      return absl::DataLossError(absl::StrCat("stored features: ", field, " length ", length,
                                              " exceeds ", kMaxFeatureNameBytes, " bytes"));
    }
    if (rest_.size() < length) return Truncated(field, length);
    value->assign(rest_.data(), length);
    rest_.remove_prefix(length);
    return absl::OkStatus();
  }

  absl::string_view rest() const { return rest_; }

 private:
  absl::Status Truncated(absl::string_view field, size_t wanted) const {
    return absl::DataLossError(absl::StrCat("stored features: truncated at ", field, " (expected ",
                                            wanted, " more bytes, ", rest_.size(), " left)"));
  }

  absl::string_view rest_;
};

}  // namespace

std::string SerializeFeatureBytes(const ModelMetadata& model, absl::Span<const int64_t> shape,
                                  absl::Span<const float> values) {
  std::string out;
  out.reserve(64 + model.name.size() + model.version.size() + values.size() * sizeof(float));
  out.append(kFeatureMagic, sizeof(kFeatureMagic));
  Append<uint32_t>(&out, kFeatureFormatVersion);
  Append<uint32_t>(&out, kFeatureDtypeFloat32);
  AppendString(&out, model.name);
  AppendString(&out, model.version);
  Append<uint32_t>(&out, static_cast<uint32_t>(shape.size()));
  for (int64_t dim : shape) Append<int64_t>(&out, dim);
  out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return out;
}

absl::StatusOr<FeatureBytesView> ParseFeatureBytes(absl::string_view bytes,
                                                   const ModelMetadata& model) {
  Reader reader(bytes);
  char magic[sizeof(kFeatureMagic)];
  absl::Status status = reader.Read("magic", &magic);
  if (!status.ok()) return status;
  if (std::memcmp(magic, kFeatureMagic, sizeof(magic)) != 0) {
    return absl::DataLossError("stored features: magic is not \"FSRF\": not serialised features");
  }
  uint32_t format_version = 0;
  uint32_t dtype = 0;
  if (!(status = reader.Read("format version", &format_version)).ok()) return status;
  if (format_version != kFeatureFormatVersion) {
    return absl::DataLossError(absl::StrCat("stored features: format version ", format_version,
                                            ", expected ", kFeatureFormatVersion));
  }
  if (!(status = reader.Read("dtype", &dtype)).ok()) return status;
  if (dtype != kFeatureDtypeFloat32) {
    return absl::DataLossError(absl::StrCat("stored features: dtype ", dtype, ", expected ",
                                            kFeatureDtypeFloat32, " (float32)"));
  }
  std::string name;
  std::string version;
  if (!(status = reader.ReadString("model name", &name)).ok()) return status;
  if (!(status = reader.ReadString("model version", &version)).ok()) return status;
  if (name != model.name || version != model.version) {
    return absl::FailedPreconditionError(absl::StrCat("stored features: model ", name, " version ",
                                                      version, ", expected ", model.name,
                                                      " version ", model.version));
  }
  uint32_t rank = 0;
  if (!(status = reader.Read("rank", &rank)).ok()) return status;
  const size_t expected_rank = 1 + model.feature_shape.size();
  if (rank != expected_rank) {
    return absl::FailedPreconditionError(
        absl::StrCat("stored features: rank ", rank, ", expected ", expected_rank));
  }
  FeatureBytesView view;
  view.shape.resize(rank);
  for (uint32_t i = 0; i < rank; ++i) {
    if (!(status = reader.Read("shape", &view.shape[i])).ok()) return status;
  }
  std::vector<int64_t> expected_shape = {view.shape[0]};
  expected_shape.insert(expected_shape.end(), model.feature_shape.begin(),
                        model.feature_shape.end());
  if (view.shape[0] < 1 || view.shape[0] > model.max_references || view.shape != expected_shape) {
    return absl::FailedPreconditionError(
        absl::StrCat("stored features: shape [", absl::StrJoin(view.shape, ","), "], expected [1..",
                     model.max_references, ",", absl::StrJoin(model.feature_shape, ","), "]"));
  }
  int64_t count = 1;
  for (int64_t dim : view.shape) count *= dim;  // bounded: every dim was checked above
  const size_t value_bytes = static_cast<size_t>(count) * sizeof(float);
  if (reader.rest().size() != value_bytes) {
    return absl::DataLossError(absl::StrCat("stored features: ", reader.rest().size(),
                                            " bytes of values, expected ", value_bytes));
  }
  view.values = reader.rest();
  for (int64_t i = 0; i < count; ++i) {
    float value;
    std::memcpy(&value, view.values.data() + i * sizeof(float), sizeof(float));
    if (!std::isfinite(value)) {
      return absl::DataLossError(
          absl::StrCat("stored features: value ", i, " is not finite (", value, ")"));
    }
  }
  return view;
}

}  // namespace fsrst
