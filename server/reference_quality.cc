#include "server/reference_quality.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace fsrst {

ReferenceQuality MeasureReference(absl::Span<const float> luma, int size) {
  ReferenceQuality q;
  const int64_t n = static_cast<int64_t>(size) * size;
  double sum = 0, sum_sq = 0;
  for (float v : luma) {
    sum += v;
    sum_sq += static_cast<double>(v) * v;
  }
  const double mean = sum / n;
  q.luma_std = std::sqrt(std::max(0.0, sum_sq / n - mean * mean));

  double lap_sum = 0, lap_sq = 0;
  int64_t lap_n = 0;
  for (int y = 1; y + 1 < size; ++y) {
    for (int x = 1; x + 1 < size; ++x) {
      const float* p = luma.data() + static_cast<int64_t>(y) * size + x;
      const double lap =
          255.0 * (static_cast<double>(p[-1]) + p[1] + p[-size] + p[size] - 4.0 * p[0]);
      lap_sum += lap;
      lap_sq += lap * lap;
      ++lap_n;
    }
  }
  if (lap_n > 0) {
    const double lap_mean = lap_sum / lap_n;
    q.sharpness = std::max(0.0, lap_sq / lap_n - lap_mean * lap_mean);
  }
  return q;
}

absl::StatusOr<std::vector<double>> CheckReferences(absl::Span<const float> luma, int count,
                                                    int size) {
  const int64_t pixels = static_cast<int64_t>(size) * size;
  std::vector<double> sharpness;
  sharpness.reserve(count);
  for (int i = 0; i < count; ++i) {
    const ReferenceQuality q = MeasureReference(luma.subspan(i * pixels, pixels), size);
    if (q.luma_std < kMinReferenceLumaStd) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "references[%d]: nearly uniform (luma standard deviation %.4f of 1 on the %dx%d "
          "reference, expected at least %.2f): a blank or solid-colour image carries no face; "
          "send a photo of the person",
          i, q.luma_std, size, size, kMinReferenceLumaStd));
    }
    sharpness.push_back(q.sharpness);
  }
  return sharpness;
}

}  // namespace fsrst
