// Command-line flags for Ferry's binaries. Each binary declares its flags once
// in a FlagSet; parsing, defaults and the --help text all come from that one
// declaration, so the help output cannot drift from what is accepted. Flags use
// the Kubernetes component style: --name=value or --name value, booleans as
// --name or --name=true|false. Bad input is reported as a value, not thrown.
#pragma once

#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::cli {

// What main() should do after parsing.
enum class ParseOutcome {
  kRun,      // flags are valid: run the program
  kHelp,     // --help or -h: print help() and exit 0
  kVersion,  // --version: print the version and exit 0
  kError,    // invalid input: print error() and the usage line, exit 2
};

class FlagSet {
 public:
  FlagSet(std::string program, std::string summary);

  void add_string(std::string name, std::string default_value, std::string help);
  void add_bool(std::string name, std::string help);

  // Parses argv without argv[0]. Arguments after "--" and non-flag arguments
  // are kept as positionals in order.
  ParseOutcome parse(std::span<const char* const> args);

  // Value of a declared flag (its default when not given). Asking for an
  // undeclared flag is a programming error and aborts.
  const std::string& get(std::string_view name) const;
  bool get_bool(std::string_view name) const;
  const std::vector<std::string>& positional() const { return positional_; }

  const std::string& error() const { return error_; }
  std::string help() const;
  std::string version_line() const;

 private:
  struct Flag {
    std::string help;
    std::string default_value;
    std::string value;
    bool is_bool = false;
  };
  const Flag& find(std::string_view name) const;

  std::string program_;
  std::string summary_;
  std::map<std::string, Flag, std::less<>> flags_;
  std::vector<std::string> positional_;
  std::string error_;
};

}  // namespace ferry::cli

namespace ferry::cli {

// Parses argv into flags and deals with the outcomes every binary shares:
// prints help or version to stdout (exit 0) or the error and usage to stderr
// (exit 2). Returns the exit code, or nullopt when the program should run.
std::optional<int> parse_or_exit(FlagSet& flags, int argc, const char* const* argv);

}  // namespace ferry::cli
