// A FakeHttpServer handler that serves one image the way a registry does.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "fake_registry.h"
#include "image_fixture.h"

namespace skiff::image::testing {

// A handler that serves one image like a registry (Range supported).
struct FakeImage {
  explicit FakeImage(const BuiltImage& i) : img(i) {}
  BuiltImage img;
  std::string repo = "test/busybox";
  std::string tag = "1";
  std::function<std::string(const std::string& digest, std::string blob)> mangle;  // tamper
  std::function<long(const std::string& digest, int request_no)> cut;               // truncate
  std::atomic<int> blob_requests{0};

  HttpReply Serve(const HttpRequest& r) {
    HttpReply out;
    std::string prefix = "/v2/" + repo + "/";
    if (r.path == "/v2/") return out;
    if (r.path == prefix + "manifests/" + tag || r.path == prefix + "manifests/" + img.manifest_digest) {
      out.headers.push_back({"Content-Type", "application/vnd.oci.image.manifest.v1+json"});
      out.body = img.manifest;
      return out;
    }
    if (r.path.rfind(prefix + "blobs/", 0) == 0) {
      std::string digest = r.path.substr(prefix.size() + 6);
      std::string blob;
      if (digest == img.config_digest) blob = img.config;
      for (const auto& l : img.layers) {
        if (l.digest == digest) blob = l.blob;
      }
      if (blob.empty()) {
        out.status = 404;
        out.body = R"({"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]})";
        return out;
      }
      if (mangle) blob = mangle(digest, blob);
      int n = blob_requests.fetch_add(1);
      auto range = r.headers.find("range");
      if (range != r.headers.end()) {
        size_t from = std::stoul(range->second.substr(6));
        out.status = 206;
        out.headers.push_back({"Content-Range", "bytes " + std::to_string(from) + "-" +
                                                    std::to_string(blob.size() - 1) + "/" + std::to_string(blob.size())});
        blob = blob.substr(from);
      }
      out.body = blob;
      if (cut) out.cut_after = cut(digest, n);
      return out;
    }
    out.status = 404;
    out.body = R"({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]})";
    return out;
  }
};

}  // namespace skiff::image::testing
