#include "posix/mountinfo.h"

#include <sstream>

#include "posix/read_file.h"

namespace ferry::posix {
namespace {

std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() &&
        s.substr(i + 1, 3).find_first_not_of("01234567") == std::string::npos) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

std::vector<MountEntry> parse_mountinfo(const std::string& text) {
  std::vector<MountEntry> out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::vector<std::string> f;
    for (std::string w; words >> w;) f.push_back(w);
    size_t dash = 6;  // the optional fields end at "-"
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (dash + 2 >= f.size()) continue;  // no FSTYPE and SOURCE after "-"
    out.push_back({.root = unescape(f[3]),
                   .mount_point = unescape(f[4]),
                   .fstype = f[dash + 1],
                   .source = unescape(f[dash + 2]),
                   .super_options = dash + 3 < f.size() ? f[dash + 3] : ""});
  }
  return out;
}

std::vector<MountEntry> read_mountinfo(const std::string& path) {
  return parse_mountinfo(read_file(path).value_or(""));
}

}  // namespace ferry::posix
