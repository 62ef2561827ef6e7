#!/usr/bin/env python3
"""A small kustomize for the subset deploy/k8s uses, for machines without
kubectl or kustomize (validate.sh prefers either when present, and then
checks that this renderer gives the same objects, so it cannot drift).

Supported, in a Kustomization or a Component:
  resources   files (multi-document YAML) and directories with a kustomization
  components  directories whose kustomization is a Component
  namespace   set on every namespaced object
  images      name -> newName / newTag / digest, on containers and init containers
  patches     JSON 6902 operations (add, remove, replace, test), inline or from
              a file, with a target (kind, name, namespace, group, version as
              anchored regular expressions, like kustomize's)

Anything else in a kustomization is an error naming the key, so a new
feature in deploy/k8s cannot be silently ignored here.

Usage: render.py DIR  (prints the objects as one multi-document YAML stream)
"""

import copy
import os
import re
import sys

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
ALLOWED_KEYS = {"apiVersion", "kind", "resources", "components", "namespace", "images", "patches"}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass", "RuntimeClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "APIService",
    "CSIDriver", "Node", "ClusterIssuer",
}


class RenderError(Exception):
    pass


def load_kustomization(directory):
    for name in KUSTOMIZATION_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path) as f:
                k = yaml.safe_load(f) or {}
            unknown = set(k) - ALLOWED_KEYS
            if unknown:
                raise RenderError(f"{path}: render.py does not support {sorted(unknown)}")
            return path, k
    raise RenderError(f"{directory}: no kustomization file")


def load_objects(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def build(directory, expect_component=False):
    path, k = load_kustomization(directory)
    is_component = k.get("kind") == "Component"
    if is_component != expect_component:
        raise RenderError(f"{path}: kind {k.get('kind')!r} where a "
                          f"{'Component' if expect_component else 'Kustomization'} is expected")
    objects = []
    for entry in k.get("resources", []):
        target = os.path.normpath(os.path.join(directory, entry))
        if os.path.isdir(target):
            objects.extend(build(target))
        elif os.path.isfile(target):
            objects.extend(load_objects(target))
        else:
            raise RenderError(f"{path}: resource {entry} not found")
    return apply_transformers(directory, path, k, objects)


def apply_transformers(directory, path, k, objects):
    for entry in k.get("components", []):
        target = os.path.normpath(os.path.join(directory, entry))
        cpath, ck = load_kustomization(target)
        if ck.get("kind") != "Component":
            raise RenderError(f"{path}: {entry} is not a Component")
        for res in ck.get("resources", []):
            rtarget = os.path.normpath(os.path.join(target, res))
            if os.path.isdir(rtarget):
                objects.extend(build(rtarget))
            else:
                objects.extend(load_objects(rtarget))
        objects = apply_transformers(target, cpath, {**ck, "resources": [], "components": ck.get("components", [])}, objects)
    for patch in k.get("patches", []):
        objects = apply_patch(directory, path, patch, objects)
    if "namespace" in k:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for image in k.get("images", []):
        for obj in objects:
            set_image(obj, image)
    return objects


def matches(target, obj):
    api = obj.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    fields = {
        "kind": obj.get("kind", ""),
        "name": obj.get("metadata", {}).get("name", ""),
        "namespace": obj.get("metadata", {}).get("namespace", ""),
        "group": group,
        "version": version,
    }
    for key, pattern in target.items():
        if key not in fields:
            raise RenderError(f"patch target key {key!r} is not supported by render.py")
        if not re.fullmatch(f"(?:{pattern})", fields[key]):
            return False
    return True


def apply_patch(directory, path, patch, objects):
    unknown = set(patch) - {"target", "patch", "path"}
    if unknown:
        raise RenderError(f"{path}: patch keys {sorted(unknown)} are not supported by render.py")
    if "path" in patch:
        with open(os.path.join(directory, patch["path"])) as f:
            text = f.read()
    else:
        text = patch["patch"]
    ops = yaml.safe_load(text)
    if not isinstance(ops, list):
        raise RenderError(f"{path}: render.py supports JSON 6902 patches (a list of operations) only")
    target = patch.get("target")
    if not target:
        raise RenderError(f"{path}: a JSON 6902 patch needs a target")
    hit = False
    for obj in objects:
        if matches(target, obj):
            hit = True
            for op in ops:
                json_patch(obj, op, path)
    if not hit:
        raise RenderError(f"{path}: patch target {target} matches no object")
    return objects


def pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise RenderError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def walk(doc, parts, where):
    node = doc
    for p in parts:
        if isinstance(node, list):
            node = node[int(p)]
        elif isinstance(node, dict) and p in node:
            node = node[p]
        else:
            raise RenderError(f"{where}: path element {p!r} not found")
    return node


def json_patch(obj, op, where):
    parts = pointer(op["path"])
    parent = walk(obj, parts[:-1], where)
    last = parts[-1]
    kind = op["op"]
    if kind == "add":
        value = copy.deepcopy(op["value"])
        if isinstance(parent, list):
            if last == "-":
                parent.append(value)
            else:
                parent.insert(int(last), value)
        else:
            parent[last] = value
    elif kind == "replace":
        if isinstance(parent, list):
            parent[int(last)] = copy.deepcopy(op["value"])
        else:
            if last not in parent:
                raise RenderError(f"{where}: replace of missing {op['path']}")
            parent[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        if isinstance(parent, list):
            del parent[int(last)]
        else:
            if last not in parent:
                raise RenderError(f"{where}: remove of missing {op['path']}")
            del parent[last]
    elif kind == "test":
        if walk(obj, parts, where) != op["value"]:
            raise RenderError(f"{where}: test failed at {op['path']}")
    else:
        raise RenderError(f"{where}: JSON patch op {kind!r} is not supported by render.py")


def split_image(image):
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    name, tag = image, None
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        name, tag = image[:colon], image[colon + 1:]
    return name, tag, digest


def set_image(obj, image):
    spec = obj.get("spec", {})
    template = spec.get("template", {}).get("spec")
    if template is None and "jobTemplate" in spec:
        template = spec["jobTemplate"].get("spec", {}).get("template", {}).get("spec")
    if template is None:
        return
    for key in ("initContainers", "containers"):
        for c in template.get(key, []) or []:
            name, tag, digest = split_image(c.get("image", ""))
            if name != image["name"]:
                continue
            name = image.get("newName", name)
            if "digest" in image:
                c["image"] = f"{name}@{image['digest']}"
            else:
                tag = image.get("newTag", tag)
                c["image"] = f"{name}:{tag}" if tag else name


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        objects = build(os.path.abspath(sys.argv[1]))
    except (RenderError, KeyError, ValueError, IndexError) as e:
        sys.exit(f"render.py: {e}")
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
