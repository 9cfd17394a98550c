#include "runtime/wrapper.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "api/annotations.h"

namespace ferry::runtime {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string marker_path(const WrapperConfig& c, const std::string& id) {
  return c.state_dir + "/restored/" + id;
}
std::string criu_conf_path(const WrapperConfig& c, const std::string& id) {
  return c.state_dir + "/criu/" + id + ".conf";
}

Status write_file_atomic(const std::string& path, const std::string& data, mode_t mode) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return internal_error("cannot write " + tmp);
  bool ok = write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  ok = fsync(fd) == 0 && ok;
  close(fd);
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    unlink(tmp.c_str());
    return internal_error("cannot write " + path);
  }
  return {};
}

Result<json> read_spec(const std::string& bundle) {
  std::ifstream in(bundle + "/config.json");
  if (!in) return not_found("no config.json in bundle " + bundle);
  auto spec = json::parse(in, nullptr, false);
  if (spec.is_discarded() || !spec.is_object()) {
    return invalid_argument("config.json in bundle " + bundle + " is not valid JSON");
  }
  return spec;
}

std::string annotation(const json& spec, const char* key) {
  if (!spec.contains("annotations") || !spec["annotations"].is_object()) return {};
  return spec["annotations"].value(key, "");
}

// Points runc at this container's CRIU config file (creating a default one),
// so the agent can later choose options such as tcp-close for its checkpoint.
Status attach_criu_config(const WrapperConfig& config, const std::string& bundle, json& spec,
                          const std::string& id, const std::string& contents) {
  std::string conf = criu_conf_path(config, id);
  FERRY_RETURN_IF_ERROR(write_file_atomic(conf, contents, 0600));
  spec["annotations"][api::kCriuConfigAnnotation] = conf;
  return write_file_atomic(bundle + "/config.json", spec.dump(), 0644);
}

std::vector<std::string> passthrough(const WrapperConfig& config,
                                     const std::vector<std::string>& args) {
  std::vector<std::string> argv = {config.runtime};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

std::string bundle_abs(const std::string& bundle) {
  std::error_code ec;
  auto p = fs::absolute(bundle, ec);
  return ec ? bundle : p.lexically_normal().string();
}

}  // namespace

Result<WrapperConfig> WrapperConfig::load() {
  WrapperConfig c;
  std::string path = "/etc/ferry/ferry-runc.json";
  if (const char* env = std::getenv("FERRY_RUNC_CONFIG"); env != nullptr && *env != '\0') {
    path = env;
  } else if (!fs::exists(path)) {
    return c;
  }
  std::ifstream in(path);
  if (!in) return not_found("ferry-runc config " + path + " cannot be read");
  auto j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return invalid_argument("ferry-runc config " + path + " is not a JSON object");
  }
  c.runtime = j.value("runtime", c.runtime);
  c.snapshot_root = j.value("snapshotRoot", c.snapshot_root);
  c.state_dir = j.value("stateDir", c.state_dir);
  return c;
}

void report_error(const RuncArgs& args, const std::string& message) {
  std::string line = "ferry-runc: " + message;
  std::fprintf(stderr, "%s\n", line.c_str());
  if (args.log.empty()) return;
  std::ofstream log(args.log, std::ios::app);
  time_t now = time(nullptr);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  if (args.log_format == "json") {
    log << json{{"level", "error"}, {"msg", line}, {"time", stamp}}.dump() << "\n";
  } else {
    log << "time=\"" << stamp << "\" level=error msg=" << json(line).dump() << "\n";
  }
}

Action plan(const WrapperConfig& config, const std::vector<std::string>& args,
            const RestorePreparer& prepare) {
  auto parsed = parse_runc_args(args);
  // Anything we cannot read is the runtime's to judge, unchanged.
  if (!parsed.ok() || parsed->container_id.empty()) return {passthrough(config, args)};
  const RuncArgs& a = *parsed;
  const std::string& id = a.container_id;

  if (a.command == "start") {
    if (fs::exists(marker_path(config, id))) {
      // Restored by `create`: the process already runs. Nothing to start.
      std::error_code ec;
      fs::remove(marker_path(config, id), ec);
      return {{}, 0};
    }
    return {passthrough(config, args)};
  }
  if (a.command == "delete") {
    std::error_code ec;
    fs::remove(marker_path(config, id), ec);
    fs::remove(criu_conf_path(config, id), ec);
    return {passthrough(config, args)};
  }
  if (a.command != "create") return {passthrough(config, args)};

  const std::string bundle = bundle_abs(a.bundle);
  auto spec = read_spec(bundle);
  if (!spec.ok()) return {passthrough(config, args)};  // runc reports it its own way
  const std::string restore_from = annotation(*spec, api::kRestoreFromAnnotation);
  const bool sandbox = annotation(*spec, api::kCriContainerType) == "sandbox";

  if (restore_from.empty() || sandbox) {
    Status s = attach_criu_config(config, bundle, *spec, id, "tcp-close\n");
    if (!s.ok()) {
      report_error(a, "create " + id + ": " + s.message());
      return {{}, 1};
    }
    return {passthrough(config, args)};
  }

  // Restore.
  std::string root = spec->value("/root/path"_json_pointer, std::string("rootfs"));
  RestoreRequest request{
      .migration_uid = restore_from,
      .pod_namespace = annotation(*spec, api::kCriSandboxNamespace),
      .pod_name = annotation(*spec, api::kCriSandboxName),
      .pod_uid = annotation(*spec, api::kCriSandboxUid),
      .container_name = annotation(*spec, api::kCriContainerName),
      .rootfs = fs::path(root).is_absolute() ? root : bundle + "/" + root,
  };
  auto prepared = prepare(config, request);
  if (!prepared.ok()) {
    report_error(a, "restore of container " + id + " refused: " + prepared.status().message());
    return {{}, 1};
  }
  Status s = attach_criu_config(config, bundle, *spec, id,
                                prepared->tcp_established ? "tcp-established\n" : "tcp-close\n");
  if (s.ok()) s = write_file_atomic(marker_path(config, id), restore_from + "\n", 0600);
  if (!s.ok()) {
    report_error(a, "restore of container " + id + ": " + s.message());
    return {{}, 1};
  }
  std::vector<std::string> argv = {config.runtime};
  argv.insert(argv.end(), a.global_flags.begin(), a.global_flags.end());
  argv.insert(argv.end(),
              {"restore", "--detach", "--bundle", bundle, "--image-path", prepared->image_dir,
               "--work-path", config.state_dir + "/work/" + id, "--manage-cgroups-mode", "ignore"});
  if (!a.pid_file.empty()) argv.insert(argv.end(), {"--pid-file", a.pid_file});
  if (!a.console_socket.empty()) argv.insert(argv.end(), {"--console-socket", a.console_socket});
  if (prepared->tcp_established) argv.emplace_back("--tcp-established");
  if (prepared->lazy_pages) argv.emplace_back("--lazy-pages");
  argv.push_back(id);
  std::error_code ec;
  fs::create_directories(config.state_dir + "/work/" + id, ec);
  return {argv, 0, prepared->hold, prepared->inherit_fd};
}

}  // namespace ferry::runtime
