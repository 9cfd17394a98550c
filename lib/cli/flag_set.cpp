#include "cli/flag_set.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "cli/build_info.h"

namespace ferry::cli {

FlagSet::FlagSet(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

void FlagSet::add_string(std::string name, std::string default_value, std::string help) {
  std::string value = default_value;
  flags_.emplace(std::move(name),
                 Flag{std::move(help), std::move(default_value), std::move(value), false});
}

void FlagSet::add_bool(std::string name, std::string help) {
  flags_.emplace(std::move(name), Flag{std::move(help), "false", "false", true});
}

ParseOutcome FlagSet::parse(std::span<const char* const> args) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg == "--") {
      for (++i; i < args.size(); ++i) positional_.emplace_back(args[i]);
      break;
    }
    if (arg == "-h" || arg == "--help") return ParseOutcome::kHelp;
    if (arg == "--version") return ParseOutcome::kVersion;
    if (!arg.starts_with("--") || arg.size() == 2) {
      positional_.emplace_back(arg);
      continue;
    }
    arg.remove_prefix(2);
    std::string_view name = arg;
    std::string_view value;
    bool has_value = false;
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    auto it = flags_.find(name);
    if (it == flags_.end()) {
      error_ = "unknown flag: --" + std::string(name);
      return ParseOutcome::kError;
    }
    Flag& flag = it->second;
    if (flag.is_bool) {
      if (!has_value) value = "true";
      if (value != "true" && value != "false") {
        error_ = "flag --" + std::string(name) + " takes true or false, got \"" +
                 std::string(value) + "\"";
        return ParseOutcome::kError;
      }
    } else if (!has_value) {
      if (i + 1 >= args.size()) {
        error_ = "flag --" + std::string(name) + " needs a value";
        return ParseOutcome::kError;
      }
      value = args[++i];
    }
    flag.value = std::string(value);
  }
  return ParseOutcome::kRun;
}

const FlagSet::Flag& FlagSet::find(std::string_view name) const {
  auto it = flags_.find(name);
  if (it == flags_.end()) {
    std::fprintf(stderr, "BUG: flag --%.*s was never declared\n", static_cast<int>(name.size()),
                 name.data());
    std::abort();
  }
  return it->second;
}

const std::string& FlagSet::get(std::string_view name) const {
  return find(name).value;
}

bool FlagSet::get_bool(std::string_view name) const {
  return find(name).value == "true";
}

std::string FlagSet::help() const {
  std::ostringstream out;
  out << program_ << " - " << summary_ << "\n\nUsage: " << program_ << " [flags]\n\nFlags:\n";
  for (const auto& [name, flag] : flags_) {
    out << "  --" << name << (flag.is_bool ? "" : " string") << "\n      " << flag.help;
    if (!flag.is_bool && !flag.default_value.empty()) {
      out << " (default \"" << flag.default_value << "\")";
    }
    out << "\n";
  }
  out << "  -h, --help\n      Print this help and exit.\n"
      << "  --version\n      Print the version and exit.\n";
  return out.str();
}

std::string FlagSet::version_line() const {
  return program_ + " version " + kVersion + " (" + kBuildType + ")";
}

}  // namespace ferry::cli

namespace ferry::cli {

std::optional<int> parse_or_exit(FlagSet& flags, int argc, const char* const* argv) {
  std::span<const char* const> args(argv, static_cast<size_t>(argc));
  switch (flags.parse(args.subspan(1))) {
    case ParseOutcome::kRun:
      return std::nullopt;
    case ParseOutcome::kHelp:
      std::fputs(flags.help().c_str(), stdout);
      return 0;
    case ParseOutcome::kVersion:
      std::puts(flags.version_line().c_str());
      return 0;
    case ParseOutcome::kError:
      std::fprintf(stderr, "%s\nRun with --help for usage.\n", flags.error().c_str());
      return 2;
  }
  return 2;
}

}  // namespace ferry::cli
