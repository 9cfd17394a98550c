#include "runtime/runc_args.h"

#include <set>

namespace ferry::runtime {
namespace {

// runc's global flags that take a value (urfave/cli: "--flag value" or "--flag=value").
const std::set<std::string> kGlobalWithValue = {"--root", "--log", "--log-format", "--criu",
                                                "--rootless"};
// Command flags that take a value, for the commands whose id we must find.
const std::set<std::string> kCommandWithValue = {"--bundle",
                                                 "-b",
                                                 "--console-socket",
                                                 "--pid-file",
                                                 "--preserve-fds",
                                                 "--image-path",
                                                 "--work-path",
                                                 "--parent-path",
                                                 "--page-server",
                                                 "--status-fd",
                                                 "--manage-cgroups-mode",
                                                 "--empty-ns",
                                                 "--format",
                                                 "-f",
                                                 "--process",
                                                 "-p",
                                                 "--cwd",
                                                 "--env",
                                                 "-e",
                                                 "--user",
                                                 "-u",
                                                 "--additional-gids",
                                                 "-g",
                                                 "--apparmor",
                                                 "--process-label",
                                                 "--cap",
                                                 "-c",
                                                 "--lsm-profile",
                                                 "--lsm-mount-context",
                                                 "--signal",
                                                 "-s"};

// Splits "--flag=value" into name and value.
std::pair<std::string, std::optional<std::string>> split(const std::string& arg) {
  auto eq = arg.find('=');
  if (arg.starts_with("-") && eq != std::string::npos) {
    return {arg.substr(0, eq), arg.substr(eq + 1)};
  }
  return {arg, std::nullopt};
}

}  // namespace

Result<RuncArgs> parse_runc_args(const std::vector<std::string>& args) {
  RuncArgs out;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!a.starts_with("-")) break;
    out.global_flags.push_back(a);
    auto [name, inline_value] = split(a);
    std::string value;
    if (kGlobalWithValue.contains(name)) {
      if (inline_value) {
        value = *inline_value;
      } else {
        if (i + 1 >= args.size()) return invalid_argument("flag " + name + " needs a value");
        value = args[++i];
        out.global_flags.push_back(value);
      }
    }
    if (name == "--root") out.root = value;
    if (name == "--log") out.log = value;
    if (name == "--log-format") out.log_format = value;
  }
  if (i >= args.size()) return out;  // e.g. `runc --version`
  out.command = args[i++];
  std::vector<std::string> positionals;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    out.command_args.push_back(a);
    if (!a.starts_with("-") || a == "-") {
      positionals.push_back(a);
      continue;
    }
    auto [name, inline_value] = split(a);
    std::string value;
    if (kCommandWithValue.contains(name)) {
      if (inline_value) {
        value = *inline_value;
      } else {
        if (i + 1 >= args.size()) return invalid_argument("flag " + name + " needs a value");
        value = args[++i];
        out.command_args.push_back(value);
      }
    }
    if (name == "--bundle" || name == "-b") out.bundle = value;
    if (name == "--pid-file") out.pid_file = value;
    if (name == "--console-socket") out.console_socket = value;
  }
  // The container id is the first positional (kill/exec take more after it).
  if (!positionals.empty()) out.container_id = positionals.front();
  return out;
}

}  // namespace ferry::runtime
