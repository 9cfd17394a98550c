#include "kube/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "encoding/base64.h"

namespace ferry::kube {
namespace {

namespace fs = std::filesystem;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ferry-config-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    auto p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  fs::path dir_;
};

TEST_F(ConfigTest, CurrentContextWithDataAndRelativeFiles) {
  write("ca.crt", "CA-PEM");
  std::string path = write("kubeconfig", R"(
apiVersion: v1
kind: Config
current-context: b
clusters:
- name: one
  cluster: {server: "https://one:6443", certificate-authority: ca.crt}
- name: two
  cluster: {server: "https://two:6443", insecure-skip-tls-verify: true}
users:
- name: admin
  user:
    client-certificate-data: )" + encoding::base64_encode("CERT") +
                                             R"(
    client-key-data: )" + encoding::base64_encode("KEY") +
                                             R"(
- name: robot
  user: {token: abc}
contexts:
- name: a
  context: {cluster: two, user: robot}
- name: b
  context: {cluster: one, user: admin, namespace: ferry-system}
)");
  auto cfg = load_kubeconfig(path);
  ASSERT_TRUE(cfg.ok()) << cfg.status().to_string();
  EXPECT_EQ(cfg->server, "https://one:6443");
  EXPECT_EQ(cfg->tls.ca_pem, "CA-PEM");
  EXPECT_EQ(cfg->tls.client_cert_pem, "CERT");
  EXPECT_EQ(cfg->tls.client_key_pem, "KEY");
  EXPECT_EQ(cfg->default_namespace, "ferry-system");

  auto other = load_kubeconfig(path, "a");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->server, "https://two:6443");
  EXPECT_TRUE(other->tls.insecure_skip_verify);
  EXPECT_EQ(other->bearer_token, "abc");
}

TEST_F(ConfigTest, ClearErrorsForBadInput) {
  auto missing = load_kubeconfig((dir_ / "nope").string());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  auto bad_yaml = load_kubeconfig(write("bad", "clusters: [unclosed"));
  EXPECT_EQ(bad_yaml.status().code(), Code::kInvalidArgument);
  EXPECT_NE(bad_yaml.status().message().find("not valid YAML"), std::string::npos);
  auto no_ctx = load_kubeconfig(write("noctx", "current-context: x\ncontexts: []\n"));
  EXPECT_EQ(no_ctx.status().code(), Code::kInvalidArgument) << no_ctx.status().to_string();
  EXPECT_NE(no_ctx.status().message().find("context x not found"), std::string::npos)
      << no_ctx.status().to_string();
  auto half_user = load_kubeconfig(write("half", R"(
current-context: c
clusters: [{name: k, cluster: {server: "https://k"}}]
users: [{name: u, user: {client-certificate-data: Q0VSVA==}}]
contexts: [{name: c, context: {cluster: k, user: u}}]
)"));
  EXPECT_NE(half_user.status().message().find("needs both a client certificate and a client key"),
            std::string::npos)
      << half_user.status().to_string();
}

TEST_F(ConfigTest, InClusterConfigReadsTheServiceAccount) {
  fs::create_directories(dir_ / "var/run/secrets/kubernetes.io/serviceaccount");
  write("var/run/secrets/kubernetes.io/serviceaccount/ca.crt", "SA-CA");
  write("var/run/secrets/kubernetes.io/serviceaccount/token", "tok1\n");
  write("var/run/secrets/kubernetes.io/serviceaccount/namespace", "ferry-system");
  setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  auto cfg = in_cluster_config(dir_.string());
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
  ASSERT_TRUE(cfg.ok()) << cfg.status().to_string();
  EXPECT_EQ(cfg->server, "https://10.0.0.1:443");
  EXPECT_EQ(cfg->tls.ca_pem, "SA-CA");
  EXPECT_EQ(cfg->default_namespace, "ferry-system");
  BearerTokenSource token(cfg->bearer_token, cfg->bearer_token_file, std::chrono::seconds(0));
  EXPECT_EQ(token.header(), "Bearer tok1");
}

TEST_F(ConfigTest, RotatedTokenFileIsReRead) {
  std::string path = write("token", "first");
  BearerTokenSource token("", path, std::chrono::seconds(0));
  EXPECT_EQ(token.header(), "Bearer first");
  // Rotate atomically, as kubelet does, with a distinct modification time.
  std::string next = write("token.new", "second");
  fs::last_write_time(next, fs::last_write_time(path) + std::chrono::seconds(2));
  fs::rename(next, path);
  EXPECT_EQ(token.header(), "Bearer second");
}

}  // namespace
}  // namespace ferry::kube
