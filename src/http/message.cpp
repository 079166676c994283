#include "http/message.hpp"

#include <algorithm>
#include <cstdint>

#include "http/errors.hpp"

namespace sluice::http {

namespace {

char lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Text from the client quoted in an error message: short, and with bytes that are not printable
// ASCII shown as %XX, so the message itself is valid UTF-8 and one line.
std::string shown(std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  constexpr std::size_t limit = 64;
  std::string out;
  for (const char ch : text.substr(0, limit)) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7F) {
      out += ch;
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (text.size() > limit) out += "...";
  return out;
}

// Percent-decodes `text`; '+' becomes a space when `plus_is_space`. False on a '%' not followed
// by two hex digits.
bool percent_decode(std::string_view text, bool plus_is_space, std::string& out) {
  out.clear();
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) return false;
      const int hi = hex_value(text[i + 1]);
      const int lo = hex_value(text[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return true;
}

[[noreturn]] void bad(const std::string& message) {
  throw api_error(error_code::bad_request, message);
}

void check_text(const std::string& decoded, std::string_view raw, const std::string& what) {
  if (decoded.find('\0') != std::string::npos) {
    bad(what + " '" + shown(raw) + "' holds a NUL byte (%00)");
  }
  if (!valid_utf8(decoded)) bad(what + " '" + shown(raw) + "' is not valid UTF-8");
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string_view request::header(std::string_view lower_case_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lower_case_name) return value;
  }
  return {};
}

bool request::has_header(std::string_view lower_case_name) const {
  return header_count(lower_case_name) > 0;
}

std::size_t request::header_count(std::string_view lower_case_name) const {
  return static_cast<std::size_t>(
      std::count_if(headers.begin(), headers.end(),
                    [&](const auto& field) { return field.first == lower_case_name; }));
}

std::optional<std::string_view> request::param(std::string_view name) const {
  for (const auto& [key, value] : query) {
    if (key == name) return std::string_view(value);
  }
  return std::nullopt;
}

void response::set_header(std::string name, std::string value) {
  for (auto& field : headers) {
    if (iequals(field.first, name)) {
      field.second = std::move(value);
      return;
    }
  }
  headers.emplace_back(std::move(name), std::move(value));
}

std::string_view response::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return value;
  }
  return {};
}

void response::set_content(std::string content, std::string type) {
  body = std::move(content);
  content_type = std::move(type);
}

void parse_target(std::string_view target, request& into) {
  if (target.empty() || target.front() != '/') {
    bad("request target '" + shown(target) + "' is not a path such as /api/v1/tasks");
  }
  const auto question = target.find('?');
  const std::string_view raw_path = target.substr(0, question);
  if (!percent_decode(raw_path, false, into.path)) {
    bad("path '" + shown(raw_path) + "' has a malformed percent-encoding (% and two hex digits)");
  }
  check_text(into.path, raw_path, "path");
  into.query.clear();
  if (question == std::string_view::npos) return;
  std::string_view rest = target.substr(question + 1);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const std::string_view piece = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    if (piece.empty()) continue;
    const auto eq = piece.find('=');
    const std::string_view raw_name = piece.substr(0, eq);
    const std::string_view raw_value =
        eq == std::string_view::npos ? std::string_view() : piece.substr(eq + 1);
    std::string name;
    std::string value;
    if (!percent_decode(raw_name, true, name) || !percent_decode(raw_value, true, value)) {
      bad("query parameter '" + shown(piece) +
          "' has a malformed percent-encoding (% and two hex digits)");
    }
    check_text(name, raw_name, "query parameter name");
    check_text(value, raw_value, "query parameter '" + shown(name) + "': value");
    into.query.emplace_back(std::move(name), std::move(value));
  }
}

bool valid_utf8(std::string_view text) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* const end = p + text.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    std::size_t n = 0;
    std::uint32_t cp = 0;
    std::uint32_t min = 0;
    if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1Fu;
      min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0Fu;
      min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07u;
      min = 0x10000;
    } else {
      return false;
    }
    if (static_cast<std::size_t>(end - p) <= n) return false;
    for (std::size_t i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    p += n + 1;
  }
  return true;
}

bool is_json_media_type(std::string_view content_type) noexcept {
  const auto semicolon = content_type.find(';');
  std::string_view type = content_type.substr(0, semicolon);
  while (!type.empty() && (type.front() == ' ' || type.front() == '\t'))
    type.remove_prefix(1);
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t'))
    type.remove_suffix(1);
  return iequals(type, "application/json");
}

}  // namespace sluice::http
