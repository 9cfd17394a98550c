#include "checkpoint/criu_features.h"

#include "process/subprocess.h"

namespace ferry::checkpoint {

std::string mode_name(Mode mode) {
  switch (mode) {
    case Mode::kCold:
      return "Cold";
    case Mode::kPostCopy:
      return "PostCopy";
    case Mode::kPreCopy:
      return "PreCopy";
  }
  return "Unknown";
}

Result<Mode> parse_mode(const std::string& name) {
  if (name == "Cold" || name.empty()) return Mode::kCold;
  if (name == "PostCopy") return Mode::kPostCopy;
  if (name == "PreCopy") return Mode::kPreCopy;
  return invalid_argument("unknown migration mode \"" + name +
                          "\" (want Cold, PostCopy or PreCopy)");
}

Result<CriuFeatures> detect_criu_features(const std::string& criu, const CommandRunner& run) {
  CriuFeatures f;
  auto version = run({criu, "--version"});
  if (!version.ok()) return version.status().with_context("criu --version");
  if (version->first != 0) return failed_precondition("criu --version failed: is CRIU installed?");
  const std::string& out = version->second;
  if (auto at = out.find("Version: "); at != std::string::npos) {
    f.criu_version = out.substr(at + 9, out.find('\n', at) - at - 9);
  }
  // An option of our patched CRIU, not a kernel feature: its help lists it.
  auto help = run({criu, "--help"});
  f.lazy_dump_read =
      help.ok() && help->first == 0 && help->second.find("--lazy-dump-mode") != std::string::npos;
  // What the binary links: a static or GnuTLS-less CRIU reads as no TLS,
  // which refuses PostCopy rather than send memory in clear text.
  auto libs = run({"ldd", criu});
  f.tls = libs.ok() && libs->first == 0 && libs->second.find("libgnutls") != std::string::npos;
  auto feature = [&](const char* name) {
    auto r = run({criu, "check", "--feature", name});
    return r.ok() && r->first == 0;
  };
  auto basic = run({criu, "check"});
  f.check_passed = basic.ok() && basic->first == 0;
  f.mem_dirty_track = feature("mem_dirty_track");
  f.uffd = feature("uffd");
  f.uffd_noncoop = feature("uffd-noncoop");
  f.network_lock_nftables = feature("network_lock_nftables");
  return f;
}

Result<CriuFeatures> detect_criu_features(const std::string& criu) {
  return detect_criu_features(
      criu, [](const std::vector<std::string>& argv) -> Result<std::pair<int, std::string>> {
        auto r = process::run(argv, std::chrono::seconds(60));
        if (!r.ok()) return r.status();
        return std::make_pair(r->exit_code, r->out + r->err);
      });
}

Status check_mode_supported(Mode mode, const CriuFeatures& f) {
  auto unsupported = [](const std::string& why) {
    return Status(Code::kUnsupported, why, "ModeUnsupportedOnNode");
  };
  if (!f.check_passed) {
    return unsupported("CRIU " + f.criu_version +
                       " does not work on this node (criu check failed)");
  }
  switch (mode) {
    case Mode::kCold:
      return {};
    case Mode::kPostCopy:
      if (!f.uffd || !f.uffd_noncoop) {
        return unsupported(
            "PostCopy is unsupported on this node: the kernel lacks userfaultfd with "
            "non-cooperative events (criu check --feature uffd-noncoop failed)");
      }
      if (!f.tls) {
        return unsupported("PostCopy is unsupported on this node: CRIU " + f.criu_version +
                           " was built without GnuTLS, so the page transfer could not be "
                           "encrypted and authenticated; use Cold");
      }
      return {};
    case Mode::kPreCopy:
      if (!f.mem_dirty_track) {
        return unsupported(
            "PreCopy is unsupported on this node: the kernel has no soft-dirty memory tracking "
            "(criu check --feature mem_dirty_track failed), so pre-dumps cannot tell which "
            "pages changed; use Cold or PostCopy");
      }
      return {};
  }
  return internal_error("unknown mode");
}

}  // namespace ferry::checkpoint
