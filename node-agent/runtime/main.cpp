// ferry-runc: the OCI runtime wrapper registered as the `ferry` RuntimeClass
// handler. Every runtime call passes through to runc unchanged, except
// `create` of a container marked for restore (DESIGN.md §2).
#include <cstdio>
#include <string_view>

#include "cli/flag_set.h"

int main(int argc, char** argv) {
  ferry::cli::FlagSet flags("ferry-runc",
                            "OCI runtime wrapper: passes calls to runc, restores containers "
                            "marked for restore with CRIU");
  // Only --help and --version belong to ferry-runc itself; every other
  // argument is the runtime's, so only inspect the first one here.
  if (argc >= 2) {
    std::string_view first = argv[1];
    if (first == "--help" || first == "-h" || first == "--version") {
      return *ferry::cli::parse_or_exit(flags, 2, argv);
    }
  }
  std::fputs("ferry-runc: pass-through to the runtime is not implemented yet\n", stderr);
  return 1;
}
