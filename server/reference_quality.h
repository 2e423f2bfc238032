#ifndef FSRST_SERVER_REFERENCE_QUALITY_H_
#define FSRST_SERVER_REFERENCE_QUALITY_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace fsrst {

// Checks of a registration's normalised references (R x R luma in [0,1], as
// DecodeReferences gives them) before they are encoded.
//
// Pure functions: thread-safe.

// A reference whose luma standard deviation is below this (in [0,1] luma,
// about 5 of 255 grey levels) is nearly uniform: a blank or solid-colour
// image, which carries no facial detail.
inline constexpr double kMinReferenceLumaStd = 0.02;

// How one reference measures.
struct ReferenceQuality {
  double luma_std = 0;  // standard deviation of the luma, in [0,1] units
  // Variance of the 4-neighbour Laplacian of the luma on the 0..255 scale
  // (interior pixels), the usual blur figure: higher is sharper, below ~100
  // is commonly blurry for 128x128 faces.
  double sharpness = 0;
};

// Measures one R x R reference. REQUIRES: luma.size() == size * size, size >= 3.
ReferenceQuality MeasureReference(absl::Span<const float> luma, int size);

// Measures `count` consecutive R x R references and returns each one's
// sharpness, or INVALID_ARGUMENT naming references[i] (the first nearly
// uniform one), its figure and the threshold.
// REQUIRES: luma.size() == count * size * size.
absl::StatusOr<std::vector<double>> CheckReferences(absl::Span<const float> luma, int count,
                                                    int size);

}  // namespace fsrst

#endif  // FSRST_SERVER_REFERENCE_QUALITY_H_
