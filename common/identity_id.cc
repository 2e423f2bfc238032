#include "common/identity_id.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fsrst {
namespace {

// The character that starts `text`, for an error message: 'x' when printable
// ASCII, 'é' (U+00E9) for a well-formed UTF-8 sequence, U+0009 for a control
// character, byte 0xFF for a byte that starts no UTF-8 character.
std::string DescribeCharacter(absl::string_view text) {
  const auto lead = static_cast<unsigned char>(text[0]);
  if (lead >= 0x20 && lead < 0x7f) return absl::StrCat("'", text.substr(0, 1), "'");
  if (lead < 0x80) return absl::StrFormat("U+%04X", lead);
  const size_t length = lead >= 0xc2 && lead <= 0xdf   ? 2
                        : lead >= 0xe0 && lead <= 0xef ? 3
                        : lead >= 0xf0 && lead <= 0xf4 ? 4
                                                       : 0;
  uint32_t code_point = length == 2 ? lead & 0x1f : length == 3 ? lead & 0x0f : lead & 0x07;
  bool well_formed = length > 0 && text.size() >= length;
  for (size_t k = 1; well_formed && k < length; ++k) {
    const auto next = static_cast<unsigned char>(text[k]);
    well_formed = (next & 0xc0) == 0x80;
    code_point = (code_point << 6) | (next & 0x3f);
  }
  // Overlong forms, surrogates and values past U+10FFFF are not characters.
  const uint32_t smallest = length == 3 ? 0x800 : length == 4 ? 0x10000 : 0x80;
  if (!well_formed || code_point < smallest || code_point > 0x10ffff ||
      (code_point >= 0xd800 && code_point <= 0xdfff)) {
    return absl::StrFormat("byte 0x%02X", lead);
  }
  return absl::StrFormat("'%s', U+%04X", text.substr(0, length), code_point);
}

}  // namespace

absl::Status ValidateIdentityId(absl::string_view id, absl::string_view field) {
  if (id.empty() || id.size() > kMaxIdentityIdLength) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": expected 1 to ", kMaxIdentityIdLength,
                                                   " characters, got ", id.size()));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '@' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": character ", i + 1, " (", DescribeCharacter(id.substr(i)),
                       ") is not allowed; expected only [A-Za-z0-9._:@-]"));
    }
  }
  return absl::OkStatus();
}

}  // namespace fsrst
