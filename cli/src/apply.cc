// skiffctl apply -f: create or update, remembering what was applied in the
// kubectl.kubernetes.io/last-applied-configuration annotation so that a
// field removed from the manifest is removed from the live object.
#include <thread>

#include "absl/strings/str_cat.h"
#include "cmd.h"

namespace skiff::cli {

namespace {

constexpr char kLastApplied[] = "kubectl.kubernetes.io/last-applied-configuration";

// Is every field of `want` present with the same value in `have`? Lists
// compare item by item the same way, so fields the server filled in (a
// container's terminationMessagePath) do not count as a difference.
bool Subset(const Value& want, const Value& have) {
  if (want.is_map()) {
    if (!have.is_map()) return false;
    for (const auto& [k, v] : want.entries()) {
      const Value* h = have.Find(k);
      if (v.is_null()) {
        if (h != nullptr) return false;
        continue;
      }
      if (h == nullptr || !Subset(v, *h)) return false;
    }
    return true;
  }
  if (want.is_list()) {
    if (!have.is_list() || want.items().size() != have.items().size()) return false;
    for (size_t i = 0; i < want.items().size(); ++i)
      if (!Subset(want.items()[i], have.items()[i])) return false;
    return true;
  }
  // Scalars: compare by meaning (an int 80 equals a string "80" for INT_OR_STRING round trips).
  if (want.type() == have.type()) return want == have;
  return want.is_scalar() && have.is_scalar() && want.text() == have.text();
}

// A JSON merge patch that turns `live` into `modified`, deleting fields that
// were in `original` (the last applied configuration) but are gone from
// `modified`. Fields that only the server or other writers set are kept.
Value ThreeWayPatch(const Value& original, const Value& modified, const Value& live) {
  Value patch = Value::Map();
  if (original.is_map()) {
    for (const auto& [k, ov] : original.entries()) {
      if (modified.Find(k) == nullptr && live.is_map() && live.Find(k) != nullptr) patch.Set(k, Value::Null());
    }
  }
  for (const auto& [k, mv] : modified.entries()) {
    const Value* lv = live.is_map() ? live.Find(k) : nullptr;
    const Value* ov = original.is_map() ? original.Find(k) : nullptr;
    if (mv.is_map() && lv != nullptr && lv->is_map()) {
      Value sub = ThreeWayPatch(ov ? *ov : Value(), mv, *lv);
      if (!sub.entries().empty()) patch.Set(k, std::move(sub));
      continue;
    }
    if (lv != nullptr && Subset(mv, *lv) && (!mv.is_list() || ov == nullptr || Subset(*ov, mv))) continue;
    patch.Set(k, mv);
  }
  return patch;
}

}  // namespace

int CmdApply(Ctx& ctx) {
  if (!ctx.flags.Has("filename")) {
    return Fail(ctx, "must specify one of -f and -k");
  }
  auto docs = manifest::ReadManifests(ctx.flags.All("filename"), ctx.flags.Bool("recursive"), *ctx.env.in);
  if (!docs.ok()) return Fail(ctx, docs.status());
  // Validate everything before the first write: bad input changes nothing.
  for (auto& d : *docs) {
    if (absl::Status st = manifest::RequireName(d); !st.ok()) return Fail(ctx, st);
    const KindInfo* k = manifest::KindOf(d.object);
    if (k->namespaced) {
      const std::string& doc_ns = manifest::Meta(d.object).namespace_();
      if (!doc_ns.empty() && ctx.NamespaceExplicit() && doc_ns != ctx.Namespace()) {
        return Fail(ctx, absl::StrCat("the namespace from the provided object \"", doc_ns,
                                      "\" does not match the namespace \"", ctx.Namespace(),
                                      "\". You must pass '--namespace=", doc_ns, "' to perform this operation."));
      }
    }
  }
  bool dry_run = ctx.flags.Has("dry-run") && ctx.flags.Get("dry-run") != "none";
  client::Client* c = dry_run && ctx.flags.Get("dry-run") == "client" ? nullptr : ctx.Client();
  if (c == nullptr && !dry_run) return 1;
  int rc = 0;
  for (auto& d : *docs) {
    const KindInfo* k = manifest::KindOf(d.object);
    std::string ns = k->namespaced ? (manifest::Meta(d.object).namespace_().empty() ? ctx.Namespace()
                                                                                     : manifest::Meta(d.object).namespace_())
                                   : "";
    Value modified = d.value;
    if (k->namespaced) {
      Value* meta = modified.Find("metadata");
      meta->Set("namespace", Value::String(ns));
      manifest::MutableMeta(&d.object)->set_namespace_(ns);
    }
    // The annotation never records itself.
    if (Value* annotations = modified.Find("metadata")->Find("annotations"); annotations && annotations->is_map()) {
      annotations->Erase(kLastApplied);
      if (annotations->entries().empty()) modified.Find("metadata")->Erase("annotations");
    }
    Value sorted = modified;
    sorted.SortKeys();
    std::string last_applied = manifest::ToJson(sorted, 0) + "\n";
    std::string name = manifest::Meta(d.object).name();
    std::string where = absl::StrCat("error when applying patch to \"", d.source, "\": ");
    if (dry_run && c == nullptr) {
      ctx.out() << RefName(d.object) << " configured (dry run)\n";
      continue;
    }

    bool done = false;
    for (int attempt = 0; attempt < 8 && !done; ++attempt) {
      auto live = c->Get(k->resource, NsFor(*k, ns), name);
      if (!live.ok() && live.status().code() == absl::StatusCode::kNotFound) {
        Object obj = d.object;
        (*manifest::MutableMeta(&obj)->mutable_annotations())[kLastApplied] = last_applied;
        auto created = c->Create(k->resource, NsFor(*k, ns), obj);
        if (!created.ok()) {
          if (created.status().code() == absl::StatusCode::kAlreadyExists) continue;  // raced; retry as update
          PrintServerError(ctx, created.status(), absl::StrCat("error when creating \"", d.source, "\": "));
          rc = 1;
        } else {
          ctx.out() << RefName(d.object) << " created\n";
        }
        done = true;
        break;
      }
      if (!live.ok()) {
        PrintServerError(ctx, live.status(),
                         absl::StrCat("error when retrieving current configuration of ", RefName(d.object),
                                      " from server for: \"", d.source, "\": "));
        rc = 1;
        done = true;
        break;
      }
      Value live_value = manifest::EncodeObject(*live);
      Value original;
      auto ann = manifest::Meta(*live).annotations().find(kLastApplied);
      if (ann != manifest::Meta(*live).annotations().end()) {
        auto parsed = manifest::ParseValue(ann->second, kLastApplied);
        if (parsed.ok()) original = *parsed;
      }
      Value patch = ThreeWayPatch(original, modified, live_value);
      bool annotation_same = ann != manifest::Meta(*live).annotations().end() && ann->second == last_applied;
      if (patch.entries().empty() && annotation_same) {
        ctx.out() << RefName(d.object) << " unchanged\n";
        done = true;
        break;
      }
      Value patched = manifest::ApplyMergePatch(live_value, patch);
      auto obj = manifest::DecodeObject(patched, d.source);
      if (!obj.ok()) {
        Fail(ctx, obj.status());
        rc = 1;
        done = true;
        break;
      }
      manifest::ObjectMeta* meta = manifest::MutableMeta(&*obj);
      (*meta->mutable_annotations())[kLastApplied] = last_applied;
      meta->set_resource_version(manifest::Meta(*live).resource_version());
      auto updated = c->Update(k->resource, NsFor(*k, ns), *obj);
      if (!updated.ok()) {
        if (updated.status().code() == absl::StatusCode::kAborted) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20 * (attempt + 1)));
          continue;
        }
        PrintServerError(ctx, updated.status(), where);
        rc = 1;
      } else {
        ctx.out() << RefName(d.object) << " configured\n";
      }
      done = true;
    }
    if (!done) {
      ctx.err() << "Error from server (Conflict): " << where << "the object kept changing; gave up after retries\n";
      rc = 1;
    }
  }
  return rc;
}

}  // namespace skiff::cli
